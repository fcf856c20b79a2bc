"""Counters and per-stage timing of a pipeline run, its summary table and its JSON form.

Each counter has one writer (the thread of its stage), so no lock is needed: the supervisor
and the progress display only read them.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# Stages that run once per source; the restorer is one thread shared by all sources.
PER_SOURCE_STAGES = ("capture", "detect", "compose", "write")


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
    source_id: str
    label: str  # the input as it may be shown (credentials masked)
    frames_in: int = 0  # frames the capture thread read
    frames_out: int = 0  # frames written to the output
    faces: int = 0  # faces found or carried by the tracker, summed over frames
    restored: int = 0  # faces the restorer processed
    drops: int = 0  # live frames dropped because downstream was late
    reconnects: int = 0
    corrupt_packets: int = 0
    clocks: dict[str, StageClock] = field(default_factory=lambda: {name: StageClock() for name in PER_SOURCE_STAGES})


@dataclass
class RestorerStats:
    clock: StageClock = field(default_factory=StageClock)
    faces: int = 0
    batches: int = 0  # restorer calls (a call larger than the restorer's batch size is split by it)

    @property
    def faces_per_s(self) -> float:
        return self.faces / self.clock.seconds if self.clock.seconds > 0 else 0.0


class RunStats:
    """Everything counted in one pipeline run (one or several sources)."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.sources = {source_id: SourceStats(source_id, label) for source_id, label in labels.items()}
        self.restorer = RestorerStats()
        self._started = time.monotonic()
        self._finished: float | None = None

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
        """One line for a periodic log of a live run."""
        parts = [
            f"{s.label}: {self.fps(s.source_id):.1f} fps, {s.frames_out} frames, {s.faces} faces, "
            f"{s.drops} dropped, {s.reconnects} reconnects"
            for s in self.sources.values()
        ]
        return "; ".join(parts)

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
            },
        }

    def summary_table(self) -> str:
        header = f"{'source':<32} {'in':>7} {'out':>7} {'faces':>7} {'restored':>8} {'drops':>6} {'reconn':>6} " \
                 f"{'corrupt':>7} {'fps':>7}"
        rows = [header] + [_source_row(s, self.fps(s.source_id)) for s in self.sources.values()]
        stages = "  ".join(f"{name} {ms:.1f}" for name, ms in self.stage_ms_per_frame().items())
        rows.append(f"stage ms/frame: {stages}")
        rows.append(
            f"restorer: {self.restorer.faces} faces in {self.restorer.batches} batches, "
            f"{self.restorer.faces_per_s:.1f} faces/s while busy; elapsed {self.elapsed_s:.1f} s"
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
        "drops": source.drops,
        "reconnects": source.reconnects,
        "corrupt_packets": source.corrupt_packets,
        "fps": round(fps, 2),
    }


def _source_row(source: SourceStats, fps: float) -> str:
    label = source.label if len(source.label) <= 32 else "..." + source.label[-29:]
    return (
        f"{label:<32} {source.frames_in:>7} {source.frames_out:>7} {source.faces:>7} {source.restored:>8} "
        f"{source.drops:>6} {source.reconnects:>6} {source.corrupt_packets:>7} {fps:>7.1f}"
    )
