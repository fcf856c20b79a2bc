"""Face tracking: stable ids, faces carried between detections, smoothing, new and lost faces."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.tracking import FaceTracker
from streamer.values import Box, Face


def face_at(x: float, y: float, size: float = 40.0, score: float = 0.9) -> Face:
    return Face(Box(x, y, size, size), score)


def ids(faces: list[Face]) -> list[int]:
    return [face.track_id for face in faces]


def test_ids_stay_stable_while_faces_move():
    tracker = FaceTracker()
    for frame in range(0, 30, 3):
        faces = tracker.update(frame, [face_at(100 + 4 * frame, 100), face_at(400 - 4 * frame, 300)])
        assert len(faces) == 2
        by_row = {round(face.box.y): face.track_id for face in faces}
        assert by_row == {100: 1, 300: 2}


def test_faces_are_carried_forward_on_frames_without_detection():
    tracker = FaceTracker()
    step = 5  # detection every 5th frame, face moving 4 px per frame
    for frame in range(0, 30):
        detections = [face_at(100 + 4 * frame, 100)] if frame % step == 0 else None
        (face,) = tracker.update(frame, detections)
        assert face.track_id == 1
    assert face.box.x == pytest.approx(100 + 4 * 29, abs=4)  # extrapolated, not held at frame 25


def test_small_fast_face_keeps_its_id_when_boxes_stop_overlapping():
    tracker = FaceTracker()
    for frame in range(0, 40, 5):  # 20 px face, 25 px between detections: IoU is 0
        (face,) = tracker.update(frame, [face_at(50 + 5 * frame, 80, size=20)])
        assert face.track_id == 1


def test_a_new_face_gets_a_new_id_and_old_ids_are_not_reused():
    tracker = FaceTracker(max_missed=0)
    assert ids(tracker.update(0, [face_at(100, 100)])) == [1]
    assert ids(tracker.update(1, [face_at(100, 100), face_at(500, 100)])) == [1, 2]
    assert ids(tracker.update(2, [face_at(500, 100)])) == [2]
    assert ids(tracker.update(3, [face_at(100, 100), face_at(500, 100)])) == [2, 3]


def test_a_lost_face_is_held_for_max_missed_rounds_then_dropped():
    tracker = FaceTracker(max_missed=2)
    tracker.update(0, [face_at(100, 100)])
    assert ids(tracker.update(3, [])) == [1]
    assert ids(tracker.update(4, None)) == [1]
    assert ids(tracker.update(6, [])) == [1]
    assert ids(tracker.update(9, [])) == []
    assert ids(tracker.update(10, None)) == []


def test_a_face_found_again_within_max_missed_keeps_its_id():
    tracker = FaceTracker(max_missed=2)
    tracker.update(0, [face_at(100, 100)])
    tracker.update(1, [])
    assert ids(tracker.update(2, [face_at(102, 101)])) == [1]


def test_smoothing_reduces_box_jitter_of_a_still_face():
    rng = np.random.default_rng(0)
    tracker = FaceTracker()
    detected, tracked = [], []
    for frame in range(60):
        x = 200 + rng.normal(0, 2.0)
        detected.append(x)
        tracked.append(tracker.update(frame, [face_at(x, 100)])[0].box.x)
    assert np.std(np.diff(tracked[10:])) < 0.7 * np.std(np.diff(detected[10:]))


def test_frames_must_not_go_back():
    tracker = FaceTracker()
    tracker.update(5, None)
    with pytest.raises(ValueError, match="went back"):
        tracker.update(4, None)
