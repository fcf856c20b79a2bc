"""The shipped restorer against its committed scores (training/baseline_metrics.json).

The fast check repeats the baseline file's `check` evaluation (CHECK_SUBSET validation faces,
preset moderate, the same seed), so the numbers are comparable exactly: the same faces, the same
degradations, the same metrics. The slow check repeats the full table's `moderate` row.
A model that scores worse fails; a better one is committed with `python -m training.evaluate
--update-baseline`.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.helpers.faces import require_faces
from training import degrade, evaluate

# Room for float noise between machines and thread counts, not for a worse model.
PSNR_TOLERANCE_DB = 0.05
SSIM_TOLERANCE = 0.002
IDENTITY_TOLERANCE = 0.005
# On the small subset the shipped model must beat bicubic by at least this much: far above float
# noise (the comparison is exact), though below the 3 dB target, which the shipped model
# does not reach (see the `targets` in baseline_metrics.json).
CLEAR_MARGIN_DB = 0.5


def _baseline() -> dict:
    return json.loads(evaluate.BASELINE_FILE.read_text())


def _require_model() -> None:
    require_faces()
    if not evaluate.DEFAULT_MODEL.is_file():
        pytest.fail(f"the shipped model {evaluate.DEFAULT_MODEL} is missing")


def assert_same_benchmark(measured: dict, committed: dict) -> None:
    """Bicubic's scores depend only on the data and the degradations: if they moved, the baseline is stale."""
    for key in ("psnr", "ssim"):
        assert measured["bicubic"][key] == pytest.approx(committed["bicubic"][key], abs=1e-3), (
            f"bicubic {key} changed ({committed['bicubic'][key]:.4f} -> {measured['bicubic'][key]:.4f}): the "
            "evaluation data or degradations changed; re-measure the baseline with the shipped model"
        )


def assert_not_worse(measured: dict, committed: dict) -> None:
    ours, baseline = measured["ours"], committed["ours"]
    assert ours["psnr"] >= baseline["psnr"] - PSNR_TOLERANCE_DB, (
        f"PSNR {ours['psnr']:.3f} < baseline {baseline['psnr']:.3f}"
    )
    assert ours["ssim"] >= baseline["ssim"] - SSIM_TOLERANCE, (
        f"SSIM {ours['ssim']:.4f} < baseline {baseline['ssim']:.4f}"
    )
    if "identity_distance" in baseline:
        assert ours["identity_distance"] <= baseline["identity_distance"] + IDENTITY_TOLERANCE, (
            f"identity distance {ours['identity_distance']:.4f} > baseline {baseline['identity_distance']:.4f}"
        )


@pytest.fixture(scope="module")
def check_run() -> tuple[dict, dict]:
    """(measured, committed) scores of the check subset at its preset."""
    _require_model()
    committed = _baseline()["check"]
    report, _ = evaluate.evaluate(evaluate.check_settings())
    assert report["faces"] == committed["faces"], "the validation split changed since the baseline was measured"
    preset = evaluate.TARGET_PRESET
    return report["results"][preset], committed["results"][preset]


# The check subset's evaluation takes ~30 s: these three are slow, and run by .ci/run explicitly.
@pytest.mark.slow
def test_the_baseline_was_measured_on_this_benchmark(check_run):
    assert_same_benchmark(*check_run)


@pytest.mark.slow
def test_shipped_model_beats_bicubic_by_a_clear_margin(check_run):
    measured, _ = check_run
    assert measured["ours"]["psnr"] >= measured["bicubic"]["psnr"] + CLEAR_MARGIN_DB
    assert measured["ours"]["ssim"] > measured["bicubic"]["ssim"]
    assert measured["ours"]["identity_distance"] < measured["bicubic"]["identity_distance"]


@pytest.mark.slow
def test_shipped_model_is_not_worse_than_its_committed_baseline(check_run):
    assert_not_worse(*check_run)


def test_the_baseline_file_describes_the_shipped_model():
    baseline = _baseline()
    assert baseline["model"] == "models/face_restorer.ts"
    table = baseline["table"]["results"]
    assert set(table) == set(degrade.EVAL_PRESETS)
    assert all(set(methods) == set(evaluate.METHODS) for methods in table.values())


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_full_validation_set_is_not_worse_than_the_committed_table():
    _require_model()
    table = _baseline()["table"]
    preset = evaluate.TARGET_PRESET
    settings = replace(evaluate.check_settings(), subset=table["settings"]["subset"])
    report, _ = evaluate.evaluate(settings)
    assert report["faces"] == table["faces"]
    assert_same_benchmark(report["results"][preset], table["results"][preset])
    assert_not_worse(report["results"][preset], table["results"][preset])
