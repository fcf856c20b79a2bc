"""From command-line inputs to jobs, and running them.

- Inputs: a file, a folder (its video files), a glob, or a live URL.
- Outputs: one per input. One input: OUTPUT is the file (or a folder to put it in). Several:
  OUTPUT is a folder; a file keeps its name (`in/a.mp4` -> `OUTPUT/a.mp4`), live cameras are
  `cam1.mp4`, `cam2.mp4`, ... in the order given.
- Running: live cameras run together in one pipeline (sharing one restorer); files run one
  after the other, each with its own progress bar. In a batch of several files a file that
  fails is reported and skipped, and the batch goes on.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import av
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from streamer.errors import UserError
from streamer.pipeline import Components, Job, Pipeline, PipelineSettings
from streamer.stats import RunStats
from streamer.urls import is_live_url, mask_credentials, not_a_file_hint, push_format, url_problem

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".avi",
        ".webm",
        ".ts",
        ".mts",
        ".m2ts",
        ".mpg",
        ".mpeg",
        ".flv",
        ".wmv",
        ".3gp",
        ".h264",
        ".264",
        ".hevc",
        ".265",
    }
)
_GLOB_CHARS = frozenset("*?[")


class UsageError(UserError):
    """The command line cannot be carried out (no inputs, output exists, ...); one line."""


@dataclass(frozen=True)
class JobResult:
    job: Job
    stats: RunStats | None  # the stats of the run that processed the job (cameras share one run)
    error: str | None  # one line; None when the job succeeded
    camera_lost: bool = False  # a camera given up after its retries (exit status 3)

    def as_dict(self) -> dict:
        result = {"input": self.job.label, "output": mask_credentials(self.job.output), "ok": self.error is None}
        if self.error:
            result["error"] = self.error
        return result


def results_as_json(results: list[JobResult]) -> list[dict]:
    """One entry per pipeline run (its jobs, counters and timings); a failed file is a run of its own."""
    runs: list[dict] = []
    by_stats: dict[int, dict] = {}
    for result in results:
        if result.stats is None:
            runs.append({"jobs": [result.as_dict()]})
            continue
        if id(result.stats) not in by_stats:
            by_stats[id(result.stats)] = {"jobs": [], **result.stats.as_dict()}
            runs.append(by_stats[id(result.stats)])
        by_stats[id(result.stats)]["jobs"].append(result.as_dict())
    return runs


def expand_inputs(arguments: list[str]) -> list[str]:
    """Each argument as the inputs it names: a URL or file as is, a folder's video files, a glob's files."""
    inputs: list[str] = []
    for argument in arguments:
        if is_live_url(argument):
            inputs.append(_checked_url(argument))
        elif Path(argument).is_dir():
            inputs += _videos_in(Path(argument))
        elif _GLOB_CHARS & set(argument):
            inputs += _glob_files(argument)
        else:
            inputs.append(argument)  # a missing file is reported when it is opened
    return inputs


def _checked_url(url: str) -> str:
    """The URL, if it names a host (a malformed one fails here, not after connection attempts)."""
    problem = url_problem(url)
    if problem is not None:
        raise UsageError(f"{mask_credentials(url)}: {problem}")
    return url


def _videos_in(folder: Path) -> list[str]:
    videos = sorted(str(p) for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise UsageError(f"{folder}: no video files in this folder")
    return videos


def _glob_files(pattern: str) -> list[str]:
    files = sorted(path for path in glob.glob(pattern) if Path(path).is_file())
    if not files:
        raise UsageError(f"{pattern}: no files match")
    return files


def plan_jobs(arguments: list[str], output: str, container: str, overwrite: bool) -> list[Job]:
    """One job per input the arguments name, with its output path. OUTPUT is a folder when
    there are several arguments or one names a folder or a glob."""
    inputs = expand_inputs(arguments)
    if not inputs:
        raise UsageError("no inputs: name a file, folder, glob or URL (or source.inputs in the config)")
    if len(inputs) == 1 and not is_live_url(inputs[0]) and not Path(inputs[0]).exists():
        # The run's only input: say so now, not after seconds of loading models. In a batch a
        # missing file is one failed job, reported when it is opened, and the others still run.
        raise UsageError(f"{mask_credentials(inputs[0])}: no such file{not_a_file_hint(inputs[0])}")
    if push_format(output) is not None:
        if len(inputs) > 1:
            raise UsageError(f"{mask_credentials(output)}: a stream URL output takes exactly one input")
        return [_job(1, inputs[0], output)]
    into_folder = (
        len(arguments) > 1
        or any(_names_many(argument) for argument in arguments)
        or output.endswith(os.sep)
        or Path(output).is_dir()
    )
    outputs = _output_paths(inputs, Path(output), container, into_folder)
    jobs = [_job(k, source, str(target)) for k, (source, target) in enumerate(zip(inputs, outputs), start=1)]
    for job in jobs:
        check_output(job, overwrite)
    return jobs


def _names_many(argument: str) -> bool:
    return not is_live_url(argument) and (Path(argument).is_dir() or bool(_GLOB_CHARS & set(argument)))


def _job(number: int, source: str, output: str) -> Job:
    return Job(source_id=f"cam{number}", input=source, output=output, label=mask_credentials(source))


def _output_paths(inputs: list[str], output: Path, container: str, into_folder: bool) -> list[Path]:
    if not into_folder:
        return [output]
    names: list[str] = []
    cameras = 0
    for source in inputs:
        if is_live_url(source):
            cameras += 1
            stem = f"cam{cameras}"
        else:
            stem = Path(source).stem
        names.append(_unique(stem, names))
    return [output / f"{name}.{container}" for name in names]


def _unique(stem: str, taken: list[str]) -> str:
    name, number = stem, 2
    while name in taken:
        name, number = f"{stem}_{number}", number + 1
    return name


def check_output(job: Job, overwrite: bool) -> None:
    target = Path(job.output)
    if not is_live_url(job.input) and target.resolve() == Path(job.input).resolve():
        raise UsageError(f"{job.output}: the output would overwrite its input")
    if target.exists() and not overwrite:
        raise UsageError(f"{job.output}: output exists (use --overwrite to replace it)")


class Stoppable(Protocol):
    """What a signal stops: a Pipeline, or the Ray engine's run of many jobs."""

    lost_cameras: dict[str, str]  # source id -> why the camera was given up

    def request_stop(self) -> None: ...

    def abort(self) -> None: ...


class RunControl:
    """Lets a signal handler stop the run: the first request finishes gracefully (current
    frames are written, the output is finalised, no further file is started), the second aborts."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.aborted = threading.Event()
        self._pipeline: Stoppable | None = None
        self.lost_cameras: dict[str, str] = {}  # of the last pipeline: source id -> why it was given up
        self.stats: RunStats | None = None  # the running pipeline's (for the metrics endpoint)

    def attach(self, pipeline: Stoppable | None) -> None:
        if pipeline is None and self._pipeline is not None:
            self.lost_cameras = dict(self._pipeline.lost_cameras)
        self._pipeline = pipeline
        if pipeline is not None:
            self.stats = getattr(pipeline, "stats", None)
        if pipeline is not None and self.stopping.is_set():
            pipeline.request_stop()

    def interrupt(self) -> None:
        if self.stopping.is_set():
            self.aborted.set()
            logger.warning("second interrupt: aborting, unfinished outputs are removed")
            if self._pipeline is not None:
                self._pipeline.abort()
            return
        self.stopping.set()
        logger.warning("interrupt: finishing the frames in flight (interrupt again to abort)")
        if self._pipeline is not None:
            self._pipeline.request_stop()


@dataclass
class JobRunner:
    """Runs jobs with shared components: cameras together, files one by one."""

    components: Components
    settings: PipelineSettings
    control: RunControl
    show_progress: bool = True

    def run(self, jobs: list[Job]) -> list[JobResult]:
        live = [job for job in jobs if is_live_url(job.input)]
        if live:
            return self._run_together(jobs)
        if len(jobs) == 1:
            return [self._run_file(jobs[0])]
        return self._run_files(jobs)

    def _run_together(self, jobs: list[Job]) -> list[JobResult]:
        stats = self._run_pipeline(jobs, progress=None)
        lost = self.control.lost_cameras
        return [JobResult(job, stats, lost.get(job.source_id), job.source_id in lost) for job in jobs]

    def _run_files(self, jobs: list[Job]) -> list[JobResult]:
        results = []
        for number, job in enumerate(jobs, start=1):
            if self.control.stopping.is_set():
                logger.warning("interrupted: %d of %d files not started", len(jobs) - number + 1, len(jobs))
                break
            logger.info("file %d of %d: %s", number, len(jobs), job.label)
            try:
                results.append(self._run_file(job))
            except Exception as exc:  # noqa: BLE001 - one bad file must not end the batch
                results.append(JobResult(job, None, self._report_failure(job, exc)))
        return results

    def _report_failure(self, job: Job, exc: Exception) -> str:
        if isinstance(exc, UserError):  # bad input: reported by its message alone
            message = str(exc)
        else:  # not a known bad-input error: keep the traceback for --verbose
            logger.debug("%s failed", job.label, exc_info=True)
            message = f"{type(exc).__name__}: {exc}"
        message = mask_credentials(message)
        logger.error("%s: failed: %s", job.label, message)
        return message

    def _run_file(self, job: Job) -> JobResult:
        with _ProgressBar(job, self.show_progress, self.settings.limits.max_frames) as bar:
            stats = self._run_pipeline([job], progress=bar.update)
            bar.update(stats)
        source = stats.sources[job.source_id]
        logger.info(
            "%s -> %s: %d frames, %d faces, %.1f fps",
            job.label,
            job.output,
            source.frames_out,
            source.faces,
            stats.fps(job.source_id),
        )
        # A cut input's output is written and playable, but it is not the whole recording: not "ok".
        truncated = mask_credentials(source.last_error or f"{job.label}: truncated") if source.truncated else None
        return JobResult(job, stats, truncated)

    def _run_pipeline(self, jobs: list[Job], progress: Callable[[RunStats], None] | None) -> RunStats:
        pipeline = Pipeline(jobs, self.components, self.settings)
        self.control.attach(pipeline)
        try:
            return pipeline.run(on_progress=progress)
        finally:
            self.control.attach(None)


class _ProgressBar:
    """A tqdm bar with the frames written and the fps of one file."""

    def __init__(self, job: Job, enabled: bool, max_frames: int | None) -> None:
        self.job = job
        total = min(filter(None, (_frame_count(job.input), max_frames)), default=None)
        self.bar = tqdm(
            total=total, unit="frame", desc=Path(job.input).name, disable=not enabled, dynamic_ncols=True, leave=True
        )
        # Log lines go through tqdm.write while the bar is shown, so they do not break it.
        self._logs_around_bar = logging_redirect_tqdm() if enabled else contextlib.nullcontext()

    def update(self, stats: RunStats) -> None:
        self.bar.update(stats.sources[self.job.source_id].frames_out - self.bar.n)

    def __enter__(self) -> _ProgressBar:
        self._logs_around_bar.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self.bar.close()
        self._logs_around_bar.__exit__(*exc_info)


def _frame_count(path: str) -> int | None:
    """The frame count a file's header states (for the progress bar's total), or None."""
    try:
        with av.open(path) as container:
            return container.streams.video[0].frames or None
    except (av.error.FFmpegError, IndexError, OSError):
        return None


def summary_lines(results: list[JobResult]) -> list[str]:
    """What a batch did: counts, then one line per failed file."""
    failed = [(result.job.label, result.error) for result in results if result.error]
    lines = [f"{len(results)} inputs: {len(results) - len(failed)} done, {len(failed)} failed"]
    lines += [f"  FAILED {_naming_its_input(error, label)}" for label, error in failed]
    return lines


def _naming_its_input(error: str, label: str) -> str:
    """The error, which names its input once: most errors start with the file's name already."""
    return error if error.startswith(label) else f"{label}: {error}"
