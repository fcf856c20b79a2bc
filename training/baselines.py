"""The baselines a restorer must beat, as functions of the model's input crops.

Every restorer here maps N x S x S x 3 uint8 RGB crops (the degraded model input, i.e. the
contract's crop of a CCTV face, which `resize_square` already upscaled bicubically) to crops of
the same shape.

- `bicubic`: the input itself. The contract's crop of a small face *is* its bicubic upscaling,
  so "bicubic" is what the pipeline would show without a model.
- `seed_preprocessing`: the seed notebook's enhancement, gamma 0.8 then OpenCV's non-local-means
  colour denoiser, applied to the crop. The seed applied it before resizing; applied after the
  bicubic upscaling here, because the evaluation pairs hold the upscaled input only (the
  denoiser then sees noise grains ~S/face_px px wide, which its 7 x 7 patches still cover).
- The seed's *architecture* trained on our pairs is a TorchScript model like ours
  (`SEED_ARCH_MODEL`), so it needs no code here. It was made with

      python -m training.train --config training/configs/seed.yaml --minutes 30 --out runs/seed_baseline
      python -m training.train --config training/configs/seed.yaml --init-from runs/seed_baseline/best.pt \
          --minutes 10 --seed 1 --variants 16 --out runs/seed_stage2
      python -m training.export --run runs/seed_stage2 --out models/baselines/seed_autoencoder.ts

  The same cached pairs, loss, optimiser, batch size and best-validation-PSNR checkpoint rule as
  the shipped model: 30 minutes on stage-1 pairs (10,292 steps of 16), then 10 minutes on the
  shipped model's stage-2 pairs (two-sided exposure), against the shipped model's 12 + 75 + 85.
  Its validation PSNR (moderate) reached 22.0 dB by step ~2,300 of the first run and stayed at
  21.6-22.2 dB after; in the second it rose from 21.97 to 22.24 dB within 5 minutes and stayed
  there, so a longer budget would not change the row.
"""

from __future__ import annotations

import cv2
import numpy as np

from streamer import REPO_ROOT

SEED_ARCH_MODEL = REPO_ROOT / "models" / "baselines" / "seed_autoencoder.ts"

# The seed's settings: exponent 0.8 on [0, 1] values (brightens the dark CCTV picture) and the
# denoiser's usual strengths h = hColor = 10 with 7-px patches searched over 21 px.
SEED_GAMMA = 0.8
SEED_DENOISE_STRENGTH = 10
SEED_TEMPLATE_WINDOW = 7
SEED_SEARCH_WINDOW = 21


def bicubic(crops: np.ndarray) -> np.ndarray:
    return crops.copy()


def seed_preprocessing(crops: np.ndarray) -> np.ndarray:
    lookup = np.clip((np.arange(256) / 255.0) ** SEED_GAMMA * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.stack([_seed_denoise(cv2.LUT(crop, lookup)) for crop in crops])


def _seed_denoise(crop: np.ndarray) -> np.ndarray:
    """OpenCV's colour NL-means on an RGB crop (the function converts from BGR to Lab, so flip around it)."""
    bgr = np.ascontiguousarray(crop[:, :, ::-1])
    denoised = cv2.fastNlMeansDenoisingColored(
        bgr, None, SEED_DENOISE_STRENGTH, SEED_DENOISE_STRENGTH, SEED_TEMPLATE_WINDOW, SEED_SEARCH_WINDOW
    )
    return np.ascontiguousarray(denoised[:, :, ::-1])
