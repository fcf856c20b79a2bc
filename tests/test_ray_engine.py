"""The Ray engine on a real local cluster (two nodes on this machine, `ray.cluster_utils.Cluster`):
RTSP test cameras and a folder of recordings together; every output written with restored faces;
a killed camera actor and a killed restorer replica survived; a stop finalises every output.
And the CLI's `--engine ray`, which starts a one-machine cluster itself (`ray.init()`).

Ray's start-up takes 10-30 s on 2 cores, so these are `slow` (run explicitly by .ci/run); the
tests share one cluster (module fixture) with few CPUs, a small object store and no dashboard.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from streamer.config import Config
from streamer.pipeline import Job
from streamer.workers import CaptureLimits
from tests.helpers.media import make_face_frames, read_frames
from tests.helpers.rtsp_server import (
    RtspTestServer,
    require_gstreamer,
    write_frames_dir,
)

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

CAMERAS = 3
NODE = {"num_cpus": 4, "object_store_memory": 80 * 1024 * 1024}  # logical CPUs: jobs reserve 0.5 each
WAIT_S = 120.0


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    cluster.add_node(**NODE)
    from streamer.config import RayConfig
    from streamer.ray_engine import connect

    connect(RayConfig(address=cluster.address))
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def cameras(tmp_path_factory):
    """RTSP test cameras looping frames with CelebA faces."""
    require_gstreamer()
    frames, _ = make_face_frames(30, (320, 240), face_px=36, faces=2, seed=5)
    frames_dir = write_frames_dir(tmp_path_factory.mktemp("camera"), frames)
    servers = [RtspTestServer.start(width=320, height=240, fps=10, frames_dir=frames_dir) for _ in range(CAMERAS)]
    yield [server.url for server in servers]
    for server in servers:
        server.stop()


def config_for_test(model: Path) -> Config:
    return Config.model_validate(
        {
            "restoration": {"model": str(model), "device": "cpu", "batch_size": 8, "max_latency_ms": 30, "threads": 1},
            "detection": {"every_n_frames": 2},
            "source": {"read_timeout_s": 5, "reconnect_max_s": 2},
            "ray": {"camera_cpus": 0.5, "restorer_cpus": 0.5, "restorer_replicas": 2, "restore_timeout_s": 5},
            "logging": {"status_interval_s": 5},
        }
    )


def wait_for(condition, what: str, driver: threading.Thread, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert driver.is_alive(), f"the run ended while waiting for {what}"
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def kill_actor_process(name: str) -> None:
    """SIGKILL the worker process of a named actor: what a crash or an OOM kill does."""
    actor = ray.get_actor(name)
    os.kill(ray.get(actor.pid.remote(), timeout=30), signal.SIGKILL)


def test_cameras_and_a_folder_on_two_nodes_survive_killed_actors(cluster, cameras, tmp_path, face_clip, checker_model):
    from streamer.ray_engine import CAMERA_ACTOR, RESTORER_ACTOR, RayRun

    recordings = tmp_path / "recordings"
    recordings.mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(face_clip.path, recordings / name)
    (recordings / "broken.mp4").write_text("not a video\n")
    out = tmp_path / "out"
    out.mkdir()
    jobs = [Job(f"cam{k}", url, str(out / f"cam{k}.mp4"), url) for k, url in enumerate(cameras, start=1)]
    jobs += [Job(path.stem, str(path), str(out / path.name), str(path)) for path in sorted(recordings.iterdir())]
    run = RayRun(jobs, {}, config_for_test(checker_model), CaptureLimits())
    results: list = []
    driver = threading.Thread(target=lambda: results.extend(run.run()), daemon=True)
    driver.start()
    live = [job.source_id for job in jobs if job.source_id.startswith("cam")]

    def frames(source_id: str) -> int:
        return run.stats.sources[source_id].frames_out

    wait_for(lambda: all(frames(cam) >= 15 for cam in live), "every camera writing", driver)
    kill_actor_process(CAMERA_ACTOR + "cam1")
    wait_for(lambda: run.stats.sources["cam1"].restarts >= 1, "the killed camera restarted", driver)
    resumed_from = frames("cam1")
    wait_for(lambda: frames("cam1") >= resumed_from + 15, "the restarted camera writing again", driver)
    kill_actor_process(RESTORER_ACTOR + "1")
    before = {cam: frames(cam) for cam in live}
    wait_for(
        lambda: all(frames(cam) >= before[cam] + 20 for cam in live), "cameras going on after a replica died", driver
    )
    wait_for(lambda: (out / "a.mp4").exists() and (out / "b.mp4").exists(), "the recordings written", driver)
    run.request_stop()
    driver.join(60)
    assert not driver.is_alive(), "the run did not stop"

    by_source = {result.job.source_id: result for result in results}
    assert by_source["broken"].error and "broken.mp4" in by_source["broken"].error
    for source_id in ("a", "b", *live):
        assert by_source[source_id].error is None, by_source[source_id].error
        assert run.stats.sources[source_id].restored > 0, source_id
    # Every output finalised: the recordings, and each camera's segments, the killed actor's one
    # too (the restarted recorder gave it its final name) beside the one written after the restart.
    assert not list(out.glob("*.partial.*")), sorted(p.name for p in out.iterdir())
    assert {"a.mp4", "b.mp4"} <= {p.name for p in out.iterdir()}
    segments = {cam: sorted(out.glob(f"{cam}_*.ts")) for cam in live}
    assert len(segments["cam1"]) >= 2, segments
    for cam, paths in segments.items():
        assert sum(len(read_frames(path)[0]) for path in paths) > 20, cam
    # A recording is lossless, and its faces were changed by the (checkerboard) restorer.
    written, _ = read_frames(out / "a.mp4")
    original, _ = read_frames(face_clip.path)
    assert len(written) == len(original)
    # (A face is restored once it is confirmed, not necessarily on the first frame: look at them all.)
    changes = []
    for index, boxes in enumerate(face_clip.boxes):
        for box in boxes:
            x, y, w, h = (int(v) for v in (box.x, box.y, box.w, box.h))
            changes.append(
                np.abs(written[index][y : y + h, x : x + w].astype(int) - original[index][y : y + h, x : x + w]).mean()
            )
    assert max(changes) > 8, changes
    # The restorer batched crops across cameras, and the run counted what the faults cost.
    summary = run.stats.as_dict()
    assert summary["restorer"]["replicas"] == 2 and summary["restorer"]["mean_batch"] > 1
    assert summary["all_sources"]["restarts"] == 1
    assert "restarts" in run.stats.status_line()


def test_cli_engine_ray_runs_a_cameras_file_on_a_cluster_it_starts(run_cli, tmp_path, face_clip, checker_model):
    """`--engine ray` with no --address starts a one-machine cluster (ray.init()), runs the
    cameras file's recordings there, and reports each file as the local mode does."""
    for name in ("gate.mp4", "door.mp4"):
        shutil.copy(face_clip.path, tmp_path / name)
    (tmp_path / "bad.mp4").write_text("not a video\n")
    cams = tmp_path / "cams.yaml"
    cams.write_text(
        "cameras:\n"
        + "".join(f"  - name: {name}\n    url: {name}.mp4\n    output: out/\n" for name in ("gate", "door", "bad"))
    )
    config = tmp_path / "ray.yaml"
    config.write_text(
        "ray: {camera_cpus: 0.5, restorer_cpus: 0.5, object_store_mb: 80}\nrestoration: {device: cpu, threads: 1}\n"
    )
    stats = tmp_path / "stats.json"
    result = run_cli(
        "--cameras",
        cams,
        "--config",
        config,
        "--engine",
        "ray",
        "--model",
        checker_model,
        "--stats-json",
        stats,
        "-q",
        timeout_s=240,
    )
    assert result.returncode == 1, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["door.mp4", "gate.mp4"], result.stderr
    assert "3 inputs: 2 done, 1 failed" in result.stderr and "FAILED" in result.stderr
    runs = json.loads(stats.read_text())["runs"]
    sources = {s["source"]: s for run in runs for s in run.get("sources", [])}
    assert {s["frames_out"] for name, s in sources.items() if "bad" not in name} == {24}
    assert "Traceback" not in result.stderr
