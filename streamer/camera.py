"""The supervisor of one live camera: it opens the camera and its output, runs the camera's
three workers (capture, detect, write; see workers.py), and restarts them, with backoff, when
any of them fails. A fault in one camera's source, detection, compositing or output ends that
camera's workers only: the other cameras and the shared restorer never see it.

    job = CameraJob(job, components, settings, links, stats, (drain, halt))
    job.run()            # returns when the run drains or halts; raises CameraLost when it gives up

Camera job's life:
- opening: `open_source` (which tries `connect_attempts` times). A camera that cannot be opened
  is retried in the background (the other cameras record meanwhile), unless the policy says it
  is `required`: then the run fails with CameraLost.
- running: one generation of workers with a halt of its own. The live source reconnects by
  itself when the stream drops (sources.LiveSource); the job watches the time since the last
  frame and reports the camera `up` or `reconnecting`.
- a fault (any worker raised): the generation is halted, its output is closed (a recording is
  kept, never removed), and after the backoff delay a new generation starts (new source,
  detector, tracker, output segment).
- giving up (policy `give_up_after_s` > 0): a camera with no frame for that long is `down` for
  the rest of the run; the job raises CameraLost (the run's exit status says so).

The job talks to the rest of the pipeline only through `CameraLinks` (the shared restorer's
inbox and this camera's write inbox), so the same unit runs in the local pipeline or inside
another engine's worker process.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamer.errors import UserError
from streamer.stats import SourceStats
from streamer.urls import mask_credentials
from streamer.workers import (
    CaptureWorker,
    DetectWorker,
    EndOfStream,
    Halted,
    WriteWorker,
    put,
    start_worker,
)

if TYPE_CHECKING:
    from streamer.pipeline import Components, Job, PipelineSettings

logger = logging.getLogger(__name__)

POLL_S = 0.25  # how often the supervisor looks at its workers and the run's events


class CameraLost(Exception):
    """A camera could not be reached, or kept, after its retries (one line, credentials masked).
    `ends_run`: the camera was required, so the whole run stops."""

    def __init__(self, message: str, ends_run: bool = False) -> None:
        super().__init__(message)
        self.ends_run = ends_run


@dataclass(frozen=True)
class CameraPolicy:
    """When a camera's job is restarted, and when it is given up."""

    restart_initial_s: float = 1.0  # first delay after a fault or a failed open
    restart_max_s: float = 30.0  # backoff cap
    required: bool = False  # a camera that cannot be opened at start-up ends the run
    give_up_after_s: float = 0.0  # no frame for this long: the camera is down for the run; 0 = never
    stale_after_s: float = 5.0  # no frame for this long: the camera is shown as reconnecting


@dataclass
class CameraLinks:
    """What a camera job shares with the rest of the run."""

    restore_inbox: queue.Queue  # the shared restorer's inbox
    write_inboxes: dict[str, queue.Queue]  # the restorer's outboxes, by source id; the job replaces its own
    write_queue_size: int


class CameraJob:
    """Supervises one live camera (see the module docstring)."""

    def __init__(
        self,
        job: Job,
        components: Components,
        settings: PipelineSettings,
        links: CameraLinks,
        stats: SourceStats,
        events: tuple[threading.Event, threading.Event],
        policy: CameraPolicy,
    ) -> None:
        self.job, self.components, self.settings, self.links, self.stats = job, components, settings, links, stats
        self.drain, self.halt = events
        self.policy = policy
        self._started = time.monotonic()
        self._delay_s = policy.restart_initial_s
        self._sink: Any = None
        self._source: Any = None
        self._end_sent = False
        self._observer: Any = None  # sees the camera's packets across generations (the report's collector)
        self._observer_closed = False

    # -- the supervisor loop ------------------------------------------------------------------

    def run(self) -> None:
        """Run generations of workers until the run drains or halts; CameraLost when given up."""
        try:
            ended = False
            while not self._stopping():
                source = self._open_source()
                if source is None:
                    self._wait_before_retry()
                    continue
                self._source = source
                try:
                    ended = self._run_generation(source)
                finally:
                    self._watch()
                    self._source = None
                    _close(source)
                if ended:
                    break
                self._wait_before_retry()
        finally:
            self._end()

    def _stopping(self) -> bool:
        return self.drain.is_set() or self.halt.is_set()

    def _open_source(self) -> Any:
        """The opened source, or None after a failure that is to be retried."""
        try:
            # Every opening counts into the camera's one SourceStats: its reconnects add up over generations.
            source = self.components.open_source(self.job.input, self.job.source_id, stats=self.stats)
        except Exception as error:  # noqa: BLE001 - any failure to open is this camera's fault
            message = mask_credentials(str(error)).removeprefix(f"{self.job.label}: ")
            self.stats.last_error = message
            if self.policy.required and self.stats.last_frame_at is None:
                self.stats.set_state("down")
                raise CameraLost(f"{message} (required camera)", ends_run=True) from None
            self._check_give_up(message)
            self._set_waiting()
            logger.warning("%s: %s; retrying in the background (the other cameras go on)", self.job.label, message)
            return None
        return source

    def _run_generation(self, source: Any) -> bool:
        """Run the camera's workers until they end; True when the stream ended normally (the run
        drained or reached its limits), False after a fault (to be restarted)."""
        generation = _Generation(self, source)
        try:
            try:
                generation.start()
            except Exception as error:  # noqa: BLE001 - e.g. its output cannot be opened: this camera's fault
                generation.fail(error)
            while generation.alive():
                if self.halt.wait(POLL_S) or self.drain.is_set():
                    generation.stop(halt=self.halt.is_set())
                self._watch()
                if self.policy.give_up_after_s > 0 and self._silent_for() > self.policy.give_up_after_s:
                    generation.fail(CameraLost(f"no frame for {self._silent_for():.0f} s: gave up"))
        finally:
            generation.finish()
        if generation.error is None:
            self._delay_s = self.policy.restart_initial_s
            return True
        self._after_fault(generation.error)
        return False

    def _watch(self) -> None:
        """Keep the camera's state and output counters current."""
        silent = self._silent_for()
        if self.stats.last_frame_at is not None and silent < self.policy.stale_after_s:
            if self.stats.state != "up":
                self._delay_s = self.policy.restart_initial_s
            self.stats.set_state("up")
        elif self.stats.state == "up":
            self.stats.set_state("reconnecting")
            self.stats.state_since = time.time() - silent
        dropped = getattr(self._sink, "dropped", None)  # a push output's counters
        if dropped is not None:
            self.stats.output_drops = dropped
            self.stats.output_reconnects = self._sink.reconnects

    def _silent_for(self) -> float:
        """Seconds since the last frame (since the job started, before any frame)."""
        last = self.stats.last_frame_at if self.stats.last_frame_at is not None else self._started
        return time.monotonic() - last

    def _after_fault(self, error: BaseException) -> None:
        if isinstance(error, CameraLost):
            self.stats.set_state("down")
            raise error
        message = mask_credentials(f"{type(error).__name__}: {error}" if not _is_one_line(error) else str(error))
        self.stats.last_error = message
        self.stats.restarts += 1
        self._check_give_up(message)
        self._set_waiting()
        logger.error(
            "%s: %s; restarting this camera in %.1f s (the other cameras go on)", self.job.label, message, self._delay_s
        )
        logger.debug("%s: fault", self.job.source_id, exc_info=error)

    def _check_give_up(self, message: str) -> None:
        if self.policy.give_up_after_s > 0 and self._silent_for() > self.policy.give_up_after_s:
            self.stats.set_state("down")
            raise CameraLost(f"{message}; no frame for {self._silent_for():.0f} s: gave up")

    def _set_waiting(self) -> None:
        if self.stats.state not in ("reconnecting", "starting"):  # "starting" until its first frame ever
            self.stats.set_state("reconnecting")

    def _wait_before_retry(self) -> None:
        delay, self._delay_s = self._delay_s, min(self._delay_s * 2, self.policy.restart_max_s)
        deadline = time.monotonic() + random.uniform(delay / 2, delay)
        while not self._stopping() and time.monotonic() < deadline:
            self.halt.wait(min(POLL_S, max(0.0, deadline - time.monotonic())))
            self._watch()

    def observer(self, info: Any) -> Any:
        """The camera's packet observer (one for all generations), made with the first stream's info."""
        if self._observer is None and self.components.make_observer is not None:
            self._observer = self.components.make_observer(self.job.source_id, info)
        return self._observer

    def _end(self) -> None:
        """Tell the shared restorer this camera sends nothing more (unless its stream already did)."""
        if self._observer is not None and not self._observer_closed:
            self._observer_closed = True
            try:
                self._observer.close()
            except Exception as error:  # noqa: BLE001 - the camera's end must not fail on its observer
                logger.warning("%s: %s", self.job.source_id, mask_credentials(str(error)))
        if self.stats.state != "down":
            self.stats.set_state("stopped")
        if not self._end_sent:
            try:
                put(self.links.restore_inbox, EndOfStream(self.job.source_id), self.halt)
            except Halted:
                pass


class _Generation:
    """One set of a camera's workers, with a halt of their own."""

    def __init__(self, owner: CameraJob, source: Any) -> None:
        self.owner, self.source = owner, source
        self.stop_event, self.halt = threading.Event(), threading.Event()  # this camera's drain and halt
        self.error: BaseException | None = None
        self.threads: list[threading.Thread] = []
        self.detector: Any = None
        self.writer: WriteWorker | None = None

    def start(self) -> None:
        owner = self.owner
        job, settings, components, stats = owner.job, owner.settings, owner.components, owner.stats
        sink = owner._sink = components.open_sink(job.output, self.source.info)
        write_inbox: queue.Queue = queue.Queue(owner.links.write_queue_size)
        owner.links.write_inboxes[job.source_id] = write_inbox  # a fresh inbox: nothing of the last generation
        detect_inbox: queue.Queue = queue.Queue(settings.live_queue_size)
        self.detector = components.make_detector()
        capture = CaptureWorker(
            self.source, detect_inbox, (self.stop_event, self.halt), stats, settings.limits, settings.live_drop
        )
        detect = DetectWorker(
            (detect_inbox, owner.links.restore_inbox),
            self.halt,
            components.detect_stage(self.detector, settings.every_n_frames),
            stats,
        )
        self.writer = WriteWorker(
            write_inbox, self.halt, components.compose, sink, stats, owner.observer(self.source.info)
        )
        # A worker's fault ends this camera's generation only.
        self.threads = [
            start_worker(f"{name}-{job.source_id}", work, self.fail)
            for name, work in (("capture", capture.run), ("detect", detect.run), ("write", self.writer.run))
        ]

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.stop_event.set()
        self.halt.set()

    def stop(self, halt: bool) -> None:
        self.stop_event.set()
        if halt:
            self.halt.set()

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self.threads)

    def finish(self) -> None:
        """Stop the workers, close the output (keeping what was written), release the detector."""
        self.stop_event.set()
        if self.error is not None:
            self.halt.set()
        for thread in self.threads:
            thread.join(timeout=10.0)
        sink = self.owner._sink
        if self.writer is not None and self.writer.observer_closed:
            self.owner._observer_closed = True
        if self.writer is not None and self.writer.closed:
            self.owner._end_sent = True  # the stream's EndOfStream went through the restorer
        elif sink is not None:
            self._close_output(sink)
        self.owner._watch()
        self.owner._sink = None
        close = getattr(self.detector, "close", None)
        if close is not None:
            close()

    def _close_output(self, sink: Any) -> None:
        # A camera's output is closed, not aborted, after a fault: what was recorded is kept.
        # Only a halted run (abort) aborts it, and a live recording's abort keeps its segments too.
        try:
            if self.owner.halt.is_set():
                sink.abort()
            else:
                sink.close()
        except Exception as error:  # noqa: BLE001 - the fault being handled matters more
            logger.warning("%s: closing the output: %s", self.owner.job.source_id, mask_credentials(str(error)))


def _close(source: Any) -> None:
    """Close a source: its close(), else its context exit (tests' fakes may have either)."""
    try:
        if hasattr(source, "close"):
            source.close()
        elif hasattr(source, "__exit__"):
            source.__exit__(None, None, None)
    except Exception as error:  # noqa: BLE001
        logger.debug("closing a source: %s", error)


def _is_one_line(error: BaseException) -> bool:
    """Our own errors (SourceError, SinkError, ...) carry a one-line message meant for users."""
    return isinstance(error, UserError)
