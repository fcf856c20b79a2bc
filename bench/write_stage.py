"""The write stage's change map at 1080p: comparing the whole composited frame with the decoded one
(the old way, and still what a compositor that says nothing about where it drew gets) against
comparing only inside the rectangles compositing.compose_touching says it drew in.

    python bench/write_stage.py [--frames N] [--passes P]

On the first N frames of crowd_walk_1080p (decoded once, with their YUV planes), 2 to 6 faces per
frame (2, 3, ..., 6, 2, ...; 24-96 px, spread over the frame) are composited in paste and in overlay
mode; then, interleaved frame by frame in one run, workers._with_changes over the whole frame and
over the footprint, P passes. Prints ms/frame of each, their ratio, whether the two change maps are
identical on every frame (they must be), the footprint's share of the frame, and the ms/frame of
what follows in the sink (colour.yuv420_frame with the change map), for scale. Not a test: numbers
depend on the machine and its load (printed).
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


def timed(work, *args) -> tuple[float, object]:
    started = time.perf_counter()
    result = work(*args)
    return time.perf_counter() - started, result


def bench_mode(mode: str, frames: list[Frame], faces: list[list[Face]], passes: int) -> dict[str, float]:
    composites = [compositing.compose_touching(f.image, fs, mode) for f, fs in zip(frames, faces)]
    packets = [FramePacket(frame, tuple(fs)) for frame, fs in zip(frames, faces)]
    whole_s = footprint_s = yuv_s = 0.0
    identical = True
    for run in range(passes):
        for packet, composite in zip(packets, composites):
            whole = (packet, composite.image, None)
            footprint = (packet, composite.image, composite.touched)
            if run % 2:  # alternate which goes first, so neither always finds the caches warm
                footprint_t, new = timed(_with_changes, *footprint)
                whole_t, old = timed(_with_changes, *whole)
            else:
                whole_t, old = timed(_with_changes, *whole)
                footprint_t, new = timed(_with_changes, *footprint)
            whole_s, footprint_s = whole_s + whole_t, footprint_s + footprint_t
            identical &= bool(np.array_equal(old.changed, new.changed))
            yuv_s += timed(colour.yuv420_frame, composite.image, new.tags, new)[0]
    area = sum(_area(c.touched) for c in composites) / sum(c.image.shape[0] * c.image.shape[1] for c in composites)
    count = passes * len(frames)
    return {
        "whole": 1000 * whole_s / count,
        "footprint": 1000 * footprint_s / count,
        "identical": float(identical),
        "area": area,
        "yuv": 1000 * yuv_s / count,
    }


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
    print(
        f"{'mode':8} {'whole ms':>8} {'footprint ms':>12} {'ratio':>6} {'same map':>8} {'footprint':>9} {'yuv420 ms':>9}"
    )
    for mode in ("paste", "overlay"):
        row = bench_mode(mode, frames, faces, args.passes)
        print(
            f"{mode:8} {row['whole']:8.2f} {row['footprint']:12.2f} {row['whole'] / row['footprint']:5.1f}x "
            f"{'yes' if row['identical'] else 'NO':>8} {100 * row['area']:8.1f}% {row['yuv']:9.2f}"
        )
    print(f"load(1 min) after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
