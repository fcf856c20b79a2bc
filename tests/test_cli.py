"""The command line as users meet it: help, config checks, bad input, batches (subprocesses)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import av
import pytest

from streamer.jobs import RunControl, UsageError, plan_jobs
from tests.helpers.models import save_model
from tests.helpers.rtsp_server import free_port
from tests.test_sources import copy_stream

QUICK_LIVE_CONFIG = "source:\n  open_timeout_s: 1\n  read_timeout_s: 1\n  connect_attempts: 1\n"


def test_help_teaches_files_live_cameras_with_secrets_and_batches(run_cli):
    result = run_cli("--help")
    assert result.returncode == 0
    for example in ("samples/demo_cctv.mp4", "rtsp://admin:${CAM_PASS}@", "recordings/ -o out/", "--validate-config"):
        assert example in result.stdout
    assert "exit status" in result.stdout


def test_validate_config_prints_the_effective_config_with_flags_applied(run_cli, tmp_path):
    config = tmp_path / "cams.yaml"
    config.write_text("source:\n  inputs: ['rtsp://admin:hunter2@cam/1']\ndetection:\n  every_n_frames: 5\n")
    result = run_cli("--config", config, "--detect-every", "2", "--mode", "overlay", "--validate-config")
    assert result.returncode == 0, result.stderr
    assert "every_n_frames: 2" in result.stdout and "mode: overlay" in result.stdout
    assert "rtsp://admin:***@cam/1" in result.stdout and "hunter2" not in result.stdout


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def bad_input_cases(tmp: Path, clip: Path) -> dict[str, tuple[list, str]]:
    """case -> (command-line arguments, what the one-line error must say)."""
    out = tmp / "out" / "result.mp4"
    return {
        "missing file": ([tmp / "nope.mp4", "-o", out], "nope.mp4: no such file"),
        "not a video": ([write(tmp / "notes.mp4", "just text\n"), "-o", out], "notes.mp4: cannot open: not a video"),
        "text file": (
            [write(tmp / "notes.txt", "FFmpeg renders this as pictures\n" * 200), "-o", out],
            "notes.txt: not a video",
        ),
        "truncated mp4": (
            [write(tmp / "cut.mp4", clip.read_bytes()[: clip.stat().st_size // 2]), "-o", out],
            "cut.mp4: cannot open: truncated",
        ),
        "malformed url": (
            ["rtsp://admin:hunter2@[bad/stream", "-o", out],
            "rtsp://admin:***@[bad/stream: malformed URL",
        ),
        "url without host": (["rtsp:///stream", "-o", out], "rtsp:///stream: malformed URL (no host)"),
        "url with one slash": (
            ["rtsp:/admin:hunter2@cam/live", "-o", out],
            "rtsp:/admin:***@cam/live: no such file (a stream URL starts with rtsp://)",
        ),
        "unset env var in url": (["rtsp://admin:${NO_SUCH_VAR_X}@cam/1", "-o", out], "NO_SUCH_VAR_X is not set"),
        "unknown config key": (
            [clip, "--config", write(tmp / "typo.yaml", "detection:\n  min_scor: 0.5\n"), "-o", out],
            "typo.yaml:2: detection.min_scor: unknown key",
        ),
        "bad config value": (
            [clip, "--config", write(tmp / "neg.yaml", "restoration:\n  batch_size: -4\n"), "-o", out],
            "neg.yaml:2: restoration.batch_size",
        ),
        "bad flag value": ([clip, "--detect-every", "0", "-o", out], "--detect-every: detection.every_n_frames"),
        "model not torchscript": (
            [clip, "--model", write(tmp / "junk.ts", b"not a model"), "-o", out],
            "junk.ts: not a TorchScript",
        ),
        "model breaks contract": ([clip, "--model", save_model("half_size", tmp / "half.ts"), "-o", out], "half.ts"),
        "detector model not tflite": (
            [clip, "--config", write(tmp / "det.yaml", f"detection:\n  model: {clip}\n"), "-o", out],
            "cannot load face-detection model",
        ),
        "output exists": ([clip, "-o", write(tmp / "taken.mp4", b"keep me")], "taken.mp4: output exists"),
    }


CASES = [
    "missing file",
    "not a video",
    "text file",
    "truncated mp4",
    "malformed url",
    "url without host",
    "url with one slash",
    "unset env var in url",
    "unknown config key",
    "bad config value",
    "bad flag value",
    "model not torchscript",
    "model breaks contract",
    "detector model not tflite",
    "output exists",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_no_output(run_cli, tmp_path, plain_clip, checker_model, case):
    clip = shutil.copy(plain_clip, tmp_path / "clip.mp4")
    args, expected = bad_input_cases(tmp_path, Path(clip))[case]
    if "--model" not in args:
        args = [*args, "--model", checker_model]
    before = set(tmp_path.rglob("*"))
    result = run_cli(*args)  # not -q: the default output is what a user meets
    assert result.returncode == 2, result.stderr
    # Exactly one line, short, naming the cause: no INFO line, no progress bar, no native library noise.
    assert result.stderr.splitlines() == result.error_lines, result.stderr
    assert len(result.error_lines) == 1 and expected in result.error_lines[0], result.stderr
    assert len(result.error_lines[0]) < 200, result.error_lines[0]
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert {p for p in set(tmp_path.rglob("*")) - before if p.is_file()} == set()


@pytest.mark.slow  # loads the models (~10 s); the exit status 3 path runs in .ci/run's live drills
@pytest.mark.parametrize(
    "setting, extra_args, expected",
    [
        ("  required: true\n", [], "(required camera)"),  # ends the run at start-up
        ("", ["--duration", "3"], "never reached in"),  # retried in the background until the run ends
    ],
)
def test_an_unreachable_camera_is_one_line_exit_3(run_cli, tmp_path, checker_model, setting, extra_args, expected):
    port = free_port()
    config = write(tmp_path / "quick.yaml", QUICK_LIVE_CONFIG + setting)
    url = f"rtsp://admin:hunter2@127.0.0.1:{port}/cam"
    result = run_cli(url, "--config", config, "-o", f"{tmp_path}/out/", "--model", checker_model, "-q", *extra_args)
    assert result.returncode == 3, result.stderr
    (line,) = result.error_lines
    assert f"rtsp://admin:***@127.0.0.1:{port}/cam" in line and expected in line, result.stderr
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr
    assert not any((tmp_path / "out").rglob("*"))


@pytest.mark.parametrize(
    "source, message",
    [
        ("rtsp:/admin:hunter2@cam/live", "rtsp:/admin:***@cam/live: no such file (a stream URL starts with rtsp://)"),
        ("rtsp:admin:hunter2@cam/live", "rtsp:admin:***@cam/live: no such file (a stream URL starts with rtsp://)"),
        ("admin:hunter2@cam/live", "admin:***@cam/live: no such file (a stream URL starts with rtsp://)"),
        (
            "rtsp://admin:hun/ter2@cam/live",
            "rtsp://admin:***@cam/live: malformed URL (a '/', '@' or ':' in a user name "
            "or password must be percent-encoded (%2F, %40, %3A); or write the password "
            "as ${VAR}: a variable's value is encoded for you)",
        ),
    ],
)
def test_a_mistyped_camera_url_is_named_with_its_password_masked_and_a_hint(source, message, tmp_path):
    with pytest.raises(UsageError) as error:
        plan_jobs([source], str(tmp_path / "out.mp4"), "mp4", overwrite=False)
    assert str(error.value) == message


def test_a_batch_skips_a_bad_file_reports_it_and_exits_1(run_cli, tmp_path, plain_clip, checker_model):
    inputs = tmp_path / "recordings"
    inputs.mkdir()
    for name in ("a.mp4", "c.mp4"):
        shutil.copy(plain_clip, inputs / name)
    write(inputs / "b.mp4", "not a video\n")
    out = tmp_path / "out"
    result = run_cli(inputs, "-o", out, "--model", checker_model, "--max-frames", "5", "-q")
    assert result.returncode == 1, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "c.mp4"]
    assert "3 inputs: 2 done, 1 failed" in result.stderr
    (failed,) = [line for line in result.stderr.splitlines() if "FAILED" in line]
    assert failed == f"  FAILED {inputs / 'b.mp4'}: cannot open: not a video (no video format FFmpeg knows)"
    assert "Traceback" not in result.stderr


def test_a_glob_names_outputs_after_inputs_and_stats_json_has_every_file(run_cli, tmp_path, plain_clip, checker_model):
    for name in ("day1.mp4", "day2.mp4"):
        shutil.copy(plain_clip, tmp_path / name)
    stats = tmp_path / "stats.json"
    result = run_cli(
        str(tmp_path / "day*.mp4"),
        "-o",
        tmp_path / "out",
        "--model",
        checker_model,
        "--max-frames",
        "3",
        "--stats-json",
        stats,
        "-q",
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["day1.mp4", "day2.mp4"]
    runs = json.loads(stats.read_text())["runs"]
    assert [run["jobs"][0]["ok"] for run in runs] == [True, True]
    assert [run["sources"][0]["frames_out"] for run in runs] == [3, 3]


@pytest.mark.parametrize(
    "arguments, output, expected",
    [
        (["a/clip.mp4"], "out/x.mp4", ["out/x.mp4"]),
        (["a/clip.mp4"], "out/", ["out/clip.mkv"]),
        (["a/clip.mp4", "b/clip.mp4", "c/other.avi"], "out", ["out/clip.mkv", "out/clip_2.mkv", "out/other.mkv"]),
        (["rtsp://u:p@cam-a/1", "rtsp://cam-b/1"], "out", ["out/cam1.mkv", "out/cam2.mkv"]),
        (["rtsp://cam-a/1"], "rtmp://server/live/key", ["rtmp://server/live/key"]),
    ],
)
def test_outputs_are_named_after_their_inputs(arguments, output, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argument in arguments:
        if "://" not in argument:
            Path(argument).parent.mkdir(parents=True, exist_ok=True)
            Path(argument).touch()
    jobs = plan_jobs(arguments, output, container="mkv", overwrite=False)
    assert [job.output for job in jobs] == expected
    assert all("u:p@" not in job.label for job in jobs)


def test_a_stream_url_output_takes_one_input():
    with pytest.raises(UsageError, match="takes exactly one input"):
        plan_jobs(["a.mp4", "b.mp4"], "rtsp://server/live", container="mp4", overwrite=False)


def test_a_missing_only_input_fails_at_planning_but_a_missing_batch_file_is_left_to_its_job(tmp_path):
    present = write(tmp_path / "present.mp4", b"")
    with pytest.raises(UsageError, match="nope.mp4: no such file"):
        plan_jobs([str(tmp_path / "nope.mp4")], str(tmp_path / "out.mp4"), container="mp4", overwrite=False)
    jobs = plan_jobs(
        [str(present), str(tmp_path / "nope.mp4")], str(tmp_path / "out"), container="mp4", overwrite=False
    )
    assert [Path(job.input).name for job in jobs] == ["present.mp4", "nope.mp4"]


class RecordingPipeline:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def request_stop(self) -> None:
        self.calls.append("stop")

    def abort(self) -> None:
        self.calls.append("abort")


def test_the_first_interrupt_stops_gracefully_and_the_second_aborts():
    control, pipeline = RunControl(), RecordingPipeline()
    control.attach(pipeline)
    control.interrupt()
    assert pipeline.calls == ["stop"] and not control.aborted.is_set()
    control.interrupt()
    assert pipeline.calls == ["stop", "abort"] and control.aborted.is_set()
    later = RecordingPipeline()
    control.attach(later)  # a batch's next file is stopped as soon as it starts
    assert later.calls == ["stop"]


def test_a_truncated_input_is_written_as_far_as_it_goes_and_reported_not_ok(
    run_cli, tmp_path, plain_clip, checker_model
):
    # moov first (faststart), media data cut: the frames before the cut decode; the header says more.
    faststart = tmp_path / "faststart.mp4"
    copy_stream(plain_clip, faststart, "video", options={"movflags": "+faststart"})
    cut = write(tmp_path / "cut.mp4", faststart.read_bytes()[: faststart.stat().st_size * 2 // 3])
    stats = tmp_path / "stats.json"
    result = run_cli(cut, "-o", tmp_path / "out.mp4", "--model", checker_model, "--stats-json", stats, "-q")
    assert result.returncode == 1, result.stderr
    run = json.loads(stats.read_text())["runs"][0]
    assert run["jobs"][0]["ok"] is False and "truncated" in run["jobs"][0]["error"]
    source = run["sources"][0]
    assert source["truncated"] is True and "truncated" in source["last_error"] and source["disconnects"] == 0
    with av.open(str(plain_clip)) as whole:
        assert 0 < source["frames_out"] < whole.streams.video[0].frames
    assert (tmp_path / "out.mp4").is_file()


def test_log_lines_written_while_the_progress_bar_shows_do_not_cut_through_it(plain_clip, monkeypatch):
    """A log line during a file's run clears the bar, takes a line of its own, and the bar is drawn again."""
    import io
    import logging

    from streamer import jobs
    from streamer.pipeline import Job
    from streamer.stats import RunStats

    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    handler = logging.StreamHandler(terminal)
    logging.getLogger().addHandler(handler)
    try:
        job = Job("cam1", str(plain_clip), "out.mp4", "plain.mp4")
        stats = RunStats({"cam1": "plain.mp4"})
        with jobs._ProgressBar(job, enabled=True, max_frames=None) as bar:
            stats.sources["cam1"].frames_out = 5
            bar.update(stats)
            logging.getLogger("streamer.test").warning("a camera sneezed")
            stats.sources["cam1"].frames_out = 10
            bar.update(stats)
    finally:
        logging.getLogger().removeHandler(handler)
    pieces = [piece.strip() for piece in terminal.getvalue().replace("\r", "\n").split("\n")]
    assert "a camera sneezed" in pieces  # alone on its line, not appended to a bar
    assert any(piece.startswith("plain.mp4:") and "10/" in piece for piece in pieces)  # the bar came back
