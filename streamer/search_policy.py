"""Where the detector looks in each frame: detection that costs what the scene needs.

Running the detector on every tile of every frame (the reference) finds the small faces, but a
1080p frame has 29 regions (28 tiles of 384 px and the whole frame) and each detector call costs
about the same (~2.5 ms on one core, whatever the region's size): 60-80 ms a frame. CCTV is mostly
a still background, and the faces already tracked need not be searched for everywhere. The
adaptive policy spends a budget per frame instead:

1. **Track-guided regions.** Each live track (the tracker's prediction for this frame) is searched
   on every detection round in a view that suits it: a small face in a grid tile that holds it
   whole (the scale and context the reference found it in; one tile for a group of faces), a
   face that only the whole-frame pass found in the whole frame again, a big face in a region
   REGION_SCALE times its side. A tracked face is never lost for lack of looking.
2. **Motion-gated, rotating tiles** (the whole frame counts as one more tile, for big faces). A
   low-resolution grey copy of the frame (~0.3 ms at 1080p) tells which tiles changed since they
   were last searched, not counting the pixels on tracked people (the face and BODY_BELOW face
   heights under it). Changed tiles are searched oldest first; among tiles as old, first those
   whose last search found a face (on a crowd every tile changes, and new faces come where
   faces are: crowd_walk_1080p x4 recall >= 20 px 0.885 -> 0.911 at the same 7.0 calls/frame,
   with the body mask), then the most changed; as many as the budget leaves after the track
   regions, at least one per round: a full scan spread over a few frames, the tracker carrying
   the faces in between. A tile that has not changed is searched again only every
   `still_rescan_s`.

Budget: `budget_ms` of detector time per video frame, planned as whole detector calls of `call_ms`
each (a fixed estimate, so a clip always gets the same plan: deterministic and testable); unset,
a quarter of the reference's calls. A round (every `every_n` frames) makes
max(1, budget_ms * every_n / call_ms) calls, track regions first; the first round searches all.

Time to first detection: a face that appears changes its tile (unless it appears on a tracked
person: then the track's region or the rescan finds it), and a changed tile waits at most for
the other changed tiles searched before it, each at most once (a tile searched goes behind the
tiles that waited longer, whatever faces it found): within `first_detection_rounds(tiles, calls
per round, track regions)` rounds, `every_n` times that many frames (worst case, every tile
changed at once; a face in an otherwise still scene is searched in the next round).

Measured and rejected (bench/pipeline_bench.py --search, crowd_walk_1080p x4, 7.0 calls/frame):
a coarse level of 768-px regions (the model sees a 40-px face there as a 384-px tile shows a
20-px one) searched every round with the whole frame, 7 calls of the 21 a round: 0.893
(20-40 px 0.806, 40-80 px 0.918) without the face-first order, 0.883 with it: one 768-px
region finds 0.87 of the 40-80 px faces a 384-px tile finds, and 20-40 px faces get fewer
tile visits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from streamer.detection import (
    Tile,
    TilingOptions,
    search_regions,
    suppress_duplicates,
    touches_inner_edge,
)
from streamer.values import Box, Face

# A track's region side, in face sides: the face fills about 1/4 of what the model sees.
REGION_SCALE = 4.0
# The change map: the frame's green channel shrunk by MOTION_FACTOR (4: a 20 px face is 5 x 5
# pixels there); a pixel changed when it moved by more than MOTION_THRESHOLD grey levels (above
# compression noise, which the shrinking averages away), a tile when MOTION_MIN_PIXELS did.
MOTION_FACTOR = 4
MOTION_THRESHOLD = 18
MOTION_MIN_PIXELS = 4
# A tracked face's body: this many face heights under the face, whose motion is not a new face
# (measured on crowd_walk_1080p x4 with the tie-break below: 1: 0.909, 2: 0.911, 3: 0.906 recall).
BODY_BELOW = 2.0
NOMINAL_FPS = 25.0  # frames' time when they carry no timestamp
DEFAULT_SHARE = 0.25  # the default budget: this share of the reference's detector calls per frame


class RegionDetector(Protocol):
    def detect_each(self, image: np.ndarray, regions: Sequence[Tile]) -> list[list[Face]]:
        """Each region's faces, in frame coordinates (detection.MediaPipeFaceDetector)."""
        ...


class FaceSearch(Protocol):
    """Decides when and where the detector runs. `find` returns the detections of this frame, or
    None when the detector did not run (the tracker then carries the faces)."""

    def find(self, image: np.ndarray, tick: int, seconds: float | None, predicted: Sequence[Face]) -> list[Face] | None:
        """`tick`: frames seen so far (0 first); `seconds`: the frame's time (None: tick / NOMINAL_FPS);
        `predicted`: the tracker's faces at this frame, before this frame's detections."""
        ...


@dataclass(frozen=True)
class SearchBudget:
    # Detector time to spend per video frame; None: a quarter of what searching every region of
    # every frame costs (the reference), whatever the frame size.
    budget_ms: float | None = None
    call_ms: float = 2.5  # what one detector call costs (bench/pipeline_bench.py --search prints it)
    still_rescan_s: float = 3.0  # a tile that has not changed is searched again after this long

    def __post_init__(self) -> None:
        if (self.budget_ms is not None and self.budget_ms <= 0) or self.call_ms <= 0 or self.still_rescan_s <= 0:
            raise ValueError(f"SearchBudget: every value must be > 0, got {self}")

    def calls_per_round(self, every_n: int, regions: int) -> int:
        """Detector calls a round may make; `regions`: how many an every-region search makes."""
        if self.budget_ms is None:
            return max(1, int(regions * every_n * DEFAULT_SHARE))
        return max(1, int(self.budget_ms * every_n / self.call_ms))


@dataclass(frozen=True)
class Plan:
    """The regions one detection round searches."""

    track_regions: tuple[Tile, ...]
    tiles: tuple[Tile, ...]

    @property
    def regions(self) -> tuple[Tile, ...]:
        return self.track_regions + self.tiles


@dataclass
class SearchCounters:
    rounds: int = 0
    calls: int = 0
    track_calls: int = 0
    tile_calls: int = 0
    seconds: float = 0.0  # detector time


class _OwnsDetector:
    """A search owns its detector: closing the search (or leaving its `with`) closes it."""

    detector: Any  # the detector the search drives (a RegionDetector, or a plain detector for EveryNthFrame)

    def close(self) -> None:
        close = getattr(self.detector, "close", None)
        if close is not None:
            close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class EveryNthFrame(_OwnsDetector):
    """The reference behaviour: the whole detector (every tile, when tiling is on) every
    `every_n` frames."""

    def __init__(self, detector, every_n: int = 1) -> None:
        if every_n < 1:
            raise ValueError(f"every_n must be >= 1, got {every_n}")
        self.detector, self.every_n = detector, every_n
        self.counters = SearchCounters()

    def find(self, image: np.ndarray, tick: int, seconds: float | None, predicted: Sequence[Face]) -> list[Face] | None:
        if tick % self.every_n != 0:
            return None
        started = time.perf_counter()
        faces = self.detector.detect(image)
        self.counters.seconds += time.perf_counter() - started
        self.counters.rounds += 1
        self.counters.calls += self._calls_per_round(image)
        return faces

    def _calls_per_round(self, image: np.ndarray) -> int:
        """The detector calls one `detect` makes: every region when the detector tiles, else one."""
        tiling = getattr(self.detector, "tiling", None)
        if tiling is None:
            return 1
        height, width = image.shape[:2]
        return len(search_regions(width, height, tiling))


class AdaptiveSearch(_OwnsDetector):
    """Track-guided regions plus motion-gated rotating tiles within a per-frame budget (module
    docstring). One per source: it remembers what each tile looked like when last searched."""

    def __init__(
        self,
        detector: RegionDetector,
        tiling: TilingOptions,
        budget: SearchBudget = SearchBudget(),
        every_n: int = 1,
    ) -> None:
        if every_n < 1:
            raise ValueError(f"every_n must be >= 1, got {every_n}")
        self.detector, self.tiling, self.budget, self.every_n = detector, tiling, budget, every_n
        self.counters = SearchCounters()
        self._size: tuple[int, int] | None = None
        self._tiles: list[Tile] = []
        self._last_round: list[int] = []  # per tile: the round it was last searched (-1: never)
        self._last_seconds: list[float] = []  # per tile: the frame time it was last searched
        self._snapshots: list[np.ndarray | None] = []  # per tile: its change-map pixels then
        self._min_changed: list[int] = []  # per tile: changed pixels that make it worth a search
        self._last_time = -math.inf
        self._last_found: list[tuple[Box, Tile]] = []  # the last round's faces and their regions
        self._found_in: dict[int, Tile] = {}  # track id -> the region that found it last

    def find(self, image: np.ndarray, tick: int, seconds: float | None, predicted: Sequence[Face]) -> list[Face] | None:
        if tick % self.every_n != 0:
            return None
        seconds = tick / NOMINAL_FPS if seconds is None else seconds
        plan = self.plan(image, tick // self.every_n, seconds, predicted)
        started = time.perf_counter()
        faces = self._detect(image, plan.regions, predicted)
        counters = self.counters
        counters.seconds += time.perf_counter() - started
        counters.rounds += 1
        counters.track_calls += len(plan.track_regions)
        counters.tile_calls += len(plan.tiles)
        counters.calls += len(plan.regions)
        return faces

    def detect(self, image: np.ndarray) -> list[Face]:
        """Every region at once (the reference search), for callers that detect frame by frame."""
        height, width = image.shape[:2]
        return self._detect(image, search_regions(width, height, self.tiling), ())

    def _detect(self, image: np.ndarray, regions: Sequence[Tile], predicted: Sequence[Face]) -> list[Face]:
        """The regions' faces, duplicates merged; remembers which region found each face."""
        height, width = image.shape[:2]
        found = [
            (face, region)
            for region, faces in zip(regions, self.detector.detect_each(image, regions))
            for face in faces
        ]
        cut = [touches_inner_edge(face.box, region, width, height) for face, region in found]
        kept = suppress_duplicates([face for face, _ in found], cut, self.tiling.nms_threshold)
        # Each face's finest view: the smallest region that found it (a tile sees a small face
        # larger than the whole-frame pass, which NMS may have preferred).
        self._last_found = [
            (
                face.box,
                min(
                    (region for other, region in found if other.box.iou(face.box) >= 0.5),
                    key=lambda region: (region.w * region.h, region.y, region.x),
                ),
            )
            for face in kept
        ]
        self._note_faces_found(regions, kept)
        self._found_in = {}
        for face in predicted:
            match = _best_match(face.box, self._last_found)
            if match is not None and face.track_id is not None:
                self._found_in[face.track_id] = match
        return kept

    def _note_faces_found(self, regions: Sequence[Tile], faces: Sequence[Face]) -> None:
        """Per searched tile (by itself or as a track's region): how many faces it holds now."""
        searched = set(regions)
        for index, tile in enumerate(self._tiles):
            if tile in searched:
                self._faces_found[index] = sum(_holds(tile, face.box, 0.0) for face in faces)

    def plan(self, image: np.ndarray, round_index: int, seconds: float, predicted: Sequence[Face]) -> Plan:
        """The regions to search this round; marks the chosen tiles as searched."""
        height, width = image.shape[:2]
        if self._size != (width, height) or seconds < self._last_time:
            self._reset(width, height)  # a new stream, or time went back (a loop, a reconnect)
        self._last_time = seconds
        change_map = change_map_of(image)
        grid = self._tiles[1:] if self.tiling.whole_frame else self._tiles
        regions = tuple(
            track_regions(
                [(face.box, self._known_region(face)) for face in predicted], width, height, grid, self.tiling.tile_size
            )
        )
        searched = [index for index, tile in enumerate(self._tiles) if tile in regions]  # by a track's region
        tracked = _tracked_mask(change_map.shape, [face.box for face in predicted])
        due = [index for index in self._due_tiles(change_map, tracked, seconds) if index not in searched]
        chosen = due[: self._room(regions)]
        overdue = [index for index in due if seconds - self._last_seconds[index] >= self.budget.still_rescan_s]
        if not chosen and overdue:
            chosen = overdue[:1]  # every tile is searched at least every still_rescan_s, budget or not
        for index in searched + chosen:
            self._last_round[index] = round_index
            self._last_seconds[index] = seconds
            self._snapshots[index] = _cells(change_map, self._tiles[index]).copy()
        return Plan(regions, tuple(self._tiles[index] for index in sorted(chosen)))

    def _known_region(self, face: Face) -> Tile | None:
        """The region that found this face last (the same view finds it again), if known."""
        region = self._found_in.get(face.track_id) if face.track_id is not None else None
        return region if region is not None else _best_match(face.box, self._last_found)

    def _room(self, regions: Sequence[Tile]) -> int:
        """How many tiles this round may search: the budget less the track regions, but at least
        one (the search for new faces always moves on); every tile in the first round."""
        if all(last < 0 for last in self._last_round):
            return len(self._tiles)
        return max(1, self.budget.calls_per_round(self.every_n, len(self._tiles)) - len(regions))

    def _due_tiles(self, change_map: np.ndarray, tracked: np.ndarray, seconds: float) -> list[int]:
        """Tiles worth searching now: the longest unsearched first; among those searched as long
        ago, first the ones whose last search found a face (people come in groups and keep coming
        where people walk), then the most changed. A change on a tracked person (its track region
        finds the face) does not count: only a change elsewhere may be a new face."""
        due = []
        for index, tile in enumerate(self._tiles):
            snapshot = self._snapshots[index]
            moved = 0 if snapshot is None else changed_pixels(snapshot, _cells(change_map, tile), _cells(tracked, tile))
            still_for = seconds - self._last_seconds[index]
            if snapshot is None or still_for >= self.budget.still_rescan_s or moved >= self._min_changed[index]:
                held_faces = self._faces_found[index] > 0
                due.append((self._last_round[index], not held_faces, -moved, index))
        return [index for *_, index in sorted(due)]

    def _reset(self, width: int, height: int) -> None:
        self._size = (width, height)
        self._tiles = search_regions(width, height, self.tiling)
        self._last_round = [-1] * len(self._tiles)
        self._last_seconds = [-math.inf] * len(self._tiles)
        self._snapshots = [None] * len(self._tiles)
        self._min_changed = [MOTION_MIN_PIXELS] * len(self._tiles)
        self._faces_found = [0] * len(self._tiles)  # per tile: faces its last search found


def first_detection_rounds(tiles: int, calls_per_round: int, tracks: int = 0) -> int:
    """At most how many rounds a changed tile waits before it is searched (the documented bound):
    every other tile may be ahead of it, and the track regions take their calls first."""
    tile_calls = max(1, calls_per_round - tracks)
    return math.ceil(tiles / tile_calls)


def change_map_of(image: np.ndarray) -> np.ndarray:
    """The frame's green channel shrunk by MOTION_FACTOR (every other pixel, then area-averaged),
    as int16 so differences do not wrap. ~0.3 ms at 1080p."""
    green = np.ascontiguousarray(image[::2, ::2, 1])
    step = MOTION_FACTOR // 2
    small = cv2.resize(green, (green.shape[1] // step, green.shape[0] // step), interpolation=cv2.INTER_AREA)
    return small.astype(np.int16)


def changed_pixels(before: np.ndarray, now: np.ndarray, ignore: np.ndarray | None = None) -> int:
    """How many pixels of the change map (outside `ignore`) moved by more than MOTION_THRESHOLD."""
    moved = np.abs(now - before) > MOTION_THRESHOLD
    if ignore is not None:
        moved &= ~ignore
    return int(np.count_nonzero(moved))


def _tracked_mask(shape: tuple[int, ...], faces: Sequence[Box]) -> np.ndarray:
    """The change map's pixels on the tracked people: each face box enlarged by half its side (the
    face's motion since the tile's last search) and BODY_BELOW face heights further down (the
    body under a walking face moves with it and is no new face)."""
    mask = np.zeros(shape[:2], bool)
    for box in faces:
        pad = 0.5 * max(box.w, box.h)
        bottom = box.y + box.h + pad + BODY_BELOW * box.h
        x0, y0 = max(0, int((box.x - pad) // MOTION_FACTOR)), max(0, int((box.y - pad) // MOTION_FACTOR))
        x1, y1 = int((box.x + box.w + pad) // MOTION_FACTOR) + 1, int(bottom // MOTION_FACTOR) + 1
        mask[y0:y1, x0:x1] = True
    return mask


def _cells(change_map: np.ndarray, tile: Tile) -> np.ndarray:
    x0, y0 = tile.x // MOTION_FACTOR, tile.y // MOTION_FACTOR
    return change_map[y0 : (tile.y + tile.h) // MOTION_FACTOR, x0 : (tile.x + tile.w) // MOTION_FACTOR]


def track_regions(
    faces: Sequence[tuple[Box, Tile | None]], width: int, height: int, grid: Sequence[Tile], tile_size: int
) -> list[Tile]:
    """The regions that find the tracked faces again this round; `faces`: each predicted box with
    the region that found it last (None: not known).

    A small face (at most a third of a tile) is searched in a tile of the grid that holds it
    whole: the view the tiled reference found it in (a region merely centred on a 20-40 px face
    finds only about half of the faces the tiles find); the fewest tiles that hold all such faces
    are chosen (greedy set cover), so a group of faces costs one call. A face that only a
    larger view found (the whole-frame pass) is searched in that view again. A larger face gets
    a region REGION_SCALE times its side (at least a tile), or the whole frame."""
    small: list[set[int]] = []  # per small face: the grid tiles that hold it
    room: dict[int, float] = {}  # per grid tile: the margins it leaves around its small faces
    regions: list[Tile] = []
    for box, known in faces:
        if not box.overlaps_frame(width, height):
            continue
        if known is not None and known not in grid and _holds(known, box, 0.0):
            regions.append(known)  # the whole frame, or a big face's region
            continue
        holders = _holders(box, grid)
        if holders and max(box.w, box.h) <= tile_size / 3:
            small.append(holders)
            for index in holders:
                room[index] = room.get(index, 0.0) + _margin(grid[index], box)
        else:
            regions.append(_face_region(box, width, height, tile_size))
    small = [holders for holders in small if not any(grid[index] in regions for index in holders)]
    while small:
        counts: dict[int, int] = {}
        for holders in small:
            for index in holders:
                counts[index] = counts.get(index, 0) + 1
        # Most faces first; among equals the tile that shows them farthest from its edges.
        best = min(counts, key=lambda index: (-counts[index], -room[index], index))
        regions.append(grid[best])
        small = [holders for holders in small if best not in holders]
    unique = list(dict.fromkeys(regions))
    return sorted(unique, key=lambda tile: (tile.y, tile.x, tile.w))


def _holders(box: Box, grid: Sequence[Tile]) -> set[int]:
    """The grid tiles that hold `box` whole with a margin (a quarter face: the prediction's error),
    or without one when none does."""
    for margin in (0.25 * max(box.w, box.h), 0.0):
        holders = {index for index, tile in enumerate(grid) if _holds(tile, box, margin)}
        if holders:
            return holders
    return set()


def _holds(tile: Tile, box: Box, margin: float) -> bool:
    return (
        tile.x <= box.x - margin
        and tile.y <= box.y - margin
        and box.x + box.w + margin <= tile.x + tile.w
        and box.y + box.h + margin <= tile.y + tile.h
    )


def _margin(tile: Tile, box: Box) -> float:
    """The distance from `box` to the nearest edge of `tile`."""
    return min(box.x - tile.x, box.y - tile.y, tile.x + tile.w - box.x - box.w, tile.y + tile.h - box.y - box.h)


def _best_match(box: Box, found: Sequence[tuple[Box, Tile]]) -> Tile | None:
    """The region of the found face that overlaps `box` most (IoU >= 0.3), if any."""
    best = max(found, key=lambda entry: box.iou(entry[0]), default=None)
    return best[1] if best is not None and box.iou(best[0]) >= 0.3 else None


def _face_region(box: Box, width: int, height: int, tile_size: int) -> Tile:
    side = round(max(tile_size, REGION_SCALE * max(box.w, box.h)))
    if side >= min(width, height):
        return Tile(0, 0, width, height)
    cx, cy = box.center
    x = round(min(max(cx - side / 2.0, 0.0), width - side))
    y = round(min(max(cy - side / 2.0, 0.0), height - side))
    return Tile(x, y, side, side)
