"""The whole product path on real media: generated H.264 clips with CelebA faces, the real
MediaPipe detector, a TorchScript restorer, PyAV output, and a real RTSP server."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from streamer.components import build_components, pipeline_settings
from streamer.config import Config, load_config
from streamer.pipeline import Job, Pipeline
from streamer.workers import CaptureLimits
from tests.conftest import FACE_PX, REPO_ROOT
from tests.helpers.media import make_face_frames, make_frames, read_frames, write_clip
from tests.helpers.rtsp_server import RtspTestServer, require_gstreamer

LONG_CLIP_FRAMES = 800  # long enough that the run still goes a second after its output opened


def make_config(**dotted) -> Config:
    """The default config with `key__sub=value` overrides (double underscore for a dot)."""
    return load_config(None, {key.replace("__", "."): (value, key) for key, value in dotted.items()})


def face_centres_changed(inputs: list[np.ndarray], outputs: list[np.ndarray], boxes: list) -> float:
    """The fraction of (frame, face) pairs whose face centre changed by at least 15 levels on average."""
    changed = []
    for before, after, frame_boxes in zip(inputs, outputs, boxes):
        for box in frame_boxes:
            cx, cy, r = int(box.x + box.w / 2), int(box.y + box.h / 2), int(box.w / 4)
            region = np.s_[cy - r : cy + r, cx - r : cx + r]
            changed.append(np.abs(after[region].astype(float) - before[region]).mean() >= 15)
    return float(np.mean(changed))


def test_cli_restores_the_faces_of_a_file_and_keeps_frames_timestamps_and_audio(
    run_cli, tmp_path, face_clip, checker_model
):
    output = tmp_path / "out" / "restored.mp4"
    result = run_cli(face_clip.path, "-o", output, "--model", checker_model, "--detect-every", "2", "-q")
    assert result.returncode == 0, result.stderr
    inputs, input_times = read_frames(face_clip.path)
    outputs, output_times = read_frames(output)
    assert len(outputs) == len(inputs) and output_times == input_times
    with av.open(str(output)) as container:
        assert len(container.streams.audio) == 1
    # The restore gate leaves each track as it is until its second detection round confirms it
    # (2 of 12 rounds here, and again for a face the detector lost for a while): about 0.8.
    assert face_centres_changed(inputs, outputs, face_clip.boxes) >= 0.7
    assert sorted(p.name for p in output.parent.iterdir()) == ["restored.mp4"]  # no temporary files left


def test_paste_leaves_every_pixel_outside_the_face_crops_exactly_as_decoded(tmp_path, face_clip, checker_model):
    config = make_config(
        restoration__model=str(checker_model),
        output__codec="ffv1",
        output__container="mkv",
        detection__every_n_frames=2,
    )
    components = build_components(config)
    crop_boxes: list[list] = []
    paste = components.compose

    def recording_compose(image, faces):
        crop_boxes.append([face.crop_box for face in faces if face.restored is not None])
        return paste(image, faces)

    components.compose = recording_compose
    output = tmp_path / "lossless.mkv"
    job = Job("cam1", str(face_clip.path), str(output), "clip")
    Pipeline([job], components, pipeline_settings(config, CaptureLimits())).run()

    inputs, _ = read_frames(face_clip.path)
    outputs, _ = read_frames(output)
    assert len(outputs) == len(inputs) == len(crop_boxes)
    changed_inside = 0
    for before, after, boxes in zip(inputs, outputs, crop_boxes):
        outside = np.ones(before.shape[:2], bool)
        for box in boxes:
            outside[max(0, int(box.y)) : int(box.y + box.h), max(0, int(box.x)) : int(box.x + box.w)] = False
        np.testing.assert_array_equal(after[outside], before[outside])
        changed_inside += int(np.any(after[~outside] != before[~outside]))
    assert changed_inside >= 0.9 * len(inputs)


def test_sigint_mid_file_finishes_the_frames_in_flight_and_leaves_a_playable_file(tmp_path, checker_model):
    repeated = itertools.islice(itertools.cycle(make_frames(25, 320, 240)), LONG_CLIP_FRAMES)
    clip = write_clip(tmp_path / "long.mp4", repeated, fps=25, audio=True)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "run_stream.py"),
            str(clip),
            "-o",
            str(out / "cut.mp4"),
            "--model",
            str(checker_model),
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: any(out.glob("*.partial.*")), timeout_s=60, what="the output to be started")
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    frames, times = read_frames(out / "cut.mp4")
    assert 0 < len(frames) < LONG_CLIP_FRAMES
    assert times == sorted(times)
    assert [p.name for p in out.iterdir()] == ["cut.mp4"]


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


LIVE_SOURCE = dict(
    source__open_timeout_s=3.0, source__read_timeout_s=1.5, source__reconnect_initial_s=0.2, source__reconnect_max_s=1.0
)


@pytest.fixture
def rtsp_server():
    require_gstreamer()
    with RtspTestServer.start(width=320, height=240, fps=25) as server:
        yield server


def test_cli_records_a_live_camera_until_max_frames(run_cli, tmp_path, rtsp_server, checker_model):
    config = tmp_path / "live.yaml"
    config.write_text("source:\n  open_timeout_s: 5\n  read_timeout_s: 2\n")
    stats_path = tmp_path / "stats.json"
    result = run_cli(
        rtsp_server.url,
        "-o",
        f"{tmp_path}/out/",
        "--config",
        config,
        "--model",
        checker_model,
        "--max-frames",
        "40",
        "--stats-json",
        stats_path,
        "-q",
    )
    assert result.returncode == 0, result.stderr
    (run,) = json.loads(stats_path.read_text())["runs"]
    (source,) = run["sources"]
    assert source["frames_in"] == 40 and source["frames_out"] + source["drops"] == 40
    # a live camera's recording is segments named camN_<UTC start>.ts
    (segment,) = (tmp_path / "out").glob("cam1_*Z.ts")
    frames, times = read_frames(segment)
    assert len(frames) == source["frames_out"] > 0
    assert times == sorted(times)


def write_jpeg_frames(folder: Path, count: int, seed: int) -> Path:
    """Frames with two moving faces, as the JPEG sequence the RTSP test server loops."""
    folder.mkdir()
    frames, _ = make_face_frames(count, (320, 240), face_px=FACE_PX, faces=2, seed=seed)
    for index, image in enumerate(frames):
        cv2.imwrite(str(folder / f"{index:05d}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return folder


def test_two_cameras_in_one_run_share_one_restorer_and_get_one_output_each(run_cli, tmp_path, checker_model):
    require_gstreamer()
    stats_path = tmp_path / "stats.json"
    with (
        RtspTestServer.start(fps=25, frames_dir=write_jpeg_frames(tmp_path / "a", 25, seed=1)) as cam_a,
        RtspTestServer.start(fps=25, frames_dir=write_jpeg_frames(tmp_path / "b", 25, seed=2)) as cam_b,
    ):
        result = run_cli(
            cam_a.url.replace("rtsp://", "rtsp://viewer:${CAM_PASS}@"),
            cam_b.url,
            "-o",
            f"{tmp_path}/out/",
            "--model",
            checker_model,
            # the restore gate confirms a face after 2 detection rounds (every 3 frames); a loaded machine
            # drops live frames, so 30 frames sometimes held too few rounds for any face to be restored
            "--max-frames",
            "60",
            "--stats-json",
            stats_path,
            env={"CAM_PASS": "hunter2"},
        )
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stderr + stats_path.read_text()
    (run,) = json.loads(stats_path.read_text())["runs"]  # one run: both cameras went through one pipeline
    assert run["sources"][0]["source"].startswith("rtsp://viewer:***@127.0.0.1:")
    assert [source["frames_in"] for source in run["sources"]] == [60, 60]
    assert all(source["restored_faces"] > 0 for source in run["sources"])
    assert run["restorer"]["faces"] == sum(source["restored_faces"] for source in run["sources"])
    for name, source in zip(("cam1", "cam2"), run["sources"]):
        (segment,) = (tmp_path / "out").glob(f"{name}_*.ts")
        assert len(read_frames(segment)[0]) == source["frames_out"] > 0


def test_a_live_pipeline_survives_a_camera_restart_and_keeps_writing(tmp_path, rtsp_server, checker_model):
    config = make_config(restoration__model=str(checker_model), **LIVE_SOURCE)
    output = tmp_path / "live.mp4"
    pipeline = Pipeline(
        [Job("cam1", rtsp_server.url, str(output), "cam1")],
        build_components(config),
        pipeline_settings(config, CaptureLimits()),
    )
    outcome: list = []
    runner = threading.Thread(target=lambda: outcome.append(pipeline.run()), daemon=True)
    runner.start()
    cam = pipeline.stats.sources["cam1"]
    try:
        wait_until(lambda: cam.frames_out >= 10, timeout_s=30, what="the first frames")
        rtsp_server.kill()
        time.sleep(1.0)
        rtsp_server.restart()
        before_restart = cam.frames_out
        wait_until(
            lambda: cam.reconnects >= 1 and cam.frames_out >= before_restart + 10,
            timeout_s=30,
            what="frames after the camera came back",
        )
    finally:
        pipeline.request_stop()
        runner.join(timeout=30)
    assert outcome, "the pipeline did not finish after request_stop"
    (segment,) = tmp_path.glob("live_*.ts")  # the source reconnects by itself: one job, one segment
    frames, times = read_frames(segment)
    assert len(frames) == cam.frames_out and times == sorted(times)


def test_the_readme_command_runs_on_the_bundled_sample_with_the_bundled_model(run_cli, tmp_path):
    output = tmp_path / "out" / "demo_restored.mp4"
    result = run_cli(
        REPO_ROOT / "samples" / "demo_cctv.mp4",
        "-o",
        output,
        "--max-frames",
        "30",
        "--stats-json",
        tmp_path / "stats.json",
    )
    assert result.returncode == 0, result.stderr
    (run,) = json.loads((tmp_path / "stats.json").read_text())["runs"]
    assert run["sources"][0]["frames_out"] == 30 and run["restorer"]["faces"] > 0
    assert len(read_frames(output)[0]) == 30
    assert "restorer" in result.stderr and "face_restorer.ts" in result.stderr  # the log says which model ran
