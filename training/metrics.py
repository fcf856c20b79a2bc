"""Image-quality scores on the face region of a model-sized crop.

The model sees an S x S crop whose side is `crop_scale` x the face box, so its outer margin is
background, hair and shoulders. Scores are computed on the *face region*: the detector's face
box mapped into crop pixels (`face_region_in_crop`, from the model contract, which the pipeline
shares; for a square box, the central 1/crop_scale of the crop), so a model is judged on the
face, not on the padded margin around it.

The measures are training's own (`training.losses`), so evaluation and the validation PSNR
logged in training mean the same thing: PSNR over the RGB values of the region (capped at
100 dB for identical images), SSIM (Wang et al. 2004: 11 x 11 Gaussian window, sigma 1.5) over
the windows that lie inside the region, averaged over channels.
"""

from __future__ import annotations

import numpy as np
import torch

from streamer.model_contract import Region, face_region_in_crop  # noqa: F401 (the scores' region, re-exported)
from training.losses import psnr_per_image, ssim_per_image


def cut_region(image: np.ndarray, region: Region) -> np.ndarray:
    x0, y0, x1, y1 = region
    return image[y0:y1, x0:x1]


def face_scores(image: np.ndarray, truth: np.ndarray, region: Region) -> tuple[float, float]:
    """(PSNR in dB, SSIM) of a uint8 RGB crop against the truth crop, on the face region."""
    if image.shape != truth.shape:
        raise ValueError(f"face_scores: crops differ in shape: {image.shape} vs {truth.shape}")
    pred, target = _as_tensor(cut_region(image, region)), _as_tensor(cut_region(truth, region))
    return float(psnr_per_image(pred, target)[0]), float(ssim_per_image(pred, target)[0])


def _as_tensor(pixels: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 -> 1 x 3 x H x W float64 in [0, 1] (float64: PSNR of near-identical crops stays exact)."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].double() / 255.0
