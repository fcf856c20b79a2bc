"""Compositing: paste leaves everything outside the crop boxes alone and has no seam; overlay
and side-by-side keep to the frame."""
from __future__ import annotations

import numpy as np
import pytest

from streamer.compositing import CompositeOptions, blend_mask, compose, place_inset
from streamer.model_contract import resize_square, square_crop_box
from streamer.values import Box, Face

HEIGHT, WIDTH, S = 180, 320, 32


def frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 120, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)


def restored_face(box: Box, value: int = 230, track_id: int = 1) -> Face:
    crop_box = square_crop_box(box, 2.0)
    restored = np.full((S, S, 3), value, np.uint8)
    # the input crop as bright as the output: keep_brightness leaves these faces as they are
    return Face(box, 0.9, track_id=track_id, crop_box=crop_box, crop=restored.copy(), restored=restored)


def inside_any(faces: list[Face]) -> np.ndarray:
    covered = np.zeros((HEIGHT, WIDTH), bool)
    for face in faces:
        x, y, side = int(face.crop_box.x), int(face.crop_box.y), int(face.crop_box.w)
        covered[max(0, y) : y + side, max(0, x) : x + side] = True
    return covered


FACES = [
    restored_face(Box(60, 50, 30, 30), track_id=1),
    restored_face(Box(80, 60, 24, 24), value=10, track_id=2),  # overlaps the first
    restored_face(Box(300, 160, 30, 30), track_id=3),  # crop box sticks out right and bottom
    restored_face(Box(-10, -8, 20, 20), track_id=4),  # and out left and top
]


def test_paste_changes_only_the_crop_boxes_and_not_the_input():
    image = frame()
    before = image.copy()
    output = compose(image, FACES, "paste")
    np.testing.assert_array_equal(image, before)
    outside = ~inside_any(FACES)
    np.testing.assert_array_equal(output[outside], image[outside])
    assert output.shape == image.shape and output.dtype == np.uint8


def test_paste_puts_the_restored_face_in_the_middle_of_its_box():
    image = frame()
    face = restored_face(Box(150, 70, 40, 40), value=230)
    output = compose(image, [face], "paste")
    cx, cy = (int(c) for c in face.box.center)
    assert (output[cy - 10 : cy + 10, cx - 10 : cx + 10] == 230).all()


def test_paste_has_no_seam_at_the_crop_border():
    image = np.full((HEIGHT, WIDTH, 3), 20, np.uint8)
    face = restored_face(Box(150, 70, 40, 40), value=250)
    output = compose(image, [face], "paste").astype(int)
    x, y, side = int(face.crop_box.x), int(face.crop_box.y), int(face.crop_box.w)
    row = output[y + side // 2, x - 2 : x + side // 2, 0]  # from outside the box to its centre
    assert row[2] == 20  # the border pixel is untouched
    assert np.abs(np.diff(row)).max() < 0.2 * (250 - 20)  # no step anywhere on the way in


@pytest.mark.parametrize("side", [5, 17, 64, 151])
@pytest.mark.parametrize("feather", [0.0, 0.15, 0.4])
def test_blend_mask_is_zero_on_the_border_and_one_in_the_middle(side, feather):
    weights = blend_mask(side, feather)[:, :, 0]
    border = np.concatenate([weights[0], weights[-1], weights[:, 0], weights[:, -1]])
    assert (border == 0).all()
    assert weights[side // 2, side // 2] == 1.0


def test_faces_without_a_restored_crop_are_left_alone():
    image = frame()
    unrestored = Face(Box(60, 50, 30, 30), 0.9, track_id=1, crop_box=Box(45, 35, 60, 60))
    for mode in ("paste", "overlay"):
        np.testing.assert_array_equal(compose(image, [unrestored], mode), image)


@pytest.mark.parametrize("face", FACES, ids=lambda face: f"track{face.track_id}")
def test_overlay_draws_the_whole_enlarged_face_inside_the_frame(face):
    image = frame()
    options = CompositeOptions(inset_scale=1.5, label=False)
    output = compose(image, [face], "overlay", options)
    assert output.shape == image.shape
    side = int(round(face.crop_box.w * 1.5))
    left, top = place_inset(face.box, side, WIDTH, HEIGHT, [face.box])
    assert 0 <= left and left + side <= WIDTH and 0 <= top and top + side <= HEIGHT
    inset = resize_square(face.restored, side)
    np.testing.assert_array_equal(output[top + 1 : top + side - 1, left + 1 : left + side - 1], inset[1:-1, 1:-1])


def test_insets_of_neighbouring_faces_cover_neither_each_other_nor_the_faces():
    faces = [restored_face(Box(140, 80, 20, 20), track_id=1), restored_face(Box(170, 80, 20, 20), track_id=2)]
    taken = [face.box for face in faces]
    for face in faces:
        left, top = place_inset(face.box, 50, WIDTH, HEIGHT, taken)
        inset = Box(left, top, 50, 50)
        assert all(inset.iou(other) == 0 for other in taken)
        taken.append(inset)


def test_overlay_writes_the_track_id():
    image = frame()
    plain = compose(image, FACES[:1], "overlay", CompositeOptions(label=False))
    labelled = compose(image, FACES[:1], "overlay", CompositeOptions(label=True))
    assert (plain != labelled).any()


def test_side_by_side_is_input_then_output():
    image = frame()
    output = compose(image, FACES, "side-by-side")
    assert output.shape == (HEIGHT, 2 * WIDTH, 3)
    np.testing.assert_array_equal(output[:, :WIDTH], image)
    np.testing.assert_array_equal(output[:, WIDTH:], compose(image, FACES, "paste"))


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="unknown compositing mode 'blend'"):
        compose(frame(), FACES, "blend")
