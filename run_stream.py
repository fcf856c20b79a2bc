#!/usr/bin/env python
"""Restore the faces in CCTV video: files, folders, globs, or live rtsp:// cameras.

The command line only: it parses arguments, loads the config, runs the pipeline (streamer/)
and turns known errors into a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

# Light imports only: `--help` and a bad command line answer at once. The config (pydantic), the jobs
# (PyAV) and, when a run starts, the models (torch, mediapipe) are imported where they are first needed.
from streamer import REPO_ROOT  # sets OMP_WAIT_POLICY before torch loads (streamer/__init__.py)
from streamer.errors import UserError, one_line

if TYPE_CHECKING:
    from streamer.cameras import Camera
    from streamer.components import SpecRestorer
    from streamer.config import Config
    from streamer.jobs import JobResult, RunControl
    from streamer.metrics import MetricsServer
    from streamer.pipeline import Job
    from streamer.workers import CaptureLimits

logger = logging.getLogger("run_stream")

DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"
EXIT_OK, EXIT_SOME_FAILED, EXIT_BAD_INPUT, EXIT_CAMERA_LOST, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

EPILOG = """\
examples:
  # a recorded file -> a restored copy (default config: paste mode, bundled model)
  python run_stream.py samples/demo_cctv.mp4 -o out/demo_restored.mp4

  # review side by side (input | output), on the GPU if there is one
  python run_stream.py clip.mp4 -o out/review.mp4 --mode side-by-side --device auto

  # a live camera; keep the password out of the command line and the logs
  export CAM_PASS=...        # then quote the URL so the shell leaves ${CAM_PASS} to us
  python run_stream.py 'rtsp://admin:${CAM_PASS}@192.168.1.20:554/stream1' -o out/ \\
      --config configs/live_rtsp.yaml --duration 600

  # several cameras in one run share one restorer: out/cam1.mp4, out/cam2.mp4
  python run_stream.py 'rtsp://admin:${CAM_PASS}@cam-a/live' 'rtsp://admin:${CAM_PASS}@cam-b/live' -o out/ \\
      --config configs/live_rtsp.yaml

  # a folder or a glob of recordings -> one output each in out/ (same file names)
  python run_stream.py recordings/ -o out/ --config configs/batch.yaml
  python run_stream.py 'recordings/2024-*.mp4' -o out/ --overwrite

  # many cameras (and recordings) from a cameras file: each its own output and overrides
  python run_stream.py --cameras cams.yaml --config configs/live_rtsp.yaml

  # check a config (prints the effective config, flags applied) without running
  python run_stream.py --config configs/batch.yaml --no-tiles --validate-config

  # live cameras with health: Prometheus metrics and /healthz on port 9108
  python run_stream.py 'rtsp://admin:${CAM_PASS}@cam-a/live' -o out/ --config configs/live_rtsp.yaml \\
      --metrics-port 9108

exit status:
  0 every input was processed; 1 some files of a batch failed, or an input was truncated
  (each is listed at the end; the others, and what a truncated file held, were written);
  2 bad input (missing or unreadable file, malformed URL, bad config or model, output exists
  without --overwrite): nothing written, fix and rerun;
  3 a camera could not be reached or kept after its retries (source.required,
  source.give_up_after_s, never reached, or down at the end of the run): the other
  cameras recorded; retryable; 130 interrupted (Ctrl-C
  once finishes the frames in flight and keeps a playable output; twice aborts and removes a
  file's output, a camera's segments are kept).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_stream.py",
        description="Detect the faces in CCTV video, restore them with a TorchScript model, and write them back.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="video file, folder, glob, or rtsp:// URL (${VAR} is taken from the environment); "
        "default: source.inputs of the config",
    )
    parser.add_argument("-o", "--output", help="output file, or folder (several inputs), or rtsp:// / rtmp:// URL")
    parser.add_argument(
        "--cameras",
        type=Path,
        metavar="FILE",
        help="YAML cameras file (name, url, output and config overrides per camera), instead of SOURCE and -o",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="YAML config (default: configs/default.yaml of this repository)",
    )
    parser.add_argument("--mode", choices=["paste", "overlay", "side-by-side"], help="how restored faces are shown")
    parser.add_argument("--model", type=Path, help="restorer TorchScript file")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where the restorer runs")
    parser.add_argument(
        "--tiles",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="tiled detection: finds small faces, costs time",
    )
    parser.add_argument("--detect-every", type=int, metavar="N", help="run the detector every N frames")
    parser.add_argument("--batch-size", type=int, metavar="N", help="faces per restorer batch")
    parser.add_argument("--no-restore", action="store_true", help="detect and composite only (benchmarks)")
    parser.add_argument("--max-frames", type=int, metavar="N", help="stop each input after N frames")
    parser.add_argument("--duration", type=float, metavar="SECONDS", help="stop each input after SECONDS (live)")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    parser.add_argument("--stats-json", type=Path, metavar="PATH", help="write the run's counters and timings here")
    parser.add_argument(
        "--frame-hashes",
        action="store_true",
        help="also write each input's per-frame decoded MD5s beside its output (NAME.input.framemd5, "
        "FFmpeg's framemd5 format: compare with `ffmpeg -i INPUT -map 0:v:0 -f framemd5 -`)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="write an investigator's report here: each tracked face's best shots, original beside "
        "enhanced, and the processing record (index.html; see README)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus /metrics and /healthz on PORT (health.metrics_port)",
    )
    parser.add_argument("--validate-config", action="store_true", help="print the effective config and exit")
    cluster = parser.add_argument_group("Ray cluster (many cameras on many machines; see README)")
    cluster.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process (default); ray: one actor per camera or file on a Ray cluster, "
        "one batched restorer pool for all",
    )
    cluster.add_argument(
        "--address",
        metavar="ADDR",
        help="Ray cluster to join (e.g. auto, or HEAD_IP:6379); default: start one on this machine",
    )
    cluster.add_argument("--replicas", type=int, metavar="N", help="restorer replicas (on GPUs where there are)")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bar")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def config_overrides(args: argparse.Namespace) -> dict[str, tuple[Any, str]]:
    """Config keys set by flags: {dotted key: (value, flag)}."""
    flags = {
        "compositing.mode": (args.mode, "--mode"),
        "restoration.model": (str(args.model.resolve()) if args.model else None, "--model"),
        "restoration.device": (args.device, "--device"),
        "detection.tiling.enabled": (args.tiles, "--tiles"),
        "detection.every_n_frames": (args.detect_every, "--detect-every"),
        "restoration.batch_size": (args.batch_size, "--batch-size"),
        "restoration.enabled": (False if args.no_restore else None, "--no-restore"),
        "report.enabled": (True if args.report else None, "--report"),
        "report.folder": (str(args.report) if args.report else None, "--report"),
        "health.metrics_port": (args.metrics_port, "--metrics-port"),
        "ray.address": (args.address, "--address"),
        "ray.restorer_replicas": (args.replicas, "--replicas"),
    }
    return {key: entry for key, entry in flags.items() if entry[0] is not None}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UserError as exc:  # bad input the user can fix: one line, no traceback
        from streamer.urls import mask_credentials

        print(f"error: {one_line(mask_credentials(str(exc)))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:  # before the pipeline's own handler is installed (e.g. loading the model)
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def run(args: argparse.Namespace) -> int:
    from streamer.config import effective_config_yaml, load_config
    from streamer.urls import mask_credentials

    config = load_config(args.config, config_overrides(args))
    cameras = _cameras(args, config)
    if args.validate_config:
        if cameras is None:
            _expanded_inputs(args, config)  # a ${VAR} that is not set is a config error too
        print(effective_config_yaml(config, mask_credentials), end="")
        for camera in cameras or []:
            print(f"# camera {camera.name}: {camera.label} -> {mask_credentials(camera.output)}")
        return EXIT_OK
    if not args.verbose:
        _hide_native_logs()
    _configure_logging(config, args)
    jobs = _plan(args, config) if cameras is None else _plan_cameras(cameras, args)
    if args.frame_hashes:
        from streamer.frame_hashes import check_inputs

        check_inputs([job.input for job in jobs], [job.output for job in jobs])
    if config.report.enabled:  # checked now, before the models load
        from streamer.report_folder import prepare_folder, report_folder

        prepare_folder(report_folder(config.report.folder, args.output, len(jobs)), args.overwrite)
    return _process(jobs, config, args, cameras)


def _cameras(args: argparse.Namespace, config: Config) -> list[Camera] | None:
    """The cameras of --cameras (checked), or None without it."""
    from streamer.cameras import load_cameras
    from streamer.jobs import UsageError

    if args.cameras is None:
        return None
    if args.sources or args.output:
        raise UsageError("--cameras names the inputs and outputs: give no SOURCE and no -o with it")
    return load_cameras(args.cameras, config)


def _plan_cameras(cameras: list[Camera], args: argparse.Namespace) -> list[Job]:
    from streamer.jobs import check_output
    from streamer.pipeline import Job
    from streamer.urls import push_format

    # Logs, the status line and the stats name a camera of the file by its name (its URL is logged at start).
    jobs = [Job(source_id=camera.name, input=camera.url, output=camera.output, label=camera.name) for camera in cameras]
    for job in jobs:
        check_output(job, args.overwrite)
        if push_format(job.output) is None:
            Path(job.output).parent.mkdir(parents=True, exist_ok=True)
    return jobs


def _process(jobs: list[Job], config: Config, args: argparse.Namespace, cameras: list[Camera] | None = None) -> int:
    _check_the_model_file(config)  # cheapest first
    _check_the_only_file_opens(jobs, config)
    from streamer.components import (  # loads torch, mediapipe
        assemble_components,
        build_components,
        pipeline_settings,
        with_own_stages,
    )
    from streamer.jobs import JobRunner, RunControl
    from streamer.workers import CaptureLimits

    limits = CaptureLimits(args.max_frames, args.duration)
    if args.engine == "ray":
        return _process_on_ray(jobs, config, args, cameras, limits)
    components = build_components(config)
    # build_components loaded a TorchScriptRestorer (or none): one with the spec the stages need.
    restorer = cast("SpecRestorer | None", components.restorer)
    report = _open_report(config, jobs, components, args) if config.report.enabled else None
    if report is not None:
        components = assemble_components(config, restorer, report)
    if cameras is not None:
        jobs = with_own_stages(jobs, {camera.name: camera.config for camera in cameras}, restorer, limits, report)
    runner = JobRunner(
        components=components,
        settings=pipeline_settings(config, limits),
        control=RunControl(),
        show_progress=not args.quiet,
    )
    hasher = _start_frame_hashes(jobs, args) if args.frame_hashes else None
    with _signals_handled_by(runner.control), _metrics_served(config, runner.control):
        try:
            results = runner.run(jobs)
        except BaseException as exc:
            if report is not None:
                report.close_after_error(exc)
            raise
    hash_errors = _finish_frame_hashes(hasher, report, runner.control.stopping.is_set()) if hasher else []
    if report is not None:
        report.close_after(results, interrupted=runner.control.stopping.is_set())
    _report(results, args)
    return _exit_code(results, runner.control.stopping.is_set(), failed_beside=bool(hash_errors))


def _check_the_only_file_opens(jobs: list[Job], config: Config) -> None:
    """A run of one file opens it first: a file that is not a readable video is one error line at
    once, not after seconds of loading models. (In a batch a bad file is one failed job, and the
    others still run.)"""
    from streamer.sources import open_source
    from streamer.urls import is_live_url

    if len(jobs) == 1 and not is_live_url(jobs[0].input):
        with open_source(jobs[0].input, jobs[0].source_id, config.source):
            pass


def _check_the_model_file(config: Config) -> None:
    """The restorer file's obvious faults, found before torch loads (seconds): TorchScript files are
    zip archives. The loader checks the rest (restoration.TorchScriptRestorer.load)."""
    from streamer.jobs import UsageError

    path = config.restoration.model_path()
    if config.restoration.enabled and path.is_file() and not zipfile.is_zipfile(path):
        raise UsageError(f"{path}: not a TorchScript model (not the zip archive torch.jit.save writes)")


def _start_frame_hashes(jobs: list[Job], args: argparse.Namespace) -> Any:
    from streamer.frame_hashes import FrameHasher, hashes_path

    return FrameHasher([(job.input, hashes_path(job.output)) for job in jobs], args.max_frames).start()


def _finish_frame_hashes(hasher: Any, report: Any, interrupted: bool) -> list[str]:
    """Wait for the hashes (they were read beside the run); they go in the report's record."""
    hasher.join(interrupted)
    if report is not None:
        report.add_frame_hashes([str(path) for path in hasher.written], hasher.errors)
    return hasher.errors


def _open_report(config: Config, jobs: list[Job], components: Any, args: argparse.Namespace) -> Any:
    from streamer.report import open_report
    from streamer.report_folder import report_folder

    return open_report(config, jobs, components, report_folder(config.report.folder, args.output, len(jobs)))


class _metrics_served:
    """Within the block, /metrics and /healthz are served when health.metrics_port is set."""

    def __init__(self, config: Config, control: RunControl) -> None:
        self.config, self.control = config, control
        self.server: MetricsServer | None = None

    def __enter__(self) -> None:
        health = self.config.health
        if health.metrics_port:
            from streamer.jobs import UsageError
            from streamer.metrics import MetricsError, MetricsServer  # prometheus-client: only when asked for

            try:
                self.server = MetricsServer(
                    health.metrics_port, health.no_frame_s, lambda: self.control.stats, host=health.metrics_host
                ).start()
            except MetricsError as error:
                raise UsageError(str(error)) from None

    def __exit__(self, *exc_info) -> None:
        if self.server is not None:
            self.server.stop()


def _process_on_ray(
    jobs: list[Job], config: Config, args: argparse.Namespace, cameras: list[Camera] | None, limits: CaptureLimits
) -> int:
    """The same jobs on a Ray cluster. The models are checked here first (a bad one is the same
    one-line error as in the local mode), then loaded on the cluster's nodes."""
    from streamer.components import check_models
    from streamer.jobs import RunControl, UsageError

    if config.report.enabled or args.frame_hashes or config.health.metrics_port:
        raise UsageError(
            "--report, --frame-hashes and --metrics-port need the local engine (not with --engine ray yet)"
        )
    try:
        from streamer.ray_engine import run_on_ray  # the only module that imports Ray
    except ImportError as exc:
        raise UsageError(f"--engine ray needs Ray (pip install -r requirements-ray.txt): {exc}") from None

    check_models(config)
    configs = {camera.name: camera.config for camera in cameras or []}
    control = RunControl()
    with _signals_handled_by(control):
        results = run_on_ray(jobs, configs, config, limits, control, verbose=args.verbose)
    _report(results, args)
    return _exit_code(results, control.stopping.is_set())


def _exit_code(results: list[JobResult], interrupted: bool, failed_beside: bool = False) -> int:
    """The run's exit status (see --help), either engine: a lost camera first, then an interruption,
    then any failed job (or `failed_beside`: something done beside the jobs, e.g. the frame hashes)."""
    if any(result.camera_lost for result in results):
        return EXIT_CAMERA_LOST
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_SOME_FAILED if failed_beside or any(result.error for result in results) else EXIT_OK


def _plan(args: argparse.Namespace, config: Config) -> list[Job]:
    from streamer.jobs import UsageError, plan_jobs
    from streamer.urls import push_format

    if not args.output:
        raise UsageError("no output: give -o OUTPUT (a file, a folder, or a stream URL)")
    jobs = plan_jobs(_expanded_inputs(args, config), args.output, config.output.container, args.overwrite)
    for job in jobs:
        if push_format(job.output) is None:
            Path(job.output).parent.mkdir(parents=True, exist_ok=True)
    return jobs


def _expanded_inputs(args: argparse.Namespace, config: Config) -> list[str]:
    """The SOURCE arguments (or the config's inputs) with ${VAR} taken from the environment."""
    from streamer.config import expand_env

    where = "SOURCE" if args.sources else "source.inputs"
    inputs = args.sources or config.source.inputs
    return [expand_env(text, os.environ, f"{where}[{k}]") for k, text in enumerate(inputs)]


def _report(results: list[JobResult], args: argparse.Namespace) -> None:
    from streamer.jobs import results_as_json, summary_lines
    from streamer.stats import write_stats_json

    if not args.quiet:
        for stats in {id(r.stats): r.stats for r in results if r.stats is not None}.values():
            print(stats.summary_table(), file=sys.stderr)
    if len(results) > 1:
        for line in summary_lines(results):
            print(line, file=sys.stderr)
    for result in results:
        if result.camera_lost:
            print(f"error: {result.job.label}: {result.error}", file=sys.stderr)
    if args.stats_json:
        write_stats_json(args.stats_json, results_as_json(results))


class _signals_handled_by:
    """Within the block, SIGINT/SIGTERM go to `control` (graceful first, abort second)."""

    def __init__(self, control: RunControl) -> None:
        self.control = control
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, lambda *_: self.control.interrupt())

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _hide_native_logs() -> None:
    """MediaPipe's native runtime writes ~50 INFO/WARNING lines per detector straight to file
    descriptor 2, burying our log and errors. Point fd 2 at /dev/null and keep Python's
    sys.stderr (log, progress bar, errors, tracebacks) on the real stderr. --verbose keeps both."""
    real_stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = os.fdopen(real_stderr, "w", buffering=1)


def _configure_logging(config: Config, args: argparse.Namespace) -> None:
    level = "WARNING" if args.quiet else "DEBUG" if args.verbose else config.logging.level
    handler = logging.StreamHandler()
    handler.setFormatter(_MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


class _MaskingFormatter(logging.Formatter):
    """Credentials never reach the log, whatever a message (or a library's) contains."""

    def format(self, record: logging.LogRecord) -> str:
        from streamer.urls import mask_credentials

        return mask_credentials(super().format(record))


if __name__ == "__main__":
    sys.exit(main())
