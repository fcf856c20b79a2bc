"""Per-camera isolation with fake stages: a camera's fault restarts that camera only; a camera
offline at start-up is retried while the others record; a camera given up is reported."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from streamer.camera import CameraPolicy
from streamer.pipeline import Components, Job, Pipeline, PipelineSettings
from streamer.sources import SourceError
from tests.test_pipeline import (
    Boom,
    FakeDetector,
    FakeSink,
    FakeSource,
    FakeTracker,
    RecordingRestorer,
    crop_with_source_mark,
    mark_restored_faces,
)

QUICK = CameraPolicy(restart_initial_s=0.05, restart_max_s=0.1, stale_after_s=0.5)


class Cameras:
    """Fake cameras run as camera jobs; every opening of a camera or of its output is recorded."""

    def __init__(self, names: list[str], **overrides) -> None:
        self.names = names
        self.opened_sinks: dict[str, list[FakeSink]] = {name: [] for name in names}
        self.opened_sources: dict[str, int] = {name: 0 for name in names}
        self.fail_opens: dict[str, int] = {}  # camera -> how many opens fail first (None: all)
        self.sink_factory = {name: FakeSink for name in names}
        self.source_factory = {name: (lambda n: FakeSource(n, 10**9, live=True, delay_s=0.005)) for name in names}
        self.restorer = RecordingRestorer()
        fields = {
            "open_source": self._open_source,
            "open_sink": self._open_sink,
            "make_detector": FakeDetector,
            "make_tracker": FakeTracker,
            "restorer": self.restorer,
            "crop_faces": crop_with_source_mark,
            "compose": mark_restored_faces,
        }
        fields.update(overrides)
        self.components = Components(**fields)

    def _open_source(self, url: str, source_id: str, stats=None):
        self.opened_sources[source_id] += 1
        failing = self.fail_opens.get(source_id, 0)
        if failing is None or self.opened_sources[source_id] <= failing:
            raise SourceError(f"rtsp://admin:***@{source_id}/live: cannot open: Connection refused")
        return self.source_factory[source_id](source_id).counting_into(stats)

    def _open_sink(self, target: str, info):
        sink = self.sink_factory[target]()
        self.opened_sinks[target].append(sink)
        return sink

    def pipeline(self, policy: CameraPolicy = QUICK, **settings) -> Pipeline:
        jobs = [Job(name, f"rtsp://{name}/live", name, name, live=True) for name in self.names]
        return Pipeline(jobs, self.components, PipelineSettings(camera=policy, **settings))

    def frames_written(self, name: str) -> int:
        return sum(len(sink.frames) for sink in self.opened_sinks[name])


def run_until(pipeline: Pipeline, condition, timeout_s: float, what: str):
    """Run the pipeline in a thread until condition() holds, then stop it; returns its outcome."""
    outcome: list = []
    thread = threading.Thread(target=lambda: _capture(outcome, pipeline.run), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.02)
    reached = condition()
    pipeline.request_stop()
    thread.join(10.0)
    assert not thread.is_alive(), "the pipeline did not stop"
    assert reached, f"{what}: not within {timeout_s} s ({outcome})"
    return outcome[0]


def _capture(outcome: list, work) -> None:
    try:
        outcome.append(work())
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        outcome.append(exc)


class FailingOnceSink(FakeSink):
    """An output that fails on its 5th frame (the first one opened only)."""

    failures = 0

    def write(self, frame):
        if len(self.frames) == 5 and FailingOnceSink.failures == 0:
            FailingOnceSink.failures += 1
            raise Boom("disk hiccup")
        super().write(frame)


class RaisingDetectorOnce(FakeDetector):
    """Raises once, in camera a's detect thread."""

    raised = False

    def detect(self, image):
        if not RaisingDetectorOnce.raised and threading.current_thread().name == "detect-a":
            RaisingDetectorOnce.raised = True
            raise Boom("detector fault")
        return super().detect(image)


@pytest.mark.parametrize("stage", ["sink", "detector", "source"])
def test_a_fault_in_one_camera_restarts_that_camera_only(stage):
    cams = Cameras(["a", "b"])
    FailingOnceSink.failures, RaisingDetectorOnce.raised = 0, False
    if stage == "sink":
        cams.sink_factory["a"] = FailingOnceSink
    if stage == "detector":
        cams.components.make_detector = RaisingDetectorOnce
    if stage == "source":

        class RaisingOnce(FakeSource):
            def frames(self, stop):
                for frame in super().frames(stop):
                    if cams.opened_sources["a"] == 1 and frame.index == 5:
                        raise Boom("decoder fault")
                    yield frame

        cams.source_factory["a"] = lambda n: RaisingOnce(n, 10**9, live=True, delay_s=0.005)
    pipeline = cams.pipeline()
    b_before_fault: list[int] = []

    def a_restarted_and_writing() -> bool:
        a = pipeline.stats.sources["a"]
        if a.restarts and not b_before_fault:
            b_before_fault.append(cams.frames_written("b"))
        return a.restarts == 1 and len(cams.opened_sinks["a"]) == 2 and len(cams.opened_sinks["a"][1].frames) > 10

    stats = run_until(pipeline, a_restarted_and_writing, 10.0, "camera a restarted")
    assert not isinstance(stats, BaseException), stats
    a, b = stats.sources["a"], stats.sources["b"]
    assert "Boom" in a.last_error and b.restarts == 0 and b.last_error is None
    # b never stopped: one output, finalised once at the end, frames written after a's fault
    assert len(cams.opened_sinks["b"]) == 1 and cams.opened_sinks["b"][0].closed
    assert cams.frames_written("b") > b_before_fault[0]
    # a's first output was closed (kept), never aborted (removed)
    first = cams.opened_sinks["a"][0]
    assert first.closed and not first.aborted
    assert a.state == b.state == "stopped"


def test_a_camera_offline_at_start_up_is_retried_while_the_others_record():
    cams = Cameras(["up", "late"])
    cams.fail_opens["late"] = 3
    pipeline = cams.pipeline()
    stats = run_until(pipeline, lambda: cams.frames_written("late") > 10, 10.0, "the late camera recording")
    assert cams.opened_sources["late"] == 4 and cams.opened_sources["up"] == 1
    up, late = cams.opened_sinks["up"][0].frames, cams.opened_sinks["late"][0].frames
    assert up[0].captured < late[0].captured and len(late) > 10  # "up" recorded while "late" was retried
    assert stats.sources["late"].restarts == 0 and "Connection refused" in stats.sources["late"].last_error
    assert pipeline.lost_cameras == {}


def test_a_required_camera_offline_at_start_up_ends_the_run():
    cams = Cameras(["required", "other"])
    cams.fail_opens["required"] = None
    pipeline = cams.pipeline(CameraPolicy(restart_initial_s=0.05, required=True))
    started = time.monotonic()
    stats = run_until(pipeline, lambda: bool(pipeline.lost_cameras), 5.0, "the required camera lost")
    assert time.monotonic() - started < 5
    assert "required camera" in pipeline.lost_cameras["required"] and "***" in pipeline.lost_cameras["required"]
    assert stats.sources["required"].state == "down"


def test_a_camera_silent_past_give_up_after_s_is_down_and_the_other_keeps_recording():
    cams = Cameras(["dead", "alive"])
    cams.source_factory["dead"] = lambda n: FakeSource(n, 20, live=True, delay_s=0.005)  # 20 frames, then silence
    pipeline = cams.pipeline(CameraPolicy(restart_initial_s=0.05, give_up_after_s=0.6, stale_after_s=0.2))
    alive_at_loss: list[int] = []

    def dead_lost_and_alive_goes_on() -> bool:
        if pipeline.lost_cameras and not alive_at_loss:
            alive_at_loss.append(cams.frames_written("alive"))
        return bool(alive_at_loss) and cams.frames_written("alive") > alive_at_loss[0] + 20

    stats = run_until(pipeline, dead_lost_and_alive_goes_on, 10.0, "the dead camera given up")
    assert list(pipeline.lost_cameras) == ["dead"] and "no frame for" in pipeline.lost_cameras["dead"]
    assert stats.sources["dead"].state == "down" and stats.sources["alive"].state == "stopped"
    assert cams.opened_sinks["dead"][0].closed and not cams.opened_sinks["dead"][0].aborted
    assert stats.sources["dead"].frames_in == 20 and cams.frames_written("dead") == stats.sources["dead"].frames_out


def test_a_restorer_fault_still_stops_the_whole_run():
    class Broken(RecordingRestorer):
        def restore(self, crops):
            raise Boom("restorer failed")

    pipeline = Cameras(["a", "b"], restorer=Broken()).pipeline()
    outcome: list = []
    thread = threading.Thread(target=lambda: _capture(outcome, pipeline.run), daemon=True)
    thread.start()
    thread.join(10.0)
    assert not thread.is_alive() and isinstance(outcome[0], Boom), outcome


def test_the_status_line_shows_state_and_windowed_fps_and_warns_about_a_camera_down(caplog):
    cams = Cameras(["ok", "off"])
    cams.fail_opens["off"] = None
    pipeline = cams.pipeline(status_interval_s=0.2, warn_down_s=0.3)
    with caplog.at_level("INFO"):
        run_until(
            pipeline,
            lambda: any("camera starting for" in r.getMessage() for r in caplog.records),
            5.0,
            "a warning about the camera that never came up",
        )
    status = [r.getMessage() for r in caplog.records if r.getMessage().startswith("status: ")]
    both = [line for line in status if "ok: up, " in line and "off: starting since " in line]
    assert both, status
    warnings = [
        r
        for r in caplog.records
        if r.levelname == "WARNING"
        and "camera starting for" in r.getMessage()
        and "nothing recorded meanwhile" in r.getMessage()
    ]
    assert warnings and warnings[0].getMessage().startswith("off: ")
    fps = {name: float(both[-1].split(f"{name}: ")[1].split(", ")[1].removesuffix(" fps")) for name in ("ok", "off")}
    assert fps["ok"] > 20 and fps["off"] == 0


def test_latency_from_capture_to_write_is_recorded_for_every_frame_written():
    cams = Cameras(["a"])
    pipeline = cams.pipeline()
    stats = run_until(pipeline, lambda: cams.frames_written("a") > 30, 5.0, "frames")
    latency = stats.sources["a"].latency
    assert latency.count == stats.sources["a"].frames_out
    assert 0 < latency.percentile(50) <= latency.percentile(95) < 1.0
    assert np.isclose(sum(latency.bucket_counts), latency.count)


def test_an_output_that_cannot_be_opened_restarts_that_camera_only():
    cams = Cameras(["a", "b"])
    opened = {"a": 0}

    def failing_first_time():
        opened["a"] += 1
        if opened["a"] == 1:
            raise OSError("No space left on device")
        return FakeSink()

    cams.sink_factory["a"] = failing_first_time
    pipeline = cams.pipeline()
    stats = run_until(pipeline, lambda: cams.frames_written("a") > 10, 10.0, "camera a writing after its restart")
    assert stats.sources["a"].restarts == 1 and "No space left" in stats.sources["a"].last_error
    assert stats.sources["b"].restarts == 0 and cams.frames_written("b") > 10


def test_a_camera_down_at_the_end_of_the_run_is_reported_as_lost():
    cams = Cameras(["steady", "died"])
    cams.source_factory["died"] = lambda n: FakeSource(n, 10, live=True, delay_s=0.005)  # 10 frames, then silence
    pipeline = cams.pipeline(warn_down_s=0.5)
    run_until(
        pipeline,
        lambda: (pipeline.stats.sources["died"].seconds_since_frame() or 0) > 1.0,
        10.0,
        "the camera silent for a second",
    )
    assert list(pipeline.lost_cameras) == ["died"]
    assert pipeline.lost_cameras["died"].startswith("down at the end of the run: no frame for ")
