"""The detect stage's work on one frame: detect (every N frames), track, keep the faces that are in
the picture, cut the restorer's crops.

One implementation, used by the pipeline's DetectWorker (streamer/workers.py), the video check
(training/video_check.py) and the serial baseline of bench/pipeline_bench.py, so that what they
measure is what the pipeline does.

`DetectStage.faces_in` runs the steps in order, each in its own small method, so that a later step
(a search policy deciding when and where to detect, a window of each track's recent crops) slots in
as one more method rather than a copy of the loop. The restore gate (streamer/verification.py) is
one: it marks each face verified or not, and only verified faces get a crop (are restored).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from streamer.track_window import TrackWindows
from streamer.values import Face


class Detector(Protocol):
    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces (box, score; track_id unset) in an H x W x 3 uint8 RGB contiguous image."""
        ...


class Tracker(Protocol):
    def update(self, frame_index: int, detections: list[Face] | None) -> list[Face]:
        """The tracked faces of this frame; `detections` None: a frame without detection (predict only)."""
        ...


class Gate(Protocol):
    def review(self, image: np.ndarray, detections: list[Face] | None, faces: list[Face]) -> list[Face]:
        """The faces with `verified` set (streamer.verification.RestoreGate)."""
        ...


class RestoreFilter(Protocol):
    def select(self, image: np.ndarray, faces: Sequence[Face]) -> Sequence[Face]:
        """The faces, those not worth restoring without their crop (best_shots.RestoreWhenBetter)."""
        ...


# Cuts the restorer's input crop of each face (Face.crop, Face.crop_box); a face it leaves alone keeps
# crop None (restoration.prepare_crops: larger than restoration.max_face_px).
CropFaces = Callable[[np.ndarray, Sequence[Face]], Sequence[Face]]


class DetectStage:
    """One source's faces, frame by frame. Holds the detector's and the tracker's state: one per
    source, called from one thread, with the frames in order."""

    def __init__(
        self,
        detector: Detector,
        tracker: Tracker,
        crop_faces: CropFaces | None,
        every_n: int = 1,
        windows: TrackWindows | None = None,
        gate: Gate | None = None,
        restore_filter: RestoreFilter | None = None,
    ) -> None:
        if every_n < 1:
            raise ValueError(f"DetectStage: every_n must be >= 1, got {every_n}")
        self.detector, self.tracker, self.crop_faces, self.every_n = detector, tracker, crop_faces, every_n
        # A K-frame restorer's per-track windows (this source's tracks only); None: a one-frame restorer.
        self.windows = windows
        self.gate = gate  # None: every face is cropped (restored)
        # Overlay mode: only faces that beat their track's best view are restored; None: all of them.
        self.restore_filter = restore_filter
        self.frames_seen = 0

    def faces_in(self, image: np.ndarray, frame_index: int, seconds: float | None = None) -> tuple[Face, ...]:
        """The faces of this frame, tracked (track_id set) and, with a `crop_faces`, cropped.
        `seconds`: the frame's time, for a search policy's clocks (None: counted in frames)."""
        detections = self._detections(image, frame_index, seconds)
        faces = self._in_picture(self.tracker.update(frame_index, detections), image)
        faces = self._reviewed(image, detections, faces)
        self.frames_seen += 1
        return tuple(self._windowed(self._selected(image, self._cropped(image, faces)), frame_index))

    def _detections(self, image: np.ndarray, frame_index: int, seconds: float | None) -> list[Face] | None:
        # Counts the frames seen, not frame indices: a live source's drops leave gaps in the index.
        find = getattr(self.detector, "find", None)
        if find is not None:  # a search policy (search_policy.py) decides when and where to look
            return find(image, self.frames_seen, seconds, self.tracker.update(frame_index, None))
        if self.frames_seen % self.every_n:
            return None  # the tracker carries the faces over this frame
        return self.detector.detect(image)

    @staticmethod
    def _in_picture(faces: list[Face], image: np.ndarray) -> list[Face]:
        """The faces with pixels in the frame (the tracker may carry one out of the picture)."""
        height, width = image.shape[:2]
        return [face for face in faces if face.box.overlaps_frame(width, height)]

    def _windowed(self, faces: Sequence[Face], frame_index: int) -> Sequence[Face]:
        """Each cropped face with its track's last K crops (Face.window), for a K-frame restorer."""
        if self.windows is None:
            return faces
        return self.windows.faces_with_windows(frame_index, faces)

    def _reviewed(self, image: np.ndarray, detections: list[Face] | None, faces: list[Face]) -> list[Face]:
        """The restore gate's verdict on each face (detections: this frame's raw ones, or None)."""
        if self.gate is None:
            return faces
        return self.gate.review(image, detections, faces)

    def _selected(self, image: np.ndarray, faces: Sequence[Face]) -> Sequence[Face]:
        """The cropped faces, those the restore filter finds not worth restoring without their crop."""
        if self.restore_filter is None or not faces:
            return faces
        return self.restore_filter.select(image, faces)

    def _cropped(self, image: np.ndarray, faces: list[Face]) -> Sequence[Face]:
        """Crops for the faces to restore; a face the gate rejected gets none and keeps its pixels."""
        if self.crop_faces is None or not faces:
            return faces
        cropped = iter(self.crop_faces(image, [face for face in faces if face.verified is not False]))
        return [face if face.verified is False else next(cropped) for face in faces]
