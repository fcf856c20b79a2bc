"""The write stage at 1080p, old way against new, in one run:
- the change map: comparing the whole composited frame with the decoded one (the old way, and
  still what a compositor that says nothing about where it drew gets) against comparing only
  inside the rectangles compositing.compose_touching says it drew in;
- the sink's RGB -> YUV (colour.yuv420_frame with the change map): converting one rectangle around
  all the changes (the old way: colour.MERGE_GAP_PX as large as the frame) against one per group of
  changes (the default MERGE_GAP_PX).

    python bench/write_stage.py [--frames N] [--passes P]

On the first N frames of crowd_walk_1080p (decoded once, with their YUV planes), 2 to 6 faces per
frame (2, 3, ..., 6, 2, ...; 24-96 px, spread over the frame) are composited in paste and in overlay
mode; then, interleaved frame by frame in one run, workers._with_changes over the whole frame and
over the footprint, then yuv420_frame with one rectangle and with several, P passes. Prints ms/frame
of each, their ratios, whether the old and new results are identical on every frame (they must be),
and the footprint's share of the frame. Not a test: numbers depend on the machine and its load
(printed).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from streamer import SHARED_DATA  # noqa: E402  (first: sets the OpenMP wait policy before torch loads)

# isort: split
from streamer import colour, compositing  # noqa: E402
from streamer.model_contract import resize_square, square_crop_box  # noqa: E402
from streamer.sources import open_source  # noqa: E402
from streamer.values import Box, Face, Frame, FramePacket  # noqa: E402
from streamer.workers import _with_changes  # noqa: E402

VIDEO = SHARED_DATA / "videos" / "crowd_walk_1080p.mp4"
MODEL_SIDE = 128  # the restorer's output side (what an overlay inset shows)
FACE_COUNTS = (2, 3, 4, 5, 6)


def faces_for(frame: Frame, count: int, rng: np.random.Generator) -> list[Face]:
    """`count` restored faces of 24-96 px at random places of the frame, each with its input crop."""
    height, width = frame.image.shape[:2]
    faces = []
    for track_id in range(count):
        side = float(rng.integers(24, 97))
        box = Box(float(rng.integers(0, width - side)), float(rng.integers(0, height - side)), side, side)
        crop_box = square_crop_box(box, 1.5)
        x, y, crop_side = int(crop_box.x), int(crop_box.y), int(crop_box.w)
        crop = resize_square(
            np.ascontiguousarray(frame.image[max(0, y) : y + crop_side, max(0, x) : x + crop_side]), MODEL_SIDE
        )
        restored = np.clip(crop.astype(np.int16) + rng.integers(-40, 41, crop.shape), 0, 255).astype(np.uint8)
        faces.append(Face(box, 0.9, track_id=track_id, crop_box=crop_box, crop=crop, restored=restored))
    return faces


def bench_mode(mode: str, frames: list[Frame], faces: list[list[Face]], passes: int) -> dict[str, float]:
    composites = [compositing.compose_touching(f.image, fs, mode) for f, fs in zip(frames, faces)]
    packets = [FramePacket(frame, tuple(fs)) for frame, fs in zip(frames, faces)]
    seconds = dict.fromkeys(("whole", "footprint", "one rect", "rects"), 0.0)
    identical = True
    for run in range(passes):
        for packet, composite in zip(packets, composites):
            ways = {
                "whole": (_with_changes, packet, composite.image, None),
                "footprint": (_with_changes, packet, composite.image, composite.touched),
            }
            results = timed_in_turn(ways, seconds, first=run % 2)
            identical &= bool(np.array_equal(results["whole"].changed, results["footprint"].changed))
            planes = results["footprint"]
            ways = {
                "one rect": (_one_rect_yuv420_frame, composite.image, planes.tags, planes),
                "rects": (colour.yuv420_frame, composite.image, planes.tags, planes),
            }
            results = timed_in_turn(ways, seconds, first=run % 2)
            identical &= all(
                np.array_equal(np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8))
                for a, b in zip(results["one rect"].planes, results["rects"].planes)
            )
    area = sum(_area(c.touched) for c in composites) / sum(c.image.shape[0] * c.image.shape[1] for c in composites)
    count = passes * len(frames)
    return {name: 1000 * total / count for name, total in seconds.items()} | {
        "identical": float(identical),
        "area": area,
    }


def timed_in_turn(ways: dict, seconds: dict[str, float], first: int) -> dict:
    """Run each (function, *args) of `ways` once, adding its time to `seconds`; the order is turned
    round when `first` is 1, so neither always finds the caches warm."""
    results = {}
    for name in list(ways)[::-1] if first else list(ways):
        work, *args = ways[name]
        started = time.perf_counter()
        results[name] = work(*args)
        seconds[name] += time.perf_counter() - started
    return results


def _one_rect_yuv420_frame(*args):
    """colour.yuv420_frame converting one rectangle around all the changes (the old way)."""
    merge_gap = colour.MERGE_GAP_PX
    colour.MERGE_GAP_PX = 1 << 30
    try:
        return colour.yuv420_frame(*args)
    finally:
        colour.MERGE_GAP_PX = merge_gap


def _area(rects) -> int:
    return sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in rects)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--passes", type=int, default=4)
    args = parser.parse_args()
    with open_source(str(VIDEO), "bench") as source:
        frames = list(itertools.islice(source.frames(threading.Event()), args.frames))
    rng = np.random.default_rng(12)
    faces = [faces_for(frame, count, rng) for frame, count in zip(frames, itertools.cycle(FACE_COUNTS))]
    print(
        f"cpus={os.cpu_count()} load(1 min)={os.getloadavg()[0]:.2f}; crowd_walk_1080p, {len(frames)} frames x "
        f"{args.passes} passes, {FACE_COUNTS[0]}-{FACE_COUNTS[-1]} faces/frame"
    )
    print("ms/frame; change map: whole frame -> footprint; yuv420_frame: one rectangle -> one per group of changes")
    print(
        f"{'mode':8} {'footprint':>9} {'whole':>6} {'footprint':>9} {'ratio':>6} "
        f"{'one rect':>8} {'rects':>6} {'ratio':>6} {'old == new':>10}"
    )
    for mode in ("paste", "overlay"):
        row = bench_mode(mode, frames, faces, args.passes)
        print(
            f"{mode:8} {100 * row['area']:8.1f}% {row['whole']:6.2f} {row['footprint']:9.2f} "
            f"{row['whole'] / row['footprint']:5.1f}x {row['one rect']:8.2f} {row['rects']:6.2f} "
            f"{row['one rect'] / row['rects']:5.1f}x {'yes' if row['identical'] else 'NO':>10}"
        )
    print(f"load(1 min) after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
