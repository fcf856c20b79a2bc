"""Many cameras: the local engine against the Ray engine on this machine, and what Ray costs.

    python bench/ray_bench.py [--video office_cctv_360p.mp4] [--frames 90] [--cameras 1 2 4] [--replicas 1]

Each "camera" is the same recording (../shared/data/videos), so every run does the same work;
recordings are lossless (back-pressured), so the throughput is what the machine can do.
  local  one Pipeline with N jobs (one restorer thread batching all N cameras' crops)
  ray    the Ray engine on a one-machine cluster started here: N camera actors, a restorer pool
For each: aggregate frames/s and restored faces/s over the steady part of the run (from the first
frame written to the last; start-up, i.e. model loads and actor start, is printed apart), and the
restorer's mean batch (faces per model call, across cameras).

Then Ray's overhead per crop batch: a batch's round trip to a restorer replica (no batching
wait) against the same batch restored in this process, at 1, 4 and 16 crops (alternating pairs,
median difference). And the per-stage
costs of one camera (ms per frame) with the restorer's faces/s, for the README's capacity
estimate. Not a test: the numbers depend on the machine and its load (the load is printed).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from streamer import REPO_ROOT  # noqa: E402  (first: sets the OpenMP wait policy before torch loads)
from streamer.components import build_components, pipeline_settings  # noqa: E402
from streamer.config import Config, load_config  # noqa: E402
from streamer.pipeline import Job, Pipeline  # noqa: E402
from streamer.stats import RunStats  # noqa: E402
from streamer.workers import CaptureLimits  # noqa: E402

VIDEOS_DIR = REPO_ROOT.parent / "shared" / "data" / "videos"
# Every detected face restored (the size cap lifted), tiles on: the CCTV camera configuration.
OVERRIDES = {"restoration.max_face_px": 0, "detection.tiling.enabled": True, "restoration.threads": 1}
OVERHEAD_BATCHES = (1, 4, 16)


class Rates:
    """Samples a run's counters every 0.2 s; rates over the steady part (first frame out to end)."""

    def __init__(self, stats_of) -> None:
        self.stats_of, self.samples = stats_of, []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.started = time.perf_counter()

    def __enter__(self) -> Rates:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._done.set()
        self._thread.join()
        self._take()

    def _sample(self) -> None:
        while not self._done.wait(0.2):
            self._take()

    def _take(self) -> None:
        stats: RunStats | None = self.stats_of()
        if stats is None:
            return
        sources = list(stats.sources.values())
        self.samples.append((time.perf_counter(), sum(s.frames_out for s in sources), sum(s.restored for s in sources)))

    def steady(self) -> tuple[float, float, float]:
        """(frames/s, restored faces/s, start-up seconds)."""
        moving = [sample for sample in self.samples if sample[1] > 0]
        first, last = moving[0], self.samples[-1]
        seconds = max(1e-9, last[0] - first[0])
        return (last[1] - first[1]) / seconds, (last[2] - first[2]) / seconds, first[0] - self.started


def jobs_for(cameras: int, video: Path, out: Path) -> list[Job]:
    return [Job(f"cam{k}", str(video), str(out / f"cam{k}.mp4"), f"cam{k}") for k in range(1, cameras + 1)]


def run_local(config: Config, cameras: int, video: Path, frames: int, components) -> dict:
    with tempfile.TemporaryDirectory() as out:
        pipeline = Pipeline(
            jobs_for(cameras, video, Path(out)), components, pipeline_settings(config, CaptureLimits(max_frames=frames))
        )
        with Rates(lambda: pipeline.stats) as rates:
            stats = pipeline.run()
    fps, faces, startup = rates.steady()
    return {
        "fps": fps,
        "faces_s": faces,
        "startup": startup,
        "mean_batch": stats.restorer.mean_batch,
        "stage_ms": stats.stage_ms_per_frame(),
        "restorer_busy_faces_s": stats.restorer.faces_per_s,
        "faces_per_frame": sum(s.faces for s in stats.sources.values()) / max(1, stats.frames_out),
    }


def run_ray(config: Config, cameras: int, video: Path, frames: int) -> dict:
    from streamer.ray_engine import RayRun

    with tempfile.TemporaryDirectory() as out:
        run = RayRun(jobs_for(cameras, video, Path(out)), {}, config, CaptureLimits(max_frames=frames))
        with Rates(lambda: run.stats) as rates:
            results = run.run()
    failed = [r.error for r in results if r.error]
    if failed:
        raise SystemExit(f"ray run failed: {failed}")
    fps, faces, startup = rates.steady()
    return {"fps": fps, "faces_s": faces, "startup": startup, "mean_batch": run.stats.restorer.mean_batch}


def batch_overhead(config: Config, restorer, repeats: int = 60) -> list[tuple[int, float, float, float]]:
    """(crops, local ms, remote round-trip ms, Ray overhead ms) per batch size, against a replica
    with no batching wait. Local and remote calls alternate and the overhead is the median of the
    pairs' differences, so a burst of load from other processes hits both sides of a pair."""
    import ray

    from streamer.ray_engine import RestorerReplica
    from streamer.workers import Batching

    replica = ray.remote(RestorerReplica).options(num_cpus=0, max_concurrency=100).remote(config, Batching(64, 0.0))
    ray.get(replica.describe.remote())
    size = restorer.spec.input_size
    rows = []
    for batch in OVERHEAD_BATCHES:
        crops = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        pairs = []
        for index in range(repeats + 3):
            local = elapsed_ms(lambda crops=crops: restorer.restore(crops))
            remote = elapsed_ms(lambda crops=crops: ray.get(replica.restore.remote(crops)))
            if index >= 3:  # warm-up
                pairs.append((local, remote))
        local_ms, remote_ms = (float(np.median(side)) for side in zip(*pairs))
        rows.append((batch, local_ms, remote_ms, float(np.median([remote - local for local, remote in pairs]))))
    ray.kill(replica)
    return rows


def elapsed_ms(work) -> float:
    started = time.perf_counter()
    work()
    return 1000 * (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", default="office_cctv_360p.mp4")
    parser.add_argument("--frames", type=int, default=90, help="frames per camera")
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args()
    video = VIDEOS_DIR / args.video
    if not video.is_file():
        raise SystemExit(f"{video}: not found (the shared data folder is beside the repository)")
    overrides = {key: (value, key) for key, value in OVERRIDES.items()}
    overrides["ray.restorer_replicas"] = (args.replicas, "--replicas")
    # Logical CPUs, so every camera actor and the replicas run at once on this machine's cores.
    overrides["ray.camera_cpus"] = (0.25, "bench")
    overrides["ray.restorer_cpus"] = (0.25, "bench")
    config = load_config(REPO_ROOT / "configs" / "default.yaml", overrides)
    print(
        f"# {video.name}, {args.frames} frames per camera; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} "
        "(shared machine: compare ratios within this run)"
    )
    components = build_components(config)

    import ray

    from streamer.ray_engine import connect

    connect(config.ray)
    try:
        rows = []
        for cameras in args.cameras:
            local = run_local(config, cameras, video, args.frames, components)
            remote = run_ray(config, cameras, video, args.frames)
            rows.append((cameras, local, remote))
        overhead = batch_overhead(config, components.restorer)
    finally:
        ray.shutdown()
    print_tables(rows, overhead)


def print_tables(rows: list, overhead: list) -> None:
    print(
        "\n| cameras | local fps | ray fps | ray / local | local faces/s | ray faces/s | local mean batch | "
        "ray mean batch | ray start-up s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for cameras, local, remote in rows:
        print(
            f"| {cameras} | {local['fps']:.1f} | {remote['fps']:.1f} | {remote['fps'] / local['fps']:.2f} | "
            f"{local['faces_s']:.0f} | {remote['faces_s']:.0f} | {local['mean_batch']:.1f} | "
            f"{remote['mean_batch']:.1f} | {remote['startup']:.1f} |"
        )
    print("\n| crops per batch | restore in process ms | round trip to a replica ms | Ray overhead ms | per crop ms |")
    print("|---|---|---|---|---|")
    for batch, local_ms, remote_ms, overhead_ms in overhead:
        print(f"| {batch} | {local_ms:.1f} | {remote_ms:.1f} | {overhead_ms:.1f} | {overhead_ms / batch:.2f} |")
    one = rows[0][1]
    stages = "  ".join(f"{name} {ms:.1f}" for name, ms in one["stage_ms"].items())
    per_frame_cpu = sum(ms for name, ms in one["stage_ms"].items() if name != "restore")
    print(
        f"\none camera, local: ms/frame {stages}; {one['faces_per_frame']:.2f} faces/frame; restorer "
        f"{one['restorer_busy_faces_s']:.0f} faces/s while busy"
    )
    print(
        f"CPU stages (decode, detect, composite, encode): {per_frame_cpu:.1f} ms per frame -> one core carries "
        f"{1000 / per_frame_cpu:.0f} frames/s"
    )


if __name__ == "__main__":
    main()
