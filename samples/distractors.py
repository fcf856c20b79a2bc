"""Face-like things that are not faces, drawn into CCTV scenes with real CelebA faces beside them:
the back of a head (dark or grey hair), balloons, a wall clock, a hand, a burned-in timestamp.
The restore gate's tests and the detection bench use them; the truth is known by construction.

    scene = distractor_scene(index=3, seed=0)      # frame, true face boxes, distractor boxes
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from samples.scene import Placement, cctv_background, load_faces, paste_face
from streamer.values import Box

WIDTH, HEIGHT = 640, 360
KINDS = ("back_of_head", "grey_head", "balloons", "clock", "hand")


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # HEIGHT x WIDTH x 3 uint8 RGB
    faces: list[Box]  # true faces
    distractors: list[tuple[str, Box]]  # (kind, box) of each face-like non-face


def distractor_scene(index: int, seed: int = 0) -> Scene:
    """Scene `index`: one distractor of each kind at a size of 20-70 px, two real faces, and a
    timestamp in the top-left corner, laid out differently for each index."""
    rng = np.random.default_rng(seed * 1000 + index)
    image = cctv_background(WIDTH, HEIGHT, seed=index % 5)
    slots = _slots(rng, len(KINDS) + 2)
    distractors = []
    for kind, (x, y, side) in zip(KINDS, slots):
        distractors.append((kind, DRAW[kind](image, x, y, side, rng)))
    photos = load_faces(2, seed=seed * 100 + index)
    faces = [
        paste_face(image, photo, Placement(x, y, side)) for photo, (x, y, side) in zip(photos, slots[len(KINDS) :])
    ]
    _draw_timestamp(image, index)
    return Scene(image, faces, distractors)


def _slots(rng: np.random.Generator, count: int) -> list[tuple[int, int, int]]:
    """`count` non-overlapping squares (x, y, side) below the timestamp, sides 20-70 px."""
    slots: list[tuple[int, int, int]] = []
    while len(slots) < count:
        side = int(rng.integers(20, 71))
        x, y = int(rng.integers(10, WIDTH - 2 * side)), int(rng.integers(40, HEIGHT - 2 * side))
        if all(abs(x - sx) > 1.6 * max(side, ss) or abs(y - sy) > 1.8 * max(side, ss) for sx, sy, ss in slots):
            slots.append((x, y, side))
    return slots


def _head(image: np.ndarray, x: int, y: int, side: int, rng: np.random.Generator, hair: tuple) -> Box:
    """The back of a head: an egg of hair with strands, ears at the sides, a neck and collar below."""
    cx, cy = x + side // 2, y + side // 2
    skin = tuple(int(c) for c in rng.integers([150, 110, 90], [210, 160, 130]))
    cv2.rectangle(image, (cx - side // 5, cy + side // 3), (cx + side // 5, cy + int(0.9 * side)), skin, -1)
    cv2.ellipse(image, (cx, cy + int(1.2 * side)), (side, side // 2), 0, 180, 360, (60, 60, 80), -1, cv2.LINE_AA)
    for ear_x in (cx - side // 2, cx + side // 2):
        cv2.ellipse(image, (ear_x, cy + side // 12), (max(2, side // 12), max(3, side // 7)), 0, 0, 360, skin, -1)
    cv2.ellipse(image, (cx, cy), (side // 2, int(side * 0.58)), 0, 0, 360, hair, -1, cv2.LINE_AA)
    for _ in range(side):
        angle = rng.uniform(0, 2 * np.pi)
        r = rng.uniform(0, side / 2.4)
        start = (int(cx + r * np.cos(angle)), int(cy + r * np.sin(angle)))
        end = (start[0] + int(rng.integers(-3, 4)), start[1] + int(rng.integers(2, 6)))
        delta = int(rng.integers(-35, 35))
        shade = tuple(int(np.clip(c + delta, 0, 255)) for c in hair)
        cv2.line(image, start, end, shade, 1, cv2.LINE_AA)
    return Box(x, y, side, side * 1.16)


def _dark_head(image, x, y, side, rng) -> Box:
    return _head(image, x, y, side, rng, (45, 35, 30))


def _grey_head(image, x, y, side, rng) -> Box:
    return _head(image, x, y, side, rng, (170, 168, 165))


def _balloons(image, x, y, side, rng) -> Box:
    """Two balloons with highlights and strings."""
    radius = side // 2
    for offset, colour in ((0, (220, 60, 60)), (radius, (240, 200, 60))):
        centre = (x + radius + offset, y + radius + offset // 3)
        cv2.ellipse(image, centre, (radius, int(radius * 1.15)), 0, 0, 360, colour, -1, cv2.LINE_AA)
        cv2.circle(image, (centre[0] - radius // 3, centre[1] - radius // 3), max(1, radius // 5), (250, 250, 250), -1)
        cv2.line(image, (centre[0], centre[1] + radius), (centre[0], centre[1] + 3 * radius), (200, 200, 200), 1)
    return Box(x, y, side + radius, side * 1.3)


def _clock(image, x, y, side, rng) -> Box:
    """A wall clock: a white dial, ticks and two hands (two 'eyes' and a 'mouth' to a detector)."""
    radius = side // 2
    centre = (x + radius, y + radius)
    cv2.circle(image, centre, radius, (235, 235, 230), -1, cv2.LINE_AA)
    cv2.circle(image, centre, radius, (40, 40, 40), max(1, side // 16), cv2.LINE_AA)
    for hour in range(12):
        angle = hour * np.pi / 6
        outer = (int(centre[0] + 0.85 * radius * np.cos(angle)), int(centre[1] + 0.85 * radius * np.sin(angle)))
        cv2.circle(image, outer, max(1, side // 24), (30, 30, 30), -1)
    hands = rng.uniform(0, 2 * np.pi, size=2)
    for angle, length in zip(hands, (0.5, 0.75)):
        tip = (int(centre[0] + length * radius * np.cos(angle)), int(centre[1] + length * radius * np.sin(angle)))
        cv2.line(image, centre, tip, (20, 20, 20), max(1, side // 20), cv2.LINE_AA)
    return Box(x, y, side, side)


def _hand(image, x, y, side, rng) -> Box:
    """An open hand: a palm and five rounded fingers, in skin tones."""
    skin = tuple(int(c) for c in rng.integers([160, 115, 95], [220, 170, 140]))
    palm_c = (x + side // 2, y + int(0.65 * side))
    cv2.ellipse(image, palm_c, (int(0.32 * side), int(0.3 * side)), 0, 0, 360, skin, -1, cv2.LINE_AA)
    for k, angle in enumerate(np.linspace(-0.9, 0.9, 5) + rng.uniform(-0.1, 0.1)):
        length = side * (0.45 if k in (1, 2, 3) else 0.32)
        base = (int(palm_c[0] + 0.25 * side * np.sin(angle)), int(palm_c[1] - 0.2 * side * np.cos(angle)))
        tip = (int(base[0] + length * np.sin(angle)), int(base[1] - length * np.cos(angle)))
        cv2.line(image, base, tip, skin, max(2, side // 9), cv2.LINE_AA)
    shade = tuple(max(0, c - 40) for c in skin)
    cv2.ellipse(image, palm_c, (int(0.2 * side), int(0.05 * side)), 20, 0, 180, shade, 1, cv2.LINE_AA)
    return Box(x, y, side, side)


DRAW = {"back_of_head": _dark_head, "grey_head": _grey_head, "balloons": _balloons, "clock": _clock, "hand": _hand}


def _draw_timestamp(image: np.ndarray, index: int) -> None:
    text = f"2026-01-12  03:14:{index % 60:02d}  CAM 07"
    cv2.putText(image, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (240, 240, 240), 2, cv2.LINE_AA)
