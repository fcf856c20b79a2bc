"""Face tracking between detections: stable track ids, carried and smoothed boxes.

Detection runs every N frames; on the frames in between the tracker carries each face forward
with the velocity it has shown. Each track's box (centre and size) goes through an alpha-beta
filter: a detection pulls the box only part of the way (`smoothing`), which removes most of the
detector's frame-to-frame jitter (a jittering crop makes the restored face flicker), and the
velocity term keeps the smoothed box from lagging behind a walking face.

Matching is greedy on IoU with the predicted box, falling back to centre distance for small
fast faces whose boxes no longer overlap between two detection rounds. (A Hungarian assignment
would need scipy; with a handful of faces that rarely touch, greedy gives the same pairs.)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from streamer.config import TrackingConfig
from streamer.values import Box, Face

MIN_SIDE_PX = 1.0
# Two boxes whose sizes differ more than this factor are not the same face.
MAX_SIZE_RATIO = 2.0


def _to_state(box: Box) -> np.ndarray:
    cx, cy = box.center
    return np.array([cx, cy, box.w, box.h], dtype=np.float64)


def _to_box(state: np.ndarray) -> Box:
    cx, cy = state[0], state[1]
    w, h = max(MIN_SIDE_PX, state[2]), max(MIN_SIDE_PX, state[3])
    return Box(float(cx - w / 2.0), float(cy - h / 2.0), float(w), float(h))


@dataclass
class _Track:
    track_id: int
    state: np.ndarray  # smoothed (cx, cy, w, h) at `frame_index`
    velocity: np.ndarray  # change of the state per frame
    frame_index: int
    score: float
    detections: int = 1
    missed: int = 0  # detection rounds in a row without a matching detection
    # The last detection's keypoints as fractions of its box: they move and scale with the box.
    keypoints: tuple[tuple[float, float], ...] = ()

    def predict(self, frame_index: int) -> np.ndarray:
        return self.state + self.velocity * (frame_index - self.frame_index)

    def face(self, frame_index: int) -> Face:
        box = _to_box(self.predict(frame_index))
        keypoints = tuple((box.x + u * box.w, box.y + v * box.h) for u, v in self.keypoints)
        return Face(box=box, score=self.score, track_id=self.track_id, keypoints=keypoints)


class FaceTracker:
    """Gives detections stable track ids and carries faces on frames without detection.

    `update(i, faces)` on a detection frame, `update(i, None)` on the others. A track that misses
    `max_missed` detection rounds in a row is still reported (at its predicted place, so a face
    the detector overlooks once keeps being restored), and dropped at the next miss.
    """

    def __init__(self, **settings: float) -> None:
        """`settings`: config.TrackingConfig's keys; the schema holds their defaults and rules."""
        checked = TrackingConfig(**settings)
        self.max_missed = checked.max_missed
        self.iou_threshold = checked.iou_threshold
        self.max_center_distance = checked.max_center_distance  # in face sizes
        self.smoothing = checked.smoothing  # alpha: how far one detection moves the box
        self.velocity_smoothing = checked.velocity_smoothing  # beta: how far it changes the velocity
        self._tracks: list[_Track] = []
        self._ids = itertools.count(1)
        self._last_frame = -1

    def update(self, frame_index: int, detections: list[Face] | None) -> list[Face]:
        """The faces at `frame_index`, with track ids, ordered by track id.
        `detections` is None on frames where the detector did not run."""
        if frame_index < self._last_frame:
            raise ValueError(f"frame_index went back from {self._last_frame} to {frame_index}")
        self._last_frame = frame_index
        if detections is not None:
            self._absorb(frame_index, detections)
        return [track.face(frame_index) for track in self._tracks]

    def _absorb(self, frame_index: int, detections: list[Face]) -> None:
        pairs = self._match(frame_index, detections)
        matched_tracks = {id(track) for track, _ in pairs}
        for track, detection in pairs:
            self._correct(track, frame_index, detection)
        for track in self._tracks:
            if id(track) not in matched_tracks:
                track.missed += 1
        self._tracks = [track for track in self._tracks if track.missed <= self.max_missed]
        matched_detections = {id(detection) for _, detection in pairs}
        for detection in detections:
            if id(detection) not in matched_detections:
                self._tracks.append(self._new_track(frame_index, detection))

    def _match(self, frame_index: int, detections: list[Face]) -> list[tuple[_Track, Face]]:
        """Greedy: best IoU first, then nearest centre; each track and detection used once."""
        candidates = []
        for track in self._tracks:
            predicted = _to_box(track.predict(frame_index))
            for detection in detections:
                iou = predicted.iou(detection.box)
                distance = _center_distance(predicted, detection.box)
                if iou >= self.iou_threshold or (
                    distance <= self.max_center_distance and _similar_size(predicted, detection.box)
                ):
                    candidates.append((-iou, distance, track, detection))
        candidates.sort(key=lambda candidate: candidate[:2])
        pairs, used = [], set[int]()
        for _, _, track, detection in candidates:
            if id(track) not in used and id(detection) not in used:
                used.update((id(track), id(detection)))
                pairs.append((track, detection))
        return pairs

    def _correct(self, track: _Track, frame_index: int, detection: Face) -> None:
        """Alpha-beta step: move the prediction part of the way to the detection."""
        measured = _to_state(detection.box)
        elapsed = max(1, frame_index - track.frame_index)
        if track.detections == 1:
            # The second sighting is the first chance to see motion: take it as it is.
            track.velocity = (measured - track.state) / elapsed
            track.state = measured
        else:
            predicted = track.predict(frame_index)
            residual = measured - predicted
            track.state = predicted + self.smoothing * residual
            track.velocity = track.velocity + self.velocity_smoothing * residual / elapsed
        track.frame_index = frame_index
        track.score = detection.score
        track.keypoints = _keypoints_in_box(detection)
        track.detections += 1
        track.missed = 0

    def _new_track(self, frame_index: int, detection: Face) -> _Track:
        return _Track(
            track_id=next(self._ids),
            state=_to_state(detection.box),
            velocity=np.zeros(4),
            frame_index=frame_index,
            score=detection.score,
            keypoints=_keypoints_in_box(detection),
        )


def _keypoints_in_box(face: Face) -> tuple[tuple[float, float], ...]:
    box = face.box
    return tuple(((x - box.x) / box.w, (y - box.y) / box.h) for x, y in face.keypoints)


def _center_distance(a: Box, b: Box) -> float:
    """Distance between the centres, in units of the larger box's longer side."""
    (ax, ay), (bx, by) = a.center, b.center
    return float(np.hypot(ax - bx, ay - by)) / max(a.w, a.h, b.w, b.h)


def _similar_size(a: Box, b: Box) -> bool:
    ratio = max(a.w, a.h) / max(b.w, b.h)
    return 1.0 / MAX_SIZE_RATIO <= ratio <= MAX_SIZE_RATIO
