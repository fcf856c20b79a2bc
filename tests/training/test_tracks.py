"""Synthetic face tracks from stills (training/tracks.py): deterministic, really temporal H.264."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.faces import require_faces
from training import tracks
from training.data import Augment, load_photo, split_records

SIZE, CROP_SCALE = 64, 1.5


@pytest.fixture(scope="module")
def faces():
    require_faces()
    records = split_records().val[:6]
    return [load_photo(r.path) for r in records], [r.face_box for r in records]


TRAINING_AUGMENT = Augment()


def make(
    faces,
    seed,
    presets=("moderate", "sharp", "wide", "night", "severe", "mild"),
    spec=tracks.TRAINING_SPEC,
    augment=TRAINING_AUGMENT,
):
    photos, boxes = faces
    return tracks.make_tracks(
        photos, boxes, list(presets), np.random.default_rng(seed), SIZE, CROP_SCALE, spec, augment
    )


def test_tracks_are_deterministic_under_a_seed_and_differ_between_seeds(faces):
    first, again, other = make(faces, 3), make(faces, 3), make(faces, 4)
    assert first[0].shape == (6, tracks.DEFAULT_FRAMES, SIZE, SIZE, 3) and first[1].shape == (6, SIZE, SIZE, 3)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_the_h264_sequence_has_one_i_frame_then_p_frames():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    moving = [[np.roll(base, k, axis=1) for k in range(5)], [np.roll(base, -k, axis=0) for k in range(5)]]
    decoded, types = tracks.h264_sequence_roundtrip(moving, crf=30)
    assert types == ["I", "P", "P", "P", "P"]
    assert [len(t) for t in decoded] == [5, 5] and decoded[0][0].shape == (40, 40, 3)


def test_every_frame_has_its_own_noise_and_the_target_is_the_newest_clean_frame(faces):
    inputs, targets = make(faces, 5, presets=["moderate"] * 6, spec=tracks.EVAL_SPEC, augment=None)

    def psnr(a, b):
        return 10 * np.log10(255.0**2 / np.mean((a.astype(float) - b.astype(float)) ** 2))

    centre = slice(16, 48)
    newest = np.mean([psnr(inputs[i, -1, centre, centre], targets[i, centre, centre]) for i in range(6)])
    oldest = np.mean([psnr(inputs[i, 0, centre, centre], targets[i, centre, centre]) for i in range(6)])
    assert newest > oldest + 0.5  # the face moved: the target is aligned with the newest frame only
    assert all(not np.array_equal(inputs[i, 3], inputs[i, 4]) for i in range(6))


def test_last_frames_cuts_tracks_for_one_frame_and_k_frame_models():
    inputs = np.arange(2 * 5 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 5, 2, 2, 3)
    targets = np.zeros((2, 2, 2, 3), np.uint8)
    one, _ = tracks.last_frames(inputs, targets, 1)
    three, _ = tracks.last_frames(inputs, targets, 3)
    assert np.array_equal(one, inputs[:, -1]) and np.array_equal(three, inputs[:, 2:])
    with pytest.raises(ValueError, match="hold 5 frames"):
        tracks.last_frames(inputs, targets, 6)
