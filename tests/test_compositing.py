"""Compositing: paste leaves everything outside the crop boxes alone and has no seam; overlay
and side-by-side keep to the frame."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from streamer.compositing import CompositeOptions, compose, face_mask
from streamer.model_contract import square_crop_box
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
    # fully replaced in the middle; the ramp to the face's own pixels takes the outer part of the oval
    assert (output[cy - 5 : cy + 5, cx - 5 : cx + 5] == 230).all()


def test_paste_has_no_seam_at_the_crop_border():
    image = np.full((HEIGHT, WIDTH, 3), 20, np.uint8)
    face = restored_face(Box(150, 70, 40, 40), value=250)
    output = compose(image, [face], "paste").astype(int)
    x, y, side = int(face.crop_box.x), int(face.crop_box.y), int(face.crop_box.w)
    row = output[y + side // 2, x - 2 : x + side // 2, 0]  # from outside the box to its centre
    assert row[2] == 20  # the border pixel is untouched
    assert np.abs(np.diff(row)).max() < 0.2 * (250 - 20)  # no step anywhere on the way in


@pytest.mark.parametrize("face_px", [10, 12, 43, 100])
@pytest.mark.parametrize("feather", [0.0, 0.15, 0.4])
def test_face_mask_covers_the_face_and_nothing_beyond_its_ramp(face_px, feather):
    side = int(1.5 * face_px) + 2
    face = Box((side - face_px) / 2, (side - face_px) / 2, face_px, face_px)
    weights = face_mask(side, face, feather)[:, :, 0]
    border = np.concatenate([weights[0], weights[-1], weights[:, 0], weights[:, -1]])
    assert (border == 0).all()
    assert weights[side // 2, side // 2] == 1.0
    beside = int(np.ceil(face.x + face.w))  # the first column right of the face box
    assert (weights[:, beside:] == 0).all() and (weights[:, : int(face.x)] == 0).all()


def test_faces_without_a_restored_crop_are_left_alone():
    image = frame()
    unrestored = Face(Box(60, 50, 30, 30), 0.9, track_id=1, crop_box=Box(45, 35, 60, 60))
    for mode in ("paste", "overlay"):
        np.testing.assert_array_equal(compose(image, [unrestored], mode), image)


def textured_face(box: Box, track_id: int, seed: int) -> Face:
    restored = np.random.default_rng(seed).integers(128, 256, size=(S, S, 3), dtype=np.uint8)
    return Face(box, 0.9, track_id=track_id, crop_box=square_crop_box(box, 1.5), crop=restored, restored=restored)


def find_inset(output: np.ndarray, restored: np.ndarray) -> tuple[int, int] | None:
    """Top-left corner where `restored` appears pixel for pixel in `output`, or None."""
    first = restored[0, 0]
    for y, x in zip(*np.nonzero((output == first).all(axis=2))):
        if output[y : y + S, x : x + S].shape == restored.shape and np.array_equal(
            output[y : y + S, x : x + S], restored
        ):
            return int(x), int(y)
    return None


@pytest.mark.parametrize("face", FACES, ids=lambda face: f"track{face.track_id}")
def test_overlay_shows_the_model_output_at_its_own_size_inside_the_frame(face):
    image = frame()
    shown = textured_face(face.box, face.track_id, seed=face.track_id)
    output = compose(image, [shown], "overlay", CompositeOptions())
    assert output.shape == image.shape
    corner = find_inset(output, shown.restored)  # unscaled, unrelit: the model's own pixels
    assert corner is not None
    inset = Box(corner[0], corner[1], S, S)
    assert not (
        inset.x < face.box.x + face.box.w
        and face.box.x < inset.x + S
        and inset.y < face.box.y + face.box.h
        and face.box.y < inset.y + S
    )


def crowd(count: int, side: float = 20.0, gap: float = 6.0) -> list[Face]:
    """A row of `count` faces (like a queue at a counter), every other one not restored."""
    faces = []
    for k in range(count):
        box = Box(20 + k * (side + gap), 70, side, side)
        faces.append(textured_face(box, k + 1, seed=k) if k % 2 == 0 else Face(box, 0.9, track_id=k + 1))
    return faces


@pytest.mark.parametrize("count", [2, 5, 8, 11])
def test_insets_and_labels_never_cover_a_face_or_each_other(count):
    from streamer.compositing import _inset_size, _label_text, place_insets

    faces = crowd(count)
    shown = [face for face in faces if face.restored is not None]
    options = CompositeOptions()
    sizes = [_inset_size(face.restored, _label_text(face, options), options) for face in shown]
    places = place_insets([face.box for face in shown], sizes, WIDTH, HEIGHT, [face.box for face in faces])
    placed = [place for place in places if place is not None]
    assert len(placed) == len(shown)  # this frame has room for all of them
    for k, place in enumerate(placed):
        assert 0 <= place.x and place.x + place.w <= WIDTH and 0 <= place.y and place.y + place.h <= HEIGHT
        for other in placed[k + 1 :] + [face.box for face in faces]:
            assert place.iou(other) == 0, (place, other)
    output = compose(frame(), faces, "overlay", options)
    assert all(find_inset(output, face.restored) is not None for face in shown)


def test_an_inset_with_no_free_place_is_left_out_rather_than_cover_a_face():
    from streamer.compositing import place_insets

    boxes = [Box(x, y, 30, 30) for x in range(0, 60, 30) for y in range(0, 60, 30)]  # a 60 x 60 frame full of faces
    places = place_insets(boxes[:1], [(32, 44, 32)], 60, 60, boxes)
    assert places == [None]


def test_overlay_labels_each_inset_enhanced_with_its_track_id():
    image = frame()
    face = textured_face(Box(60, 50, 30, 30), 7, seed=1)
    plain = compose(image, [face], "overlay", CompositeOptions(label=False))
    labelled = compose(image, [face], "overlay", CompositeOptions(label=True))
    assert (plain != labelled).any()  # the track id is written
    assert (plain != image).sum() > (S * S)  # and even without it, the "enhanced" strip


def test_side_by_side_is_input_then_output():
    image = frame()
    output = compose(image, FACES, "side-by-side")
    assert output.shape == (HEIGHT, 2 * WIDTH, 3)
    np.testing.assert_array_equal(output[:, :WIDTH], image)
    np.testing.assert_array_equal(output[:, WIDTH:], compose(image, FACES, "paste"))


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="unknown compositing mode 'blend'"):
        compose(frame(), FACES, "blend")


def test_a_super_resolving_models_larger_output_is_pasted_onto_its_crop_box():
    image = frame()
    face = restored_face(Box(150, 70, 40, 40), value=230)
    bigger = dataclasses.replace(face, restored=np.full((2 * S, 2 * S, 3), 230, np.uint8))  # output_size 2S
    output = compose(image, [bigger], "paste")  # keep_brightness compares the 2S output with the S input
    cx, cy = (int(c) for c in face.box.center)
    # fully replaced in the middle of the oval mask, as for an S-sized output
    assert (output[cy - 5 : cy + 5, cx - 5 : cx + 5] == 230).all()
    outside = ~inside_any([face])
    np.testing.assert_array_equal(output[outside], image[outside])


def scattered_faces(seed: int, count: int) -> list[Face]:
    """`count` faces of 10-40 px anywhere (some sticking out of the frame), restored or not,
    verified, unverified or not asked: crowded enough that some insets land far from their face."""
    rng = np.random.default_rng(seed)
    faces = []
    for k in range(count):
        side = float(rng.integers(10, 41))
        box = Box(float(rng.integers(-8, WIDTH - 4)), float(rng.integers(-8, HEIGHT - 4)), side, side)
        face = textured_face(box, track_id=int(rng.integers(1, 200)), seed=seed * 100 + k)
        if rng.random() < 0.25:
            face = dataclasses.replace(face, restored=None)
        faces.append(dataclasses.replace(face, verified=[None, True, False][int(rng.integers(0, 3))]))
    return faces


def outside_rects(shape: tuple[int, ...], rects) -> np.ndarray:
    outside = np.ones(shape[:2], bool)
    for x0, y0, x1, y1 in rects:
        outside[y0:y1, x0:x1] = False
    return outside


@pytest.mark.parametrize("mode", ["paste", "overlay"])
@pytest.mark.parametrize("inset_scale", [1, 2])
def test_every_pixel_compose_changes_lies_inside_the_rectangles_it_says_it_drew_in(mode, inset_scale):
    """The write stage compares only inside Composite.touched: a changed pixel outside it would be
    written as the decoded one (an inset, a label or a box lost from the output)."""
    from streamer.compositing import compose_touching

    far_from_faces = 0
    for seed in range(40):
        image = frame(seed)
        faces = scattered_faces(seed, count=1 + seed % 9)
        composite = compose_touching(image, faces, mode, CompositeOptions(inset_scale=inset_scale))
        changed = (composite.image != image).any(axis=2)
        assert not (changed & outside_rects(image.shape, composite.touched)).any(), f"seed {seed}"
        assert all(0 <= x0 < x1 <= WIDTH and 0 <= y0 < y1 <= HEIGHT for x0, y0, x1, y1 in composite.touched)
        far_from_faces += int((changed & inside_any_box(faces, grown_by=S)).sum() < changed.sum())
    assert far_from_faces > 0 or mode == "paste"  # the layouts did put insets beyond their faces' reach


def inside_any_box(faces: list[Face], grown_by: int) -> np.ndarray:
    covered = np.zeros((HEIGHT, WIDTH), bool)
    for face in faces:
        x, y = int(face.box.x) - grown_by, int(face.box.y) - grown_by
        covered[
            max(0, y) : int(face.box.y + face.box.h) + grown_by, max(0, x) : int(face.box.x + face.box.w) + grown_by
        ] = True
    return covered


def test_side_by_side_says_nothing_of_where_it_drew():
    from streamer.compositing import compose_touching

    assert compose_touching(frame(), FACES, "side-by-side").touched is None
