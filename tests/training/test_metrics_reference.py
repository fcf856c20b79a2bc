"""Training's SSIM against scikit-image's reference implementation, on real pictures; the shipped model
against the hash its recorded scores belong to."""

from __future__ import annotations

import hashlib
import json
import threading

import cv2
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from streamer import REPO_ROOT
from streamer.sources import open_source
from training import metrics
from training.evaluate import BASELINE_FILE, DEFAULT_MODEL


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    """A real CCTV frame: the bundled sample's 40th (people, walls, text), 640 x 360."""
    with open_source(str(REPO_ROOT / "samples" / "demo_cctv.mp4"), "ssim") as source:
        for frame in source.frames(threading.Event()):
            if frame.index == 40:
                return frame.image
    raise AssertionError("the sample has fewer than 41 frames")


def damaged(image: np.ndarray, how: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    if how == "blur":
        return cv2.GaussianBlur(image, (0, 0), 1.5)
    if how == "noise":
        return np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    if how == "jpeg":
        _, coded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 15])
        return cv2.imdecode(coded, cv2.IMREAD_UNCHANGED)
    if how == "darker":
        return (image * 0.7).astype(np.uint8)
    raise ValueError(how)


@pytest.mark.parametrize("how", ["blur", "noise", "jpeg", "darker"])
# 96-128 px patches: the size of the face regions scored (the torch SSIM is slow on a whole frame)
@pytest.mark.parametrize("region", [(200, 60, 328, 188), (420, 200, 516, 296)])
def test_ssim_matches_scikit_image(picture, how, region):
    other = damaged(picture, how)
    _, ours = metrics.face_scores(other, picture, region)
    x0, y0, x1, y1 = region
    reference = structural_similarity(
        picture[y0:y1, x0:x1],
        other[y0:y1, x0:x1],
        channel_axis=2,
        data_range=255,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,  # Wang et al. 2004, as training's
    )
    assert ours == pytest.approx(reference, abs=1e-6)  # the same formula: equal to float precision
    assert ours < 0.999  # the damage is visible to both


def test_the_shipped_model_is_the_one_its_recorded_scores_belong_to():
    recorded = json.loads(BASELINE_FILE.read_text())["model_sha256"]
    assert hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest() == recorded, (
        f"{DEFAULT_MODEL} changed without re-measuring {BASELINE_FILE} (python -m training.evaluate --update-baseline)"
    )
