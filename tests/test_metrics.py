"""The metrics endpoint scraped over HTTP while fake cameras run, and /healthz flipping when one goes silent."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from streamer.camera import CameraPolicy
from streamer.metrics import MetricsServer
from tests.test_camera import Cameras, FakeSource, _capture


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def samples(text: str) -> dict[tuple[str, str], float]:
    """{(sample name, camera label or ''): value}"""
    return {
        (sample.name, sample.labels.get("camera", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "le" not in sample.labels
    }


def test_metrics_are_scraped_over_http_and_healthz_fails_when_a_camera_goes_silent():
    cams = Cameras(["steady", "flaky"])
    silent = threading.Event()

    class GoesSilent(FakeSource):
        def frames(self, stop):
            for frame in super().frames(stop):
                while silent.is_set() and not stop.is_set():
                    time.sleep(0.01)
                yield frame

    cams.source_factory["flaky"] = lambda n: GoesSilent(n, 10**9, live=True, delay_s=0.005)
    pipeline = cams.pipeline(CameraPolicy(stale_after_s=0.3))
    server = MetricsServer(0, no_frame_s=0.5, stats=lambda: pipeline.stats, host="127.0.0.1").start()
    base = f"http://127.0.0.1:{server.port}"
    outcome: list = []
    runner = threading.Thread(target=lambda: _capture(outcome, pipeline.run), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while min(s.frames_out for s in pipeline.stats.sources.values()) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.6)  # a few supervisor ticks: windowed fps and states are current
        assert get(f"{base}/healthz") == (200, "ok\n")
        status, text = get(f"{base}/metrics")
        values = samples(text)
        assert status == 200
        for camera in ("steady", "flaky"):
            assert values[("cctv_frames_out_total", camera)] >= 20
            assert values[("cctv_frames_in_total", camera)] >= values[("cctv_frames_out_total", camera)]
            assert values[("cctv_fps", camera)] > 5 and values[("cctv_camera_up", camera)] == 1
            assert values[("cctv_seconds_since_last_frame", camera)] < 0.5
            assert values[("cctv_latency_seconds_count", camera)] >= 20
            for counter in (
                "cctv_drops_total",
                "cctv_reconnects_total",
                "cctv_restarts_total",
                "cctv_output_drops_total",
            ):
                assert (counter, camera) in values
        assert ("cctv_restore_queue_depth", "") in values and values[("cctv_restorer_faces_total", "")] > 0
        assert ("cctv_restorer_faces_per_second", "") in values

        silent.set()
        time.sleep(1.2)
        status, text = get(f"{base}/healthz")
        assert status == 503 and text.startswith("flaky: no frame for ") and "steady" not in text
        values = samples(get(f"{base}/metrics")[1])
        assert values[("cctv_camera_up", "flaky")] == 0 and values[("cctv_camera_up", "steady")] == 1
        assert values[("cctv_seconds_since_last_frame", "flaky")] > 0.5

        silent.clear()
        time.sleep(0.6)
        assert get(f"{base}/healthz")[0] == 200
        assert get(f"{base}/nothing")[0] == 404
    finally:
        pipeline.request_stop()
        runner.join(10)
        server.stop()
    assert not isinstance(outcome[0], BaseException), outcome
