#!/usr/bin/env python
"""Which recording container survives a SIGKILL best? (chooses sinks.SEGMENT_FORMATS' default)

For each candidate a child process encodes frames in real time (25 fps, 320x240, libx264
superfast, as a live segment is written) and reports how many frames it has handed to the
muxer; the parent SIGKILLs it mid-run, then decodes what is on disk. "lost s" is what was
muxed but cannot be played back (encoder delay included), in seconds of video.

    python bench/crash_recovery.py [--seconds 4.3] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FPS = 25


def candidates() -> dict[str, tuple[str, dict[str, str]]]:
    """name -> (file suffix, container options) as streamer.sinks writes them, plus today's plain MP4."""
    from streamer.sinks import SEGMENT_FORMATS

    table = {name: (fmt.suffix, dict(fmt.options)) for name, fmt in SEGMENT_FORMATS.items()}
    table["mp4 (plain, today)"] = (".mp4", {})
    return table


def child(path: str, options: str, progress: str) -> None:
    """Encode frames in real time until killed; after each mux, write the count to `progress`."""
    import av
    import numpy as np

    opts = dict(item.split("=", 1) for item in options.split(",") if item)
    container = av.open(path, "w", options=opts)
    stream = container.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
    stream.options = {"preset": "superfast", "crf": "23", "g": str(2 * FPS)}
    rng = np.random.default_rng(0)
    start = time.monotonic()
    for index in range(100_000):
        image = np.full((240, 320, 3), index % 256, np.uint8)
        image[:40, :40] = rng.integers(0, 255, (40, 40, 3), np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts = index
        container.mux(stream.encode(frame))
        Path(progress + ".tmp").write_text(str(index + 1))
        os.replace(progress + ".tmp", progress)  # atomic: a kill never leaves a half-written count
        time.sleep(max(0.0, start + (index + 1) / FPS - time.monotonic()))


def decodable_frames(path: Path) -> int:
    import av

    count = 0
    try:
        with av.open(str(path)) as container:
            for packet in container.demux(video=0):
                try:
                    count += len(packet.decode())
                except av.error.InvalidDataError:
                    break
    except (av.error.FFmpegError, OSError):
        pass
    return count


def measure(suffix: str, options: dict[str, str], seconds: float, folder: Path) -> tuple[int, int]:
    path, progress = folder / f"rec{suffix}", folder / "progress.txt"
    for stale in (path, progress):
        stale.unlink(missing_ok=True)
    option_text = ",".join(f"{k}={v}" for k, v in options.items())
    process = subprocess.Popen([sys.executable, __file__, "--child", str(path), option_text, str(progress)])
    time.sleep(seconds)
    process.send_signal(signal.SIGKILL)
    process.wait()
    muxed = int(progress.read_text()) if progress.exists() else 0
    return muxed, decodable_frames(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    print(f"SIGKILL after {args.seconds} s of real-time encoding, {args.runs} runs each (median)")
    print(f"{'container':<22} {'muxed':>6} {'playable':>9} {'lost s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (suffix, options) in candidates().items():
            results = sorted(
                (measure(suffix, options, args.seconds, Path(tmp)) for _ in range(args.runs)), key=lambda r: r[0] - r[1]
            )
            muxed, playable = results[len(results) // 2]
            print(f"{name:<22} {muxed:>6} {playable:>9} {(muxed - playable) / FPS:>7.2f}")


if __name__ == "__main__":
    main()
