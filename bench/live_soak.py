#!/usr/bin/env python
"""Soak: two live cameras (gst-rtsp-server on 127.0.0.1, CelebA faces drifting over a scene) through
`run_stream.py` for a fixed time, with the metrics endpoint on. Prints the recorder's memory over
time (RSS flat?), end-to-end latency p50/p95 (frame captured -> written), frames, drops and
reconnects per camera, and the segments written.

    nice -n 10 python bench/live_soak.py [--minutes 8] [--size 320x240] [--fps 15] [--segment-s 60]

Needs the RTSP test server (.ci/install_system_deps.sh) and the tests' helpers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from streamer import REPO_ROOT  # noqa: E402  (first: sets the OpenMP wait policy before torch loads)

# isort: split

from tests.helpers.media import make_face_frames
from tests.helpers.rtsp_server import RtspTestServer, free_port, write_frames_dir


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--segment-s", type=float, default=60.0)
    parser.add_argument("--sample-s", type=float, default=30.0)
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        dirs = [
            write_frames_dir(tmp / f"cam{k}", make_face_frames(50, (width, height), face_px=36, seed=k)[0])
            for k in (1, 2)
        ]
        config = tmp / "soak.yaml"
        config.write_text(
            f"recording:\n  segment_s: {args.segment_s}\noutput:\n  preset: ultrafast\n"
            "logging:\n  status_interval_s: 60\n"
        )
        port = free_port()
        with (
            RtspTestServer.start(width=width, height=height, fps=args.fps, frames_dir=dirs[0]) as cam1,
            RtspTestServer.start(width=width, height=height, fps=args.fps, frames_dir=dirs[1]) as cam2,
        ):
            stats_path = tmp / "stats.json"
            command = [
                sys.executable,
                str(REPO_ROOT / "run_stream.py"),
                cam1.url,
                cam2.url,
                "-o",
                f"{tmp}/out/",
                "--config",
                str(config),
                "--duration",
                str(args.minutes * 60),
                "--metrics-port",
                str(port),
                "--stats-json",
                str(stats_path),
                "-q",
            ]
            started = time.monotonic()
            run = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
            print(f"{'t (s)':>6} {'RSS MiB':>8} {'cam1 fps':>9} {'cam2 fps':>9} {'queue':>6}")
            samples = []
            while run.poll() is None:
                time.sleep(args.sample_s)
                if run.poll() is not None:
                    break
                try:
                    metrics = scrape(port)
                except OSError:
                    metrics = {}
                rss = rss_mib(run.pid)
                samples.append(rss)
                fps = [metrics.get(f'cctv_fps{{camera="cam{k}"}}', float("nan")) for k in (1, 2)]
                queue = metrics.get("cctv_restore_queue_depth", float("nan"))
                print(
                    f"{time.monotonic() - started:>6.0f} {rss:>8.1f} {fps[0]:>9.1f} {fps[1]:>9.1f} {queue:>6.0f}",
                    flush=True,
                )
            _, stderr = run.communicate()
        print(f"exit status {run.returncode}; stderr tail: {stderr.strip().splitlines()[-1:] if stderr else ''}")
        (result,) = json.loads(stats_path.read_text())["runs"]
        print(f"\n{'camera':<8} {'in':>7} {'out':>7} {'drops':>6} {'reconn':>6} {'p50 ms':>7} {'p95 ms':>7}")
        for number, source in enumerate(result["sources"], start=1):
            print(
                f"cam{number:<5} {source['frames_in']:>7} {source['frames_out']:>7} {source['drops']:>6} "
                f"{source['reconnects']:>6} {1000 * source['latency_p50_s']:>7.0f} "
                f"{1000 * source['latency_p95_s']:>7.0f}"
            )
        warm = samples[len(samples) // 4 :] or samples
        print(
            f"\nRSS: first sample {samples[0]:.1f} MiB, after warm-up min {min(warm):.1f} / max {max(warm):.1f}, "
            f"last {samples[-1]:.1f} MiB"
            if samples
            else "no RSS samples"
        )
        segments = sorted((tmp / "out").glob("*.ts"))
        names = ", ".join(path.name for path in segments[:4]) + (", ..." if len(segments) > 4 else "")
        print(f"segments: {len(segments)} ({names})")
        print(f"machine: {os.cpu_count()} cores, shared; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
