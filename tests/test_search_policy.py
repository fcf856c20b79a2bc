"""The adaptive search policy: where the detector looks, frame by frame.

Most tests use a fake detector that "sees" a face when a searched region holds its true box whole
(a perfect detector), so they test the policy's choices exactly and cost no model calls; the
recall test runs MediaPipe on a generated crowd scene against the every-tile reference."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from bench.search_quality import Recall, boxes, frames_of, search_and_track
from samples.scene import cctv_background, crowd_walkers, walking_scene
from streamer import REPO_ROOT, components
from streamer.config import load_config
from streamer.detect_stage import DetectStage
from streamer.detection import MediaPipeFaceDetector, Tile, TilingOptions, search_regions
from streamer.search_policy import AdaptiveSearch, EveryNthFrame, SearchBudget, first_detection_rounds
from streamer.tracking import FaceTracker
from streamer.values import Box, Face
from tests.helpers.faces import require_faces

FULL_RANGE = REPO_ROOT / "models" / "face_detection_full_range_sparse.tflite"
WIDTH, HEIGHT = 1280, 720
TILING = TilingOptions(tile_size=384, overlap=128)
BUDGET = SearchBudget(budget_ms=10.0, call_ms=2.5, still_rescan_s=2.0)  # 4 calls a round


class PerfectDetector:
    """Finds exactly the true boxes that a searched region holds whole; records what it searched."""

    def __init__(self, truth_of_frame) -> None:
        self.truth_of_frame, self.frame, self.searched = truth_of_frame, 0, []

    def detect_each(self, image, regions) -> list[list[Face]]:
        self.searched.append((self.frame, tuple(regions)))
        return [
            [Face(box=box, score=0.9) for box in self.truth_of_frame(self.frame) if _holds(region, box)]
            for region in regions
        ]


def _holds(region: Tile, box: Box) -> bool:
    return (
        region.x <= box.x
        and region.y <= box.y
        and box.x + box.w <= region.x + region.w
        and box.y + box.h <= region.y + region.h
    )


def _blob_frame(background: np.ndarray, box: Box | None) -> np.ndarray:
    """The still background with a face-sized bright ellipse (pixels change where a face appears)."""
    frame = background.copy()
    if box is not None:
        center = (int(box.x + box.w / 2), int(box.y + box.h / 2))
        cv2.ellipse(frame, center, (int(box.w / 2), int(box.h / 2)), 0, 0, 360, (220, 180, 150), -1)
    return frame


def _run(truth_of_frame, frames: int, every_n: int = 1, image_of=None):
    """Run the policy with the perfect detector over generated frames (default: a blob on the first
    true box); per frame, the tracked faces."""
    background = cctv_background(WIDTH, HEIGHT, seed=5)
    detector = PerfectDetector(truth_of_frame)
    stage = DetectStage(AdaptiveSearch(detector, TILING, BUDGET, every_n), FaceTracker(), None)
    if image_of is None:
        image_of = lambda i: _blob_frame(background, (truth_of_frame(i) or [None])[0])  # noqa: E731
    images = (image_of(i) for i in range(frames))
    tracked = []
    for frame in frames_of(images):
        detector.frame = frame.index
        tracked.append(search_and_track(stage, frame))
    return tracked, detector.searched


def test_policy_is_deterministic_on_a_clip():
    def walker(i: int) -> list[Box]:
        return [Box(100.0 + 9 * i, 300.0 + 2 * i, 30.0, 36.0)]

    first = _run(walker, 40)
    second = _run(walker, 40)
    assert first[1] == second[1]  # the same regions, frame by frame
    assert [boxes(faces) for faces in first[0]] == [boxes(faces) for faces in second[0]]


def test_face_appearing_in_a_still_tile_is_found_within_the_documented_frames():
    appears, box = 30, Box(900.0, 420.0, 28.0, 34.0)
    tracked, searched = _run(lambda i: [box] if i >= appears else [], 60)
    regions_per_round = {frame: regions for frame, regions in searched}
    # Still scene: after the first full scan nothing is searched until a still tile's rescan is due.
    assert all(not regions_per_round[frame] for frame in range(1, appears))
    tiles = len(search_regions(WIDTH, HEIGHT, TILING))
    bound = first_detection_rounds(tiles, BUDGET.calls_per_round(1, len(search_regions(WIDTH, HEIGHT, TILING))))
    found = next(i for i in range(appears, 60) if any(face.box.iou(box) > 0.5 for face in tracked[i]))
    assert found - appears <= bound
    assert found - appears <= 1  # only the face's own tiles changed: searched at once


def test_track_guided_region_follows_a_moving_face():
    def walker(i: int) -> list[Box]:
        return [Box(60.0 + 14 * i, 200.0 + 5 * i, 32.0, 38.0)]  # crosses several tiles

    frames = 70
    tracked, searched = _run(walker, frames)
    for frame, regions in searched[1:]:
        truth = walker(frame)[0]
        assert any(_holds(region, truth) for region in regions), f"frame {frame}: the face was not searched"
        assert len(regions) <= BUDGET.calls_per_round(
            1, len(search_regions(WIDTH, HEIGHT, TILING))
        )  # a region for the track, not a full scan
    assert all(any(face.box.iou(walker(i)[0]) > 0.5 for face in faces) for i, faces in enumerate(tracked))


def test_where_faces_were_found_is_searched_first_when_every_tile_changed():
    # The light flickers: every tile changes every frame, all were searched in the first round.
    # The budget (4 calls) cannot search them all; the track's tile goes first, then the other
    # regions whose last search found the face (a crowd's new faces come where faces are).
    face = Box(950.0, 420.0, 30.0, 36.0)  # in the overlap of four tiles
    background = cctv_background(WIDTH, HEIGHT, seed=5)

    def flickering(i: int) -> np.ndarray:
        return cv2.add(_blob_frame(background, face), np.full_like(background, 40 * (i % 2)))

    _, searched = _run(lambda i: [face], 2, image_of=flickering)
    assert len(searched[0][1]) == len(search_regions(WIDTH, HEIGHT, TILING))  # the first round: all
    regions = searched[1][1]
    assert len(regions) == BUDGET.calls_per_round(1, len(search_regions(WIDTH, HEIGHT, TILING)))
    assert all(_holds(region, face) for region in regions), regions


def test_a_tracked_person_walking_in_a_still_scene_costs_little_more_than_its_track_region():
    # A face with a body under it walks along the top row of tiles; the body moves through the
    # tiles below, which do not hold the face: that change is the tracked person, not a new face.
    # (Those tiles are searched again once the body has left the place it had at their last
    # search: the mask covers the person where it is now.)
    def walker(i: int) -> list[Box]:
        return [Box(100.0 + 6 * i, 130.0, 30.0, 36.0)]

    background = cctv_background(WIDTH, HEIGHT, seed=5)

    def person(i: int) -> np.ndarray:
        box = walker(i)[0]
        frame = _blob_frame(background, box)
        x0, y0 = int(box.x), int(box.y + box.h)
        cv2.rectangle(frame, (x0, y0), (x0 + int(box.w), y0 + int(1.5 * box.h)), (40, 60, 160), -1)
        return frame

    frames = 40  # under still_rescan_s: no still tile is due again
    tracked, searched = _run(walker, frames, image_of=person)
    assert all(any(face.box.iou(walker(i)[0]) > 0.5 for face in faces) for i, faces in enumerate(tracked))
    for frame, regions in searched[1:]:
        assert any(_holds(region, walker(frame)[0]) for region in regions), f"frame {frame}: the face was not searched"
    rounds = len(searched) - 1
    calls = sum(len(regions) for _, regions in searched[1:])
    assert calls < 2 * rounds  # without the body: the whole budget every round (3-4 calls)


class TiledDetector:
    """A plain detector (EveryNthFrame's): `detect` searches every region of its tiling."""

    def __init__(self, tiling: TilingOptions | None) -> None:
        self.tiling = tiling

    def detect(self, image) -> list[Face]:
        return []


@pytest.mark.parametrize(("tiling", "calls_per_round"), [(TILING, 16), (None, 1)])
def test_every_nth_frame_counts_its_detector_calls(tiling, calls_per_round):
    search = EveryNthFrame(TiledDetector(tiling), every_n=3)
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    for tick in range(6):
        search.find(image, tick, None, ())
    assert search.counters.rounds == 2
    assert search.counters.calls == 2 * calls_per_round


def test_recall_on_a_generated_crowd_is_within_5_percent_of_every_tile_every_frame():
    require_faces()
    width, height, frames = 960, 540, 24
    walkers = crowd_walkers(width, height, 10, frames, seed=2)
    recalls = {}
    for name in ("reference", "adaptive"):
        with MediaPipeFaceDetector(FULL_RANGE, 0.5, TILING, 10) as detector:
            search = (
                EveryNthFrame(detector, 1)
                if name == "reference"
                else AdaptiveSearch(detector, TILING, SearchBudget(budget_ms=7.5), every_n=1)
            )
            stage = DetectStage(search, FaceTracker(), None)
            recall = Recall()
            truths = []
            images = (
                truths.append(boxes_now) or image
                for image, boxes_now in walking_scene(width, height, walkers, frames, seed=2)
            )
            for frame in frames_of(images):
                recall.add(truths[-1], boxes(search_and_track(stage, frame)))
            recalls[name] = (recall.at_least(20), search.counters.seconds)
    (reference, reference_s), (adaptive, adaptive_s) = recalls["reference"], recalls["adaptive"]
    assert reference >= 0.8  # the scene's faces are findable
    assert adaptive >= reference - 0.05
    assert adaptive_s < reference_s  # and it costs less (9 regions a frame for the reference)


@pytest.mark.parametrize(("tiles", "calls", "tracks", "rounds"), [(29, 4, 0, 8), (29, 4, 3, 29), (3, 4, 1, 1)])
def test_first_detection_bound(tiles, calls, tracks, rounds):
    assert first_detection_rounds(tiles, calls, tracks) == rounds


@pytest.mark.parametrize("name", ["default.yaml", "live_rtsp.yaml", "batch.yaml"])
@pytest.mark.parametrize("budget_ms", [None, 8.0])
def test_shipped_configs_with_tiles_get_the_adaptive_search(name, budget_ms, caplog):
    flags = {"detection.tiling.enabled": (True, "--tiles"), "source.inputs": ([], "-")}
    if budget_ms is not None:
        flags["detection.search.budget_ms"] = (budget_ms, "-")
    config = load_config(REPO_ROOT / "configs" / name, flags)
    with caplog.at_level(logging.INFO, logger="streamer.components"):
        components._log_detection(config)
    assert "search adaptive" in caplog.text
    with components._make_detector(config) as detector:
        assert isinstance(detector, AdaptiveSearch)
