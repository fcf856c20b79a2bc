"""The pipeline's workers: one small loop per stage, reading one bounded queue, writing the next.

Every queue operation has a timeout and checks the `halt` event, so a worker blocked on a full or
empty queue leaves within POLL_S of a halt (raising Halted). Workers know nothing about threads
or each other; pipeline.py wires them together.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from streamer.compositing import Composite, Rect
from streamer.detect_stage import DetectStage
from streamer.stats import RestorerStats, SourceStats, StageClock
from streamer.values import Face, Frame, FramePacket, SourcePlanes, StreamInfo

POLL_S = 0.1  # how often a blocked worker looks at the halt event


class Halted(Exception):
    """The pipeline was halted: the worker leaves its loop without finishing its stream."""


@dataclass(frozen=True)
class EndOfStream:
    """Follows the last frame of a source through every queue."""

    source_id: str


class Source(Protocol):
    info: StreamInfo
    stats: SourceStats  # the source's own counters; the run's stats for this source

    def frames(self, stop: threading.Event) -> Iterator[Frame]: ...

    def __enter__(self) -> Source: ...

    def __exit__(self, *exc_info: object) -> None: ...


class Sink(Protocol):
    def write(self, frame: Frame) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class Restorer(Protocol):
    def restore(self, crops: np.ndarray) -> np.ndarray: ...


class PacketObserver(Protocol):
    """Sees every packet the write stage composites (best_shots.BestShots for the report) and
    returns the packet to composite: the same, or its faces with other restored views (overlay
    mode shows each track's best shot: best_shots.BestShotInsets)."""

    def observe(self, packet: FramePacket) -> FramePacket: ...

    def close(self) -> None: ...


class RestorerUnavailable(RuntimeError):
    """A remote restorer could not restore a batch (its replicas died or timed out, retries
    included). The batch's faces keep their own pixels and are counted as unrestored; the stream
    goes on. Any other restorer exception stops the pipeline (it is a bug, not an outage)."""


# A compositor returns the new image and where it drew (the write stage compares only there to
# find the changed pixels; see _with_changes): compositing.compose_touching.
Compose = Callable[[np.ndarray, Sequence[Face]], Composite]


def start_worker(name: str, work: Callable[[], None], on_error: Callable[[BaseException], None]) -> threading.Thread:
    """Run `work` in a daemon thread named `name`: Halted ends it quietly, any other exception goes
    to `on_error` (called in that thread), whose owner decides what the failure stops."""

    def guarded() -> None:
        try:
            work()
        except Halted:
            pass
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the owner, not vanish
            on_error(exc)

    thread = threading.Thread(target=guarded, name=name, daemon=True)
    thread.start()
    return thread


def put(target: queue.Queue, item: Any, halt: threading.Event) -> None:
    """Put, waiting while the queue is full (back-pressure), until halted."""
    while True:
        try:
            target.put(item, timeout=POLL_S)
            return
        except queue.Full:
            if halt.is_set():
                raise Halted from None


def get(source: queue.Queue, halt: threading.Event) -> Any:
    """Get, waiting while the queue is empty, until halted."""
    while not halt.is_set():
        try:
            return source.get(timeout=POLL_S)
        except queue.Empty:
            continue
    raise Halted


def put_dropping(target: queue.Queue, item: Any, drop: str) -> int:
    """Put without ever blocking: when full, drop the oldest queued item (drop="oldest") or
    this one (drop="newest"). Returns how many items were dropped."""
    dropped = 0
    while True:
        try:
            target.put_nowait(item)
            return dropped
        except queue.Full:
            if drop == "newest":
                return 1
        try:
            target.get_nowait()
            dropped += 1
        except queue.Empty:
            continue


@dataclass(frozen=True)
class CaptureLimits:
    """Where a capture ends before its source does (a live source never ends by itself)."""

    max_frames: int | None = None
    duration_s: float | None = None

    def reached(self, frames: int, started: float) -> bool:
        if self.max_frames is not None and frames >= self.max_frames:
            return True
        return self.duration_s is not None and time.monotonic() - started >= self.duration_s


class CaptureWorker:
    """Reads a source's frames into the first queue. A file waits for room (no frame lost);
    a live source never waits: it drops frames and counts them."""

    def __init__(
        self,
        source: Source,
        outbox: queue.Queue,
        events: tuple[threading.Event, threading.Event],
        stats: SourceStats,
        limits: CaptureLimits,
        live_drop: str,
    ) -> None:
        self.source, self.outbox, self.stats, self.limits, self.live_drop = source, outbox, stats, limits, live_drop
        self.drain, self.halt = events

    def run(self) -> None:
        started = time.monotonic()
        frames = self.source.frames(self.drain)
        try:
            for frame in _timed(frames, self.stats.clocks["capture"]):
                self.stats.frames_in += 1
                self.stats.last_frame_at = now = time.monotonic()
                self._hand_over(dataclasses.replace(frame, captured=now) if frame.captured is None else frame)
                if self.drain.is_set() or self.limits.reached(self.stats.frames_in, started):
                    break
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()
        put(self.outbox, EndOfStream(self.stats.source_id), self.halt)

    def _hand_over(self, frame: Frame) -> None:
        if self.halt.is_set():
            raise Halted
        if self.source.info.is_live:
            self.stats.capture_drops += put_dropping(self.outbox, frame, self.live_drop)
        else:
            put(self.outbox, frame, self.halt)


class DetectWorker:
    """Runs one source's DetectStage (detect every N frames, track, crop) on each frame in turn."""

    def __init__(
        self,
        queues: tuple[queue.Queue, queue.Queue],
        halt: threading.Event,
        stage: DetectStage,
        stats: SourceStats,
    ) -> None:
        self.inbox, self.outbox = queues
        self.halt, self.stage, self.stats = halt, stage, stats

    def run(self) -> None:
        while True:
            item = get(self.inbox, self.halt)
            if isinstance(item, EndOfStream):
                put(self.outbox, item, self.halt)
                return
            with self.stats.clocks["detect"].timing():
                packet = FramePacket(item, self.stage.faces_in(item.image, item.index, item.seconds))
            self.stats.faces += len(packet.faces)
            if self.stage.crop_faces is not None:  # a restorer runs: why each face it is not given stays as it is
                left = [face for face in packet.faces if face.crop is None and face.verified is not False]
                # a face larger than max_face_px gets no crop square; the restore filter keeps the square
                self.stats.too_large += sum(face.crop_box is None for face in left)
                self.stats.best_view_shown += sum(face.crop_box is not None for face in left)
            self.stats.unverified += sum(face.verified is False for face in packet.faces)
            put(self.outbox, packet, self.halt)


@dataclass(frozen=True)
class Batching:
    batch_size: int
    max_latency_s: float  # the longest a face waits for others to fill its batch


class RestoreWorker:
    """One thread for all sources: batches crops from every camera, up to `batch_size` crops or
    `max_latency_s`, runs the restorer once per batch, and routes each packet back to its source.

    A file's writer that falls behind holds the restorer back (no frame is lost); a live camera's
    writer never does: when its queue is full its oldest frame is dropped and counted, so one
    stuck output (a push server that stopped reading) cannot stall the other cameras."""

    def __init__(
        self,
        inbox: queue.Queue,
        outboxes: dict[str, queue.Queue],
        halt: threading.Event,
        restorer: Restorer | None,
        batching: Batching,
        stats: tuple[RestorerStats, dict[str, SourceStats]],
        live_sources: frozenset[str] = frozenset(),
    ) -> None:
        self.inbox, self.outboxes, self.halt, self.restorer, self.batching = inbox, outboxes, halt, restorer, batching
        self.stats, self.source_stats = stats
        self.live_sources = live_sources

    def run(self) -> None:
        open_sources = set(self.outboxes)
        while open_sources:
            items = self._restore(self._collect())
            for item in items:
                source_id = item.source_id if isinstance(item, EndOfStream) else item.frame.source_id
                self._hand_over(source_id, item)
                if isinstance(item, EndOfStream):
                    open_sources.discard(source_id)

    def _hand_over(self, source_id: str, item: Any) -> None:
        # Dropping the oldest never drops an EndOfStream: it is the last item a source sends.
        if source_id in self.live_sources:
            self.source_stats[source_id].late_output_drops += put_dropping(self.outboxes[source_id], item, "oldest")
        else:
            put(self.outboxes[source_id], item, self.halt)

    def _collect(self) -> list:
        """The next items, in arrival order: at least one; more while the batch has room and time."""
        items = [get(self.inbox, self.halt)]
        crops = _crop_count(items[0])
        if crops == 0 or self.restorer is None:
            return items
        deadline = time.monotonic() + self.batching.max_latency_s
        while crops < self.batching.batch_size:
            remaining = deadline - time.monotonic()
            try:  # past the deadline, still take what is already waiting (it costs no latency)
                item = self.inbox.get_nowait() if remaining <= 0 else self.inbox.get(timeout=min(remaining, POLL_S))
            except queue.Empty:
                if remaining <= 0:
                    break
                if self.halt.is_set():
                    raise Halted from None
                continue
            items.append(item)
            crops += _crop_count(item)
        return items

    def _restore(self, items: list) -> list:
        # A K-frame restorer gets each face's window of its track's last K crops (model contract v2).
        crops = [
            face.crop if face.window is None else face.window for item in items for face in _faces_to_restore(item)
        ]
        if not crops or self.restorer is None:
            return items
        try:
            with self.stats.clock.timing():
                # One call: the restorer alone splits a collection larger than its batch size.
                restored = self.restorer.restore(np.stack(crops))  # type: ignore[arg-type]  # crops: not None
        except RestorerUnavailable:
            for item in items:
                if _crop_count(item):
                    self.source_stats[item.frame.source_id].unrestored += _crop_count(item)
            return [_without_crops(item) for item in items]
        self.stats.faces += len(crops)
        self.stats.batches += 1
        return _attach_restored(items, iter(restored), self.source_stats)


class WriteWorker:
    """Composites the restored faces into each frame and writes it; closes (finalises) the sink
    at the end of the stream."""

    def __init__(
        self,
        inbox: queue.Queue,
        halt: threading.Event,
        compose: Compose,
        sink: Sink,
        stats: SourceStats,
        observer: PacketObserver | None = None,
    ) -> None:
        self.inbox, self.halt, self.compose, self.sink, self.stats = inbox, halt, compose, sink, stats
        self.observer = observer
        self.closed = False
        self.observer_closed = False

    def run(self) -> None:
        while True:
            item = get(self.inbox, self.halt)
            if isinstance(item, EndOfStream):
                self.close_observer()
                with self.stats.clocks["write"].timing():
                    self.sink.close()
                self.closed = True
                return
            self._write(item)

    def close_observer(self) -> None:
        """Let the observer flush what it holds (once; also after a halt, by the supervisor)."""
        if self.observer is not None and not self.observer_closed:
            self.observer_closed = True
            with self.stats.clocks["compose"].timing():
                self.observer.close()

    def _write(self, packet: FramePacket) -> None:
        if self.observer is not None:
            with self.stats.clocks["compose"].timing():
                packet = self.observer.observe(packet)
        with self.stats.clocks["compose"].timing():
            composite = self.compose(packet.frame.image, packet.faces)
        with self.stats.clocks["write"].timing():
            planes = _with_changes(packet, composite.image, composite.touched)
            self.sink.write(dataclasses.replace(packet.frame, image=composite.image, planes=planes))
        self.stats.frames_out += 1
        if packet.frame.captured is not None:
            self.stats.latency.observe(time.monotonic() - packet.frame.captured)


def _with_changes(
    packet: FramePacket, composed: np.ndarray, touched: Sequence[Rect] | None = None
) -> SourcePlanes | None:
    """The frame's decoded planes, marked with the pixels the compositor changed, so the sink
    writes every other pixel back exactly as decoded; None when the output has another size
    (side-by-side) or the source kept no planes. Pixels are compared only inside `touched`, the
    rectangles the compositor said hold all it drew (None: the whole frame)."""
    frame = packet.frame
    if frame.planes is None or composed.shape != frame.image.shape:
        return None
    changed = np.zeros(composed.shape[:2], bool)
    if not packet.faces:  # nothing was composited: skip comparing the whole frame (~2 ms at 1080p)
        return dataclasses.replace(frame.planes, changed=changed)
    whole_frame: Sequence[Rect] = [(0, 0, composed.shape[1], composed.shape[0])]
    for x0, y0, x1, y1 in whole_frame if touched is None else touched:
        window = np.s_[y0:y1, x0:x1]
        changed[window] |= _differs(composed[window], frame.image[window])
    return dataclasses.replace(frame.planes, changed=changed)


def _differs(after: np.ndarray, before: np.ndarray) -> np.ndarray:
    """H x W bool: True exactly where any channel of two RGB images differs."""
    # |difference| summed over the channels (saturating): non-zero exactly where a channel changed
    return cv2.transform(cv2.absdiff(after, before), np.ones((1, 3), np.float32)) > 0


def _timed(frames: Iterable[Frame], clock: StageClock) -> Iterator[Frame]:
    """The frames of an iterator, with the time spent producing each added to `clock`."""
    iterator = iter(frames)
    while True:
        with clock.timing():
            frame = next(iterator, None)
        if frame is None:
            return
        yield frame


def _faces_to_restore(item: Any) -> list[Face]:
    if not isinstance(item, FramePacket):
        return []
    return [face for face in item.faces if face.crop is not None]


def _crop_count(item: Any) -> int:
    return len(_faces_to_restore(item))


def _without_crops(item: Any) -> Any:
    """The item with no face marked for restoration (they keep their own pixels)."""
    if not _crop_count(item):
        return item
    return dataclasses.replace(item, faces=tuple(dataclasses.replace(face, crop=None) for face in item.faces))


def _attach_restored(items: list, restored: Iterator[np.ndarray], source_stats: dict[str, SourceStats]) -> list:
    """The items with each cropped face given its restored crop, in the order the crops were taken."""
    result = []
    for item in items:
        if _crop_count(item) == 0:
            result.append(item)
            continue
        faces = tuple(
            dataclasses.replace(face, restored=next(restored)) if face.crop is not None else face for face in item.faces
        )
        source_stats[item.frame.source_id].restored += _crop_count(item)
        result.append(dataclasses.replace(item, faces=faces))
    return result
