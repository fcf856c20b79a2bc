"""Face detection: MediaPipe Tasks FaceDetector, optionally over overlapping tiles.

The MediaPipe models shrink the whole image to 192 px (full range) or 128 px (short range)
before they look at it, so in a 1080p frame a face narrower than ~7% of the width (~130 px)
becomes a few pixels and is missed. Tiled detection runs the model on overlapping square tiles
too, which enlarges small faces by frame_size / tile_size, then maps the boxes back to frame
coordinates and merges duplicates with non-maximum suppression.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision

from streamer.config import TilingConfig
from streamer.errors import UserError
from streamer.values import Box, Face, check_rgb_image

logger = logging.getLogger(__name__)

# A box within this many pixels of a tile's inner edge may be a face cut in two by that edge.
EDGE_MARGIN_PX = 2.0


class DetectorLoadError(UserError, RuntimeError):
    """The face-detection model file cannot be used."""


_TILING = TilingConfig()  # the schema's defaults


@dataclass(frozen=True)
class TilingOptions:
    """Overlapping square tiles. A face narrower than `overlap` is whole inside at least one tile;
    faces too big for the tiles are found by the whole-frame pass."""

    tile_size: int = _TILING.tile_size
    overlap: int = _TILING.overlap
    whole_frame: bool = _TILING.whole_frame  # also run the model on the whole frame (finds the big faces)
    nms_threshold: float = _TILING.nms_threshold  # suppress a box covering more than this fraction of a better one

    def __post_init__(self) -> None:
        # The config's rules (config.TilingConfig), not a copy of them.
        TilingConfig(enabled=True, **dataclasses.asdict(self))

    @classmethod
    def from_config(cls, tiling: TilingConfig) -> TilingOptions | None:
        """The options of an enabled tiling section, None when tiling is off."""
        return cls(**tiling.model_dump(exclude={"enabled"})) if tiling.enabled else None


@dataclass(frozen=True)
class Tile:
    x: int
    y: int
    w: int
    h: int


def tile_grid(width: int, height: int, options: TilingOptions) -> list[Tile]:
    """Tiles of tile_size x tile_size covering the frame, neighbours sharing at least `overlap` px.
    The last tile of each row/column is aligned to the frame edge instead of sticking out."""
    return [
        Tile(x, y, min(options.tile_size, width), min(options.tile_size, height))
        for y in _tile_starts(height, options)
        for x in _tile_starts(width, options)
    ]


def search_regions(width: int, height: int, options: TilingOptions) -> list[Tile]:
    """What tiled detection looks at: the whole frame (when `whole_frame`, or when one tile covers
    the frame) followed by the tiles."""
    whole = Tile(0, 0, width, height)
    tiles = [tile for tile in tile_grid(width, height, options) if tile != whole]
    return ([whole] if options.whole_frame or not tiles else []) + tiles


def _tile_starts(length: int, options: TilingOptions) -> list[int]:
    if length <= options.tile_size:
        return [0]
    stride = options.tile_size - options.overlap
    count = int(np.ceil((length - options.tile_size) / stride)) + 1
    # Spread the tiles evenly so every overlap is >= the configured one.
    return [int(round(i * (length - options.tile_size) / (count - 1))) for i in range(count)]


def touches_inner_edge(box: Box, tile: Tile, frame_w: int, frame_h: int) -> bool:
    """True when `box` (frame coordinates) reaches a side of `tile` that is not a frame side:
    the face may continue in the next tile, so this box may be a part of it."""
    left, top = box.x - tile.x, box.y - tile.y
    right, bottom = left + box.w, top + box.h
    return (
        (tile.x > 0 and left <= EDGE_MARGIN_PX)
        or (tile.y > 0 and top <= EDGE_MARGIN_PX)
        or (tile.x + tile.w < frame_w and right >= tile.w - EDGE_MARGIN_PX)
        or (tile.y + tile.h < frame_h and bottom >= tile.h - EDGE_MARGIN_PX)
    )


def suppress_duplicates(faces: list[Face], cut: list[bool], threshold: float) -> list[Face]:
    """Greedy NMS that keeps whole boxes before boxes cut by a tile edge, then higher scores.

    Overlap is measured as intersection over the *smaller* box, so the half face that one tile
    saw is suppressed by the whole face its neighbour saw (their IoU can be only ~0.5)."""
    order = sorted(range(len(faces)), key=lambda i: (cut[i], -faces[i].score))
    kept: list[Face] = []
    for i in order:
        if all(_overlap_of_smaller(faces[i].box, other.box) <= threshold for other in kept):
            kept.append(faces[i])
    return kept


def _overlap_of_smaller(a: Box, b: Box) -> float:
    ix = max(0.0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0.0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    return ix * iy / min(a.area, b.area)


class MediaPipeFaceDetector:
    """MediaPipe Tasks face detector (IMAGE mode). Close it (or use `with`): MediaPipe prints a
    traceback at interpreter exit for a detector left open."""

    def __init__(
        self,
        model_path: str | Path,
        min_score: float = 0.5,
        tiling: TilingOptions | None = None,
        min_face_px: float = 0.0,
    ) -> None:
        self.tiling = tiling
        self.min_face_px = min_face_px
        self._detector = _create_mediapipe_detector(Path(model_path), min_score)

    def detect(self, image: np.ndarray) -> list[Face]:
        check_rgb_image(image, "face detector input")
        height, width = image.shape[:2]
        if self.tiling is None:
            faces = self._detect_in(image, Tile(0, 0, width, height))
        else:
            faces = self._detect_tiled(image, self.tiling)
        return [face for face in faces if max(face.box.w, face.box.h) >= self.min_face_px]

    def _detect_tiled(self, image: np.ndarray, tiling: TilingOptions) -> list[Face]:
        height, width = image.shape[:2]
        return self._detect_regions(image, search_regions(width, height, tiling), tiling.nms_threshold)

    def detect_each(self, image: np.ndarray, regions: Sequence[Tile]) -> list[list[Face]]:
        """Each region's faces (frame coordinates), duplicates not merged: a search policy
        (search_policy.py) learns which region found which face.

        The model sees each region shrunk to its input size (192 px for full range), so a region's
        side sets the scale a face is seen at. One call costs about the same whatever the size."""
        check_rgb_image(image, "face detector input")
        return [
            [face for face in self._detect_in(image, region) if max(face.box.w, face.box.h) >= self.min_face_px]
            for region in regions
        ]

    def _detect_regions(self, image: np.ndarray, regions: Sequence[Tile], nms_threshold: float) -> list[Face]:
        height, width = image.shape[:2]
        faces: list[Face] = []
        cut: list[bool] = []
        for region in regions:
            found = self._detect_in(image, region)
            faces += found
            cut += [touches_inner_edge(face.box, region, width, height) for face in found]
        return suppress_duplicates(faces, cut, nms_threshold)

    def _detect_in(self, image: np.ndarray, tile: Tile) -> list[Face]:
        """Detections in one tile, in frame coordinates."""
        # Slicing gives a strided view; MediaPipe finds nothing in one, without an error.
        pixels = np.ascontiguousarray(image[tile.y : tile.y + tile.h, tile.x : tile.x + tile.w])
        result = self._detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels))
        faces = []
        for detection in result.detections:
            bb = detection.bounding_box
            if bb.width > 0 and bb.height > 0:
                box = Box(float(bb.origin_x + tile.x), float(bb.origin_y + tile.y), float(bb.width), float(bb.height))
                # MediaPipe's keypoints are fractions of the image it saw (the tile).
                keypoints = tuple(
                    (tile.x + point.x * tile.w, tile.y + point.y * tile.h) for point in detection.keypoints or ()
                )
                faces.append(Face(box=box, score=float(detection.categories[0].score), keypoints=keypoints))
        return faces

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def __enter__(self) -> MediaPipeFaceDetector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _create_mediapipe_detector(model_path: Path, min_score: float):
    if not model_path.is_file():
        raise DetectorLoadError(f"face-detection model not found: {model_path}")
    if not 0.0 <= min_score <= 1.0:
        raise ValueError(f"min_score must be in [0, 1], got {min_score}")
    options = vision.FaceDetectorOptions(
        base_options=BaseOptions(model_asset_path=str(model_path)),
        running_mode=vision.RunningMode.IMAGE,
        min_detection_confidence=min_score,
    )
    try:
        return vision.FaceDetector.create_from_options(options)
    except (RuntimeError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DetectorLoadError(f"cannot load face-detection model {model_path}: {first_line}") from None
