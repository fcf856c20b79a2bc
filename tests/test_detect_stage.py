"""The one per-frame face logic (streamer/detect_stage.py): detect every N frames, track, keep the faces
in the picture, crop. The pipeline's DetectWorker, the bench's serial loop and training's video check
all call DetectStage.faces_in, so this is the behaviour each of them measures."""

from __future__ import annotations

import importlib.util
import sys
import threading

import numpy as np
import pytest

from streamer import REPO_ROOT, detect_stage
from streamer.detect_stage import DetectStage
from streamer.pipeline import Job
from streamer.values import Box, Face
from tests.test_pipeline import FakeDetector, FakeSource, Harness

WIDTH, HEIGHT = 64, 48
INSIDE = Box(10, 10, 8, 8)
OUTSIDE = Box(WIDTH + 5, 10, 8, 8)  # carried out of the picture by the tracker
EDGE = Box(WIDTH - 4, 10, 8, 8)  # half in the picture: kept


class ScriptedDetector:
    def __init__(self) -> None:
        self.detected_on: list[int] = []

    def detect(self, image: np.ndarray) -> list[Face]:
        self.detected_on.append(int(image[0, 0, 0]))
        return [Face(INSIDE, 0.9)]

    def close(self) -> None:
        pass


class ScriptedTracker:
    """Returns the boxes of the script for each frame index, whatever it was given; records the calls."""

    def __init__(self, boxes: list[Box]) -> None:
        self.boxes, self.calls = boxes, []

    def update(self, frame_index: int, detections):
        self.calls.append((frame_index, detections is not None))
        return [Face(box, 0.9, track_id=k) for k, box in enumerate(self.boxes)]


class ClosableDetector(FakeDetector):
    def close(self) -> None:
        pass


def mark_crops(image: np.ndarray, faces):
    return [Face(f.box, f.score, f.track_id, crop_box=f.box, crop=np.zeros((4, 4, 3), np.uint8)) for f in faces]


def frame(value: int) -> np.ndarray:
    return np.full((HEIGHT, WIDTH, 3), value, np.uint8)


@pytest.mark.parametrize(
    ("every_n", "indices", "detected_on"),
    [
        (1, [0, 1, 2, 3], [0, 1, 2, 3]),
        (3, [0, 1, 2, 3, 4, 5, 6], [0, 3, 6]),
        # a live source's drops leave gaps in the frame index: the frames seen count, not the index
        (2, [0, 5, 6, 9, 20], [0, 6, 20]),
    ],
)
def test_the_detector_runs_every_n_frames_seen_and_the_tracker_sees_every_frame(every_n, indices, detected_on):
    detector, tracker = ScriptedDetector(), ScriptedTracker([INSIDE])
    stage = DetectStage(detector, tracker, None, every_n)
    for index in indices:
        stage.faces_in(frame(index), index)
    assert detector.detected_on == detected_on
    assert tracker.calls == [(index, index in detected_on) for index in indices]


@pytest.mark.parametrize(
    ("boxes", "crop", "kept", "cropped"),
    [
        ([INSIDE, OUTSIDE, EDGE], None, [INSIDE, EDGE], False),
        ([INSIDE, OUTSIDE, EDGE], mark_crops, [INSIDE, EDGE], True),
        ([OUTSIDE], mark_crops, [], False),  # nothing to crop: the crop function is not called
    ],
)
def test_faces_carried_out_of_the_picture_are_dropped_and_the_rest_cropped(boxes, crop, kept, cropped):
    calls = []

    def counting_crop(image, faces):
        calls.append(len(faces))
        return crop(image, faces)

    stage = DetectStage(ScriptedDetector(), ScriptedTracker(boxes), counting_crop if crop else None)
    faces = stage.faces_in(frame(0), 0)
    assert [face.box for face in faces] == kept
    assert all((face.crop is not None) == cropped for face in faces)
    assert calls == ([len(kept)] if cropped else [])


def test_the_pipeline_and_the_bench_serial_loop_both_run_the_detect_stage(monkeypatch):
    """The callers do not carry their own copy of the per-frame logic (the video check's is exercised
    by tests/training when the shared videos are present)."""
    seen: list[str] = []
    real = DetectStage.faces_in

    def spy(self, image, frame_index, *rest):
        seen.append(threading.current_thread().name)
        return real(self, image, frame_index, *rest)

    monkeypatch.setattr(detect_stage.DetectStage, "faces_in", spy)
    harness = Harness([FakeSource("a", 6)], make_detector=ClosableDetector)
    harness.pipeline().run()
    assert len(seen) == 6 and all(name.startswith("detect-") for name in seen)

    spec = importlib.util.spec_from_file_location("pipeline_bench", REPO_ROOT / "bench" / "pipeline_bench.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "pipeline_bench", bench)
    spec.loader.exec_module(bench)
    harness = Harness([FakeSource("a", 6)], make_detector=ClosableDetector)
    assert bench.run_serial(Job("a", "a", "a", "a"), harness.components, every_n=2, limit=None) == 6
    assert len(seen) == 12
    assert [f.image[-1, -1, 0] for f in harness.sinks["a"].frames] == [1, 0, 1, 0, 1, 0]  # a face restored each


class SpecOnlyRestorer:
    """What assemble_components needs of a restorer: its spec (nothing is restored here)."""

    def __init__(self, frames: int = 1) -> None:
        from streamer.model_contract import RestorerSpec

        self.spec = RestorerSpec(64, 1.5, frames=frames)

    def restore(self, crops):
        return crops


@pytest.mark.parametrize(
    ("mode", "report", "frames", "filtered"),
    [
        ("overlay", False, 1, True),  # the inset shows the track's best view: restore only better ones
        ("paste", False, 1, False),  # every face is pasted: every face is restored
        ("side-by-side", False, 1, False),
        ("overlay", True, 1, False),  # the report keeps several views of each track, all restored
        ("overlay", False, 5, False),  # a K-frame restorer's windows need every frame's crop
    ],
)
def test_only_overlay_without_a_report_restores_just_the_faces_that_beat_their_tracks_best(
    mode, report, frames, filtered
):
    from streamer.components import assemble_components
    from streamer.config import load_config

    config = load_config(None, {"compositing.mode": (mode, "test")})
    components = assemble_components(config, SpecOnlyRestorer(frames), object() if report else None)
    components.make_gate = None
    stage = components.detect_stage(ScriptedDetector(), 1)
    assert (stage.restore_filter is not None) == filtered
    if filtered:  # the same face on the next frame does not beat itself: it keeps its pixels
        stage.tracker = ScriptedTracker([Box(10, 10, 24, 24)])
        image = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), np.uint8)
        assert [face.crop is not None for frame_index in (0, 1) for face in stage.faces_in(image, frame_index)] == [
            True,
            False,
        ]
