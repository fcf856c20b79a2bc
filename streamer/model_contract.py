"""The contract between the face restorer model and the code that feeds it.

Training (training/) and the pipeline (streamer/) both import this module, so a face is
cropped, resized and normalised in exactly one way. The model is a TorchScript file whose
extra file `restorer.json` holds a RestorerSpec.

Contract v2: a model sees `frames` = K consecutive crops of one track (default 1).
- K == 1: `forward(x)` maps N x 3 x S x S float32 RGB in [0, 1] to N x 3 x S_out x S_out.
- K > 1: `forward(x)` takes N x K x 3 x S x S, frames oldest first, each cut with that frame's own
  crop box (the tracker's box), and returns the restored frame `target_index` (default K - 1, the
  newest: a live stream is causal), N x 3 x S_out x S_out.
S_out is `output_size` (default S); a model larger than its input super-resolves.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
import torch

from streamer.errors import UserError
from streamer.values import Box

SPEC_FILE_NAME = "restorer.json"

Region = tuple[int, int, int, int]  # (x0, y0, x1, y1): a face box in a crop's pixels, slice ends


MAX_FRAMES = 16


class ContractError(UserError, ValueError):
    """A model file or its metadata breaks the restorer contract."""


@dataclass(frozen=True)
class RestorerSpec:
    input_size: int  # S: the model sees S x S crops
    crop_scale: float  # crop side = crop_scale x the detector's face box side, centred on the box
    color_order: str = "RGB"
    value_range: tuple[float, float] = (0.0, 1.0)
    # Facts about how the weights were made: data, licence, degradations, validation metrics.
    training: dict = field(default_factory=dict)
    frames: int = 1  # K: crops of one track per restored face, oldest first
    target_index: int | None = None  # which of the K frames is restored; None: K - 1 (the newest)
    output_size: int | None = None  # S_out; None: input_size

    def __post_init__(self) -> None:
        if not (isinstance(self.input_size, int) and 16 <= self.input_size <= 512):
            raise ContractError(f"input_size must be an int in [16, 512], got {self.input_size!r}")
        if not (isinstance(self.frames, int) and not isinstance(self.frames, bool) and 1 <= self.frames <= MAX_FRAMES):
            raise ContractError(f"frames must be an int in [1, {MAX_FRAMES}], got {self.frames!r}")
        if self.target_index is None:
            object.__setattr__(self, "target_index", self.frames - 1)
        if not (isinstance(self.target_index, int) and 0 <= self.target_index < self.frames):
            raise ContractError(
                f"target_index must be an int in [0, {self.frames - 1}] (frames - 1), got {self.target_index!r}"
            )
        if self.output_size is None:
            object.__setattr__(self, "output_size", self.input_size)
        if not (isinstance(self.output_size, int) and 16 <= self.output_size <= 1024):
            raise ContractError(f"output_size must be an int in [16, 1024], got {self.output_size!r}")
        if not (1.0 <= float(self.crop_scale) <= 4.0):
            raise ContractError(f"crop_scale must be in [1, 4], got {self.crop_scale!r}")
        if self.color_order != "RGB":
            raise ContractError(f"color_order must be 'RGB', got {self.color_order!r}")
        if tuple(self.value_range) != (0.0, 1.0):
            raise ContractError(f"value_range must be [0, 1], got {list(self.value_range)!r}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One face's model input: (3, S, S), or (K, 3, S, S) for a K-frame model."""
        size = self.input_size
        return (3, size, size) if self.frames == 1 else (self.frames, 3, size, size)

    @property
    def crops_shape(self) -> tuple[int, ...]:
        """One face's uint8 pixels as `restore` takes them: (S, S, 3), or (K, S, S, 3)."""
        size = self.input_size
        return (size, size, 3) if self.frames == 1 else (self.frames, size, size, 3)

    def to_json(self) -> str:
        data = asdict(self)
        data["value_range"] = list(self.value_range)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> RestorerSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContractError(f"{SPEC_FILE_NAME} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ContractError(f"{SPEC_FILE_NAME} must hold a JSON object")
        missing = {"input_size", "crop_scale"} - data.keys()
        if missing:
            raise ContractError(f"{SPEC_FILE_NAME} lacks {sorted(missing)}")
        known = {
            "input_size",
            "crop_scale",
            "color_order",
            "value_range",
            "training",
            "frames",
            "target_index",
            "output_size",
        }
        unknown = set(data) - known
        if unknown:
            raise ContractError(f"{SPEC_FILE_NAME} has unknown keys {sorted(unknown)}")
        data["value_range"] = tuple(float(v) for v in data.get("value_range", (0.0, 1.0)))
        return cls(**data)


def square_crop_box(face: Box, crop_scale: float) -> Box:
    """The square region the model sees for a face: side = crop_scale x the box's longer side,
    centred on the box, snapped to whole pixels (so crop and paste-back agree exactly)."""
    side = max(1, int(round(crop_scale * max(face.w, face.h))))
    cx, cy = face.center
    return Box(float(int(round(cx - side / 2.0))), float(int(round(cy - side / 2.0))), float(side), float(side))


def face_region_in_crop(face: Box, crop_box: Box, size: int) -> Region:
    """The face box in the pixels of an S x S crop cut from `crop_box` (for a square box, the
    central 1/crop_scale of the crop: the face without the margin of hair and background).

    Rounded to whole pixels and clipped to the crop, so it always holds at least one pixel."""
    scale = size / crop_box.w
    x0 = round((face.x - crop_box.x) * scale)
    y0 = round((face.y - crop_box.y) * scale)
    x1 = round((face.x + face.w - crop_box.x) * scale)
    y1 = round((face.y + face.h - crop_box.y) * scale)
    x0, y0 = min(max(0, x0), size - 1), min(max(0, y0), size - 1)
    return x0, y0, max(x0 + 1, min(size, x1)), max(y0 + 1, min(size, y1))


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size: area averaging when shrinking (no aliasing), bicubic when enlarging.

    This is the one resize between frame pixels and model pixels, used by training's degradation
    too, so the model learns exactly the upscaling the pipeline applies."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image.copy()
    interpolation = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interpolation)


def cut_square(image: np.ndarray, square: Box) -> np.ndarray:
    """The pixels of `square` at native resolution; parts outside the image repeat its border.

    A square wholly outside the image (a tracked face carried past the edge) repeats the nearest
    edge pixels rather than failing, so every face always yields a crop."""
    h, w = image.shape[:2]
    x0, y0, side = int(square.x), int(square.y), int(square.w)
    xs, ys = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
    xe, ye = max(min(x0 + side, w), xs + 1), max(min(y0 + side, h), ys + 1)
    pad_left = min(max(0, xs - x0), side - (xe - xs))
    pad_top = min(max(0, ys - y0), side - (ye - ys))
    pad_right, pad_bottom = side - pad_left - (xe - xs), side - pad_top - (ye - ys)
    inside = image[ys:ye, xs:xe]
    if pad_left or pad_top or pad_right or pad_bottom:
        inside = cv2.copyMakeBorder(inside, pad_top, pad_bottom, pad_left, pad_right, cv2.BORDER_REPLICATE)
    return np.ascontiguousarray(inside)


def extract_crop(image: np.ndarray, square: Box, size: int) -> np.ndarray:
    """The model's input for one face: `square` cut from `image` and resized to size x size."""
    return resize_square(cut_square(image, square), size)


def crops_to_batch(pixels: torch.Tensor) -> torch.Tensor:
    """N x S x S x 3 uint8 crops -> the model's N x 3 x S x S float32 input in [0, 1]."""
    return pixels.permute(0, 3, 1, 2).float().div_(255.0)


def windows_to_batch(pixels: torch.Tensor) -> torch.Tensor:
    """N x K x S x S x 3 uint8 windows of crops -> a K-frame model's N x K x 3 x S x S float32 input in [0, 1]."""
    return pixels.permute(0, 1, 4, 2, 3).float().div_(255.0)


def pixels_to_batch(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 crops (N x S x S x 3) or windows (N x K x S x S x 3) -> the model's float input."""
    return windows_to_batch(pixels) if pixels.ndim == 5 else crops_to_batch(pixels)


def batch_to_crops(batch: torch.Tensor) -> torch.Tensor:
    """The model's N x 3 x S x S output -> N x S x S x 3 uint8 crops (clipped, rounded half up)."""
    return (batch.float().clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
