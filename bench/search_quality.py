"""Recall of a face search policy against a reference (or true boxes), by face size, and how
many frames a new face waits for its first detection. Used by bench/pipeline_bench.py and by
tests/test_search_policy.py (one implementation of the measurement).

The policy's faces are what the pipeline would restore: the tracker's faces after the policy's
detections (carried faces count, as they are restored too). A reference box is recalled when a
face of the policy overlaps it by IoU >= MATCH_IOU in the same frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from streamer.detect_stage import DetectStage
from streamer.values import Box, Face, Frame

MATCH_IOU = 0.3
SIZE_BINS = (0, 20, 40, 80, 10_000)  # px, the face box's longer side


@dataclass
class Recall:
    """Per size bin: reference boxes and how many of them the policy had."""

    bins: tuple[int, ...] = SIZE_BINS
    total: list[int] = field(default_factory=lambda: [0] * (len(SIZE_BINS) - 1))
    found: list[int] = field(default_factory=lambda: [0] * (len(SIZE_BINS) - 1))

    def add(self, truths: Sequence[Box], faces: Sequence[Box]) -> None:
        for truth in truths:
            slot = _bin(self.bins, max(truth.w, truth.h))
            self.total[slot] += 1
            self.found[slot] += any(truth.iou(face) >= MATCH_IOU for face in faces)

    def at_least(self, px: int) -> float:
        """Recall of the reference boxes of px or more (all the bins from px up)."""
        start = self.bins.index(px)
        total = sum(self.total[start:])
        return sum(self.found[start:]) / total if total else 1.0

    def labels(self) -> list[str]:
        return [f"{lo}-{hi}" if hi < 10_000 else f">={lo}" for lo, hi in zip(self.bins, self.bins[1:])]

    def by_bin(self) -> list[float | None]:
        return [found / total if total else None for found, total in zip(self.found, self.total)]


def _bin(bins: tuple[int, ...], side: float) -> int:
    for index in range(len(bins) - 1):
        if side < bins[index + 1]:
            return index
    return len(bins) - 2


@dataclass
class FirstDetection:
    """Frames from a face's first appearance (in the reference, or the truth) to the policy's
    first face on it. Faces are followed by greedy IoU chaining of the reference boxes."""

    delays: list[int] = field(default_factory=list)
    never: int = 0  # faces that left (or the clip ended) before the policy found them
    _open: list[tuple[Box, int, bool]] = field(default_factory=list)  # (last box, first frame, found)

    def add(self, frame_index: int, truths: Sequence[Box], faces: Sequence[Box]) -> None:
        chains, used = [], set()
        for box in truths:
            previous = max(
                (
                    (chain_index, box.iou(chain[0]))
                    for chain_index, chain in enumerate(self._open)
                    if chain_index not in used
                ),
                key=lambda entry: entry[1],
                default=(None, 0.0),
            )
            if previous[0] is not None and previous[1] >= MATCH_IOU:
                used.add(previous[0])
                _, first, found = self._open[previous[0]]
            else:
                first, found = frame_index, False
            if not found and any(box.iou(face) >= MATCH_IOU for face in faces):
                self.delays.append(frame_index - first)
                found = True
            chains.append((box, first, found))
        self.never += sum(not found for index, (_, _, found) in enumerate(self._open) if index not in used)
        self._open = chains

    def finish(self) -> None:
        self.never += sum(not found for _, _, found in self._open)
        self._open = []

    def summary(self) -> tuple[float, int, int]:
        """(mean, worst) frames to first detection of the faces found, and how many never were."""
        if not self.delays:
            return 0.0, 0, self.never
        return float(np.mean(self.delays)), int(max(self.delays)), self.never


def search_and_track(stage: DetectStage, frame: Frame) -> tuple[Face, ...]:
    """One frame through the detect stage (search policy, tracker), as the pipeline runs it:
    the faces the pipeline would restore."""
    return stage.faces_in(frame.image, frame.index, frame.seconds)


def frames_of(images: Iterable[np.ndarray], fps: int = 25) -> Iterable[Frame]:
    """Frames with timestamps at `fps`, from plain images (generated scenes)."""
    from fractions import Fraction

    for index, image in enumerate(images):
        yield Frame("scene", index, index, Fraction(1, fps), image)


def boxes(faces: Sequence[Face]) -> list[Box]:
    return [face.box for face in faces]
