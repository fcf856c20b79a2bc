"""The Ray engine (`run_stream.py --engine ray`): the same stages, on a Ray cluster.

    driver (run_stream.py)             CPU nodes                          GPU (or CPU) nodes
    ──────────────────────             ─────────                          ──────────────────
    plans jobs, polls, reports ──► CameraJob actor per camera/file ──► RestorerReplica actors (a pool)
                                   capture ─► detect+track ─►             one model each; batches the
                                   RemoteRestorer ─► composite+write      crops of every camera

- A camera or a recording is one `CameraJob` actor running streamer.pipeline.Pipeline for that
  one job, unchanged; only its restorer is a `RemoteRestorer`, which sends each crop batch to a
  replica. Queues and back-pressure are the pipeline's: a file is lossless (its restore thread
  waits for the replica), a live camera drops its oldest frames and counts them.
- The replicas batch crops across cameras: a replica gathers the requests that arrive while it
  is busy or within the latency budget, up to `restoration.batch_size` crops, and runs the model
  once. A replica is placed on a GPU where the cluster has one.
- Faults: a live camera's actor restarts (Ray `max_restarts`) and resumes its stream in a new
  segment (its recorder gives the killed run's unfinished segment its final name); a file's
  actor is not restarted: the file is reported as failed and the others go on. A replica that dies is
  restarted; a batch sent to it is retried on another replica, and after
  `ray.restore_attempts` its faces keep their own pixels and are counted as unrestored.
- Ctrl-C stops every job gracefully (outputs finalised); a second one aborts.

This is the only module that imports Ray; the local mode never imports it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import socket
import sys
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

from streamer import REPO_ROOT
from streamer.config import Config, RayConfig
from streamer.errors import UserError
from streamer.jobs import JobResult
from streamer.pipeline import Job, Pipeline
from streamer.stats import PER_SOURCE_STAGES, SOURCE_COUNTERS, RunStats, SourceStats, StageClock
from streamer.urls import is_live_url, mask_credentials
from streamer.workers import Batching, CaptureLimits, RestorerUnavailable

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0  # a cluster address that does not answer a TCP connection in this time is an error
POLL_S = 0.5  # how often the driver asks every job for its counters
POLL_TIMEOUT_S = 10.0  # a job that does not answer for this long is asked again next round
REPLICA_READY_TIMEOUT_S = 300.0
# Actor names (in this run's own namespace): `ray.get_actor(CAMERA_ACTOR + "lobby")` finds a camera's job.
CAMERA_ACTOR, RESTORER_ACTOR = "camera:", "restorer:"  # model load on a fresh node (may include CUDA start-up)


class RayUnavailable(UserError):
    """The cluster cannot be started or joined (wrong --address, Ray not running there)."""


# ---------------------------------------------------------------- restorer side (GPU nodes)


class RestorerReplica:
    """One restorer model; batches the crops of every camera that calls it (an asyncio actor:
    requests keep arriving while the model runs in its own thread)."""

    def __init__(self, config: Config, batching: Batching) -> None:
        from streamer.components import load_restorer  # loads torch

        restorer = load_restorer(config)
        assert restorer is not None, "replicas run only with restoration.enabled"
        self.restorer = restorer
        self.batching = batching
        self.incarnation = uuid.uuid4().hex
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="restore")
        self._queue: asyncio.Queue | None = None
        self._batcher: asyncio.Task | None = None
        self.faces, self.batches, self.requests, self.busy_s = 0, 0, 0, 0.0

    def describe(self) -> dict:
        return {"spec": self.restorer.spec, "device": str(self.restorer.device), "node": ray.util.get_node_ip_address()}

    def pid(self) -> int:
        return os.getpid()

    def counters(self) -> dict:
        return {
            "incarnation": self.incarnation,
            "faces": self.faces,
            "batches": self.batches,
            "requests": self.requests,
            "busy_s": self.busy_s,
        }

    async def restore(self, crops: np.ndarray) -> np.ndarray:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._batcher = asyncio.get_running_loop().create_task(self._batch_forever())
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((crops, done))
        return await done

    async def _batch_forever(self) -> None:
        assert self._queue is not None
        while True:
            requests = await self._gather(self._queue)
            crops = np.concatenate([request[0] for request in requests])
            started = time.perf_counter()
            try:
                restored = await asyncio.get_running_loop().run_in_executor(
                    self._model_thread, self.restorer.restore, crops
                )
            except Exception as exc:  # noqa: BLE001 - the callers get it (their pipeline stops)
                for _, done in requests:
                    done.set_exception(exc)
                continue
            self.busy_s += time.perf_counter() - started
            self.faces += len(crops)
            self.batches += math.ceil(len(crops) / self.batching.batch_size)
            self.requests += len(requests)
            start = 0
            for request, done in requests:
                done.set_result(restored[start : start + len(request)])
                start += len(request)

    async def _gather(self, requests: asyncio.Queue) -> list[tuple[np.ndarray, asyncio.Future]]:
        """The next requests: those already waiting, then more while the batch has room and the
        first request's latency budget lasts."""
        gathered = [await requests.get()]
        count = len(gathered[0][0])
        deadline = time.monotonic() + self.batching.max_latency_s
        while count < self.batching.batch_size:
            try:
                wait = deadline - time.monotonic()
                request = requests.get_nowait() if wait <= 0 else await asyncio.wait_for(requests.get(), wait)
            except (TimeoutError, asyncio.QueueEmpty):
                break
            gathered.append(request)
            count += len(request[0])
        return gathered


class RemoteRestorer:
    """The pipeline's restorer inside a camera job: each batch goes to a replica of the pool
    (round robin); a replica that died or does not answer is retried on the next; after
    `attempts` the batch raises RestorerUnavailable (its faces are written unrestored)."""

    def __init__(self, replicas: list, spec: Any, settings: RayConfig) -> None:
        self.spec = spec
        self._replicas = list(replicas)
        self._next = int.from_bytes(os.urandom(2), "little")  # cameras start on different replicas
        self._timeout_s, self._attempts = settings.restore_timeout_s, settings.restore_attempts
        self.retries = 0

    def restore(self, crops: np.ndarray) -> np.ndarray:
        failure = "no attempt"
        for attempt in range(self._attempts):
            replica = self._replicas[self._next % len(self._replicas)]
            self._next += 1
            try:
                return ray.get(replica.restore.remote(crops), timeout=self._timeout_s)
            except (RayActorError, ActorUnavailableError, GetTimeoutError) as exc:
                failure = type(exc).__name__
                self.retries += 1
                logger.warning(
                    "restorer replica unavailable (%s): attempt %d of %d", failure, attempt + 1, self._attempts
                )
                time.sleep(min(2.0, 0.25 * (attempt + 1)))
        raise RestorerUnavailable(f"restorer unavailable after {self._attempts} attempts ({failure})")


# ---------------------------------------------------------------- camera side (CPU nodes)


@dataclass(frozen=True)
class CameraTask:
    """What a camera job needs: its job (no stages: they are built on the node), config, limits."""

    job: Job
    config: Config
    limits: CaptureLimits


@dataclass(frozen=True)
class Snapshot:
    incarnation: str
    state: str  # running | done | failed
    error: str | None
    stats: SourceStats
    output: str  # this incarnation's output


class CameraJob:
    """One camera or recording: streamer.pipeline.Pipeline for its one job, in this actor."""

    def __init__(self, task: CameraTask, replicas: list, spec: Any) -> None:
        from streamer.components import (  # loads torch, mediapipe
            assemble_components,
            pipeline_settings,
        )

        _log_to_stdout(task.config.logging.level)
        self.incarnation = uuid.uuid4().hex
        job = task.job
        if ray.get_runtime_context().was_current_actor_reconstructed:
            # A live camera's recorder starts a new segment and renames the killed run's partial one.
            logger.warning("%s: restarted", job.source_id)
        restoring = task.config.restoration.enabled
        restorer = RemoteRestorer(replicas, spec, task.config.ray) if restoring else None
        self.job = job
        self.pipeline = Pipeline(
            [job], assemble_components(task.config, restorer), pipeline_settings(task.config, task.limits)
        )
        self.state: str = "running"
        self.error: str | None = None
        threading.Thread(target=self._run, name=f"job-{job.source_id}", daemon=True).start()

    def _run(self) -> None:
        try:
            self.pipeline.run()
            self.state = "done"
        except BaseException as exc:
            logger.debug("%s failed", self.job.source_id, exc_info=True)
            self.error = _one_line(exc)
            self.state = "failed"

    def poll(self) -> Snapshot:
        stats = self.pipeline.stats.sources[self.job.source_id]
        return Snapshot(self.incarnation, self.state, self.error, stats, self.job.output)

    def stop(self) -> None:
        self.pipeline.request_stop()

    def abort(self) -> None:
        self.pipeline.abort()

    def pid(self) -> int:
        return os.getpid()


# ---------------------------------------------------------------- driver


@dataclass
class _Running:
    """The driver's record of one job."""

    job: Job
    live: bool
    actor: Any = None
    incarnation: str | None = None
    carried: SourceStats | None = None  # counters of earlier incarnations (restarted cameras)
    last: SourceStats | None = None
    restarts: int = 0
    outputs: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None
    finished: bool = False


class RayRun:
    """Runs jobs on the cluster: live cameras all at once, files as cluster slots free up; polls
    their counters, restarts live cameras that fail, and stops them all on request."""

    def __init__(self, jobs: list[Job], configs: dict[str, Config], base: Config, limits: CaptureLimits) -> None:
        self.jobs, self.configs, self.base, self.limits = jobs, configs, base, limits
        self.stats = RunStats({job.source_id: job.label for job in jobs})
        self.lost_cameras: dict[str, str] = {}  # cameras that never streamed: source id -> why
        self._stopping, self._aborting = threading.Event(), threading.Event()
        self._stop_sent = self._abort_sent = False
        self._replicas: list = []
        self._replica_counters: dict[int, dict] = {}
        self._replica_carried: dict[int, dict] = {}

    # RunControl drives these (signal handlers: they only set flags; the run loop acts)
    def request_stop(self) -> None:
        self._stopping.set()

    def abort(self) -> None:
        self._stopping.set()
        self._aborting.set()

    def run(self) -> list[JobResult]:
        records = [_Running(job, is_live_url(job.input)) for job in self.jobs]
        try:
            spec = self._start_replicas()
            self._loop(records, spec)
        finally:
            for record in records:
                if record.actor is not None:
                    ray.kill(record.actor, no_restart=True)
            self._poll_replicas()
            for replica in self._replicas:
                ray.kill(replica, no_restart=True)
            self.stats.finish()
        return [self._result(record) for record in records]

    def _start_replicas(self) -> Any:
        settings, batching = self.base.ray, _batching(self.base)
        if not self.base.restoration.enabled:
            return None
        gpus = settings.restorer_gpus
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        replica_class = ray.remote(RestorerReplica)
        self._replicas = [
            replica_class.options(
                num_cpus=settings.restorer_cpus,
                num_gpus=gpus,
                max_restarts=-1,
                max_task_retries=0,
                max_concurrency=1000,
                name=f"{RESTORER_ACTOR}{number}",
            ).remote(self.base, batching)
            for number in range(1, settings.restorer_replicas + 1)
        ]
        described = ray.get([replica.describe.remote() for replica in self._replicas], timeout=REPLICA_READY_TIMEOUT_S)
        for number, info in enumerate(described):
            logger.info("restorer replica %d on %s (%s)", number + 1, info["node"], info["device"])
        self.stats.restorer.replicas = len(self._replicas)
        return described[0]["spec"]

    def _loop(self, records: list[_Running], spec: Any) -> None:
        waiting = deque(record for record in records if not record.live)
        for record in records:
            if record.live:
                self._launch(record, spec)
        started = time.monotonic()
        next_status = started + self.base.logging.status_interval_s
        while True:
            self._handle_stop(records, waiting)
            while waiting and not self._stopping.is_set() and self._running_files(records) < self._file_slots():
                self._launch(waiting.popleft(), spec)
            active = [record for record in records if record.actor is not None and not record.finished]
            if not active and not waiting:
                return
            self._poll(active)
            if self.limits.duration_s is not None and time.monotonic() - started >= self.limits.duration_s:
                self._stopping.set()
            if time.monotonic() >= next_status:
                self._poll_replicas()
                logger.info("status: %s", self.stats.status_line())
                next_status += self.base.logging.status_interval_s
            time.sleep(POLL_S)

    def _handle_stop(self, records: list[_Running], waiting: deque) -> None:
        if self._stopping.is_set() and not self._stop_sent:
            self._stop_sent = True
            if waiting:
                logger.warning("stopping: %d files not started", len(waiting))
                for record in waiting:
                    record.error = "not started (interrupted)"
                waiting.clear()
            for record in records:
                if record.actor is not None and not record.finished:
                    record.actor.stop.remote()
        if self._aborting.is_set() and not self._abort_sent:
            self._abort_sent = True
            for record in records:
                if record.actor is not None and not record.finished:
                    record.actor.abort.remote()

    def _file_slots(self) -> int:
        """How many files run at once: the cluster's CPUs left after the restorers and cameras."""
        settings = self.base.ray
        cpus = ray.cluster_resources().get("CPU", 1.0) - settings.restorer_cpus * len(self._replicas)
        cameras = sum(1 for job in self.jobs if is_live_url(job.input))
        if settings.camera_cpus <= 0:
            return len(self.jobs)
        return max(1, int((cpus - cameras * settings.camera_cpus) // settings.camera_cpus))

    @staticmethod
    def _running_files(records: list[_Running]) -> int:
        return sum(1 for r in records if not r.live and r.actor is not None and not r.finished)

    def _launch(self, record: _Running, spec: Any) -> None:
        config = self.configs.get(record.job.source_id, self.base)
        task = CameraTask(record.job, config, self.limits)
        actor_class = ray.remote(CameraJob).options(
            num_cpus=self.base.ray.camera_cpus,
            max_restarts=-1 if record.live else 0,
            max_task_retries=0,
            max_concurrency=4,
            name=f"{CAMERA_ACTOR}{record.job.source_id}",
        )
        record.actor = actor_class.remote(task, self._replicas, spec)
        logger.info(
            "%s: %s -> %s (%s)",
            record.job.source_id,
            mask_credentials(record.job.input),
            mask_credentials(record.job.output),
            "live, restarted on failure" if record.live else "file",
        )

    def _poll(self, active: list[_Running]) -> None:
        answers = [(record, record.actor.poll.remote()) for record in active]
        for record, answer in answers:
            try:
                snapshot: Snapshot = ray.get(answer, timeout=POLL_TIMEOUT_S)
            except (RayActorError, ActorUnavailableError, GetTimeoutError) as exc:
                self._lost(record, exc)
                continue
            self._take(record, snapshot)

    def _lost(self, record: _Running, exc: BaseException) -> None:
        """A job that did not answer: busy (asked again next round), being restarted by Ray (a
        live camera: its new incarnation is counted when it answers), or dead (a file: failed)."""
        if isinstance(exc, GetTimeoutError | ActorUnavailableError):
            return
        if record.live and not self._stopping.is_set():
            return  # max_restarts=-1: Ray brings it back
        record.finished = True
        if not record.live:
            record.error = f"the worker running it died ({type(exc).__name__})"
            logger.error("%s: failed: %s", record.job.label, record.error)

    def _take(self, record: _Running, snapshot: Snapshot) -> None:
        if record.incarnation is not None and snapshot.incarnation != record.incarnation:
            record.restarts += 1
            record.carried = _sum_stats(record.carried, record.last)
            logger.warning("%s: restarted (%d so far)", record.job.source_id, record.restarts)
            if self._stop_sent:  # it came back after the stop was sent: stop this incarnation too
                record.actor.stop.remote()
        record.incarnation, record.last = snapshot.incarnation, snapshot.stats
        if snapshot.output not in record.outputs:
            record.outputs.append(snapshot.output)
        combined = _sum_stats(record.carried, snapshot.stats)
        combined.restarts += record.restarts  # its own (in-process) restarts and Ray's
        self.stats.sources[record.job.source_id] = combined
        if snapshot.state == "done":
            self._finish(record)
            logger.info(
                "%s -> %s: %d frames, %d faces",
                record.job.label,
                ", ".join(mask_credentials(o) for o in record.outputs),
                combined.frames_out,
                combined.faces,
            )
        elif snapshot.state == "failed":
            self._failed(record, snapshot.error or "failed", started=record.restarts > 0 or combined.frames_in > 0)

    def _failed(self, record: _Running, error: str, started: bool) -> None:
        """A camera that had been streaming is restarted; one that never delivered a frame (bad
        URL, unreachable at start-up: the local mode's exit 2) and a file are reported as failed."""
        if record.live and started and not self._stopping.is_set():
            logger.error("%s: failed: %s; restarting", record.job.label, mask_credentials(error))
            ray.kill(record.actor, no_restart=False)  # Ray restarts it (max_restarts)
            return
        record.error = mask_credentials(error)
        self._finish(record)
        logger.error("%s: failed: %s", record.job.label, record.error)

    @staticmethod
    def _finish(record: _Running) -> None:
        """The job is over: its actor goes, freeing its CPUs for the next file."""
        record.finished = True
        ray.kill(record.actor, no_restart=True)

    def _poll_replicas(self) -> None:
        for number, replica in enumerate(self._replicas):
            try:
                counters = ray.get(replica.counters.remote(), timeout=POLL_TIMEOUT_S)
            except (RayActorError, ActorUnavailableError, GetTimeoutError):
                continue
            previous = self._replica_counters.get(number)
            if previous is not None and previous["incarnation"] != counters["incarnation"]:
                self._replica_carried[number] = _sum_counters(self._replica_carried.get(number), previous)
            self._replica_counters[number] = counters
        totals = _sum_counters(None, None)
        for number, counters in self._replica_counters.items():
            totals = _sum_counters(_sum_counters(totals, counters), self._replica_carried.get(number))
        restorer = self.stats.restorer
        restorer.faces, restorer.batches = totals["faces"], totals["batches"]
        restorer.clock = StageClock(totals["busy_s"] / max(1, len(self._replicas)), totals["batches"])

    def _result(self, record: _Running) -> JobResult:
        job = record.job
        if len(record.outputs) > 1:
            job = dataclasses.replace(job, output=", ".join(record.outputs))
        if record.error is not None:
            return JobResult(job, None, record.error, camera_lost=record.live)
        return JobResult(job, self.stats, None)


def run_on_ray(
    jobs: list[Job],
    configs: dict[str, Config],
    base: Config,
    limits: CaptureLimits,
    control: Any,
    verbose: bool = False,
) -> list[JobResult]:
    """Run the jobs on the cluster of `base.ray.address` (or on one started here; or the one this
    process is already connected to) and return one result per job, as the local mode does."""
    started_here = not ray.is_initialized()
    if started_here:
        connect(base.ray, verbose)
    run = RayRun(jobs, configs, base, limits)
    control.attach(run)
    try:
        return run.run()
    finally:
        control.attach(None)
        if started_here:
            ray.shutdown()


def connect(settings: RayConfig, verbose: bool = False) -> None:
    """Join the cluster at `settings.address`, or start a one-machine cluster here. Workers get
    this repository on their import path and OMP_WAIT_POLICY=PASSIVE (as the CLI sets it)."""
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    options: dict[str, Any] = {
        "runtime_env": {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": python_path}},
        "log_to_driver": True,
        "logging_level": logging.INFO if verbose else logging.WARNING,
    }
    try:
        if settings.address:
            _check_reachable(settings.address)
            ray.init(address=settings.address, **options)
            return
        if settings.object_store_mb:
            options["object_store_memory"] = settings.object_store_mb * 1024 * 1024
        # "local": a new cluster here, even where RAY_ADDRESS names another one.
        ray.init(address="local", include_dashboard=False, **options)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"the Ray cluster at {settings.address}" if settings.address else "a Ray cluster here"
        raise RayUnavailable(f"cannot start or join {where}: {_one_line(exc)}") from None


# ---------------------------------------------------------------- helpers


def _check_reachable(address: str) -> None:
    """A HOST:PORT address must answer a TCP connection within seconds: ray.init() itself keeps
    retrying an address where nothing listens for minutes."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # "auto", ray://: Ray resolves them itself
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise RayUnavailable(
            f"cannot join the Ray cluster at {address}: {exc.strerror or exc} (is `ray start --head` running there?)"
        ) from None


def _batching(config: Config) -> Batching:
    return Batching(config.restoration.batch_size, config.restoration.max_latency_ms / 1000.0)


def _sum_stats(a: SourceStats | None, b: SourceStats | None) -> SourceStats:
    """Counters of two incarnations of one camera, added."""
    if a is None or b is None:
        base = a or b
        return dataclasses.replace(base, clocks=dict(base.clocks)) if base else SourceStats("", "")
    total = dataclasses.replace(
        b,
        clocks={
            name: StageClock(
                a.clocks[name].seconds + b.clocks[name].seconds, a.clocks[name].calls + b.clocks[name].calls
            )
            for name in PER_SOURCE_STAGES
        },
    )
    for name in SOURCE_COUNTERS:
        setattr(total, name, getattr(a, name) + getattr(b, name))
    return total


def _sum_counters(a: dict | None, b: dict | None) -> dict:
    keys = ("faces", "batches", "requests", "busy_s")
    return {key: (a or {}).get(key, 0) + (b or {}).get(key, 0) for key in keys}


def _one_line(exc: BaseException) -> str:
    """A job's failure in one line: bad input by its message alone, anything else with its type."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, UserError):
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _log_to_stdout(level: str) -> None:
    """In a job's worker process: our log lines (credentials masked) go to stdout, which Ray shows
    on the driver; file descriptor 2 goes to /dev/null, which silences MediaPipe's native log."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Masking("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


class _Masking(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask_credentials(super().format(record))
