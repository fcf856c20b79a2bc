"""Counters and per-stage timing of a pipeline run, its summary table and its JSON form.

Each counter has one writer (the thread of its stage, named at each field), so no lock is needed:
the supervisor and the progress display only read them.
"""

from __future__ import annotations

import bisect
import json
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

# Stages that run once per source; the restorer is one thread shared by all sources.
PER_SOURCE_STAGES = ("capture", "detect", "compose", "write")
# Upper bounds (seconds) of the end-to-end latency histogram's buckets (captured -> written).
LATENCY_BUCKETS_S = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
FPS_WINDOW_S = 10.0  # the status line's and the metrics' fps are measured over this window


class LatencyRecorder:
    """End-to-end latency of written frames: cumulative bucket counts (for Prometheus) and the
    latest samples (for percentiles). One writer thread; readers may see a sample late."""

    def __init__(self, recent: int = 4096) -> None:
        self.bucket_counts = [0] * (len(LATENCY_BUCKETS_S) + 1)  # the last one is +Inf
        self.count = 0
        self.sum_s = 0.0
        self._recent: deque[float] = deque(maxlen=recent)

    def observe(self, seconds: float) -> None:
        self.bucket_counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.count += 1
        self.sum_s += seconds
        self._recent.append(seconds)

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0-100) of the recent samples, None without any."""
        samples = sorted(self._recent)
        if not samples:
            return None
        return samples[min(len(samples) - 1, round(q / 100 * (len(samples) - 1)))]


@dataclass
class StageClock:
    """Time a stage spent busy, summed over its calls."""

    seconds: float = 0.0
    calls: int = 0

    @contextmanager
    def timing(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1


@dataclass
class SourceStats:
    """One source's counters, from the source itself to its output: the one object the source, the
    stages, the summary and --stats-json all use."""

    source_id: str = ""
    label: str = ""  # the input as it may be shown (credentials masked)
    # Written by the source, whose frames() runs in the capture thread:
    decoded: int = 0  # frames decoded
    corrupt_packets: int = 0  # packets the decoder rejected and the source skipped
    disconnects: int = 0  # live: streams lost (end of stream, read timeout, read error)
    reconnects: int = 0  # live: connections re-established after a disconnect
    truncated: bool = False  # a file that ended before the frame count its header states
    # Written by the capture thread:
    frames_in: int = 0  # frames handed to the pipeline
    capture_drops: int = 0  # live frames dropped because detection was late
    # Written by the detect thread:
    faces: int = 0  # faces found or carried by the tracker, summed over frames
    # faces the restorer was never given although it runs: larger than restoration.max_face_px (the
    # restorer's output holds a face of only input_size / crop_scale px; pasted over a larger face it blurs it)
    too_large: int = 0
    # overlay mode: faces shown with their track's best restored view, not restored again (RestoreWhenBetter)
    best_view_shown: int = 0
    unverified: int = 0  # faces the restore gate kept as they were (not confirmed as real faces)
    # Written by the restorer thread:
    restored: int = 0  # faces the restorer processed
    unrestored: int = 0  # faces left as they were: the (remote) restorer was unavailable
    late_output_drops: int = 0  # live frames dropped because the output was late
    # Written by the write thread:
    frames_out: int = 0  # frames written to the output
    clocks: dict[str, StageClock] = field(default_factory=lambda: {name: StageClock() for name in PER_SOURCE_STAGES})
    # Live cameras (camera.CameraJob): health an operator watches.
    live: bool = False  # a camera (supervised, reconnecting), not a file
    last_frame_at: float | None = None  # time.monotonic() of the last frame captured
    state: str = "starting"  # starting | up | reconnecting | down (given up) | stopped
    state_since: float = field(default_factory=time.time)  # wall clock of the last state change
    restarts: int = 0  # times the camera's job was restarted after a fault
    output_drops: int = 0  # frames a push output dropped while reconnecting
    output_reconnects: int = 0
    last_error: str | None = None  # the last fault (a read problem, a lost camera), one line, credentials masked
    latency: LatencyRecorder = field(default_factory=LatencyRecorder)

    def set_state(self, state: str) -> None:
        if state != self.state:
            self.state, self.state_since = state, time.time()

    def seconds_since_frame(self, now: float | None = None) -> float | None:
        if self.last_frame_at is None:
            return None
        return (now if now is not None else time.monotonic()) - self.last_frame_at

    @property
    def drops(self) -> int:
        """Live frames dropped anywhere because the pipeline was late."""
        return self.capture_drops + self.late_output_drops


# SourceStats' counters: its int fields (annotations are strings here), the ones that add up over a
# restarted camera's incarnations. Derived, so a counter added to SourceStats is summed too.
SOURCE_COUNTERS = tuple(f.name for f in fields(SourceStats) if f.type == "int")


@dataclass
class RestorerStats:
    clock: StageClock = field(default_factory=StageClock)
    faces: int = 0
    batches: int = 0  # restorer calls (a call larger than the restorer's batch size is split by it)
    replicas: int = 1  # restorer instances these counters sum (Ray engine: the actor pool)

    @property
    def faces_per_s(self) -> float:
        """Faces per second of restorer busy time, per replica."""
        return self.faces / self.clock.seconds if self.clock.seconds > 0 else 0.0

    @property
    def mean_batch(self) -> float:
        return self.faces / self.batches if self.batches else 0.0


class RunStats:
    """Everything counted in one pipeline run (one or several sources)."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.sources = {source_id: SourceStats(source_id, label) for source_id, label in labels.items()}
        self.restorer = RestorerStats()
        self._started = time.monotonic()
        self._finished: float | None = None
        # (time, frames_out of each source, restored faces) samples of the last FPS_WINDOW_S
        self._window: deque[tuple[float, dict[str, int], int]] = deque()
        self.restore_queue_depth = 0  # items waiting for the shared restorer (the supervisor updates it)

    def sample_window(self, now: float | None = None) -> None:
        """Remember the counters now (the supervisor calls this a few times a second)."""
        now = time.monotonic() if now is None else now
        self._window.append((now, {k: s.frames_out for k, s in self.sources.items()}, self.restorer.faces))
        while len(self._window) > 2 and now - self._window[1][0] >= FPS_WINDOW_S:
            self._window.popleft()

    def window_fps(self, source_id: str) -> float:
        """Frames written per second over the last FPS_WINDOW_S (0 for a camera that stopped)."""
        if len(self._window) < 2:
            return self.fps(source_id)
        (t0, first, _), (t1, last, _) = self._window[0], self._window[-1]
        return (last[source_id] - first[source_id]) / (t1 - t0) if t1 > t0 else 0.0

    def window_faces_per_s(self) -> float:
        """Faces the restorer processed per second over the last FPS_WINDOW_S."""
        if len(self._window) < 2:
            return 0.0
        (t0, _, first), (t1, _, last) = self._window[0], self._window[-1]
        return (last - first) / (t1 - t0) if t1 > t0 else 0.0

    def finish(self) -> None:
        self._finished = time.monotonic()

    @property
    def elapsed_s(self) -> float:
        return (self._finished or time.monotonic()) - self._started

    def fps(self, source_id: str) -> float:
        elapsed = self.elapsed_s
        return self.sources[source_id].frames_out / elapsed if elapsed > 0 else 0.0

    @property
    def frames_out(self) -> int:
        return sum(source.frames_out for source in self.sources.values())

    def stage_ms_per_frame(self) -> dict[str, float]:
        """Busy milliseconds per written frame, for each stage, over all sources."""
        frames = max(1, self.frames_out)
        totals = {name: sum(s.clocks[name].seconds for s in self.sources.values()) for name in PER_SOURCE_STAGES}
        totals["restore"] = self.restorer.clock.seconds
        return {name: 1000.0 * seconds / frames for name, seconds in totals.items()}

    def status_line(self) -> str:
        """One line for a periodic log of a live run: per source its state, fps over the last
        FPS_WINDOW_S (a dead camera shows 0, not its average since start), and counters."""
        parts = [
            f"{s.label}: {_state_text(s) + ', ' if s.live else ''}{self.window_fps(s.source_id):.1f} fps, {s.frames_out} frames, "
            f"{s.faces} faces, {s.drops} dropped, {s.reconnects} reconnects"
            + (f", {s.restarts} restarts" if s.restarts else "")
            + (f", output dropped {s.output_drops}" if s.output_drops else "")
            + (f", {s.unrestored} unrestored" if s.unrestored else "")
            for s in self.sources.values()
        ]
        if len(self.sources) > 1 or self.restorer.replicas > 1:
            parts.append(self.cluster_line())
        return "; ".join(parts)

    def cluster_line(self) -> str:
        """All sources together: what a site of many cameras watches."""
        elapsed = max(self.elapsed_s, 1e-9)
        sources = self.sources.values()
        return (
            f"all {len(self.sources)}: {self.frames_out / elapsed:.1f} fps, {sum(s.faces for s in sources)} faces, "
            f"{sum(s.drops for s in sources)} dropped, {sum(s.restarts for s in sources)} restarts; restorer "
            f"x{self.restorer.replicas}: {self.restorer.faces / elapsed:.1f} faces/s, "
            f"mean batch {self.restorer.mean_batch:.1f}"
        )

    def as_dict(self) -> dict:
        return {
            "elapsed_s": round(self.elapsed_s, 3),
            "sources": [_source_dict(s, self.fps(s.source_id)) for s in self.sources.values()],
            "stage_ms_per_frame": {k: round(v, 3) for k, v in self.stage_ms_per_frame().items()},
            "restorer": {
                "faces": self.restorer.faces,
                "batches": self.restorer.batches,
                "busy_s": round(self.restorer.clock.seconds, 3),
                "faces_per_s": round(self.restorer.faces_per_s, 2),
                "mean_batch": round(self.restorer.mean_batch, 2),
                "replicas": self.restorer.replicas,
            },
            "all_sources": {
                "frames_out": self.frames_out,
                "fps": round(self.frames_out / self.elapsed_s, 2) if self.elapsed_s > 0 else 0.0,
                "faces": sum(s.faces for s in self.sources.values()),
                "drops": sum(s.drops for s in self.sources.values()),
                "restarts": sum(s.restarts for s in self.sources.values()),
                "unrestored_faces": sum(s.unrestored for s in self.sources.values()),
                "restored_faces_per_s": round(self.restorer.faces / self.elapsed_s, 2) if self.elapsed_s > 0 else 0.0,
            },
        }

    def summary_table(self) -> str:
        header = (
            f"{'source':<32} {'in':>7} {'out':>7} {'faces':>7} {'restored':>8} {'unverif':>7} "
            f"{'drops':>6} {'reconn':>6} {'corrupt':>7} {'fps':>7}"
        )
        rows = [header] + [_source_row(s, self.fps(s.source_id)) for s in self.sources.values()]
        stages = "  ".join(f"{name} {ms:.1f}" for name, ms in self.stage_ms_per_frame().items())
        faces = sum(s.faces for s in self.sources.values())
        # Why faces a running restorer was not given stay as they were (lines only for counts > 0).
        untouched = {
            "too_large": "left alone: {count} of {faces} faces, larger than restoration.max_face_px "
            "(set it to 0 to restore every face)",
            "best_view_shown": "overlay: {count} of {faces} faces shown with their track's best restored view, "
            "not restored again",
        }
        for counter, text in untouched.items():
            count = sum(getattr(s, counter) for s in self.sources.values())
            if count:
                rows.append(text.format(count=count, faces=faces))
        rows.append(f"stage ms/frame: {stages}")
        rows.append(
            f"restorer: {self.restorer.faces} faces in {self.restorer.batches} batches, "
            f"{self.restorer.faces_per_s:.1f} faces/s while busy (mean batch {self.restorer.mean_batch:.1f}"
            + (f", {self.restorer.replicas} replicas" if self.restorer.replicas > 1 else "")
            + f"); elapsed {self.elapsed_s:.1f} s"
        )
        return "\n".join(rows)


def write_stats_json(path: str | Path, runs: list[dict]) -> None:
    """Write the stats of one or more runs (a batch) as JSON."""
    Path(path).write_text(json.dumps({"runs": runs}, indent=2) + "\n", encoding="utf-8")


def _source_dict(source: SourceStats, fps: float) -> dict:
    return {
        "source": source.label,
        "frames_in": source.frames_in,
        "frames_out": source.frames_out,
        "faces": source.faces,
        "restored_faces": source.restored,
        "faces_too_large": source.too_large,
        "faces_shown_best_view": source.best_view_shown,
        "unrestored_faces": source.unrestored,
        "unverified_faces": source.unverified,
        "drops": source.drops,
        "disconnects": source.disconnects,
        "reconnects": source.reconnects,
        "corrupt_packets": source.corrupt_packets,
        "truncated": source.truncated,
        "last_error": source.last_error,
        "fps": round(fps, 2),
        **_live_dict(source),
    }


def _live_dict(source: SourceStats) -> dict:
    """The live health fields, for a source that had any (a file's stats stay as they were)."""
    if not source.live:
        return {}
    p50, p95 = source.latency.percentile(50), source.latency.percentile(95)
    return {
        "state": source.state,
        "restarts": source.restarts,
        "output_drops": source.output_drops,
        "output_reconnects": source.output_reconnects,
        "latency_p50_s": None if p50 is None else round(p50, 4),
        "latency_p95_s": None if p95 is None else round(p95, 4),
    }


def _state_text(source: SourceStats) -> str:
    if source.state in ("reconnecting", "starting", "down"):
        since = time.strftime("%H:%M:%S", time.localtime(source.state_since))
        return f"{source.state} since {since}"
    return source.state


def _source_row(source: SourceStats, fps: float) -> str:
    label = source.label if len(source.label) <= 32 else "..." + source.label[-29:]
    return (
        f"{label:<32} {source.frames_in:>7} {source.frames_out:>7} {source.faces:>7} {source.restored:>8} "
        f"{source.unverified:>7} {source.drops:>6} {source.reconnects:>6} {source.corrupt_packets:>7} {fps:>7.1f}"
    )
