"""The CCTV degradation model: seeded, and each stage does what it claims."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.model_contract import resize_square
from streamer.restoration import TorchScriptRestorer
from tests.helpers.faces import require_faces
from training import degrade, evaluate
from training.data import clean_square, load_shards, split_identities, split_records, training_shards

SIZE, CROP_SCALE = 64, 1.5


@pytest.fixture(scope="module")
def squares() -> list[np.ndarray]:
    """Six real validation faces as high-resolution square crops."""
    require_faces()
    return [clean_square(record, CROP_SCALE) for record in split_records().val[:6]]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def params_with(**changes) -> degrade.DegradeParams:
    """A neutral parameter set (nothing happens but sampling) with some stages switched on."""
    neutral = degrade.DegradeParams(
        face_px=24,
        downscale="area",
        blur_sigma=0.0,
        motion_px=0.0,
        motion_angle_deg=0.0,
        exposure=1.0,
        auto_gain=1.0,
        gains_rgb=(1.0, 1.0, 1.0),
        shot_noise=0.0,
        read_noise=0.0,
        luma_noise_share=0.5,
        crf=20,
        jpeg_quality=None,
    )
    return degrade.DegradeParams(**{**neutral.__dict__, **changes})


@pytest.mark.parametrize("preset", degrade.EVAL_PRESETS)
def test_presets_are_deterministic_under_a_seed(squares, preset):
    first, _ = degrade.degrade_batch(squares, preset, np.random.default_rng(7), SIZE, CROP_SCALE)
    again, _ = degrade.degrade_batch(squares, preset, np.random.default_rng(7), SIZE, CROP_SCALE)
    other, _ = degrade.degrade_batch(squares, preset, np.random.default_rng(8), SIZE, CROP_SCALE)
    assert first.shape == (len(squares), SIZE, SIZE, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_presets_get_worse_in_order(squares):
    targets = [resize_square(sq, SIZE) for sq in squares]
    scores = {}
    for preset in ("mild", "moderate", "severe"):
        out, _ = degrade.degrade_batch(squares, preset, np.random.default_rng(0), SIZE, CROP_SCALE)
        scores[preset] = np.mean([psnr(o, t) for o, t in zip(out, targets)])
    assert scores["mild"] > scores["moderate"] > scores["severe"]


def test_sharp_is_a_moderate_face_without_optical_blur(squares):
    sharp, moderate = degrade.PRESETS["sharp"], degrade.PRESETS["moderate"]
    assert sharp.face_px == moderate.face_px and sharp.blur_sigma[1] < moderate.blur_sigma[0]
    assert sharp.motion_px[1] < 1  # shorter than a pixel: no motion streak at all
    targets = [resize_square(sq, SIZE) for sq in squares]
    scores = {}
    for preset in ("sharp", "moderate"):
        out, _ = degrade.degrade_batch(squares, preset, np.random.default_rng(0), SIZE, CROP_SCALE)
        scores[preset] = np.mean([psnr(o, t) for o, t in zip(out, targets)])
    assert scores["sharp"] > scores["moderate"] + 1


def test_moderate_is_a_small_face():
    severity = degrade.PRESETS["moderate"]
    assert 18 <= severity.face_px[0] and severity.face_px[1] <= 30 and 30 <= np.mean(severity.crf) <= 34


def test_h264_at_high_crf_loses_more_than_at_low_crf(squares):
    small = [resize_square(sq, 48) for sq in squares]
    low = degrade.h264_roundtrip(small, crf=18)
    high = degrade.h264_roundtrip(small, crf=44)
    assert all(out.shape == img.shape for out, img in zip(high, small))
    assert np.mean([psnr(o, s) for o, s in zip(high, small)]) < np.mean([psnr(o, s) for o, s in zip(low, small)]) - 5


def test_h264_handles_odd_sizes():
    odd = [np.full((19, 27, 3), 120, np.uint8), np.full((33, 33, 3), 60, np.uint8)]
    out = degrade.h264_roundtrip(odd, crf=30)
    assert [o.shape for o in out] == [(19, 27, 3), (33, 33, 3)]
    assert abs(float(out[0].mean()) - 120) < 3 and abs(float(out[1].mean()) - 60) < 3


def luma(image: np.ndarray) -> float:
    return float((image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).mean())


def test_low_light_lowers_mean_luma(squares):
    rng = np.random.default_rng(0)
    bright = degrade.sensor_image(squares[0], params_with(), CROP_SCALE, rng)
    dark = degrade.sensor_image(squares[0], params_with(exposure=0.15, auto_gain=0.4), CROP_SCALE, rng)
    assert luma(dark) < 0.7 * luma(bright)


def test_over_exposure_raises_mean_luma_and_daylight_presets_err_both_ways(squares):
    rng = np.random.default_rng(0)
    normal = degrade.sensor_image(squares[0], params_with(), CROP_SCALE, rng)
    bright = degrade.sensor_image(squares[0], params_with(exposure=1.6, auto_gain=0.7), CROP_SCALE, rng)
    assert luma(bright) > 1.03 * luma(normal)
    # A model trained only on faces rendered darker than the truth learns to brighten every face.
    for preset in ("mild", "moderate", "severe"):
        low, high = degrade.PRESETS[preset].exposure
        assert low < 1.0 < high


def test_editing_a_preset_or_the_augmentation_changes_the_cache_fingerprint(monkeypatch):
    before = degrade.fingerprint()
    assert before == degrade.fingerprint()
    harder = degrade.Severity(**{**degrade.PRESETS["moderate"].__dict__, "crf": (40, 44)})
    edited = dict(degrade.PRESETS, moderate=harder)
    monkeypatch.setattr(degrade, "PRESETS", edited)
    assert degrade.fingerprint() != before
    assert degrade.fingerprint({"max_shift": 0.04}) != degrade.fingerprint({"max_shift": 0.08})


def test_a_training_mix_decides_the_presets_of_the_cached_pairs_and_names_their_cache(tmp_path):
    require_faces()
    assert set(degrade.sample_training_presets(50, np.random.default_rng(0), {"night": 1.0})) == {"night"}
    with pytest.raises(ValueError, match="unknown presets"):
        degrade.sample_training_presets(5, np.random.default_rng(0), {"dusk": 1.0})
    records = split_records().train[:4]
    day = training_shards(records, 1, 32, 1.5, tmp_path, workers=1, mix={"mild": 1.0})
    night = training_shards(records, 1, 32, 1.5, tmp_path, workers=1, mix={"night": 1.0})
    assert day[0].parent != night[0].parent  # a cache of one mix is never read for another
    day_inputs, targets = load_shards(day)
    night_inputs, _ = load_shards(night)
    assert night_inputs.mean() < day_inputs.mean() - 30 and abs(day_inputs.mean() - targets.mean()) < 20


def high_frequency_energy(image: np.ndarray) -> float:
    grey = image.astype(np.float64).mean(axis=2)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean())))
    h, w = spectrum.shape
    yy, xx = np.mgrid[:h, :w]
    far = np.hypot(yy - h / 2, xx - w / 2) > min(h, w) / 4
    return float(spectrum[far].sum() / spectrum.sum())


def test_downscale_removes_high_frequencies(squares):
    sensed = degrade.sensor_image(squares[0], params_with(face_px=16), CROP_SCALE, np.random.default_rng(0))
    assert sensed.shape == (24, 24, 3)
    upscaled = resize_square(sensed, SIZE)
    assert high_frequency_energy(upscaled) < 0.6 * high_frequency_energy(resize_square(squares[0], SIZE))


def test_blur_removes_high_frequencies(squares):
    rng = np.random.default_rng(0)
    sharp = degrade.sensor_image(squares[0], params_with(face_px=60), CROP_SCALE, rng)
    blurred = degrade.sensor_image(squares[0], params_with(face_px=60, blur_sigma=1.2, motion_px=3.0), CROP_SCALE, rng)
    assert high_frequency_energy(blurred) < 0.7 * high_frequency_energy(sharp)


def test_noise_raises_variance_of_a_flat_patch():
    flat = np.full((96, 96, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    clean = degrade.sensor_image(flat, params_with(face_px=64), CROP_SCALE, rng)
    noisy = degrade.sensor_image(flat, params_with(face_px=64, shot_noise=4.0, read_noise=3.0), CROP_SCALE, rng)
    assert clean.astype(float).std() < 0.5
    assert noisy.astype(float).std() > 2.0
    assert abs(float(noisy.mean()) - 128) < 4  # noise, not a brightness change


def test_jpeg_roundtrip_changes_pixels_but_keeps_shape(squares):
    small = resize_square(squares[0], 40)
    out = degrade.jpeg_roundtrip(small, 30)
    assert out.shape == small.shape and 20 < psnr(out, small) < 45


def test_the_shipped_model_was_trained_on_every_evaluation_preset():
    spec = TorchScriptRestorer.load(evaluate.DEFAULT_MODEL, device="cpu").spec
    mix = spec.training["degradations"]["training_mix"]
    assert set(degrade.EVAL_PRESETS) <= {name for name, weight in mix.items() if weight > 0}
    assert set(degrade.sample_training_presets(2000, np.random.default_rng(0), mix)) == set(mix)


def test_identity_split_is_fixed_and_disjoint():
    ids = list(range(100, 350))
    train, val = split_identities(ids)
    assert (train, val) == split_identities(list(reversed(ids)))
    assert not set(train) & set(val) and len(val) == 25 and len(train) + len(val) == 250


def test_split_drops_faces_too_small_in_the_source():
    require_faces()
    split = split_records()
    assert all(r.face_px_in_source >= 64 for r in split.train + split.val)
    assert {r.identity for r in split.val} <= set(split.val_identities)
    assert not {r.identity for r in split.train} & set(split.val_identities)
