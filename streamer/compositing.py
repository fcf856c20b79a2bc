"""Compositing: put the restored faces into the output frame.

Modes:
- `paste`: each restored crop is resized back to its crop box and blended in through a mask that
  is 1 over the face and falls smoothly to exactly 0 at the crop's border, so there is no seam
  and every pixel outside the crop boxes keeps its input value.
- `overlay`: each restored face is drawn enlarged as an inset beside its box, with a border and
  its track id, for an operator watching a live view.
- `side-by-side`: input | paste result, twice as wide, for review.

In every mode, a face in a well-lit frame first gets back its own brightness (`brightness`:
the model cannot tell a dark face from a dark picture; the frame can).

`compose` never changes the input array; it returns a new image.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from streamer import brightness
from streamer.model_contract import Region, face_region_in_crop, resize_square
from streamer.values import Box, Face, check_rgb_image

MODES = ("paste", "overlay", "side-by-side")
# The mask's shape: |u|^p + |v|^p = 1 is a circle for p = 2 and a rounded square for p = 4,
# which covers more of the square crop than a circle while still having no corners.
MASK_EXPONENT = 4.0
INSET_MARGIN_PX = 4  # gap between a face box and its inset
INSET_MAX_FRACTION = 0.5  # an inset is at most this fraction of the frame's shorter side
BORDER_RGB = (255, 220, 0)
LABEL_FONT_SCALE = 0.4


@dataclass(frozen=True)
class CompositeOptions:
    feather: float = 0.15  # width of the blend ramp, as a fraction of the crop side
    inset_scale: float = 2.0  # overlay: inset side / crop side
    label: bool = True  # overlay: write the track id on the inset
    keep_brightness: bool = True  # in a lit frame a face keeps its own brightness (needs each face's crop)

    def __post_init__(self) -> None:
        if not 0.0 <= self.feather <= 0.5:
            raise ValueError(f"CompositeOptions: feather must be in [0, 0.5], got {self.feather}")
        if self.inset_scale <= 0:
            raise ValueError(f"CompositeOptions: inset_scale must be > 0, got {self.inset_scale}")


def compose(
    image: np.ndarray, faces: Sequence[Face], mode: str = "paste", options: CompositeOptions = CompositeOptions()
) -> np.ndarray:
    """A new image with the faces' `restored` crops composited in; faces without one are skipped.
    paste and overlay keep the size; side-by-side returns H x 2W."""
    check_rgb_image(image, "compose input")
    restored = [face for face in faces if face.restored is not None and face.crop_box is not None]
    if options.keep_brightness and restored:
        restored = _with_kept_brightness(image, restored)
    if mode == "paste":
        return paste_faces(image, restored, options.feather)
    if mode == "overlay":
        return overlay_faces(image, restored, options)
    if mode == "side-by-side":
        return np.hstack((image, paste_faces(image, restored, options.feather)))
    raise ValueError(f"unknown compositing mode {mode!r}; expected one of {', '.join(MODES)}")


def _with_kept_brightness(image: np.ndarray, faces: Sequence[Face]) -> list[Face]:
    """The faces with their restored crops relit as far as the frame's light says (`brightness`)."""
    luma = brightness.frame_luma(image)
    if brightness.kept_share(luma) == 0.0:
        return list(faces)
    return [dataclasses.replace(face, restored=_kept_brightness(face, luma)) for face in faces]


def _kept_brightness(face: Face, luma: float) -> np.ndarray:
    if face.crop is None:
        raise ValueError("compose: keep_brightness needs each restored face's input crop (Face.crop)")
    region = face_region_in_crop(face.box, face.crop_box, face.crop.shape[0])
    return restored_as_pasted(face.crop, face.restored, region, luma)


def restored_as_pasted(crop: np.ndarray, restored: np.ndarray, region: Region, frame_luma: float) -> np.ndarray:
    """The restored crop as `compose` pastes it (keep_brightness on) into a frame of mean luma
    `frame_luma`: with as much of the input crop's brightness as the frame's light says. The one
    rule, also used by training's evaluation and video check to score what the pipeline shows."""
    return brightness.keep_face_brightness(crop, restored, region, brightness.kept_share(frame_luma))


@lru_cache(maxsize=64)
def blend_mask(side: int, feather: float) -> np.ndarray:
    """side x side x 1 float32 weights: 1 in the middle, a smooth ramp `feather` x side wide,
    exactly 0 on the outermost pixels. Cached: faces of one size share it; do not modify."""
    u = np.abs(np.linspace(-1.0, 1.0, side, dtype=np.float32))
    radius = (u[None, :] ** MASK_EXPONENT + u[:, None] ** MASK_EXPONENT) ** (1.0 / MASK_EXPONENT)
    if feather > 0:
        # radius runs 0..1 over half the side, so a ramp of feather x side is 2 x feather in radius
        ramp = np.clip((1.0 - radius) / (2.0 * feather), 0.0, 1.0)
        weights = ramp * ramp * (3.0 - 2.0 * ramp)  # smoothstep: no kink where the ramp starts
    else:
        weights = (radius < 1.0).astype(np.float32)
    weights[[0, -1], :] = 0.0
    weights[:, [0, -1]] = 0.0
    weights.flags.writeable = False
    return weights[:, :, None]


def paste_faces(image: np.ndarray, faces: Sequence[Face], feather: float) -> np.ndarray:
    """A copy of `image` with each face's restored crop blended over its crop box."""
    output = image.copy()
    for face in faces:
        side = int(face.crop_box.w)
        patch = resize_square(face.restored, side)
        blend_into(output, patch, blend_mask(side, feather), int(face.crop_box.x), int(face.crop_box.y))
    return output


def blend_into(target: np.ndarray, patch: np.ndarray, weights: np.ndarray, left: int, top: int) -> None:
    """target = target + weights * (patch - target) where the patch overlaps target; a weight of 0
    leaves the pixel exactly as it was."""
    height, width = target.shape[:2]
    x0, y0 = max(0, left), max(0, top)
    x1, y1 = min(width, left + patch.shape[1]), min(height, top + patch.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    inside = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
    under = target[y0:y1, x0:x1].astype(np.float32)
    mixed = under + weights[inside] * (patch[inside].astype(np.float32) - under)
    target[y0:y1, x0:x1] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def overlay_faces(image: np.ndarray, faces: Sequence[Face], options: CompositeOptions) -> np.ndarray:
    """A copy of `image` with each restored face drawn enlarged beside its box, inside the frame,
    where it covers the fewest faces and earlier insets."""
    output = image.copy()
    height, width = image.shape[:2]
    taken = [face.box for face in faces]
    for face in faces:
        side = _inset_side(face.crop_box.w * options.inset_scale, width, height)
        left, top = place_inset(face.box, side, width, height, taken)
        taken.append(Box(left, top, side, side))
        output[top : top + side, left : left + side] = resize_square(face.restored, side)
        _draw_box(output, face.box)
        cv2.rectangle(output, (left, top), (left + side - 1, top + side - 1), BORDER_RGB, 1)
        if options.label and face.track_id >= 0:
            cv2.putText(output, f"#{face.track_id}", (left + 3, top + 12), cv2.FONT_HERSHEY_SIMPLEX,
                        LABEL_FONT_SCALE, BORDER_RGB, 1, cv2.LINE_AA)
    return output


def _inset_side(wanted: float, width: int, height: int) -> int:
    return int(max(8, min(round(wanted), INSET_MAX_FRACTION * min(width, height))))


def place_inset(box: Box, side: int, width: int, height: int, taken: Sequence[Box] = ()) -> tuple[int, int]:
    """Top-left corner of a side x side inset for the face in `box`: right of it, left, below or
    above (the first of these that covers the least of the `taken` boxes), moved inside the frame."""
    cx, cy = box.center
    candidates = [
        (box.x + box.w + INSET_MARGIN_PX, cy - side / 2.0),
        (box.x - INSET_MARGIN_PX - side, cy - side / 2.0),
        (cx - side / 2.0, box.y + box.h + INSET_MARGIN_PX),
        (cx - side / 2.0, box.y - INSET_MARGIN_PX - side),
    ]
    inside = [
        (min(max(0, int(round(x))), width - side), min(max(0, int(round(y))), height - side)) for x, y in candidates
    ]
    return min(inside, key=lambda corner: _covered_area(Box(corner[0], corner[1], side, side), taken))


def _covered_area(inset: Box, taken: Sequence[Box]) -> float:
    # intersection = IoU x union, and union = a + b - intersection, so intersection = IoU (a + b) / (1 + IoU)
    return sum(inset.iou(other) * (inset.area + other.area) / (1.0 + inset.iou(other)) for other in taken)


def _draw_box(image: np.ndarray, box: Box) -> None:
    corner = (int(round(box.x)), int(round(box.y)))
    opposite = (int(round(box.x + box.w)) - 1, int(round(box.y + box.h)) - 1)
    cv2.rectangle(image, corner, opposite, BORDER_RGB, 1)
