"""The supervisor: opens sources and sinks, wires the workers with bounded queues, runs one
thread per stage per source (plus one restorer thread shared by all sources), and stops them.

Two events control a run:
- `drain` (request_stop, first Ctrl-C): sources stop reading; frames in flight go through;
  every output is finalised and playable.
- `halt` (abort, an exception in any stage, second Ctrl-C): every worker leaves within a
  fraction of a second; unfinished outputs are removed; the first exception is re-raised.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

from streamer.camera import CameraJob, CameraLinks, CameraLost, CameraPolicy
from streamer.config import LoggingConfig, PipelineConfig, RestorationConfig
from streamer.detect_stage import CropFaces, Detector, DetectStage, Gate, RestoreFilter, Tracker
from streamer.stats import RunStats
from streamer.track_window import TrackWindows
from streamer.urls import is_live_url, mask_credentials
from streamer.values import StreamInfo
from streamer.workers import (
    Batching,
    CaptureLimits,
    CaptureWorker,
    Compose,
    DetectWorker,
    PacketObserver,
    Restorer,
    RestoreWorker,
    Sink,
    Source,
    WriteWorker,
    start_worker,
)

logger = logging.getLogger(__name__)

SUPERVISE_PERIOD_S = 0.25  # how often the supervisor refreshes counters and progress
JOIN_TIMEOUT_S = 5.0  # how long a halted run waits for its threads


@dataclass(frozen=True)
class Job:
    """One input and where its output goes."""

    source_id: str
    input: str  # file path or URL, as opened
    output: str  # file path or push URL
    label: str  # the input as logs may show it (credentials masked)
    # This job's own stages and settings (a camera of a cameras file with its own config);
    # None: the pipeline's. The restorer and its batching are always the pipeline's (shared).
    components: Components | None = field(default=None, compare=False, repr=False)
    settings: PipelineSettings | None = field(default=None, compare=False, repr=False)
    live: bool | None = None  # a camera, supervised by a CameraJob; None: a live URL is one

    @property
    def is_camera(self) -> bool:
        return is_live_url(self.input) if self.live is None else self.live


@dataclass
class Components:
    """The stages the pipeline runs, injected so tests can swap in fakes."""

    open_source: Callable[..., Source]  # (input, source_id, stats=SourceStats) -> Source counting into stats
    open_sink: Callable[[str, StreamInfo], Sink]  # (output, info of its source) -> Sink
    make_detector: Callable[[], Detector]  # one per source (a detector is not shared by threads)
    make_tracker: Callable[[], Tracker]
    restorer: Restorer | None  # one for all sources; None: faces are not restored
    crop_faces: CropFaces | None  # cuts the model's crops from a frame; None with no restorer
    compose: Compose
    # Sees each source's composited packets, e.g. the report's best-shot collector: (source_id, info) -> observer.
    make_observer: Callable[[str, StreamInfo], PacketObserver] | None = None
    # One restore gate per source (it keeps per-track evidence); None: every face is restored.
    make_gate: Callable[[], Gate] | None = None
    # One per source: which cropped faces are worth restoring (overlay mode); None: all of them.
    make_restore_filter: Callable[[], RestoreFilter] | None = None

    def detect_stage(self, detector: Detector, every_n: int) -> DetectStage:
        """A source's detect stage around its own `detector` (crops are cut only for a restorer),
        with its own restore gate."""
        crop_faces = self.crop_faces if self.restorer is not None else None
        spec = getattr(self.restorer, "spec", None)
        frames = spec.frames if spec is not None else 1
        windows = TrackWindows(frames) if crop_faces is not None and frames > 1 else None
        gate = self.make_gate() if self.make_gate is not None else None
        # A K-frame restorer's windows need every frame's crop: the filter is for one-frame restorers.
        restore_filter = self.make_restore_filter() if self.make_restore_filter and windows is None else None
        return DetectStage(detector, self.make_tracker(), crop_faces, every_n, windows, gate, restore_filter)


_RESTORATION, _PIPELINE, _LOGGING = RestorationConfig(), PipelineConfig(), LoggingConfig()  # the schema's defaults


@dataclass(frozen=True)
class PipelineSettings:
    """components.pipeline_settings builds these from a Config; the defaults are the schema's."""

    every_n_frames: int = 1  # tests' fakes detect on every frame
    batching: Batching = Batching(_RESTORATION.batch_size, _RESTORATION.max_latency_ms / 1000.0)
    queue_size: int = _PIPELINE.queue_size
    live_queue_size: int = _PIPELINE.live_queue_size
    live_drop: str = _PIPELINE.live_drop
    limits: CaptureLimits = field(default_factory=CaptureLimits)
    status_interval_s: float = _LOGGING.status_interval_s  # period of the status log line of a live run
    camera: CameraPolicy = field(default_factory=CameraPolicy)  # restarts and giving up, per camera
    warn_down_s: float = 30.0  # a camera not up for this long gets a WARNING in the status log


class Pipeline:
    def __init__(self, jobs: Sequence[Job], components: Components, settings: PipelineSettings) -> None:
        if not jobs:
            raise ValueError("Pipeline: no jobs")
        self.jobs, self.components, self.settings = list(jobs), components, settings
        self.drain, self.halt = threading.Event(), threading.Event()
        self.stats = RunStats({job.source_id: job.label for job in self.jobs})
        for job in self.jobs:
            self.stats.sources[job.source_id].live = job.is_camera
        self._restore_inbox: queue.Queue | None = None
        self._errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []
        self.lost_cameras: dict[str, str] = {}  # source id -> why it was given up (CameraLost)
        self._stopping_since: float | None = None  # when the run was asked to end (a camera's last frame counts to it)

    def request_stop(self) -> None:
        """Finish gracefully: stop reading, let frames in flight through, finalise outputs."""
        self._stopping_since = self._stopping_since or time.monotonic()
        self.drain.set()

    def abort(self) -> None:
        """Stop now; unfinished outputs are removed."""
        self._stopping_since = self._stopping_since or time.monotonic()
        self.drain.set()
        self.halt.set()

    def run(self, on_progress: Callable[[RunStats], None] | None = None) -> RunStats:
        """Process every job to its end (or until stopped) and return the run's stats.

        The first exception raised by any stage is re-raised here, after every thread has stopped."""
        with ExitStack() as resources:
            files = [job for job in self.jobs if not job.is_camera]
            sources: dict[str, Source] = {
                job.source_id: resources.enter_context(self._open_source(job)) for job in files
            }
            detectors = [self._detector(resources, job) for job in files]
            sinks = self._open_sinks(files, sources)
            writers = self._start(files, sources, sinks, detectors)
            try:
                self._supervise(sources, on_progress)
            except BaseException:
                self.abort()
                raise
            finally:
                self._stop_threads()
                self._abort_unfinished(writers)
                self.stats.finish()
                self._note_cameras_never_reached()
        if self._errors:
            raise self._errors[0]
        return self.stats

    def _components(self, job: Job) -> Components:
        return job.components or self.components

    def _settings(self, job: Job) -> PipelineSettings:
        return job.settings or self.settings

    def _detector(self, resources: ExitStack, job: Job) -> Detector:
        detector = self._components(job).make_detector()
        close = getattr(detector, "close", None)
        if close is not None:
            resources.callback(close)
        return detector

    def _open_sinks(self, files: list[Job], sources: dict[str, Source]) -> dict[str, Sink]:
        sinks: dict[str, Sink] = {}
        try:
            for job in files:
                info = sources[job.source_id].info
                sinks[job.source_id] = self._components(job).open_sink(job.output, info)
                logger.info(
                    "%s: %s -> %s (%dx%d, %.2f fps, %s)",
                    job.source_id,
                    mask_credentials(job.input),
                    mask_credentials(job.output),
                    info.width,
                    info.height,
                    float(info.rate),
                    "live" if info.is_live else "file",
                )
        except BaseException:
            for sink in sinks.values():
                sink.abort()
            raise
        return sinks

    def _start(
        self, files: list[Job], sources: dict[str, Source], sinks: dict[str, Sink], detectors: list
    ) -> list[WriteWorker]:
        """Start every worker thread and camera job; returns the files' writers (whose sinks the
        supervisor may abort)."""
        restore_inbox: queue.Queue = queue.Queue(self.settings.queue_size * len(self.jobs))
        self._restore_inbox = restore_inbox
        write_inboxes: dict[str, queue.Queue] = {
            job.source_id: queue.Queue(self._settings(job).queue_size) for job in self.jobs
        }
        writers = [
            self._start_source(
                job,
                sources[job.source_id],
                detector,
                (restore_inbox, write_inboxes[job.source_id]),
                sinks[job.source_id],
            )
            for job, detector in zip(files, detectors)
        ]
        cameras = [job for job in self.jobs if job.is_camera]
        for job in cameras:
            settings = self._settings(job)
            links = CameraLinks(restore_inbox, write_inboxes, settings.queue_size)
            camera = CameraJob(
                job,
                self._components(job),
                settings,
                links,
                self.stats.sources[job.source_id],
                (self.drain, self.halt),
                settings.camera,
            )
            self._spawn(f"camera-{job.source_id}", camera.run)
        live = frozenset(source_id for source_id, source in sources.items() if source.info.is_live)
        live |= {job.source_id for job in cameras}
        restore = RestoreWorker(
            restore_inbox,
            write_inboxes,
            self.halt,
            self.components.restorer,
            self.settings.batching,
            (self.stats.restorer, self.stats.sources),
            live,
        )
        self._spawn("restore", restore.run)
        return writers

    def _start_source(
        self, job: Job, source: Source, detector: Detector, queues: tuple[queue.Queue, queue.Queue], sink: Sink
    ) -> WriteWorker:
        """Start the capture, detect and write threads of one source; `queues` are the shared
        restorer's inbox and this source's write inbox."""
        settings, components, stats = self._settings(job), self._components(job), self.stats.sources[job.source_id]
        restore_inbox, write_inbox = queues
        inbox_size = settings.live_queue_size if source.info.is_live else settings.queue_size
        detect_inbox: queue.Queue = queue.Queue(inbox_size)
        capture = CaptureWorker(
            source, detect_inbox, (self.drain, self.halt), stats, settings.limits, settings.live_drop
        )
        detect = DetectWorker(
            (detect_inbox, restore_inbox), self.halt, components.detect_stage(detector, settings.every_n_frames), stats
        )
        observer = components.make_observer(job.source_id, source.info) if components.make_observer else None
        writer = WriteWorker(write_inbox, self.halt, components.compose, sink, stats, observer)
        self._spawn(f"capture-{job.source_id}", capture.run)
        self._spawn(f"detect-{job.source_id}", detect.run)
        self._spawn(f"write-{job.source_id}", writer.run)
        return writer

    def _spawn(self, name: str, work: Callable[[], None]) -> None:
        self._threads.append(start_worker(name, work, self._failed))

    def _failed(self, exc: BaseException) -> None:
        """A worker's (or camera job's) exception, in its thread: a lost camera is that camera's end;
        anything else halts the whole pipeline and is kept for the caller."""
        if isinstance(exc, CameraLost):  # that camera is down for the run; the others go on
            source = self.stats.sources[threading.current_thread().name.removeprefix("camera-")]
            # The message often starts with the camera's URL already; the label is shown beside it anyway.
            message = mask_credentials(str(exc)).removeprefix(f"{source.label}: ")
            self.lost_cameras[source.source_id] = source.last_error = message
            logger.error("%s: %s; this camera is down for the rest of the run", source.label, source.last_error)
            if exc.ends_run:
                self.abort()
            return
        logger.debug("%s failed", threading.current_thread().name, exc_info=exc)
        self._errors.append(exc)
        self.abort()

    def _supervise(self, sources: dict[str, Source], on_progress: Callable[[RunStats], None] | None) -> None:
        cameras = any(job.is_camera for job in self.jobs)
        live = cameras or any(source.info.is_live for source in sources.values())
        started = time.monotonic()
        next_status = started + self.settings.status_interval_s
        while any(thread.is_alive() for thread in self._threads) and not self.halt.is_set():
            self.halt.wait(SUPERVISE_PERIOD_S)
            duration = self.settings.limits.duration_s
            if cameras and duration is not None and time.monotonic() - started >= duration:
                self.request_stop()  # cameras that are down or still connecting end with the others
            self.stats.sample_window()
            self.stats.restore_queue_depth = self._restore_inbox.qsize() if self._restore_inbox else 0
            if on_progress is not None:
                on_progress(self.stats)
            if live and time.monotonic() >= next_status:
                self._log_status()
                next_status += self.settings.status_interval_s

    def _note_cameras_never_reached(self) -> None:
        """A camera that never delivered a frame in the whole run, or none in its last `warn_down_s`,
        was not reached, or not kept: say so (exit 3), even though it was retried until the end."""
        now = self._stopping_since or time.monotonic()
        for job in self.jobs:
            source = self.stats.sources[job.source_id]
            max_frames = self._settings(job).limits.max_frames
            finished = max_frames is not None and source.frames_in >= max_frames  # it ended, not its camera
            if not job.is_camera or job.source_id in self.lost_cameras or finished:
                continue
            if source.last_frame_at is None:
                reason = f"never reached in {self.stats.elapsed_s:.0f} s"
            elif now - source.last_frame_at > self._settings(job).warn_down_s:
                reason = f"down at the end of the run: no frame for {now - source.last_frame_at:.0f} s"
            else:
                continue
            self.lost_cameras[job.source_id] = reason + (f" ({source.last_error})" if source.last_error else "")
            source.set_state("down")

    def _log_status(self) -> None:
        logger.info("status: %s", self.stats.status_line())
        now = time.time()
        for source in self.stats.sources.values():
            if (
                source.state in ("reconnecting", "starting", "down")
                and now - source.state_since >= self.settings.warn_down_s
            ):
                logger.warning(
                    "%s: camera %s for %.0f s, nothing recorded meanwhile (last error: %s)",
                    source.label,
                    source.state,
                    now - source.state_since,
                    source.last_error or "none",
                )

    def _open_source(self, job: Job) -> Source:
        """The job's source, counting into the run's stats for it (one object: what the source counts,
        disconnects and errors included, reaches the summary and --stats-json)."""
        return self._components(job).open_source(job.input, job.source_id, stats=self.stats.sources[job.source_id])

    def _stop_threads(self) -> None:
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [thread.name for thread in self._threads if thread.is_alive()]
        if stuck:
            logger.warning("threads still busy after %.0f s: %s", JOIN_TIMEOUT_S, ", ".join(stuck))

    def _abort_unfinished(self, writers: list[WriteWorker]) -> None:
        for writer in writers:
            if not writer.closed:
                writer.sink.abort()
            try:  # what a halted source saw up to its halt still belongs in the report
                writer.close_observer()
            except Exception as exc:  # noqa: BLE001 - the run's first error is the one to report
                logger.warning("%s: %s", type(exc).__name__, exc)
