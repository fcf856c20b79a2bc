"""Image-quality metrics on the face region of a model-sized crop.

The model sees an S x S crop whose side is `crop_scale` x the face box, so the outer margin is
background, hair and shoulders. Scores are computed on the *face region*: the detector's face
box mapped into crop pixels (`face_region_in_crop`), so a model is judged on the face, not on
the padded margin around it.

PSNR is over the RGB values of the region (8-bit peak 255). SSIM is the Gaussian-window SSIM of
Wang et al. (2004; 11 x 11 window, sigma 1.5, K1 = 0.01, K2 = 0.03) on each RGB channel,
averaged over channels and over the pixels of the region (the windows see the whole crop).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from streamer.values import Box

Region = tuple[int, int, int, int]  # (x0, y0, x1, y1): a face box in a crop's pixels, slice ends

# An exact copy has infinite PSNR; a cap keeps means over many faces finite.
PSNR_CAP_DB = 100.0

_SSIM_SIGMA = 1.5
_SSIM_WINDOW = 11
_SSIM_C1 = (0.01 * 255.0) ** 2
_SSIM_C2 = (0.03 * 255.0) ** 2


def face_region_in_crop(face: Box, crop_box: Box, size: int) -> Region:
    """The face box in the pixels of an S x S crop cut from `crop_box` (x0, y0, x1, y1; slice ends).

    Rounded to whole pixels and clipped to the crop, so it always holds at least one pixel."""
    scale = size / crop_box.w
    x0 = round((face.x - crop_box.x) * scale)
    y0 = round((face.y - crop_box.y) * scale)
    x1 = round((face.x + face.w - crop_box.x) * scale)
    y1 = round((face.y + face.h - crop_box.y) * scale)
    x0, y0 = min(max(0, x0), size - 1), min(max(0, y0), size - 1)
    return x0, y0, max(x0 + 1, min(size, x1)), max(y0 + 1, min(size, y1))


def cut_region(image: np.ndarray, region: Region) -> np.ndarray:
    x0, y0, x1, y1 = region
    return image[y0:y1, x0:x1]


def psnr(image: np.ndarray, truth: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images of one shape, in dB (capped at PSNR_CAP_DB)."""
    _check_same_shape(image, truth)
    mse = float(np.mean((image.astype(np.float64) - truth.astype(np.float64)) ** 2))
    if mse == 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(255.0**2 / mse))


def ssim(image: np.ndarray, truth: np.ndarray) -> float:
    """Mean structural similarity of two uint8 images of one shape (1.0 for identical images)."""
    return float(np.mean(ssim_map(image, truth)))


def ssim_map(image: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM (H x W x C float64), Gaussian window, reflected borders."""
    _check_same_shape(image, truth)
    x = image.astype(np.float64)
    y = truth.astype(np.float64)

    def blur(values: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(values, (_SSIM_WINDOW, _SSIM_WINDOW), _SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    numerator = (2.0 * mu_x * mu_y + _SSIM_C1) * (2.0 * cov + _SSIM_C2)
    denominator = (mu_x * mu_x + mu_y * mu_y + _SSIM_C1) * (var_x + var_y + _SSIM_C2)
    return numerator / denominator


def face_scores(image: np.ndarray, truth: np.ndarray, region: Region) -> tuple[float, float]:
    """(PSNR, SSIM) of `image` against `truth` on the face region of two crops.

    SSIM's windows see the whole crop (no artificial border at the region's edge); only the
    per-pixel scores inside the region are averaged."""
    return psnr(cut_region(image, region), cut_region(truth, region)), float(
        np.mean(cut_region(ssim_map(image, truth), region))
    )


def _check_same_shape(image: np.ndarray, truth: np.ndarray) -> None:
    if image.shape != truth.shape:
        raise ValueError(f"metrics: images differ in shape: {image.shape} vs {truth.shape}")
