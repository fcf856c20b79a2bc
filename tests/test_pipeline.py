"""The pipeline's threading with fake stages: order, timing, drops, failures, shared batching."""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from fractions import Fraction

import numpy as np
import pytest

from streamer.compositing import Composite
from streamer.model_contract import RestorerSpec
from streamer.pipeline import Components, Job, Pipeline, PipelineSettings
from streamer.stats import SourceStats
from streamer.values import Box, Face, Frame, StreamInfo
from streamer.workers import Batching, CaptureLimits, RestorerUnavailable, put_dropping

CROP = 4  # side of the fake model's crops


class FakeSource:
    def __init__(self, source_id: str, count: int, live: bool = False, delay_s: float = 0.0) -> None:
        self.source_id, self.count, self.delay_s = source_id, count, delay_s
        self.info = StreamInfo(source_id, 8, 6, Fraction(25), Fraction(1, 1000), is_live=live)
        self.stats = SourceStats(source_id, source_id)

    def counting_into(self, stats: SourceStats | None) -> FakeSource:
        self.stats = stats or self.stats
        return self
        self.closed = False

    def frames(self, stop: threading.Event):
        for index in range(self.count):
            if stop.is_set():
                return
            time.sleep(self.delay_s)
            image = np.full((6, 8, 3), index % 256, np.uint8)
            yield Frame(self.source_id, index, pts=1000 + 40 * index, time_base=self.info.time_base, image=image)
        while self.info.is_live and not stop.is_set():  # a live source ends only when stopped
            time.sleep(0.01)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.closed = True


class FakeSink:
    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.closed = self.aborted = False

    def write(self, frame: Frame) -> None:
        self.frames.append(frame)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


class FakeDetector:
    """One face on every other frame."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s

    def detect(self, image: np.ndarray) -> list[Face]:
        time.sleep(self.delay_s)
        return [Face(Box(1, 1, 2, 2), 0.9)] if int(image[0, 0, 0]) % 2 == 0 else []


class FakeTracker:
    def update(self, frame_index: int, detections: list[Face] | None) -> list[Face]:
        return detections or []


class RecordingRestorer:
    """Inverts crops and records the batches it saw."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def restore(self, crops: np.ndarray) -> np.ndarray:
        self.batches.append(crops.copy())
        return 255 - crops


def crop_with_source_mark(image: np.ndarray, faces):
    """The crop holds the frame's pixel value, so a batch shows which frames it mixed."""
    return [Face(f.box, f.score, crop=np.full((CROP, CROP, 3), image[0, 0, 0], np.uint8)) for f in faces]


def mark_restored_faces(image: np.ndarray, faces) -> Composite:
    """Writes the number of restored faces into the last pixel, so the test can see they arrived."""
    out = image.copy()
    out[-1, -1, 0] = sum(face.restored is not None for face in faces)
    return Composite(out, None)  # None: it may have drawn anywhere


class Harness:
    """Runs a Pipeline on fake sources and records what each fake sink got."""

    def __init__(self, sources: list[FakeSource], **overrides) -> None:
        self.sources = {source.source_id: source for source in sources}
        self.sinks = {source_id: FakeSink() for source_id in self.sources}
        self.restorer = RecordingRestorer()
        fields = dict(
            open_source=lambda url, source_id, stats=None: self.sources[source_id].counting_into(stats),
            open_sink=lambda target, info: self.sinks[target],
            make_detector=FakeDetector,
            make_tracker=FakeTracker,
            restorer=self.restorer,
            crop_faces=crop_with_source_mark,
            compose=mark_restored_faces,
        )
        fields.update(overrides)
        self.components = Components(**fields)

    def pipeline(self, **settings) -> Pipeline:
        jobs = [Job(source_id, source_id, source_id, source_id) for source_id in self.sources]
        return Pipeline(jobs, self.components, PipelineSettings(**settings))


def run_in_thread(pipeline: Pipeline, timeout_s: float):
    """Run the pipeline in a thread; return (stats or exception, seconds it took)."""
    outcome: list = []

    def target() -> None:
        try:
            outcome.append(pipeline.run())
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"pipeline did not finish within {timeout_s} s"
    return outcome[0], time.monotonic() - started


def test_a_file_comes_out_whole_in_order_with_its_timestamps():
    harness = Harness([FakeSource("a", 40)])
    stats = harness.pipeline(every_n_frames=1, queue_size=2).run()
    sink = harness.sinks["a"]
    assert [f.index for f in sink.frames] == list(range(40))
    assert [f.pts for f in sink.frames] == [1000 + 40 * i for i in range(40)]
    assert sink.closed and not sink.aborted
    assert stats.sources["a"].frames_in == stats.sources["a"].frames_out == 40
    # Frames without faces flow through untouched; frames with one carry one restored face.
    assert [int(f.image[-1, -1, 0]) for f in sink.frames] == [1 - i % 2 for i in range(40)]
    assert stats.sources["a"].restored == stats.sources["a"].faces == 20


def test_detection_runs_every_nth_frame_and_the_tracker_fills_the_gaps():
    calls = []

    class CountingDetector(FakeDetector):
        def detect(self, image):
            calls.append(int(image[0, 0, 0]))
            return super().detect(image)

    harness = Harness([FakeSource("a", 12)], make_detector=CountingDetector)
    harness.pipeline(every_n_frames=3).run()
    assert calls == [0, 3, 6, 9]


def test_without_a_restorer_faces_are_found_but_frames_are_unchanged():
    harness = Harness([FakeSource("a", 10)], restorer=None)
    stats = harness.pipeline().run()
    assert stats.sources["a"].faces == 5 and stats.sources["a"].restored == 0
    assert all(int(f.image[-1, -1, 0]) == 0 for f in harness.sinks["a"].frames)
    assert len(harness.sinks["a"].frames) == 10


class Boom(RuntimeError):
    pass


def raise_on_frame_5(image, *_args):
    if int(image[0, 0, 0]) == 5:
        raise Boom("stage failed")
    return image


class RaisingDetector(FakeDetector):
    def detect(self, image):
        raise_on_frame_5(image)
        return super().detect(image)


class RaisingRestorer(RecordingRestorer):
    def restore(self, crops):
        if len(self.batches) == 2:
            raise Boom("restorer failed")
        return super().restore(crops)


class RaisingSink(FakeSink):
    def write(self, frame):
        raise_on_frame_5(frame.image)
        super().write(frame)


class RaisingSource(FakeSource):
    def frames(self, stop):
        for frame in super().frames(stop):
            raise_on_frame_5(frame.image)
            yield frame


@pytest.mark.parametrize("stage", ["source", "detector", "restorer", "compose", "sink"])
def test_an_exception_in_any_stage_stops_everything_and_reaches_the_caller(stage):
    # A long file and tiny queues: every other stage is blocked on a queue when the failure hits.
    source = RaisingSource("a", 10_000) if stage == "source" else FakeSource("a", 10_000)
    harness = Harness([source, FakeSource("b", 10_000)])
    if stage == "detector":
        harness.components.make_detector = RaisingDetector
    if stage == "restorer":
        harness.components.restorer = RaisingRestorer()
    if stage == "compose":
        harness.components.compose = lambda image, faces: Composite(raise_on_frame_5(image), None)
    if stage == "sink":
        harness.sinks["a"] = RaisingSink()
    outcome, _ = run_in_thread(harness.pipeline(queue_size=1), timeout_s=5.0)
    assert isinstance(outcome, Boom)
    # Unfinished outputs are removed, not left half-written; sources are closed.
    assert all(sink.aborted and not sink.closed for sink in harness.sinks.values())
    assert all(source.closed for source in harness.sources.values())


def test_a_live_source_is_never_blocked_it_drops_the_oldest_frames():
    harness = Harness([FakeSource("cam", 60, live=True)], make_detector=lambda: FakeDetector(delay_s=0.01))
    pipeline = harness.pipeline(live_queue_size=2, limits=CaptureLimits(max_frames=60))
    stats, _ = run_in_thread(pipeline, timeout_s=20.0)
    written = [f.index for f in harness.sinks["cam"].frames]
    cam = stats.sources["cam"]
    assert cam.drops > 0
    assert cam.frames_in == 60 and cam.frames_out + cam.drops == 60 == len(written) + cam.drops
    assert written == sorted(written)
    assert written[-1] == 59  # dropping the oldest keeps the newest frame


def test_put_dropping_newest_keeps_the_queue_and_reports_the_drop():
    target: queue.Queue = queue.Queue(2)
    for item in (1, 2):
        target.put(item)
    assert put_dropping(target, 3, "newest") == 1
    assert put_dropping(target, 4, "oldest") == 1
    assert [target.get_nowait(), target.get_nowait()] == [2, 4]


def test_request_stop_finishes_the_frames_in_flight_and_finalises_the_output():
    harness = Harness([FakeSource("a", 100_000, delay_s=0.001)])
    pipeline = harness.pipeline()
    threading.Timer(0.3, pipeline.request_stop).start()
    stats, _ = run_in_thread(pipeline, timeout_s=10.0)
    sink = harness.sinks["a"]
    assert sink.closed and not sink.aborted
    assert 0 < stats.sources["a"].frames_out == stats.sources["a"].frames_in < 100_000
    assert [f.index for f in sink.frames] == list(range(len(sink.frames)))


def test_abort_removes_the_unfinished_output():
    harness = Harness([FakeSource("a", 100_000, delay_s=0.001)])
    pipeline = harness.pipeline()
    threading.Timer(0.3, pipeline.abort).start()
    run_in_thread(pipeline, timeout_s=10.0)
    assert harness.sinks["a"].aborted and not harness.sinks["a"].closed


def test_several_sources_share_one_restorer_and_their_crops_batch_together():
    # Source k's frames have pixel values 100k + i (i even: one face), so a crop tells its source.
    sources = [OffsetSource(f"cam{k}", 30, offset=100 * k) for k in range(3)]
    harness = Harness(sources)
    stats = harness.pipeline(batching=Batching(batch_size=6, max_latency_s=0.5), queue_size=4).run()
    batches = harness.restorer.batches
    assert all(len(batch) <= 6 for batch in batches)
    assert any(len({int(crop[0, 0, 0]) // 100 for crop in batch}) > 1 for batch in batches)
    for source_id, sink in harness.sinks.items():
        assert [f.index for f in sink.frames] == list(range(30))
        assert stats.sources[source_id].restored == 15
    assert sum(len(batch) for batch in batches) == stats.restorer.faces == 45


class BlockingSink(FakeSink):
    """An output that stopped accepting frames (a push server that stopped reading) until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, frame: Frame) -> None:
        self.release.wait()
        super().write(frame)


def test_a_stuck_live_output_drops_its_own_frames_and_does_not_stall_the_other_camera():
    harness = Harness([FakeSource(name, 150, live=True, delay_s=0.002) for name in ("stuck", "ok")])
    stuck = harness.sinks["stuck"] = BlockingSink()
    pipeline = harness.pipeline(queue_size=2, live_queue_size=2, limits=CaptureLimits(max_frames=150))
    thread = threading.Thread(target=pipeline.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15.0
    while not harness.sinks["ok"].closed and time.monotonic() < deadline:
        time.sleep(0.05)
    ok_finished_while_stuck = harness.sinks["ok"].closed
    stuck.release.set()
    thread.join(15.0)
    assert ok_finished_while_stuck and not thread.is_alive()
    ok, blocked = pipeline.stats.sources["ok"], pipeline.stats.sources["stuck"]
    assert ok.frames_out + ok.drops == 150 and ok.frames_out > 0
    assert blocked.drops > 0 and blocked.frames_out + blocked.drops == 150 == blocked.frames_in


class OffsetSource(FakeSource):
    def __init__(self, source_id: str, count: int, offset: int) -> None:
        super().__init__(source_id, count)
        self.offset = offset

    def frames(self, stop):
        for frame in super().frames(stop):
            image = np.full_like(frame.image, (self.offset + frame.index) % 256)
            yield Frame(frame.source_id, frame.index, frame.pts, frame.time_base, image)


def test_max_frames_ends_a_run():
    harness = Harness([FakeSource("a", 1000)])
    stats = harness.pipeline(limits=CaptureLimits(max_frames=7)).run()
    assert stats.sources["a"].frames_out == 7 and harness.sinks["a"].closed


def test_a_live_run_logs_a_status_line_with_fps_faces_and_drops(caplog):
    harness = Harness([FakeSource("cam", 40, live=True, delay_s=0.01)])
    with caplog.at_level("INFO", logger="streamer.pipeline"):
        harness.pipeline(status_interval_s=0.1, limits=CaptureLimits(max_frames=40)).run()
    status = [r.getMessage() for r in caplog.records if r.getMessage().startswith("status: ")]
    assert status and all(" fps, " in line and " faces, " in line and " dropped" in line for line in status)


def test_a_face_the_tracker_carried_out_of_the_picture_is_not_restored():
    class DriftingTracker:
        """Reports one face inside the 8x6 frame and one that drifted past its right edge."""

        def update(self, frame_index, detections):
            return [Face(Box(1, 1, 2, 2), 0.9), Face(Box(8.5, 1, 2, 2), 0.9)]

    def crop_inside_only(image, faces):
        assert all(face.box.x < image.shape[1] for face in faces), "asked to crop a face outside the frame"
        return crop_with_source_mark(image, faces)

    harness = Harness([FakeSource("a", 5)], make_tracker=DriftingTracker, crop_faces=crop_inside_only)
    stats = harness.pipeline().run()
    assert stats.sources["a"].faces == stats.sources["a"].restored == 5


class OneTrackTracker:
    """Every detection is track 1 (in each camera: their ids collide on purpose)."""

    def update(self, frame_index: int, detections: list[Face] | None) -> list[Face]:
        return [Face(f.box, f.score, track_id=1) for f in detections or []]


class WindowRecorder(RecordingRestorer):
    """A 3-frame restorer (model contract v2): records the windows it is given, returns their newest crops."""

    spec = RestorerSpec(input_size=16, crop_scale=1.5, frames=3)

    def restore(self, crops: np.ndarray) -> np.ndarray:
        assert crops.ndim == 5 and crops.shape[1] == 3
        self.batches.append(crops.copy())
        return 255 - crops[:, -1]


def crop_keeping_track(image: np.ndarray, faces):
    return [
        dataclasses.replace(face, crop=crop)
        for face, crop in zip(faces, (f.crop for f in crop_with_source_mark(image, faces)))
    ]


def test_a_k_frame_restorer_gets_each_tracks_last_k_crops_and_cameras_never_mix():
    # Camera k's frames have pixel values 100k + i (a face on even i), so a crop tells its camera and frame.
    sources = [OffsetSource(f"cam{k}", 12, offset=100 * k) for k in range(2)]
    harness = Harness(sources, make_tracker=OneTrackTracker, restorer=WindowRecorder(), crop_faces=crop_keeping_track)
    stats = harness.pipeline(batching=Batching(batch_size=4, max_latency_s=0.2), queue_size=4).run()
    windows = [
        [int(crop[0, 0, 0]) for crop in window] for batch in harness.components.restorer.batches for window in batch
    ]
    assert len(windows) == stats.restorer.faces == 12
    for camera in (0, 1):
        own = sorted((w for w in windows if w[-1] // 100 == camera), key=lambda w: w[-1])
        newest = [100 * camera + i for i in range(0, 12, 2)]
        assert [w[-1] for w in own] == newest
        assert own[0] == [newest[0]] * 3  # a young track repeats its oldest crop
        assert own[1] == [newest[0], newest[0], newest[1]]
        assert all(w == newest[i - 2 : i + 1] for i, w in enumerate(own) if i >= 2)  # oldest first, causal


class FlakyRemoteRestorer(RecordingRestorer):
    """A remote restorer whose every other batch is lost (its replica died, retries spent)."""

    def restore(self, crops: np.ndarray) -> np.ndarray:
        if len(self.batches) % 2 == 1:
            self.batches.append(crops.copy())
            raise RestorerUnavailable("restorer unavailable after 3 attempts (ActorDiedError)")
        return super().restore(crops)


def test_faces_of_a_lost_restorer_batch_keep_their_pixels_are_counted_and_the_file_goes_on():
    harness = Harness([FakeSource("a", 40)], restorer=FlakyRemoteRestorer())
    stats = harness.pipeline(every_n_frames=1, batching=Batching(batch_size=2, max_latency_s=0.0)).run()
    written = harness.sinks["a"].frames
    a = stats.sources["a"]
    assert len(written) == 40 and a.frames_out == 40
    assert a.restored > 0 and a.unrestored > 0 and a.restored + a.unrestored == 20  # a face on every other frame
    assert sum(int(f.image[-1, -1, 0]) for f in written) == a.restored  # only restored faces were composited


class EveryOtherBestView:
    """A restore filter that keeps every other face's crop; the others keep their square only, as
    best_shots.RestoreWhenBetter leaves a face that does not beat its track's best view."""

    def __init__(self) -> None:
        self.seen = 0

    def select(self, image, faces):
        chosen = []
        for face in faces:
            if face.crop is not None:
                self.seen += 1
                if self.seen % 2 == 0:
                    face = dataclasses.replace(face, crop=None, crop_box=face.box)
            chosen.append(face)
        return chosen


def test_the_summary_counts_faces_shown_with_their_best_view_apart_from_faces_too_large():
    def crop_small_faces_only(image, faces):  # like restoration.prepare_crops with max_face_px
        faces = crop_with_source_mark(image, faces)
        return [dataclasses.replace(f, crop=None) if int(image[0, 0, 0]) % 4 == 2 else f for f in faces]

    harness = Harness([FakeSource("a", 40)], crop_faces=crop_small_faces_only, make_restore_filter=EveryOtherBestView)
    stats = harness.pipeline(every_n_frames=1).run()
    source = stats.sources["a"]
    assert (source.faces, source.too_large) == (20, 10)  # frames 2, 6, 10...: too large, no square
    assert source.best_view_shown == 5  # of the 10 cropped, the filter took every other crop
    assert source.restored == 5
    summary = stats.summary_table()
    assert "left alone: 10 of 20 faces, larger than restoration.max_face_px" in summary
    assert "overlay: 5 of 20 faces shown with their track's best restored view" in summary
