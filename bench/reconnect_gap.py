#!/usr/bin/env python
"""The kill-restart drill, timed: a camera (gst-rtsp-server on 127.0.0.1) is killed, stays away for
a while, comes back; how long from the camera listening again to the first frame written?

Compares, in one run, the default backoff (0.5 s doubling, cap 30 s, but capped at
`reconnect_recent_max_s` = 2 s while the camera was up in the last minute) against the same
without the lower recent cap (the previous behaviour: cap 30 s throughout).

    python bench/reconnect_gap.py [--outages 4,15] [--repeats 2] 2>/dev/null   # (MediaPipe's native log)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# isort: split

from streamer.components import build_components, pipeline_settings
from streamer.config import load_config
from streamer.pipeline import Job, Pipeline
from streamer.workers import CaptureLimits
from tests.helpers.rtsp_server import RtspTestServer

POLICIES = {"recent cap 2 s (default)": 2.0, "cap 30 s throughout (before)": 30.0}


def gap_after_outage(recent_cap_s: float, outage_s: float, folder: Path) -> float:
    overrides = {
        "source.reconnect_recent_max_s": recent_cap_s,
        "output.preset": "ultrafast",
        "restoration.enabled": False,
    }
    config = load_config(None, {key: (value, key) for key, value in overrides.items()})
    with RtspTestServer.start(width=160, height=120, fps=25) as camera:
        pipeline = Pipeline(
            [Job("cam1", camera.url, str(folder / "cam1.mp4"), "cam1")],
            build_components(config),
            pipeline_settings(config, CaptureLimits()),
        )
        runner = threading.Thread(target=pipeline.run, daemon=True)
        runner.start()
        stats = pipeline.stats.sources["cam1"]
        try:
            wait(lambda: stats.frames_out >= 25, 60)
            camera.kill()
            time.sleep(outage_s)
            camera.restart()
            back, before = time.monotonic(), stats.frames_out
            wait(lambda: stats.frames_out > before, 120)
            return time.monotonic() - back
        finally:
            pipeline.request_stop()
            runner.join(30)


def wait(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the drill timed out")
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outages", default="4,15", help="seconds the camera stays away, comma-separated")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    outages = [float(value) for value in args.outages.split(",")]
    print(f"gap = camera listening again -> first frame written (s); median of {args.repeats}; 160x120 at 25 fps")
    print(f"{'policy':<30} " + " ".join(f"{f'{o:g} s away':>12}" for o in outages))
    with tempfile.TemporaryDirectory() as tmp:
        for name, cap in POLICIES.items():
            gaps = [
                statistics.median(gap_after_outage(cap, outage, Path(tmp)) for _ in range(args.repeats))
                for outage in outages
            ]
            print(f"{name:<30} " + " ".join(f"{gap:>12.2f}" for gap in gaps), flush=True)


if __name__ == "__main__":
    main()
