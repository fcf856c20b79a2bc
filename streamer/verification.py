"""The restore gate: a face is restored only when the evidence says it is a face.

Showing a box around something face-like costs little; painting eyes and a nose onto the back
of a head, a balloon or a hand, in footage an investigator or a court may see, is the worst
thing this tool can do. So a detection must pass a stricter test to be restored than to be
shown. Per track, on each detection frame (`review`), a face is checked on:

- the detector's score (MediaPipe's score for this box, at least `min_score`);
- its keypoints (eyes, nose, mouth from MediaPipe): a plausible face layout (`keypoints_plausible`);
- a second opinion from another detector, RetinaFace-MobileNet0.25 trained on WIDER FACE, run on
  the region around the box (`streamer.retinaface`): it must also see a face there.

A face is verified (restored) while its track
- passed the check of the latest detection round: a track the detector did not find again is
  carried by the tracker to where the face may have gone (an empty wall, once the person left),
  and a tracker can jump from a face to the back of a head beside it; neither is restored;
- and at least `confirm_checks` of its last RECENT_CHECKS checks passed, more than half of them
  (a confirmed track: one lucky frame is not enough).
Between detection rounds the verdict of the last round holds. Faces of unverified tracks keep
their pixels (`Face.verified` False: not cropped, not restored, counted, and drawn as
"unverified" in overlay mode). The second opinion runs only on detections that passed the cheap
tests, batched: one model call per detection round.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from streamer.values import Box, Face

logger = logging.getLogger(__name__)

LOST_KEPT_FRAMES = 50  # how long a lost track's record waits for the face to be found again
INHERIT_IOU = 0.3
RECENT_CHECKS = 4  # a track's verdict weighs its last few checks (a tracker can drift onto something else)


class SecondOpinion(Protocol):
    def face_scores(self, image: np.ndarray, boxes: Sequence[Box]) -> list[float]: ...


@dataclass(frozen=True)
class GateOptions:
    enabled: bool = True
    min_score: float = 0.5  # detector score a check needs
    keypoints: bool = False  # check MediaPipe's keypoint layout (measured: it rejects real faces, adds nothing)
    second_opinion: bool = True  # ask RetinaFace
    second_opinion_min_score: float = 0.9  # RetinaFace's score a check needs (a heraldic lion scores 0.84)
    confirm_checks: int = 2  # passed checks before a track is restored
    # Faces larger than this are never restored (restoration.max_face_px): not judged, no model run
    # spent on them (verified stays None). 0: judge every face.
    max_face_px: float = 0.0

    def __post_init__(self) -> None:
        for name in ("min_score", "second_opinion_min_score"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"GateOptions.{name}: expected a value in [0, 1], got {getattr(self, name)}")
        if not 1 <= self.confirm_checks <= RECENT_CHECKS:
            raise ValueError(f"GateOptions.confirm_checks: expected 1..{RECENT_CHECKS}, got {self.confirm_checks}")


@dataclass
class _TrackRecord:
    checks: int = 0
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_CHECKS))  # True = passed
    fresh: bool = False  # found and passed in the latest detection round
    box: Box | None = None  # where the track was last seen


@dataclass
class GateStats:
    checks: int = 0  # face checks made
    failed_checks: int = 0
    second_opinions: int = 0  # RetinaFace runs (one per face checked)


@dataclass
class RestoreGate:
    """Marks each tracked face verified or not (one gate per source: it keeps per-track state)."""

    options: GateOptions = field(default_factory=GateOptions)
    second_opinion: SecondOpinion | None = None
    stats: GateStats = field(default_factory=GateStats)

    def __post_init__(self) -> None:
        self._tracks: dict[int, _TrackRecord] = {}
        self._lost: list[tuple[_TrackRecord, int]] = []  # (record of a lost track, frames since)
        if self.options.second_opinion and self.second_opinion is None and self.options.enabled:
            raise ValueError("RestoreGate: options.second_opinion needs a second_opinion model")

    def review(self, image: np.ndarray, detections: Sequence[Face] | None, faces: Sequence[Face]) -> list[Face]:
        """`faces` (tracked, with track ids) with `verified` set. `detections` are the detector's
        raw faces when it ran on this frame (None between detection frames)."""
        if not self.options.enabled:
            return [dataclasses.replace(face, verified=True) for face in faces]
        for face in faces:
            if face.track_id not in self._tracks:
                self._tracks[face.track_id] = self._inherited(face.box)
            self._tracks[face.track_id].box = face.box
        if detections is not None:
            self._check(image, detections, faces)
        self._retire_lost({face.track_id for face in faces})
        return [
            dataclasses.replace(face, verified=None if self._too_large(face) else self._verified(face.track_id))
            for face in faces
        ]

    def _too_large(self, face: Face) -> bool:
        return 0 < self.options.max_face_px < max(face.box.w, face.box.h)

    def _inherited(self, box: Box) -> _TrackRecord:
        """A new track where a lost one just was (the detector missed the face for a few rounds and
        the tracker gave up on it) carries on with that track's checks, instead of starting over."""
        for index, (record, _) in enumerate(self._lost):
            if record.box is not None and record.box.iou(box) >= INHERIT_IOU:
                del self._lost[index]
                return record
        return _TrackRecord()

    def _retire_lost(self, live: set[int]) -> None:
        lost = [record for track, record in self._tracks.items() if track not in live]
        self._tracks = {track: record for track, record in self._tracks.items() if track in live}
        self._lost = [(record, frames + 1) for record, frames in self._lost if frames + 1 < LOST_KEPT_FRAMES]
        self._lost += [(record, 0) for record in lost]

    def _verified(self, track_id: int) -> bool:
        record = self._tracks.get(track_id)
        if record is None:
            return False
        passed = sum(record.recent)
        return record.fresh and passed >= self.options.confirm_checks and passed > len(record.recent) / 2

    def _check(self, image: np.ndarray, detections: Sequence[Face], faces: Sequence[Face]) -> None:
        due: list[tuple[_TrackRecord, Face]] = []
        for face in faces:
            record = self._tracks[face.track_id]
            detection = _matching_detection(face.box, detections)
            record.fresh = False  # until this round's check passes
            if detection is not None and not self._too_large(face):  # else: not seen this round, or not restorable
                due.append((record, detection))
        if not due:
            return
        opinions = self._second_opinions(image, [detection for _, detection in due])
        for (record, detection), opinion in zip(due, opinions):
            passed = self._passes(detection, opinion)
            record.recent.append(passed)
            record.checks += 1
            record.fresh = passed
            self.stats.checks += 1
            self.stats.failed_checks += not passed

    def _second_opinions(self, image: np.ndarray, detections: list[Face]) -> list[float]:
        if not self.options.second_opinion or self.second_opinion is None:
            return [1.0] * len(detections)
        # Only the detections that passed the cheap tests are worth a model run.
        worth = [i for i, d in enumerate(detections) if self._passes_cheap(d)]
        scores = [0.0] * len(detections)
        if worth:
            found = self.second_opinion.face_scores(image, [detections[i].box for i in worth])
            self.stats.second_opinions += len(worth)
            for i, score in zip(worth, found):
                scores[i] = score
        return scores

    def _passes_cheap(self, detection: Face) -> bool:
        if detection.score < self.options.min_score:
            return False
        return not self.options.keypoints or keypoints_plausible(detection)

    def _passes(self, detection: Face, opinion: float) -> bool:
        return self._passes_cheap(detection) and opinion >= self.options.second_opinion_min_score


def _matching_detection(box: Box, detections: Sequence[Face]) -> Face | None:
    """The raw detection this tracked box follows (the best overlap, at least 0.3 IoU)."""
    best = max(detections, key=lambda d: d.box.iou(box), default=None)
    return best if best is not None and best.box.iou(box) >= 0.3 else None


def keypoints_plausible(face: Face) -> bool:
    """True when MediaPipe's keypoints (right eye, left eye, nose tip, mouth, right ear, left ear;
    frame pixels) have a face's layout: eyes apart by a fair share of the box, the mouth below
    the eyes' midpoint at about the eyes' distance, the nose between them, all inside the box.
    A face without keypoints passes (a detector that gives none cannot be judged on them)."""
    if len(face.keypoints) < 4:
        return True
    points = np.asarray(face.keypoints[:4], dtype=np.float64)
    right_eye, left_eye, nose, mouth = points
    box = face.box
    margin = 0.15 * max(box.w, box.h)
    inside = (
        (points[:, 0] >= box.x - margin)
        & (points[:, 0] <= box.x + box.w + margin)
        & (points[:, 1] >= box.y - margin)
        & (points[:, 1] <= box.y + box.h + margin)
    )
    if not inside.all():
        return False
    eye_axis = left_eye - right_eye
    eye_distance = float(np.hypot(*eye_axis))
    if not 0.2 * box.w <= eye_distance <= 0.75 * box.w:
        return False
    down = mouth - (right_eye + left_eye) / 2.0
    drop = float(np.hypot(*down))
    if not 0.4 * eye_distance <= drop <= 1.6 * eye_distance:
        return False
    # The mouth lies across the eye line, not along it (cosine of the angle between them).
    if abs(float(np.dot(eye_axis, down))) / (eye_distance * drop) > 0.5:
        return False
    along = float(np.dot(nose - (right_eye + left_eye) / 2.0, down)) / (drop * drop)
    return -0.1 <= along <= 1.0
