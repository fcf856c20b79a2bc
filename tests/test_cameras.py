"""The cameras file: what a good file means, and each mistake as one error naming the file and line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import pytest

from streamer.cameras import load_cameras
from streamer.config import Config, ConfigError, load_config

GOOD = """\
cameras:
  - name: lobby
    url: rtsp://viewer:${CAM_PASS}@cam-lobby.local/stream1
    output: out/lobby/
  - name: archive-0412
    url: recordings/2024-04-12_gate.mp4
    output: out/archive-0412.mp4
    detection: {every_n_frames: 2, tiling: {enabled: true}}
    encoding: {crf: 30}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_good_file_resolves_paths_expands_secrets_and_layers_overrides(tmp_path):
    base = Config.model_validate({"detection": {"min_score": 0.6}, "compositing": {"mode": "overlay"}})
    lobby, archive = load_cameras(write(tmp_path / "cams.yaml", GOOD), base, env={"CAM_PASS": "hunter2"})
    assert lobby.url == "rtsp://viewer:hunter2@cam-lobby.local/stream1" and lobby.is_live
    assert "hunter2" not in lobby.label
    assert lobby.output == str(tmp_path / "out" / "lobby" / "lobby.mp4")  # a folder holds NAME.mp4
    assert archive.url == str(tmp_path / "recordings" / "2024-04-12_gate.mp4")  # relative to the file
    assert archive.output == str(tmp_path / "out" / "archive-0412.mp4") and not archive.is_live
    # The camera's own keys win; the rest stays as --config set it, for this camera only.
    assert (archive.config.detection.every_n_frames, archive.config.detection.tiling.enabled) == (2, True)
    assert archive.config.detection.min_score == 0.6 and archive.config.compositing.mode == "overlay"
    assert archive.config.output.crf == 30 and lobby.config.output.crf == base.output.crf
    assert lobby.config == base


def bad_files() -> dict[str, tuple[str, str]]:
    """{case: (file text, expected error after 'cams.yaml')}"""
    head = "cameras:\n  - name: a\n    url: rtsp://cam-a/1\n    output: out/a.mp4\n"
    return {
        "unknown key": (head + "    detecton: {every_n_frames: 2}\n", ":5: cameras[0].detecton: unknown key"),
        "unknown key in an override": (
            head + "    detection:\n      every_n: 2\n",
            ":6: cameras[0].detection.every_n: unknown key",
        ),
        "bad override value": (
            head + "    detection: {every_n_frames: 0}\n",
            ":5: cameras[0].detection.every_n_frames: Input should be greater than or equal to 1",
        ),
        "restorer is shared": (head + "    restoration: {batch_size: 4}\n", ":5: cameras[0].restoration: unknown key"),
        "duplicate name": (
            head + "  - name: a\n    url: rtsp://cam-b/1\n    output: out/b.mp4\n",
            ":5: cameras[1].name: duplicate camera name 'a' (also on line 2)",
        ),
        "duplicate output": (
            head + "  - name: b\n    url: rtsp://cam-b/1\n    output: out/a.mp4\n",
            ":7: cameras[1].output: camera 'b' writes to the same output as 'a'",
        ),
        "unknown scheme": (
            "cameras:\n  - name: a\n    url: rtps://cam-a/1\n    output: o.mp4\n",
            ":3: cameras[0].url: unknown URL scheme 'rtps'",
        ),
        "url without host": (
            "cameras:\n  - name: a\n    url: rtsp://:554/1\n    output: o.mp4\n",
            ":3: cameras[0].url: rtsp://:554/1: malformed URL (no host)",
        ),
        "unset variable": (
            "cameras:\n  - name: a\n    url: rtsp://u:${NOPE_PASS}@cam/1\n    output: o.mp4\n",
            ":3: cameras[0].url: environment variable NOPE_PASS is not set",
        ),
        "bad name": (
            "cameras:\n  - name: ../a\n    url: rtsp://cam/1\n    output: o.mp4\n",
            ":2: cameras[0].name: a name is letters",
        ),
        "no url": ("cameras:\n  - name: a\n    output: o.mp4\n", ":2: cameras[0].url: Field required"),
        "no cameras": ("cameras: []\n", ":1: cameras: List should have at least 1 item"),
        "inputs per camera": (head + "    source: {inputs: [x.mp4]}\n", ":5: cameras[0].source.inputs: not allowed"),
    }


@pytest.mark.parametrize("case", list(bad_files()))
def test_each_mistake_is_an_error_naming_the_file_and_line(tmp_path, case):
    text, expected = bad_files()[case]
    path = write(tmp_path / "cams.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_cameras(path, Config(), env={})
    assert str(caught.value).startswith(f"{path}{expected}"), str(caught.value)


def test_cameras_file_runs_locally_each_camera_with_its_own_settings(run_cli, tmp_path, face_clip, checker_model):
    """Two recordings from a cameras file: each written where it says, one side by side (its own
    compositing), a bad one reported and skipped, stats per camera; Ray is never imported."""
    for name in ("gate.mp4", "door.mp4"):
        shutil.copy(face_clip.path, tmp_path / name)
    write(tmp_path / "broken.mp4", "not a video\n")
    cams = write(
        tmp_path / "cams.yaml",
        """\
cameras:
  - name: gate
    url: gate.mp4
    output: out/
  - name: door
    url: door.mp4
    output: out/door-review.mp4
    compositing: {mode: side-by-side}
  - name: broken
    url: broken.mp4
    output: out/
""",
    )
    stats = tmp_path / "stats.json"
    # The local mode never imports Ray: here an import of it fails the run.
    no_ray = tmp_path / "no_ray" / "ray"
    no_ray.mkdir(parents=True)
    write(no_ray / "__init__.py", "raise ImportError('the local mode imported ray')\n")
    result = run_cli(
        "--cameras",
        cams,
        "--model",
        checker_model,
        "--max-frames",
        "4",
        "--stats-json",
        stats,
        "-q",
        env={"PYTHONPATH": str(no_ray.parent)},
    )
    assert result.returncode == 1, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["door-review.mp4", "gate.mp4"]
    widths = {}
    for name in ("gate.mp4", "door-review.mp4"):
        with av.open(str(tmp_path / "out" / name)) as container:
            widths[name] = container.streams.video[0].codec_context.width
    assert widths["door-review.mp4"] == 2 * widths["gate.mp4"]
    assert "FAILED" in result.stderr and "broken.mp4" in result.stderr
    runs = json.loads(stats.read_text())["runs"]
    assert [run["jobs"][0]["ok"] for run in runs] == [True, True, False]


def test_cameras_file_excludes_sources_and_output(run_cli, tmp_path):
    cams = write(tmp_path / "cams.yaml", "cameras:\n  - name: a\n    url: rtsp://cam/1\n    output: o.mp4\n")
    result = run_cli("--cameras", cams, "-o", tmp_path / "x.mp4")
    assert result.returncode == 2 and result.error_lines == [
        "error: --cameras names the inputs and outputs: give no SOURCE and no -o with it"
    ], result.stderr


def test_base_config_and_flags_stay_under_a_cameras_own_keys(tmp_path):
    base = load_config(None, {"detection.every_n_frames": (5, "--detect-every")})
    text = (
        "cameras:\n  - name: a\n    url: a.mp4\n    output: a_out.mp4\n    detection: {every_n_frames: 2}\n"
        "  - name: b\n    url: b.mp4\n    output: b_out.mp4\n"
    )
    a, b = load_cameras(write(tmp_path / "cams.yaml", text), base, env={})
    assert (a.config.detection.every_n_frames, b.config.detection.every_n_frames) == (2, 5)


def test_the_example_cameras_file_is_valid():
    from streamer import REPO_ROOT

    cameras = load_cameras(REPO_ROOT / "configs" / "cameras" / "example.yaml", Config(), env={"CAM_PASS": "x"})
    assert [camera.name for camera in cameras] == ["lobby", "gate", "archive-0412"]


def test_an_unreachable_ray_cluster_is_one_line_and_exit_2(run_cli, tmp_path, face_clip, checker_model):
    pytest.importorskip("ray")
    shutil.copy(face_clip.path, tmp_path / "gate.mp4")
    cams = write(tmp_path / "cams.yaml", "cameras:\n  - name: gate\n    url: gate.mp4\n    output: out/\n")
    result = run_cli(
        "--cameras", cams, "--engine", "ray", "--address", "127.0.0.1:1", "--model", checker_model, "-q", timeout_s=60
    )
    assert result.returncode == 2, result.stderr
    assert result.error_lines == [
        "error: cannot join the Ray cluster at 127.0.0.1:1: Connection refused (is `ray start --head` running there?)"
    ], result.stderr
    assert not (tmp_path / "out" / "gate.mp4").exists()
