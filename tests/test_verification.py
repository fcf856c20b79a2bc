"""The restore gate: distractors (the back of a head, balloons, a clock, a hand) are never
restored, real faces are, and only once their track is confirmed."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.values import Box, Face
from streamer.verification import GateOptions, RestoreGate, keypoints_plausible
from tests.helpers.faces import require_faces

BOX = Box(100, 100, 40, 40)
# A frontal face in BOX: right eye, left eye, nose, mouth, right ear, left ear (MediaPipe's order).
FRONTAL = ((112, 115), (128, 115), (120, 124), (120, 132), (102, 118), (138, 118))


def moved(points, **changes):
    names = ("right_eye", "left_eye", "nose", "mouth")
    return tuple(changes.get(name, point) for name, point in zip(names, points)) + points[4:]


@pytest.mark.parametrize(
    "keypoints, plausible",
    [
        (FRONTAL, True),
        ((), True),  # a detector without keypoints is not judged on them
        (moved(FRONTAL, left_eye=(113, 115)), False),  # eyes on top of each other
        (moved(FRONTAL, left_eye=(170, 115)), False),  # an eye outside the box
        (moved(FRONTAL, mouth=(120, 116)), False),  # mouth on the eye line
        (moved(FRONTAL, mouth=(128, 132), nose=(150, 124)), False),  # nose beside the face
        (moved(FRONTAL, mouth=(136, 116)), False),  # mouth along the eye line, not across it
    ],
)
def test_keypoint_layout(keypoints, plausible):
    assert keypoints_plausible(Face(BOX, 0.9, keypoints=keypoints)) is plausible


class FixedOpinion:
    """A second opinion that gives every box the same score."""

    def __init__(self, score: float) -> None:
        self.score, self.calls = score, 0

    def face_scores(self, image, boxes):
        self.calls += len(boxes)
        return [self.score] * len(boxes)


IMAGE = np.zeros((240, 320, 3), np.uint8)


def run_gate(gate: RestoreGate, detections_per_frame: list[list[Face] | None]) -> list[bool]:
    """Feed the gate tracked copies (track id 1) of the detections; the verdicts, frame by frame."""
    verdicts = []
    for detections in detections_per_frame:
        faces = [Face(BOX, 0.9, track_id=1)]
        verdicts.append(gate.review(IMAGE, detections, faces)[0].verified)
    return verdicts


@pytest.mark.parametrize(
    "score, opinion, verdicts",
    [
        (0.9, 1.0, [False, True, True, True]),  # confirmed on the second detection, then kept between them
        (0.4, 1.0, [False, False, False, False]),  # the detector is not sure enough
        (0.9, 0.1, [False, False, False, False]),  # RetinaFace sees no face there
    ],
)
def test_a_track_is_restored_only_once_confirmed(score, opinion, verdicts):
    gate = RestoreGate(GateOptions(confirm_checks=2), FixedOpinion(opinion))
    detection = [Face(BOX, score, keypoints=FRONTAL)]
    assert run_gate(gate, [detection, detection, None, detection]) == verdicts


def test_a_confirmed_track_is_restored_only_while_each_detection_round_confirms_it():
    opinion = FixedOpinion(1.0)
    gate = RestoreGate(GateOptions(confirm_checks=2), opinion)
    detection = [Face(BOX, 0.9, keypoints=FRONTAL)]
    assert run_gate(gate, [detection, detection]) == [False, True]
    # The detector did not find it this round: the tracker's guess of where it went is not restored.
    assert run_gate(gate, [[], None, detection]) == [False, False, True]
    opinion.score = 0.0  # the tracker jumped onto the back of a head beside the face
    assert run_gate(gate, [detection, None]) == [False, False]
    opinion.score = 1.0  # back on the face: 3 of its last 4 checks passed
    assert run_gate(gate, [detection]) == [True]
    opinion.score = 0.0
    assert run_gate(gate, [detection, detection, detection]) == [False, False, False]
    opinion.score = 1.0  # its last 4 checks must again be mostly passes
    assert run_gate(gate, [detection, detection, detection]) == [False, False, True]
    assert opinion.calls == 11  # one second opinion per detection round the track was found in


def test_a_disabled_gate_restores_everything():
    gate = RestoreGate(GateOptions(enabled=False))
    assert run_gate(gate, [[Face(BOX, 0.1)]]) == [True]


def test_retinaface_confirms_real_faces_and_rejects_every_distractor():
    require_faces()  # the scenes' faces are CelebA photos
    from samples.distractors import KINDS, distractor_scene
    from streamer.retinaface import RetinaFaceModel

    model = RetinaFaceModel()
    threshold = GateOptions().second_opinion_min_score
    rejected = {kind: 0 for kind in KINDS}
    confirmed = total_faces = 0
    for index in range(24):
        scene = distractor_scene(index)
        boxes = scene.faces + [box for _, box in scene.distractors]
        scores = model.face_scores(scene.image, boxes)
        face_scores, distractor_scores = scores[: len(scene.faces)], scores[len(scene.faces) :]
        confirmed += sum(score >= threshold for score in face_scores)
        total_faces += len(scene.faces)
        for (kind, _), score in zip(scene.distractors, distractor_scores):
            rejected[kind] += score < threshold
    assert confirmed == total_faces
    assert rejected == {kind: 24 for kind in KINDS}


def test_a_face_the_tracker_lost_and_found_again_keeps_its_checks():
    gate = RestoreGate(GateOptions(confirm_checks=2), FixedOpinion(1.0))
    detection = [Face(BOX, 0.9, keypoints=FRONTAL)]
    assert run_gate(gate, [detection, detection]) == [False, True]
    gate.review(IMAGE, [], [])  # the detector missed it until the tracker dropped the track
    found_again = gate.review(IMAGE, detection, [Face(BOX, 0.9, track_id=2)])
    elsewhere = gate.review(IMAGE, [Face(Box(200, 150, 40, 40), 0.9)], [Face(Box(200, 150, 40, 40), 0.9, track_id=3)])
    assert found_again[0].verified and not elsewhere[0].verified


def test_faces_too_large_to_restore_are_not_judged():
    opinion = FixedOpinion(1.0)
    gate = RestoreGate(GateOptions(max_face_px=30), opinion)
    detection = [Face(BOX, 0.9)]  # 40 px
    assert run_gate(gate, [detection, detection]) == [None, None]
    assert opinion.calls == 0  # no second opinion spent on a face that will keep its pixels anyway
