"""What the investigator's report (--report) costs: pipeline fps with and without it, same run.

    python bench/report_bench.py [--rounds N] [--max-frames N] [--videos NAME ...]

For each video (the bundled demo sample; ../shared/data/videos/office_cctv_360p.mp4 tiled and
crowd_walk_1080p.mp4 when present), the same components run the threaded pipeline alternately
without and with the report (best shots of every track, PNGs, sidecars, index.html), `--rounds`
times each, so both see the same machine load. Prints the median fps of each, their ratio, the
CPU time per frame of each (the report's writer thread included; less sensitive to the machine's
other load than fps), the write stage's time in best-shot scoring, and the report's size on disk. Not a test: numbers depend on the machine and its load (printed).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.pipeline_bench import run_pipeline  # imports streamer first: the OpenMP wait policy before torch
from streamer import REPO_ROOT, SHARED_DATA
from streamer.components import build_components
from streamer.config import load_config
from streamer.pipeline import Job
from streamer.report import open_report
from streamer.report_folder import prepare_folder

VIDEOS_DIR = SHARED_DATA / "videos"
VIDEOS = {  # path -> config overrides
    REPO_ROOT / "samples" / "demo_cctv.mp4": {},
    VIDEOS_DIR / "office_cctv_360p.mp4": {"detection.tiling.enabled": True},
    VIDEOS_DIR / "crowd_walk_1080p.mp4": {},
}


class TimedObserver:
    """An observer that adds the time it spends to a shared counter."""

    def __init__(self, inner, busy: list[float]) -> None:
        self.inner, self.busy = inner, busy

    def observe(self, packet):
        started = time.perf_counter()
        result = self.inner.observe(packet)
        self.busy[0] += time.perf_counter() - started
        return result

    def close(self) -> None:
        started = time.perf_counter()
        self.inner.close()
        self.busy[0] += time.perf_counter() - started


def folder_size(folder: Path) -> tuple[int, int]:
    files = [path for path in folder.rglob("*") if path.is_file()]
    return sum(path.stat().st_size for path in files), len(files)


def bench_video(path: Path, overrides: dict, args: argparse.Namespace, out: Path) -> dict:
    config = load_config(None, {key: (value, key) for key, value in overrides.items()})
    config = config.model_copy(update={"report": config.report.model_copy(update={"enabled": True})})
    components = build_components(config)
    fps: dict[str, list[float]] = {"without": [], "with": []}
    cpu_ms: dict[str, list[float]] = {"without": [], "with": []}  # this process's CPU time per frame
    busy_ms, size, tracks = [], (0, 0), 0
    for round_number in range(args.rounds):
        for mode in ("without", "with"):
            job = Job("cam1", str(path), str(out / f"{path.stem}_{mode}_{round_number}.mp4"), path.name)
            run_components, busy, report = components, [0.0], None
            if mode == "with":
                folder = out / f"{path.stem}_report_{round_number}"
                prepare_folder(folder, overwrite=True)
                report = open_report(config, [job], components, folder)
                run_components = dataclasses.replace(
                    components,
                    make_observer=lambda sid, info, r=report, b=busy: TimedObserver(r.observer(sid, info), b),
                )
            cpu_started = time.process_time()
            stats = run_pipeline(job, run_components, config, args.max_frames)
            if report is not None:  # the writer thread's last tracks are part of the cost
                report.finish("complete", {"frames_out": stats.sources["cam1"].frames_out})
            frames = stats.sources["cam1"].frames_out
            fps[mode].append(frames / stats.elapsed_s)
            cpu_ms[mode].append(1000.0 * (time.process_time() - cpu_started) / frames)
            if report is not None:
                busy_ms.append(1000.0 * busy[0] / max(1, frames))
                size, tracks = folder_size(folder), report.track_count
            os.remove(job.output)
    without, with_report = statistics.median(fps["without"]), statistics.median(fps["with"])
    cpu_without, cpu_with = statistics.median(cpu_ms["without"]), statistics.median(cpu_ms["with"])
    return {
        "video": path.name,
        "frames": frames,
        "without": without,
        "with": with_report,
        "ratio": with_report / without,
        "busy_ms": statistics.median(busy_ms),
        "size": size,
        "tracks": tracks,
        "cpu_without": cpu_without,
        "cpu_with": cpu_with,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each mode per video (alternating)")
    parser.add_argument("--max-frames", type=int, default=None, help="frames per run (default: the whole video)")
    parser.add_argument("--videos", nargs="*", help="file names to bench (default: all present)")
    args = parser.parse_args()
    videos = {path: o for path, o in VIDEOS.items() if path.exists() and (not args.videos or path.name in args.videos)}
    print(
        f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; "
        f"{args.rounds} alternating rounds per mode"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="report_bench_") as out:
        for path, overrides in videos.items():
            rows.append(bench_video(path, overrides, args, Path(out)))
            print(f"  done {path.name}", flush=True)
    print(
        f"{'video':<24} {'frames':>6} {'fps without':>11} {'fps with':>9} {'ratio':>6} {'CPU ms/f without':>16} "
        f"{'with':>6} {'ratio':>6} {'write-stage ms/f':>16} {'tracks':>6} {'report size':>16}"
    )
    for row in rows:
        size, files = row["size"]
        print(
            f"{row['video']:<24} {row['frames']:>6} {row['without']:>11.1f} {row['with']:>9.1f} "
            f"{row['ratio']:>6.3f} {row['cpu_without']:>16.1f} {row['cpu_with']:>6.1f} "
            f"{row['cpu_with'] / row['cpu_without']:>6.3f} {row['busy_ms']:>16.2f} {row['tracks']:>6} "
            f"{size / 1e6:>7.2f} MB/{files} files"
        )
    print(
        "fps: frames / wall time (load-sensitive); CPU ms/f: this process's CPU time per frame, the report's "
        "writer thread included (robust to other processes' load); write-stage ms/f: time the write stage "
        "spent in the report's best-shot scoring"
    )
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
