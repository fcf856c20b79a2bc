"""The shipped restorer on synthetic H.264 tracks against its committed scores (training/track_baseline.json).

Repeats the baseline file's `check` (CHECK_SUBSET validation faces as tracks, preset moderate, the
same seed, no identity): the same tracks, the same metrics, so the numbers compare exactly. The
shipped model must score no worse than committed, and clearly above bicubic and the aligned average
of the track's bicubic frames. A better model is committed with
`python -m training.evaluate_tracks --update-baseline`.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers.faces import require_faces
from training import evaluate_tracks

PSNR_TOLERANCE_DB = 0.05  # float noise between machines and thread counts, not a worse model
SSIM_TOLERANCE = 0.002
CLEAR_MARGIN_DB = 0.3  # over bicubic on the subset


@pytest.fixture(scope="module")
def measured_and_committed():
    require_faces()
    for name, path in evaluate_tracks.DEFAULT_MODELS.items():
        if not path.is_file():
            pytest.fail(f"the {name} model {path} is missing")
    committed = json.loads(evaluate_tracks.BASELINE_FILE.read_text())["check"]
    measured, _ = evaluate_tracks.evaluate(evaluate_tracks.check_settings())
    preset = evaluate_tracks.CHECK_PRESET
    return measured["results"][preset], committed["results"][preset]


def test_the_benchmark_tracks_are_the_committed_ones(measured_and_committed):
    measured, committed = measured_and_committed
    for key in ("psnr", "ssim"):
        assert measured["bicubic"][key] == pytest.approx(committed["bicubic"][key], abs=1e-3), (
            "bicubic moved: the track generator or the presets changed; re-measure the baseline"
        )


def test_the_shipped_model_is_no_worse_than_committed(measured_and_committed):
    measured, committed = measured_and_committed
    assert measured["shipped"]["psnr"] >= committed["shipped"]["psnr"] - PSNR_TOLERANCE_DB
    assert measured["shipped"]["ssim"] >= committed["shipped"]["ssim"] - SSIM_TOLERANCE


def test_the_shipped_model_beats_bicubic_and_the_average_of_the_tracks_frames(measured_and_committed):
    measured, _ = measured_and_committed
    assert measured["shipped"]["psnr"] >= measured["bicubic"]["psnr"] + CLEAR_MARGIN_DB
    assert measured["shipped"]["psnr"] >= measured["aligned_average"]["psnr"] + CLEAR_MARGIN_DB
