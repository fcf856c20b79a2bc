"""Operator drills against real RTSP servers on 127.0.0.1 (gst-rtsp-server), the real stages and a
TorchScript restorer: a camera that comes back at another resolution, a push server restarted mid-run,
two cameras where one dies for good, a camera offline at start-up, a camera killed and restarted (the
gap from camera back to frame written), and SIGKILL of the whole run mid-segment.

Slow (seconds of real time each): `.ci/run` runs the short ones explicitly.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from streamer.components import build_components, pipeline_settings
from streamer.pipeline import Job, Pipeline
from streamer.workers import CaptureLimits
from tests.conftest import REPO_ROOT
from tests.helpers.media import read_frames
from tests.helpers.rtsp_server import RtspTestServer, free_port, require_gstreamer
from tests.test_end_to_end import make_config, wait_until
from tests.test_rtsp import decodable_frames

pytestmark = pytest.mark.slow

FPS = 25
QUICK_SOURCE = dict(
    source__open_timeout_s=3.0,
    source__read_timeout_s=1.5,
    source__reconnect_initial_s=0.2,
    source__reconnect_max_s=1.0,
    source__reconnect_recent_max_s=0.5,
    source__connect_attempts=1,
)


@pytest.fixture(autouse=True)
def _gstreamer():
    require_gstreamer()


class LiveRun:
    """A Pipeline of live jobs in a background thread, stopped (drained) on exit."""

    def __init__(self, jobs: list[Job], checker_model: Path, **config) -> None:
        self.config = make_config(
            restoration__model=str(checker_model),
            detection__every_n_frames=2,
            output__preset="ultrafast",
            **{**QUICK_SOURCE, **config},
        )
        self.pipeline = Pipeline(jobs, build_components(self.config), pipeline_settings(self.config, CaptureLimits()))
        self.outcome: list = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.outcome.append(self.pipeline.run())
        except BaseException as exc:
            self.outcome.append(exc)

    def stats(self, source_id: str = "cam1"):
        return self.pipeline.stats.sources[source_id]

    def __enter__(self) -> LiveRun:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.pipeline.request_stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the pipeline did not stop"
        assert self.outcome and not isinstance(self.outcome[0], BaseException), self.outcome


def segments(folder: Path, camera: str = "cam1") -> list[Path]:
    return sorted(path for path in folder.glob(f"{camera}_*.ts") if ".partial" not in path.name)


def test_a_camera_back_at_another_resolution_gets_a_new_segment_at_its_new_size(tmp_path, checker_model):
    with RtspTestServer.start(width=160, height=120, fps=FPS) as small:
        port = small.port
        with LiveRun([Job("cam1", small.url, str(tmp_path / "cam1.mp4"), "cam1")], checker_model) as run:
            wait_until(lambda: run.stats().frames_out >= 20, 30, "frames at 160x120")
            small.kill()
            with RtspTestServer(port, 320, 240, FPS, None, None) as large:  # the same URL, now 320x240
                large.restart()
                before = run.stats().frames_out
                wait_until(lambda: run.stats().frames_out >= before + 20, 30, "frames at 320x240")
    sizes = [read_frames(path)[0][0].shape[:2] for path in segments(tmp_path)]
    assert sizes[0] == (120, 160) and sizes[-1] == (240, 320), sizes
    assert sum(len(read_frames(path)[0]) for path in segments(tmp_path)) == run.stats().frames_out


def test_a_push_server_restarted_mid_run_is_reconnected_and_the_drops_are_counted(tmp_path, checker_model):
    received = tmp_path / "received.h264"
    with (
        RtspTestServer.start(width=160, height=120, fps=FPS) as camera,
        RtspTestServer.start(record_to=received) as push_server,
    ):
        push_url = push_server.push_url
        with LiveRun([Job("cam1", camera.url, push_url, "cam1")], checker_model) as run:
            wait_until(lambda: run.stats().frames_out >= 25, 30, "frames pushed")
            push_server.kill()
            wait_until(lambda: run.stats().output_drops >= 10, 15, "frames dropped while the server is down")
            push_server.restart()  # a fresh recording: what arrives now came after the restart
            wait_until(lambda: run.stats().output_reconnects >= 1, 30, "the push reconnected")
            time.sleep(2.0)
    assert run.stats().restarts == 0  # the push reconnects by itself; the camera's job went on
    assert len(decodable_frames(received)) >= 20


def test_two_cameras_where_one_dies_for_good_the_other_keeps_recording_and_exit_is_3(tmp_path, checker_model):
    config = tmp_path / "live.yaml"
    config.write_text(
        "source:\n  open_timeout_s: 2\n  read_timeout_s: 1\n  reconnect_initial_s: 0.2\n"
        "  reconnect_max_s: 1\n  connect_attempts: 1\n  give_up_after_s: 5\n"
        "output:\n  preset: ultrafast\n"
    )
    stats_path = tmp_path / "stats.json"
    with (
        RtspTestServer.start(width=160, height=120, fps=FPS) as keeps,
        RtspTestServer.start(width=160, height=120, fps=FPS) as dies,
    ):
        cli = subprocess.Popen(
            [
                sys.executable,
                str(REPO_ROOT / "run_stream.py"),
                keeps.url,
                dies.url.replace("rtsp://", "rtsp://admin:hunter2@"),
                "-o",
                f"{tmp_path}/out/",
                "--config",
                config,
                "--model",
                checker_model,
                "--duration",
                "16",
                "--stats-json",
                stats_path,
                "-q",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(
            lambda: all(list((tmp_path / "out").glob(f"cam{k}_*.partial.ts")) for k in (1, 2)),
            60,
            "both cameras recording",
        )
        time.sleep(2)
        dies.kill()
        _, stderr = cli.communicate(timeout=60)
    assert cli.returncode == 3, stderr
    (error,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: rtsp://admin:***@127.0.0.1") and "gave up" in error, stderr
    assert "hunter2" not in stderr
    (run,) = json.loads(stats_path.read_text())["runs"]
    kept, died = run["sources"]
    assert kept["state"] == "stopped" and died["state"] == "down" and died["frames_out"] > FPS
    assert kept["frames_out"] > died["frames_out"] + 3 * FPS  # the survivor recorded on after the other died
    assert sum(len(read_frames(path)[0]) for path in segments(tmp_path / "out", "cam1")) == kept["frames_out"]
    assert sum(len(read_frames(path)[0]) for path in segments(tmp_path / "out", "cam2")) == died["frames_out"]


def test_a_camera_offline_at_start_up_records_once_it_comes_up(tmp_path, checker_model):
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}/stream"
    with LiveRun([Job("cam1", url, str(tmp_path / "cam1.mp4"), "cam1")], checker_model) as run:
        time.sleep(3)
        assert run.stats().frames_out == 0 and run.stats().state == "starting"
        with RtspTestServer(port, 160, 120, FPS, None, None) as late:
            late.restart()
            wait_until(
                lambda: run.stats().frames_out >= 20 and run.stats().state == "up", 30, "frames once the camera came up"
            )
    assert sum(len(read_frames(path)[0]) for path in segments(tmp_path)) == run.stats().frames_out


def test_a_killed_and_restarted_camera_is_written_again_within_a_few_seconds(tmp_path, checker_model):
    """The kill-restart drill: seconds from the camera back (server listening) to the first frame written."""
    gaps = []
    with RtspTestServer.start(width=160, height=120, fps=FPS) as camera:
        with LiveRun([Job("cam1", camera.url, str(tmp_path / "cam1.mp4"), "cam1")], checker_model) as run:
            wait_until(lambda: run.stats().frames_out >= 20, 30, "the first frames")
            for _ in range(2):
                camera.kill()
                time.sleep(4.0)  # down for 4 s: the backoff has grown meanwhile
                camera.restart()
                back = time.monotonic()
                before = run.stats().frames_out
                wait_until(
                    lambda before=before: run.stats().frames_out > before, 30, "a frame written after the restart"
                )
                gaps.append(time.monotonic() - back)
    print(f"kill-restart drill: camera back -> first frame written: {', '.join(f'{g:.2f} s' for g in gaps)}")
    assert max(gaps) < 5.0, gaps


def test_sigkill_mid_run_leaves_every_finished_segment_and_the_current_one_playable(tmp_path, checker_model):
    config = tmp_path / "live.yaml"
    config.write_text(
        "source:\n  open_timeout_s: 3\n  read_timeout_s: 2\nrecording:\n  segment_s: 2\noutput:\n  preset: ultrafast\n"
    )
    with RtspTestServer.start(width=160, height=120, fps=FPS) as camera:
        cli = subprocess.Popen(
            [
                sys.executable,
                str(REPO_ROOT / "run_stream.py"),
                camera.url,
                "-o",
                f"{tmp_path}/out/",
                "--config",
                config,
                "--model",
                checker_model,
                "-q",
            ]
        )
        wait_until(lambda: len(segments(tmp_path / "out")) >= 2, 60, "two finished segments")
        time.sleep(1.5)
        cli.send_signal(signal.SIGKILL)
        cli.wait(10)
    finished = segments(tmp_path / "out")
    (current,) = (tmp_path / "out").glob("cam1_*.partial.ts")
    counts = [len(read_frames(path)[0]) for path in finished]
    assert all(count >= 2 * FPS - 5 for count in counts[1:]), counts  # 2 s each (the first starts mid-probe)
    assert len(read_frames(current)[0]) >= 0.5 * FPS  # 1.5 s in: playable up to about its last second


def test_metrics_over_http_and_healthz_flip_when_the_camera_goes_down_and_back(tmp_path, checker_model):
    import urllib.error
    import urllib.request

    from streamer.metrics import MetricsServer

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    with RtspTestServer.start(width=160, height=120, fps=FPS) as camera:
        with LiveRun([Job("cam1", camera.url, str(tmp_path / "cam1.mp4"), "cam1")], checker_model) as run:
            server = MetricsServer(0, no_frame_s=2.0, stats=lambda: run.pipeline.stats, host="127.0.0.1").start()
            try:
                wait_until(lambda: run.stats().frames_out >= 40, 30, "frames")
                time.sleep(1.0)
                status, text = get("/metrics")
                assert status == 200 and 'cctv_camera_up{camera="cam1"} 1.0' in text
                assert 'cctv_latency_seconds_count{camera="cam1"}' in text and "cctv_restorer_faces_total" in text
                assert get("/healthz") == (200, "ok\n")
                camera.kill()
                wait_until(lambda: get("/healthz")[0] == 503, 10, "/healthz failing while the camera is down")
                assert get("/healthz")[1].startswith("cam1: no frame for ")
                assert 'cctv_camera_up{camera="cam1"} 0.0' in get("/metrics")[1]
                camera.restart()
                wait_until(lambda: get("/healthz")[0] == 200, 20, "/healthz back once the camera is")
                assert 'cctv_reconnects_total{camera="cam1"} 1.0' in get("/metrics")[1]
            finally:
                server.stop()
