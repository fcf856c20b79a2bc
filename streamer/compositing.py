"""Compositing: put the restored faces into the output frame.

Modes:
- `paste`: each restored crop is resized back to its crop box and blended in through a mask that
  is 1 over the middle of the face and falls smoothly to exactly 0 at the face's oval
  (`face_mask`), so there is no seam and every pixel outside the faces (a timestamp beside one,
  the clothes below) keeps its input value.
- `overlay`: for an operator watching a live view, each face's restored view (in the pipeline,
  its track's best shot so far: best_shots.BestShotInsets) is drawn as an inset beside its box,
  at the model's own output size, under a label "#ID enhanced"; insets and labels never cover
  a face or each other (an inset with no free place is left out of that frame). A face the
  restore gate did not verify gets a grey box labelled "unverified" and no inset.
- `side-by-side`: input | paste result, twice as wide, for review.

In paste and side-by-side, a face in a well-lit frame first gets back its own brightness
(`brightness`: the model cannot tell a dark face from a dark picture; the frame can). An overlay
inset is the model's output as it is, shown apart from the frame and labelled.

`compose` never changes the input array; it returns a new image. `compose_touching` also says
where it drew (`Composite.touched`), so the write stage looks for changed pixels only there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from streamer import brightness
from streamer.config import CompositingConfig
from streamer.model_contract import Region, face_region_in_crop, resize_square
from streamer.values import Box, Face, check_rgb_image

MODES = ("paste", "overlay", "side-by-side")
# The pasted oval's half-axes, as fractions of the face box's width and height: the detector's box
# runs from the brows to the chin, so the oval reaches a little above and below it, and no wider.
FACE_OVAL = (0.5, 0.6)
INSET_MARGIN_PX = 4  # gap between a face box and its inset
LABEL_STRIP_PX = 12  # overlay: the label strip above each inset
LABEL_BACKGROUND_RGB = (0, 0, 0)
ENHANCED_TEXT = "enhanced"  # every inset is labelled as an enhancement
BORDER_RGB = (255, 220, 0)
UNVERIFIED_RGB = (160, 160, 160)  # overlay: faces found but not restored (the restore gate said no)
LABEL_FONT_SCALE = 0.4


_DEFAULTS = CompositingConfig()  # the schema's defaults (config.py holds them all)
# cv2's anti-aliased text and lines may spill a pixel past the box cv2.getTextSize gives: the
# rectangle said to hold a drawing is this much larger (a wider footprint costs little; a
# narrower one would let a changed pixel go unwritten).
DRAWING_MARGIN_PX = 2

Rect = tuple[int, int, int, int]  # (x0, y0, x1, y1): columns x0..x1-1, rows y0..y1-1 of a frame


@dataclass(frozen=True)
class Composite:
    """A composited frame and the rectangles holding every pixel the compositor may have changed:
    outside them, the image is the input bit for bit. None: anywhere (side-by-side, another size)."""

    image: np.ndarray
    touched: tuple[Rect, ...] | None


@dataclass(frozen=True)
class CompositeOptions:
    feather: float = _DEFAULTS.feather  # width of the blend ramp, as a fraction of the crop side
    inset_scale: int = _DEFAULTS.inset_scale  # overlay: inset side / the model's output side (1: its own pixels)
    label: bool = True  # overlay: write the track id on the inset
    keep_brightness: bool = _DEFAULTS.keep_brightness  # in a lit frame a face keeps its own brightness

    def __post_init__(self) -> None:
        # The config's rules (config.CompositingConfig), not a copy of them.
        CompositingConfig(feather=self.feather, inset_scale=self.inset_scale, keep_brightness=self.keep_brightness)


def compose(
    image: np.ndarray, faces: Sequence[Face], mode: str = "paste", options: CompositeOptions = CompositeOptions()
) -> np.ndarray:
    """A new image with the faces' `restored` crops composited in; faces without one are skipped.
    paste and overlay keep the size; side-by-side returns H x 2W."""
    return compose_touching(image, faces, mode, options).image


def compose_touching(
    image: np.ndarray, faces: Sequence[Face], mode: str = "paste", options: CompositeOptions = CompositeOptions()
) -> Composite:
    """`compose`, with the rectangles it drew in (the crop boxes it pasted; the insets, labels and
    boxes it drew): a frame's faces are a small part of it, so the write stage compares only these
    to find the pixels that changed."""
    check_rgb_image(image, "compose input")
    if mode == "overlay":  # the model's own output, beside the faces: nothing pasted, nothing relit
        output = image.copy()
        touched = overlay_into(output, [face for face in faces if face.verified is not False], options)
        touched += mark_unverified(output, [face for face in faces if face.verified is False])
        return Composite(output, _inside(touched, output.shape))
    restored = [face for face in faces if face.restored is not None and face.crop_box is not None]
    if options.keep_brightness and restored:
        restored = _with_kept_brightness(image, restored)
    if mode == "paste":
        output = image.copy()
        return Composite(output, _inside(paste_into(output, restored, options.feather), output.shape))
    if mode == "side-by-side":
        return Composite(np.hstack((image, paste_faces(image, restored, options.feather))), None)
    raise ValueError(f"unknown compositing mode {mode!r}; expected one of {', '.join(MODES)}")


def _inside(rects: Sequence[Rect | None], shape: tuple[int, ...]) -> tuple[Rect, ...]:
    """The rectangles clipped to a frame of `shape`; those wholly outside it left out."""
    height, width = shape[:2]
    clipped = ((max(0, x0), max(0, y0), min(width, x1), min(height, y1)) for x0, y0, x1, y1 in filter(None, rects))
    return tuple(rect for rect in clipped if rect[0] < rect[2] and rect[1] < rect[3])


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
    if restored.shape != crop.shape:  # a super-resolving model (contract v2 output_size): compare at its size
        scale = restored.shape[0] / crop.shape[0]
        x0, y0, x1, y1 = (round(v * scale) for v in region)
        region, crop = (x0, y0, x1, y1), resize_square(crop, restored.shape[0])
    return brightness.keep_face_brightness(crop, restored, region, brightness.kept_share(frame_luma))


def face_mask(side: int, face: Box, feather: float) -> np.ndarray:
    """side x side x 1 float32 weights over a crop square for the face at `face` (in the square's
    pixels): 1 over the middle of the face, a smooth ramp `feather` x the square's side wide (no
    seam) down to exactly 0 at the face's oval (FACE_OVAL), and 0 everywhere beyond it. The paste
    changes the face, not the square around it: a timestamp or a sign beside the face keeps every
    pixel."""
    cx, cy = face.x + face.w / 2.0, face.y + face.h / 2.0
    half_w, half_h = FACE_OVAL[0] * face.w, FACE_OVAL[1] * face.h
    xs = (np.arange(side, dtype=np.float32) + 0.5 - cx) / half_w
    ys = (np.arange(side, dtype=np.float32) + 0.5 - cy) / half_h
    radius = np.sqrt(xs[None, :] ** 2 + ys[:, None] ** 2)
    # (1 - radius) x the oval's smaller half-axis is about the distance inside the oval, in pixels
    ramp_px = min(max(1.0, feather * side), 0.75 * min(half_w, half_h))  # keep a plateau of 1
    ramp = np.clip((1.0 - radius) * min(half_w, half_h) / ramp_px, 0.0, 1.0)
    weights = ramp * ramp * (3.0 - 2.0 * ramp)
    weights[[0, -1], :] = 0.0
    weights[:, [0, -1]] = 0.0
    return weights[:, :, None]


def paste_faces(image: np.ndarray, faces: Sequence[Face], feather: float) -> np.ndarray:
    """A copy of `image` with each face's restored crop blended over its face (face_mask): the
    rest of the crop square keeps its input pixels."""
    output = image.copy()
    paste_into(output, faces, feather)
    return output


def paste_into(output: np.ndarray, faces: Sequence[Face], feather: float) -> list[Rect | None]:
    """paste_faces in place; the rectangle each face's blend covered (None: outside the frame)."""
    touched = []
    for face in faces:
        side = int(face.crop_box.w)
        patch = resize_square(face.restored, side)
        left, top = int(face.crop_box.x), int(face.crop_box.y)
        in_square = Box(face.box.x - left, face.box.y - top, face.box.w, face.box.h)
        touched.append(blend_into(output, patch, face_mask(side, in_square, feather), left, top))
    return touched


def blend_into(target: np.ndarray, patch: np.ndarray, weights: np.ndarray, left: int, top: int) -> Rect | None:
    """target = target + weights * (patch - target) where the patch overlaps target; a weight of 0
    leaves the pixel exactly as it was. The rectangle of target it covered (None: none)."""
    height, width = target.shape[:2]
    x0, y0 = max(0, left), max(0, top)
    x1, y1 = min(width, left + patch.shape[1]), min(height, top + patch.shape[0])
    if x1 <= x0 or y1 <= y0:
        return None
    inside = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
    under = target[y0:y1, x0:x1].astype(np.float32)
    mixed = under + weights[inside] * (patch[inside].astype(np.float32) - under)
    target[y0:y1, x0:x1] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return x0, y0, x1, y1


def overlay_into(output: np.ndarray, faces: Sequence[Face], options: CompositeOptions) -> list[Rect]:
    """Draw (in place) each restored face's inset beside its box: the model's output at its own
    size (times an integer inset_scale, nearest neighbour), under a label strip "#ID enhanced".
    The rectangles drawn in.

    An inset and its label never cover a face (restored or not), another inset or another label:
    `place_insets` finds each a free place near its face, or leaves it out."""
    height, width = output.shape[:2]
    shown = sorted((face for face in faces if face.restored is not None), key=lambda face: face.track_id)
    views = [face.restored for face in shown if face.restored is not None]
    labels = [_label_text(face, options) for face in shown]
    sizes = [_inset_size(view, label, options) for view, label in zip(views, labels)]
    places = place_insets([face.box for face in shown], sizes, width, height, [face.box for face in faces])
    touched = []
    for view, label, place in zip(views, labels, places):
        if place is not None:
            touched += _draw_inset(output, view, label, place, options)
    for face in shown:
        touched.append(_draw_box(output, face.box))
    return touched


def _label_text(face: Face, options: CompositeOptions) -> str:
    return (f"#{face.track_id} " if options.label and face.track_id >= 0 else "") + ENHANCED_TEXT


def _inset_size(view: np.ndarray, label: str, options: CompositeOptions) -> tuple[int, int, int]:
    """(width, height, inset side) of an inset's footprint: the label strip above the inset."""
    side = view.shape[0] * max(1, int(options.inset_scale))
    (text_w, _), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, LABEL_FONT_SCALE, 1)
    return max(side, text_w + 4), side + LABEL_STRIP_PX, side


def _draw_inset(output: np.ndarray, view: np.ndarray, label: str, place: Box, options: CompositeOptions) -> list[Rect]:
    """Draw one inset and its label strip at `place`; the rectangles drawn in."""
    left, top, side = int(place.x), int(place.y), view.shape[0] * max(1, int(options.inset_scale))
    output[top : top + int(place.h), left : left + int(place.w)] = LABEL_BACKGROUND_RGB
    label_rect = _draw_text(output, label, (left + 2, top + LABEL_STRIP_PX - 3), BORDER_RGB)
    scale = side // view.shape[0]
    pixels = view if scale == 1 else np.repeat(np.repeat(view, scale, 0), scale, 1)
    inset_top = top + LABEL_STRIP_PX
    output[inset_top : inset_top + side, left : left + side] = pixels
    return [(left, top, left + int(place.w), top + int(place.h)), label_rect]


def _draw_text(image: np.ndarray, text: str, origin: tuple[int, int], colour: tuple[int, int, int]) -> Rect:
    """Write `text` (in place) with its baseline starting at `origin`; the rectangle it may cover."""
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, LABEL_FONT_SCALE, colour, 1, cv2.LINE_AA)
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, LABEL_FONT_SCALE, 1)
    x, y, m = origin[0], origin[1], DRAWING_MARGIN_PX
    return x - m, y - text_h - m, x + text_w + m, y + baseline + m


def place_insets(
    boxes: Sequence[Box], sizes: Sequence[tuple[int, int, int]], width: int, height: int, keep_clear: Sequence[Box]
) -> list[Box | None]:
    """A free place (the footprint: label strip and inset) for each face's inset, in order, or
    None where none is left: nearest to its face first, inside the frame, overlapping none of
    `keep_clear` (the faces' boxes) and no inset placed before it."""
    taken = [_grown(box, 1.0) for box in keep_clear]
    places: list[Box | None] = []
    for box, (w, h, _) in zip(boxes, sizes):
        place = None
        if w <= width and h <= height:
            for x, y in _candidate_corners(box, w, h, taken, width, height):
                footprint = Box(float(x), float(y), float(w), float(h))
                if not any(_overlap(footprint, other) for other in taken):
                    place = footprint
                    break
        places.append(place)
        if place is not None:
            taken.append(_grown(place, INSET_MARGIN_PX / 2.0))
    return places


def _candidate_corners(
    box: Box, w: int, h: int, taken: Sequence[Box], width: int, height: int
) -> list[tuple[int, int]]:
    """Top-left corners for a w x h footprint: beside the face (right, left, below, above, and
    the corners), then beside everything already taken; inside the frame, nearest to the face first."""
    m = INSET_MARGIN_PX
    cx, cy = box.center
    wanted = [
        (box.x + box.w + m, cy - h / 2),
        (box.x - m - w, cy - h / 2),
        (cx - w / 2, box.y + box.h + m),
        (cx - w / 2, box.y - m - h),
        (box.x + box.w + m, box.y),
        (box.x - m - w, box.y),
        (box.x + box.w + m, box.y + box.h - h),
        (box.x - m - w, box.y + box.h - h),
    ]
    for other in taken:
        wanted += [
            (other.x + other.w + m, other.y),
            (other.x - m - w, other.y),
            (other.x, other.y + other.h + m),
            (other.x, other.y - m - h),
            (other.x + other.w + m, cy - h / 2),
            (other.x - m - w, cy - h / 2),
            (cx - w / 2, other.y + other.h + m),
            (cx - w / 2, other.y - m - h),
        ]
    corners = {(min(max(0, round(x)), width - w), min(max(0, round(y)), height - h)) for x, y in wanted}
    return sorted(corners, key=lambda c: ((c[0] + w / 2 - cx) ** 2 + (c[1] + h / 2 - cy) ** 2, c))


def _grown(box: Box, margin: float) -> Box:
    return Box(box.x - margin, box.y - margin, box.w + 2 * margin, box.h + 2 * margin)


def _overlap(a: Box, b: Box) -> bool:
    return a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h


def mark_unverified(image: np.ndarray, faces: Sequence[Face]) -> list[Rect]:
    """Draw (in place) a grey box labelled "unverified" around each face the restore gate kept as
    it was: the operator sees what was found, and that it was not restored. The rectangles drawn in."""
    touched = []
    for face in faces:
        touched.append(_draw_box(image, face.box, UNVERIFIED_RGB))
        corner = (int(round(face.box.x)), max(10, int(round(face.box.y)) - 3))
        touched.append(_draw_text(image, "unverified", corner, UNVERIFIED_RGB))
    return touched


def _draw_box(image: np.ndarray, box: Box, colour: tuple[int, int, int] = BORDER_RGB) -> Rect:
    """Draw (in place) a 1-px frame around `box`; the rectangle it may cover."""
    corner = (int(round(box.x)), int(round(box.y)))
    opposite = (int(round(box.x + box.w)) - 1, int(round(box.y + box.h)) - 1)
    cv2.rectangle(image, corner, opposite, colour, 1)
    m = DRAWING_MARGIN_PX
    return (
        min(corner[0], opposite[0]) - m,
        min(corner[1], opposite[1]) - m,
        max(corner[0], opposite[0]) + 1 + m,
        max(corner[1], opposite[1]) + 1 + m,
    )
