#!/usr/bin/env python
"""SIGKILL recovery of a live recording, end to end: `run_stream.py` records a camera (gst-rtsp-server
on 127.0.0.1) in short segments with the metrics endpoint on; just before the SIGKILL the frames
written are read from /metrics; afterwards every segment on disk is decoded. "lost" is what the
process had written but no player can show (seconds of video, at the camera's rate).

    python bench/sigkill_recording.py [--seconds 25] [--segment-s 10] [--runs 3] 2>/dev/null
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from streamer import REPO_ROOT  # noqa: E402  (first: sets the OpenMP wait policy before torch loads)

# isort: split

from tests.helpers.media import read_frames  # noqa: E402 - after the path
from tests.helpers.rtsp_server import RtspTestServer, free_port  # noqa: E402

FPS = 25


def frames_written(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith('cctv_frames_out_total{camera="cam1"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return None


def one_run(seconds: float, segment_s: float, folder: Path) -> tuple[int, int, int, int]:
    """(frames written at the kill, frames decoded, finished segments, frames in the unfinished one)"""
    config = folder / "live.yaml"
    config.write_text(f"recording:\n  segment_s: {segment_s}\noutput:\n  preset: ultrafast\n")
    port = free_port()
    with RtspTestServer.start(width=320, height=240, fps=FPS) as camera:
        cli = subprocess.Popen(
            [
                sys.executable,
                str(REPO_ROOT / "run_stream.py"),
                camera.url,
                "-o",
                f"{folder}/out/",
                "--config",
                str(config),
                "--metrics-port",
                str(port),
                "-q",
            ],
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while (frames_written(port) or 0) < seconds * FPS and time.monotonic() < deadline:
            time.sleep(0.2)
        written = frames_written(port) or 0
        cli.send_signal(signal.SIGKILL)
        cli.wait()
    finished = sorted(p for p in (folder / "out").glob("cam1_*.ts") if ".partial" not in p.name)
    partial = sorted((folder / "out").glob("cam1_*.partial.ts"))
    in_partial = sum(len(read_frames(path)[0]) for path in partial)
    decoded = sum(len(read_frames(path)[0]) for path in finished) + in_partial
    return written, decoded, len(finished), in_partial


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=25.0, help="seconds of video written before the kill")
    parser.add_argument("--segment-s", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"SIGKILL after ~{args.seconds:g} s of video, {args.segment_s:g} s segments, 320x240 at {FPS} fps")
    print(f"{'run':>3} {'written':>8} {'playable':>9} {'finished segs':>14} {'in unfinished':>14} {'lost s':>7}")
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory() as tmp:
            written, decoded, finished, in_partial = one_run(args.seconds, args.segment_s, Path(tmp))
        print(
            f"{run:>3} {written:>8} {decoded:>9} {finished:>14} {in_partial:>14} {(written - decoded) / FPS:>7.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
