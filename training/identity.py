"""Identity distance: how far a restored face has drifted from the person in the clean face.

Embeddings come from dlib's ResNet face-recognition model (128-d, trained so that two photos of
one person lie < 0.6 apart) shipped in the `face-recognition-models` package, run by `dlib-bin`
(a prebuilt dlib wheel); both work offline.

Every image compared with one clean face is aligned with the *clean face's* landmarks: all
images are upscaled the same way (bicubic, `UPSCALE` x), the 5-point landmarks are found once
on the clean face inside its face box, and the same aligned chip is cut from each image. So a
restored face is never helped or hurt by a landmark detector that fails on a blurry input; only
its pixels differ.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from training.metrics import Region

# 64-px crops are upscaled before alignment; dlib's chips are 150 px, its landmark model wants
# faces of roughly that size.
UPSCALE = 4
_CHIP_SIZE = 150
_CHIP_PADDING = 0.25
_RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
_LANDMARK_MODEL = "shape_predictor_5_face_landmarks.dat"


class IdentityModelError(RuntimeError):
    """The face-embedding packages are missing or their model files cannot be read."""


class FaceEmbedder:
    """dlib face embeddings of images aligned on one reference face. Load with `FaceEmbedder.load()`."""

    def __init__(self, landmark_model, recognition_model, dlib_module) -> None:
        self._landmarks = landmark_model
        self._recognition = recognition_model
        self._dlib = dlib_module

    @classmethod
    def load(cls) -> FaceEmbedder:
        try:
            import dlib
        except ImportError:
            raise IdentityModelError("dlib is not installed: pip install dlib-bin (see requirements.txt)") from None
        models = _model_folder()
        try:
            landmark_model = dlib.shape_predictor(str(models / _LANDMARK_MODEL))
            recognition_model = dlib.face_recognition_model_v1(str(models / _RECOGNITION_MODEL))
        except RuntimeError as exc:
            raise IdentityModelError(f"cannot read the dlib face models in {models}: {exc}") from None
        return cls(landmark_model, recognition_model, dlib)

    def reference(self, clean: np.ndarray, face_region: Region) -> AlignedReference:
        """Landmarks and embedding of a clean crop; `face_region` = (x0, y0, x1, y1), its face box in crop pixels."""
        image = _upscale(clean)
        x0, y0, x1, y1 = (UPSCALE * v for v in face_region)
        landmarks = self._landmarks(image, self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1))
        return AlignedReference(landmarks, self._embed([image], landmarks)[0])

    def distances(self, reference: AlignedReference, images: list[np.ndarray]) -> np.ndarray:
        """Euclidean embedding distance from the reference face to each image (crops of the clean crop's size)."""
        embeddings = self._embed([_upscale(image) for image in images], reference.landmarks)
        return np.linalg.norm(embeddings - reference.embedding, axis=1)

    def _embed(self, images: list[np.ndarray], landmarks) -> np.ndarray:
        chips = [self._dlib.get_face_chip(image, landmarks, size=_CHIP_SIZE, padding=_CHIP_PADDING) for image in images]
        return np.asarray(self._recognition.compute_face_descriptor(chips))


@dataclass(frozen=True)
class AlignedReference:
    """A clean face's 5-point landmarks (in upscaled pixels) and its 128-d embedding."""

    landmarks: object  # dlib.full_object_detection
    embedding: np.ndarray


def distances_to_clean(
    cleans: np.ndarray, regions: list[Region], candidates: list[list[np.ndarray]], workers: int = 2
) -> np.ndarray:
    """N x K identity distances: face i's clean crop against each of its K candidate crops.

    dlib holds Python's GIL while it computes, so the faces are shared among `workers` processes
    (each loads the model once)."""
    jobs = zip(cleans, regions, candidates)
    context = multiprocessing.get_context("spawn")  # a fork of a process running torch may deadlock
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_load_worker_embedder) as pool:
        return np.array(list(pool.map(_worker_distances, jobs, chunksize=8)))


_worker_embedder: FaceEmbedder | None = None  # one per worker process, loaded by its initializer


def _load_worker_embedder() -> None:
    global _worker_embedder
    _worker_embedder = FaceEmbedder.load()


def _worker_distances(job: tuple[np.ndarray, Region, list[np.ndarray]]) -> np.ndarray:
    clean, region, candidates = job
    return _worker_embedder.distances(_worker_embedder.reference(clean, region), candidates)


def _upscale(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    return cv2.resize(image, (UPSCALE * width, UPSCALE * height), interpolation=cv2.INTER_CUBIC)


def _model_folder() -> Path:
    """The folder of the face-recognition-models package's .dat files.

    Found without importing the package: its __init__ imports pkg_resources, which setuptools
    >= 81 no longer ships."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise IdentityModelError(
            "face-recognition-models is not installed: pip install face-recognition-models (see requirements.txt)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"
