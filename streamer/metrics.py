"""Health an operator can watch: a Prometheus `/metrics` endpoint and a `/healthz` check.

Opt-in (`--metrics-port N` or `health.metrics_port`); prometheus-client is imported only here.
The exporter reads the run's counters (stats.RunStats) when it is scraped: the stages never
import it and pay nothing for it.

    server = MetricsServer(port=9108, no_frame_s=10, stats=lambda: current_run_stats_or_none)
    server.start()       # a daemon thread; server.port is the port bound (0 picks a free one)
    ...
    server.stop()

/metrics (per camera, label `camera` = cam1, cam2, ...):
  cctv_frames_in_total, cctv_frames_out_total, cctv_drops_total, cctv_reconnects_total,
  cctv_restarts_total, cctv_output_drops_total, cctv_fps (frames written per second over the
  last 10 s), cctv_seconds_since_last_frame, cctv_camera_up (1 when frames flow),
  cctv_latency_seconds (histogram: frame captured -> frame written);
  and for the run: cctv_restore_queue_depth, cctv_restorer_faces_per_second (last 10 s),
  cctv_restorer_faces_total.
/healthz: 200 "ok" while every live camera had a frame within `no_frame_s` seconds (a camera
still connecting counts from the start of the run); 503 and one line per failing camera otherwise.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from streamer.stats import LATENCY_BUCKETS_S, RunStats, SourceStats

logger = logging.getLogger(__name__)

StatsProvider = Callable[[], "RunStats | None"]  # the running pipeline's stats (None between runs)


class MetricsError(Exception):
    """The metrics endpoint cannot be served (port taken, ...); one line."""


class _RunCollector:
    """Prometheus collector that turns the current RunStats into metric families at scrape time."""

    def __init__(self, stats: StatsProvider) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        if stats is None:
            return
        sources = list(stats.sources.values())
        now = time.monotonic()
        yield from _per_camera_counters(sources)
        fps = GaugeMetricFamily("cctv_fps", "Frames written per second over the last 10 s", labels=["camera"])
        since = GaugeMetricFamily(
            "cctv_seconds_since_last_frame", "Seconds since the camera's last frame", labels=["camera"]
        )
        up = GaugeMetricFamily("cctv_camera_up", "1 when the camera delivers frames", labels=["camera"])
        latency = HistogramMetricFamily("cctv_latency_seconds", "Frame captured to frame written", labels=["camera"])
        for source in sources:
            fps.add_metric([source.source_id], stats.window_fps(source.source_id))
            seconds = source.seconds_since_frame(now)
            since.add_metric([source.source_id], float("nan") if seconds is None else seconds)
            up.add_metric([source.source_id], 1.0 if source.state == "up" else 0.0)
            latency.add_metric([source.source_id], _cumulative_buckets(source), source.latency.sum_s)
        yield from (fps, since, up, latency)
        yield GaugeMetricFamily(
            "cctv_restore_queue_depth", "Items waiting for the shared restorer", value=stats.restore_queue_depth
        )
        yield GaugeMetricFamily(
            "cctv_restorer_faces_per_second",
            "Faces restored per second over the last 10 s",
            value=stats.window_faces_per_s(),
        )
        yield CounterMetricFamily("cctv_restorer_faces", "Faces restored", value=stats.restorer.faces)


def _per_camera_counters(sources: list[SourceStats]) -> Iterator[Metric]:
    counters = {
        "cctv_frames_in": ("Frames captured", "frames_in"),
        "cctv_frames_out": ("Frames written", "frames_out"),
        "cctv_drops": ("Frames dropped because the pipeline was late", "drops"),
        "cctv_reconnects": ("Stream reconnections", "reconnects"),
        "cctv_restarts": ("Camera job restarts after a fault", "restarts"),
        "cctv_output_drops": ("Frames a push output dropped while reconnecting", "output_drops"),
    }
    for name, (documentation, attribute) in counters.items():
        family = CounterMetricFamily(name, documentation, labels=["camera"])
        for source in sources:
            family.add_metric([source.source_id], getattr(source, attribute))
        yield family


def _cumulative_buckets(source: SourceStats) -> list[tuple[str, float]]:
    buckets: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*LATENCY_BUCKETS_S, float("inf")), source.latency.bucket_counts):
        total += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
    return buckets


def health_problems(stats: RunStats | None, no_frame_s: float, live: Callable[[SourceStats], bool]) -> list[str]:
    """Why the run is unhealthy: one line per live camera without a frame for `no_frame_s`."""
    if stats is None:
        return []
    problems = []
    for source in stats.sources.values():
        if not live(source) or source.state == "stopped":
            continue
        silent = source.seconds_since_frame()
        silent = stats.elapsed_s if silent is None else silent
        if silent > no_frame_s:
            problems.append(f"{source.source_id}: no frame for {silent:.0f} s ({source.state})")
    return problems


class MetricsServer:
    """Serves /metrics and /healthz from a daemon thread."""

    def __init__(
        self,
        port: int,
        no_frame_s: float,
        stats: StatsProvider,
        host: str = "0.0.0.0",
        live: Callable[[SourceStats], bool] = lambda source: source.live,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_RunCollector(stats))
        self._stats, self._no_frame_s, self._live = stats, no_frame_s, live
        try:
            self._server = ThreadingHTTPServer((host, port), self._handler())
        except OSError as error:
            raise MetricsError(f"metrics port {port}: {error.strerror or error}") from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        logger.info("metrics: http://%s:%d/metrics and /healthz", self._server.server_address[0], self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def healthz(self) -> tuple[int, str]:
        problems = health_problems(self._stats(), self._no_frame_s, self._live)
        return (503, "\n".join(problems) + "\n") if problems else (200, "ok\n")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, generate_latest(server.registry), "text/plain; version=0.0.4; charset=utf-8")
                elif path == "/healthz":
                    status, text = server.healthz()
                    self._reply(status, text.encode(), "text/plain; charset=utf-8")
                else:
                    self._reply(404, b"not found: try /metrics or /healthz\n", "text/plain; charset=utf-8")

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # scrapes every few seconds would flood the log
                pass

        return Handler
