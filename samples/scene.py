"""Synthetic CCTV scenes with real faces: CelebA photos from ../shared/data/faces composited
into a corridor seen from a ceiling camera. The demo clip (make_sample.py) and the tests' frames
with known face boxes are both made here.

Each photo in celeba_wild_256 is a 256x256 crop around one face (the CSV gives the face box in
it). A face is placed by scaling the photo so its face box has the wanted width and blending the
whole photo (hair, neck) through a feathered ellipse, so the detector sees a face in context.
The returned boxes are the scaled CSV boxes: the ground truth.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

import cv2
import numpy as np

from streamer import SHARED_DATA
from streamer.compositing import blend_into
from streamer.values import Box

FACES_DIR = SHARED_DATA / "faces"
FACES_CSV = FACES_DIR / "celeba_wild_256.csv"
# Photos whose face was small in the original are blurry already; use sharp ones.
MIN_SOURCE_FACE_PX = 128


@dataclass(frozen=True)
class FacePhoto:
    image: np.ndarray  # 256 x 256 x 3 uint8 RGB
    face: Box  # the face box inside `image`


@dataclass(frozen=True)
class Placement:
    x: int  # top-left corner of the face box in the frame
    y: int
    width: int  # face box width in the frame


def load_faces(count: int, seed: int = 0) -> list[FacePhoto]:
    """`count` different identities' photos, chosen deterministically by `seed`."""
    with FACES_CSV.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["face_px_in_source"]) >= MIN_SOURCE_FACE_PX]
    first_per_identity = list({row["identity"]: row for row in rows}.values())
    chosen = np.random.default_rng(seed).choice(len(first_per_identity), size=count, replace=False)
    return [_read_photo(first_per_identity[i]) for i in chosen]


def _read_photo(row: dict[str, str]) -> FacePhoto:
    bgr = cv2.imread(str(FACES_DIR / row["file"]), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"cannot read face photo {FACES_DIR / row['file']}")
    box = Box(*(float(row[key]) for key in ("face_x", "face_y", "face_w", "face_h")))
    return FacePhoto(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), box)


def cctv_background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A static corridor seen from a ceiling camera: walls, floor and ceiling converging on a back
    wall, doors along the walls, uneven lighting and sensor noise."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    back = (width * 3 // 8, height // 6, width * 5 // 8, height * 9 // 20)  # back wall: x0, y0, x1, y1
    corners = {
        "near": [(0, 0), (width, 0), (width, height), (0, height)],
        "far": [(back[0], back[1]), (back[2], back[1]), (back[2], back[3]), (back[0], back[3])],
    }
    surfaces = {(0, 1): (150, 150, 145), (1, 2): (118, 120, 112), (2, 3): (78, 74, 68), (3, 0): (112, 114, 108)}
    for (a, b), colour in surfaces.items():  # ceiling, right wall, floor, left wall
        quad = [corners["near"][a], corners["near"][b], corners["far"][b], corners["far"][a]]
        cv2.fillPoly(image, [np.array(quad, np.int32)], colour, cv2.LINE_AA)
    cv2.rectangle(image, back[:2], back[2:], (96, 98, 94), -1)
    for wall in ((3, 0), (2, 1)):
        for near_t in (0.05, 0.45, 0.75):
            _draw_door(image, corners, wall, near_t, tuple(float(c) for c in rng.uniform(50, 170, size=3)))
    lighting = 1.0 - 0.3 * np.linspace(-1, 1, width, dtype=np.float32)[None, :, None] ** 2
    noisy = image * lighting + rng.normal(0.0, 4.0, size=image.shape).astype(np.float32)
    return np.ascontiguousarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _draw_door(image: np.ndarray, corners: dict, wall: tuple[int, int], near_t: float, colour: tuple) -> None:
    """A door on a side wall (`wall`: its bottom and top corner indices), from depth near_t to a
    little deeper; depth 0 is the frame edge, 1 the back wall."""

    def wall_point(t: float, up: float) -> tuple[int, int]:
        bottom = np.add(corners["near"][wall[0]], t * np.subtract(corners["far"][wall[0]], corners["near"][wall[0]]))
        top = np.add(corners["near"][wall[1]], t * np.subtract(corners["far"][wall[1]], corners["near"][wall[1]]))
        x, y = bottom + up * (top - bottom)
        return int(x), int(y)

    far_t = near_t + 0.3 * (1 - near_t)
    quad = [wall_point(near_t, 0.0), wall_point(far_t, 0.0), wall_point(far_t, 0.7), wall_point(near_t, 0.7)]
    cv2.fillPoly(image, [np.array(quad, np.int32)], colour, cv2.LINE_AA)


def paste_face(frame: np.ndarray, photo: FacePhoto, placement: Placement) -> Box:
    """Blend `photo` into `frame` (in place) so its face box lands at `placement`; return that box."""
    scale = placement.width / photo.face.w
    side = max(2, int(round(photo.image.shape[0] * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    scaled = cv2.resize(photo.image, (side, side), interpolation=interpolation)
    left = int(round(placement.x - photo.face.x * scale))
    top = int(round(placement.y - photo.face.y * scale))
    blend_into(frame, scaled, _soft_ellipse(side), left, top)
    return Box(left + photo.face.x * scale, top + photo.face.y * scale, photo.face.w * scale, photo.face.h * scale)


def _soft_ellipse(side: int) -> np.ndarray:
    """1 in the middle, fading to 0 at the photo's edge, so the photo's square border never shows."""
    u = np.linspace(-1.0, 1.0, side, dtype=np.float32)
    radius = np.sqrt(u[None, :] ** 2 + u[:, None] ** 2)
    return np.clip((1.0 - radius) / 0.35, 0.0, 1.0)[:, :, None]


def frame_with_faces(
    width: int, height: int, placements: list[Placement], seed: int = 0
) -> tuple[np.ndarray, list[Box]]:
    """A background frame with one distinct CelebA face per placement, and the faces' true boxes."""
    frame = cctv_background(width, height, seed)
    photos = load_faces(len(placements), seed)
    boxes = [paste_face(frame, photo, placement) for photo, placement in zip(photos, placements)]
    return frame, boxes


def grid_placements(width: int, height: int, face_widths: list[int], columns: int, rows: int) -> list[Placement]:
    """Faces spread on a regular grid (cycling through `face_widths`), away from the frame edges."""
    cell_w, cell_h = width // columns, height // rows
    placements = []
    for index in range(columns * rows):
        face_w = face_widths[index % len(face_widths)]
        col, row = index % columns, index // columns
        x = col * cell_w + (cell_w - face_w) // 2 + (index * 37) % (cell_w // 4) - cell_w // 8
        y = row * cell_h + (cell_h - face_w) // 2 + (index * 53) % (cell_h // 4) - cell_h // 8
        placements.append(Placement(x, y, face_w))
    return placements


@dataclass(frozen=True)
class Walker:
    """A face that enters at frame `start` and moves by (dx, dy) px per frame, growing by `grow`
    px per frame (walking toward the camera)."""

    start_frame: int
    placement: Placement
    dx: float = 0.0
    dy: float = 0.0
    grow: float = 0.0

    def at(self, frame: int) -> Placement | None:
        if frame < self.start_frame:
            return None
        t = frame - self.start_frame
        p = self.placement
        return Placement(round(p.x + self.dx * t), round(p.y + self.dy * t), max(4, round(p.width + self.grow * t)))


def walking_scene(width: int, height: int, walkers: list[Walker], frames: int, seed: int = 0):
    """Frames of a still corridor with faces appearing and moving (one identity per walker), each
    with its faces' true boxes (those whose box is inside the frame). A generator: one frame at a
    time, so a long 1080p scene does not fill the memory."""
    background = cctv_background(width, height, seed)
    photos = load_faces(len(walkers), seed)
    for index in range(frames):
        frame = background.copy()
        boxes = []
        for photo, walker in zip(photos, walkers):
            placement = walker.at(index)
            if placement is None:
                continue
            box = paste_face(frame, photo, placement)
            if box.x >= 0 and box.y >= 0 and box.x + box.w <= width and box.y + box.h <= height:
                boxes.append(box)
        yield frame, boxes


def crowd_walkers(width: int, height: int, count: int, frames: int, seed: int = 0) -> list[Walker]:
    """`count` faces of 20-60 px, entering over the first half of `frames` at random places,
    walking slowly in random directions and growing a little (a crowd seen from above)."""
    rng = np.random.default_rng(seed)
    walkers = []
    for _ in range(count):
        size = int(rng.integers(20, 61))
        x, y = int(rng.integers(size, width - 3 * size)), int(rng.integers(size, height - 3 * size))
        walkers.append(
            Walker(
                int(rng.integers(0, max(1, frames // 2))),
                Placement(x, y, size),
                float(rng.uniform(-3, 3)),
                float(rng.uniform(-1, 2)),
                float(rng.uniform(0, 0.2)),
            )
        )
    return walkers
