"""The evaluation's metrics, baselines and report: each measures what it claims."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from streamer import brightness
from streamer.model_contract import SPEC_FILE_NAME, RestorerSpec, resize_square, square_crop_box
from streamer.values import Box
from tests.helpers.faces import require_faces, require_shared_data
from tests.helpers.models import TEST_INPUT_SIZE, make_spec, save_model
from training import baselines, data, degrade, evaluate, metrics, video_check
from training.identity import FaceEmbedder

CELEBA_FACE = Box(64.0, 64.0, 128.0, 128.0)  # the face box in every celeba_wild_256 photo


def _random_image(seed: int, shape=(64, 64, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _add_noise(image: np.ndarray, std: float, seed: int = 1) -> np.ndarray:
    noisy = image + np.random.default_rng(seed).normal(0.0, std, image.shape)
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)


# --- metrics -----------------------------------------------------------------------------------


FULL_CROP = (0, 0, 64, 64)


def test_identical_crops_score_the_psnr_cap_and_ssim_one():
    image = _random_image(0)
    psnr, ssim = metrics.face_scores(image, image, FULL_CROP)
    assert psnr == pytest.approx(100.0)  # capped: an exact copy has infinite PSNR
    assert ssim == pytest.approx(1.0)


def test_a_one_level_error_scores_48_db():
    image = _random_image(0)
    brighter = np.clip(image.astype(int) + 1, 0, 255).astype(np.uint8)
    brighter[image == 255] = 254  # keep every pixel exactly one level away
    assert metrics.face_scores(brighter, image, FULL_CROP)[0] == pytest.approx(20 * np.log10(255.0), abs=1e-6)


def test_ssim_falls_with_noise():
    image = _random_image(0)
    slightly = metrics.face_scores(_add_noise(image, 5), image, FULL_CROP)[1]
    heavily = metrics.face_scores(_add_noise(image, 40), image, FULL_CROP)[1]
    assert 1.0 > slightly > heavily


def test_scores_reject_crops_of_different_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.face_scores(_random_image(0), _random_image(0, (32, 32, 3)), FULL_CROP)


def test_face_region_is_the_face_box_scaled_into_the_crop():
    crop_box = square_crop_box(CELEBA_FACE, 1.5)  # 192 px around a 128 px face
    assert metrics.face_region_in_crop(CELEBA_FACE, crop_box, 64) == (11, 11, 53, 53)


def test_face_region_is_clipped_to_the_crop():
    assert metrics.face_region_in_crop(Box(-10, 50, 40, 40), Box(0, 0, 64, 64), 64) == (0, 50, 30, 64)


def test_face_scores_ignore_the_margin_outside_the_face():
    truth = _random_image(0)
    damaged_margin = truth.copy()
    damaged_margin[:8] = 0
    region = (11, 11, 53, 53)
    assert metrics.face_scores(damaged_margin, truth, region) == pytest.approx((100.0, 1.0))
    assert metrics.face_scores(damaged_margin, truth, FULL_CROP)[0] < 20


# --- baselines ---------------------------------------------------------------------------------


def test_bicubic_baseline_is_the_model_input_itself():
    crops = _random_image(0, (2, 64, 64, 3))
    assert np.array_equal(baselines.bicubic(crops), crops)


def test_seed_preprocessing_brightens_and_denoises():
    dark_flat = np.full((1, 64, 64, 3), 60, np.uint8)
    noisy = _add_noise(dark_flat, 8)
    processed = baselines.seed_preprocessing(noisy)
    assert processed.shape == noisy.shape and processed.dtype == np.uint8
    assert processed.mean() > noisy.mean() + 5
    assert processed.std() < noisy.std() / 2


# --- identity ----------------------------------------------------------------------------------


def _celeba_crop(record: data.FaceRecord) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    spec = RestorerSpec(64, 1.5)
    square = square_crop_box(record.face_box, spec.crop_scale)
    crop = resize_square(data.clean_square(record, spec.crop_scale), spec.input_size)
    return crop, metrics.face_region_in_crop(record.face_box, square, spec.input_size)


def test_identity_distance_is_smaller_for_the_same_person_than_for_others():
    require_faces()
    by_identity: dict[int, list] = {}
    for record in data.load_records():
        if record.face_px_in_source >= 128:
            by_identity.setdefault(record.identity, []).append(record)
    people = [records for records in by_identity.values() if len(records) >= 2][:3]
    embedder = FaceEmbedder.load()
    for index, records in enumerate(people):
        clean, region = _celeba_crop(records[0])
        same_person = _celeba_crop(records[1])[0]
        others = [_celeba_crop(people[(index + k) % len(people)][0])[0] for k in (1, 2)]
        reference = embedder.reference(clean, region)
        itself, same, *different = embedder.distances(reference, [clean, same_person, *others])
        assert itself == pytest.approx(0.0, abs=1e-6)
        assert same < min(different)


# --- the evaluation run ------------------------------------------------------------------------


@pytest.fixture()
def model_files(tmp_path):
    """'ours' returns its input; the 'seed architecture' brightens everything (worse than its input)."""
    return save_model("identity", tmp_path / "ours.ts"), save_model("brighten", tmp_path / "seed.ts")


def test_evaluation_feeds_every_method_the_same_inputs(model_files):
    require_faces()
    ours, seed = model_files
    settings = evaluate.EvalSettings(presets=("moderate",), subset=6, model=ours, seed_model=seed)
    report, runs = evaluate.evaluate(settings)
    scores = report["results"]["moderate"]
    # A model that returns its input scores exactly what bicubic does; a brightened picture scores worse.
    assert {k: v for k, v in scores["ours"].items() if k != "identity_closer_than_bicubic"} == scores["bicubic"]
    assert scores["ours"]["identity_closer_than_bicubic"] == 0.0  # never strictly closer than itself
    assert scores["seed_architecture"]["psnr"] < scores["bicubic"]["psnr"] - 3
    assert 0.0 < scores["bicubic"]["identity_distance"] < 2.0
    assert report["faces"] == 6 and report["targets"]["psnr_gain_over_bicubic_db"]["met"] is False
    size = TEST_INPUT_SIZE  # the crops follow the model's contract
    assert runs["moderate"].inputs.shape == (6, size, size, 3)


def test_evaluation_is_deterministic_under_its_seed(model_files):
    require_faces()
    ours, seed = model_files
    settings = evaluate.EvalSettings(presets=("severe",), subset=4, identity=False, model=ours, seed_model=seed)
    first, second = evaluate.evaluate(settings)[0], evaluate.evaluate(settings)[0]
    assert first["results"] == second["results"]


def test_ours_pasted_keeps_a_daylight_faces_brightness_and_lets_night_faces_be_relit(tmp_path):
    require_faces()
    brighten = save_model("brighten", tmp_path / "brighten.ts")
    settings = evaluate.EvalSettings(
        presets=("moderate", "night"),
        methods=("bicubic", "ours", "ours_pasted"),
        subset=4,
        identity=False,
        model=brighten,
    )
    _, runs = evaluate.evaluate(settings)
    regions = evaluate.face_regions(evaluate.evaluation_records(4), make_spec())

    def face_means(images: np.ndarray) -> np.ndarray:
        return np.array([metrics.cut_region(image, region).mean() for image, region in zip(images, regions)])

    day, night = runs["moderate"], runs["night"]
    np.testing.assert_allclose(face_means(day.outputs["ours_pasted"]), face_means(day.inputs), atol=1.5)
    assert (face_means(day.outputs["ours"]) > face_means(day.inputs) + 20).all()
    np.testing.assert_array_equal(night.outputs["ours_pasted"], night.outputs["ours"])


def test_scene_luma_is_lit_for_a_well_exposed_face_and_dark_at_night():
    params = degrade.sample_params(degrade.PRESETS["mild"], np.random.default_rng(0))
    well_exposed = dataclasses.replace(params, exposure=1.0, gains_rgb=(1.0, 1.0, 1.0))
    assert evaluate.scene_luma(well_exposed) == pytest.approx(evaluate.WELL_EXPOSED_SCENE_LUMA, abs=1)
    night = dataclasses.replace(well_exposed, exposure=0.1, auto_gain=0.5)
    assert evaluate.scene_luma(night) < brightness.DARK_FRAME_LUMA


def test_ours_pasted_needs_ours(model_files):
    ours, seed = model_files
    with pytest.raises(evaluate.EvaluationError, match="ours_pasted"):
        evaluate.build_restorers(evaluate.EvalSettings(methods=("bicubic", "ours_pasted"), model=ours))


def test_main_writes_report_and_grid(model_files, tmp_path, capsys):
    require_faces()
    ours, seed = model_files
    out = tmp_path / "out"
    argv = [
        "--subset",
        "3",
        "--presets",
        "mild",
        "night",
        "--no-identity",
        "--model",
        str(ours),
        "--seed-model",
        str(seed),
        "--out",
        str(out),
    ]
    assert evaluate.main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["results"]) == {"mild", "night"}
    assert set(report["results"]["night"]) == set(evaluate.METHODS)
    assert "seed_preprocessing" in capsys.readouterr().out
    grid = cv2.imread(str(out / "grid.png"))
    assert grid.shape[0] > 2 * 3 * 2 * TEST_INPUT_SIZE  # two presets x three faces, tiles zoomed 2x


def test_a_missing_model_is_a_one_line_error(tmp_path, capsys):
    argv = ["--subset", "2", "--model", str(tmp_path / "absent.ts"), "--out", str(tmp_path)]
    assert evaluate.main(argv) == 2
    assert "not found" in capsys.readouterr().err


def test_a_model_without_its_contract_is_rejected(tmp_path, capsys):
    bare = save_model("identity", tmp_path / "bare.ts", with_spec=False)
    argv = ["--subset", "2", "--model", str(bare), "--methods", "bicubic", "ours", "--out", str(tmp_path)]
    assert evaluate.main(argv) == 2
    assert SPEC_FILE_NAME in capsys.readouterr().err


# --- the video check ---------------------------------------------------------------------------


def _sample(track_id: int, frame_index: int, truth: np.ndarray) -> video_check.FaceSample:
    return video_check.FaceSample(track_id, frame_index, 30.0, truth, truth, (0, 0, 64, 64), restored=True)


def test_temporal_error_is_zero_for_the_truth_and_the_truths_change_for_a_frozen_face():
    truths = [_random_image(seed) for seed in range(3)]
    samples = [_sample(1, index, truth) for index, truth in enumerate(truths)]
    outputs = {"exact": np.stack(truths), "frozen": np.stack([truths[0]] * 3)}
    track = video_check.temporal_scores(samples, outputs)[1]
    assert track["frames"] == 3
    assert track["exact"]["temporal_error"] == 0.0
    assert track["frozen"]["change"] == 0.0
    assert track["frozen"]["temporal_error"] == pytest.approx(track["truth"]["change"])


def test_temporal_scores_skip_gaps_in_a_track():
    samples = [_sample(1, 0, _random_image(0)), _sample(1, 5, _random_image(1))]
    track = video_check.temporal_scores(samples, {"bicubic": np.stack([s.crop for s in samples])})[1]
    assert track["bicubic"]["change"] is None


def test_cctv_degradation_downscales_blurs_and_adds_noise():
    flat = np.full((216, 384, 3), 128, np.uint8)
    low = video_check.degrade_frame(flat, video_check.CctvSettings(height=72), np.random.default_rng(0))
    assert low.shape == (72, 128, 3)
    assert 1.0 < low.std() < 10.0  # sensor noise of a few levels, nothing else on a flat picture


@pytest.mark.slow
def test_video_check_restores_tracked_faces_of_the_crowd_video(tmp_path):
    require_shared_data("videos", video_check.DEFAULT_VIDEO.name)
    report = video_check.run(
        video_check.DEFAULT_VIDEO, video_check.CctvSettings(), video_check.DEFAULT_CONFIG, None, tmp_path
    )
    assert report["tracks"] >= 3
    # What the pipeline pastes beats bicubic in both; the model alone loses PSNR here, because it
    # brightens dark daylight faces, which the compositor's keep_brightness undoes.
    totals = report["totals"]
    assert totals["ours"]["ssim"] > totals["bicubic"]["ssim"]
    assert totals["ours"]["psnr"] > totals["bicubic"]["psnr"]
    assert (tmp_path / "grid.png").is_file()
