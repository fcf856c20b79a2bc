"""Brightness: in a lit frame a restored face keeps its own brightness and colour balance but the
model's detail; in a dark frame the model relights it."""

from __future__ import annotations

import numpy as np
import pytest

from streamer import brightness
from streamer.compositing import CompositeOptions, compose
from streamer.model_contract import face_region_in_crop, square_crop_box
from streamer.values import Box, Face

S = 64
BOX = Box(100, 60, 40, 40)


def frame(luma: int) -> np.ndarray:
    return np.full((240, 320, 3), luma, np.uint8)


def dark_face_and_a_brightened_restoration() -> tuple[np.ndarray, np.ndarray]:
    """A dark, noisy input crop and what a model that relights faces makes of it: smoother, 1.4x
    brighter and bluer."""
    rng = np.random.default_rng(0)
    pattern = np.linspace(25, 55, S)[None, :, None] * np.ones((S, 1, 3))
    crop = np.clip(pattern + rng.normal(0, 6, (S, S, 3)), 0, 255).astype(np.uint8)
    restored = np.clip(pattern * 1.4 * np.array([1.0, 1.0, 1.2]), 0, 255).astype(np.uint8)
    return crop, restored


def pasted_face(luma: int, options: CompositeOptions = CompositeOptions()) -> tuple[np.ndarray, Face]:
    crop, restored = dark_face_and_a_brightened_restoration()
    face = Face(BOX, 0.9, crop_box=square_crop_box(BOX, 1.5), crop=crop, restored=restored)
    output = compose(frame(luma), [face], "paste", options)
    x, y, w, h = (int(v) for v in (BOX.x, BOX.y, BOX.w, BOX.h))
    return output[y + 8 : y + h - 8, x + 8 : x + w - 8].reshape(-1, 3).mean(axis=0), face


def face_means(image: np.ndarray, face: Face) -> np.ndarray:
    x0, y0, x1, y1 = face_region_in_crop(face.box, face.crop_box, S)
    return image[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)


def test_in_a_lit_frame_a_dark_face_keeps_its_brightness_and_colour():
    pasted, face = pasted_face(luma=120)
    np.testing.assert_allclose(pasted, face_means(face.crop, face), atol=2.0)


def test_in_a_dark_frame_the_model_relights_the_face():
    pasted, face = pasted_face(luma=30)
    np.testing.assert_allclose(pasted, face_means(face.restored, face), atol=2.0)
    assert (pasted > face_means(face.crop, face) + 8).all()


def test_keep_brightness_off_lets_the_model_relight_a_face_in_a_lit_frame():
    pasted, face = pasted_face(luma=120, options=CompositeOptions(keep_brightness=False))
    np.testing.assert_allclose(pasted, face_means(face.restored, face), atol=2.0)


def test_kept_brightness_keeps_the_models_detail():
    crop, restored = dark_face_and_a_brightened_restoration()
    kept = brightness.keep_face_brightness(crop, restored, (0, 0, S, S), share=1.0)
    # the model's output was smooth: so is the result (a gain per channel, not the noisy input)
    assert np.abs(np.diff(kept.astype(float), axis=0)).mean() < 0.5
    assert np.abs(np.diff(crop.astype(float), axis=0)).mean() > 4


def test_the_kept_share_ramps_from_dark_to_lit_frames():
    assert brightness.kept_share(brightness.DARK_FRAME_LUMA) == 0.0
    assert brightness.kept_share(brightness.LIT_FRAME_LUMA) == 1.0
    middle = (brightness.DARK_FRAME_LUMA + brightness.LIT_FRAME_LUMA) / 2
    assert brightness.kept_share(middle) == pytest.approx(0.5)


def test_frame_luma_is_the_bt601_luma_of_the_mean_colour():
    red, green = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)
    red[..., 0], green[..., 1] = 200, 200
    assert brightness.frame_luma(frame(90)) == pytest.approx(90.0)
    assert brightness.frame_luma(green) == pytest.approx(0.587 * 200)
    assert brightness.frame_luma(red) == pytest.approx(0.299 * 200)


def test_keeping_brightness_needs_the_input_crop():
    _, face = pasted_face(luma=120)
    faceless = Face(face.box, 0.9, crop_box=face.crop_box, restored=face.restored)
    with pytest.raises(ValueError, match="input crop"):
        compose(frame(120), [faceless], "paste")
