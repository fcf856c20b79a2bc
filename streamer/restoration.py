"""Face restoration: a TorchScript model that follows streamer.model_contract, batched.

`TorchScriptRestorer.load` checks the contract before the first frame: the file is TorchScript,
it carries restorer.json, and a dummy batch (N x 3 x S x S, or N x K x 3 x S x S for a K-frame
model) comes back as N x 3 x S_out x S_out, finite, in about [0, 1]. A model that breaks it is a
one-line ContractError or ModelLoadError naming the file. `restore` takes any number of crops (or
K-frame windows of crops) and runs them in batches of at most `max_batch`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from streamer.config import RestorationConfig
from streamer.errors import UserError
from streamer.model_contract import (
    SPEC_FILE_NAME,
    ContractError,
    RestorerSpec,
    batch_to_crops,
    extract_crop,
    pixels_to_batch,
    square_crop_box,
)
from streamer.values import Face

logger = logging.getLogger(__name__)

# The dummy batch's output may overshoot [0, 1] a little (it is clipped); more means another range.
OUTPUT_RANGE_SLACK = 0.25
CHECK_BATCH = 2
_DEFAULTS = RestorationConfig()  # the schema's defaults (config.py holds them all)


class ModelLoadError(UserError, RuntimeError):
    """The restorer model file cannot be read or run here (missing, not TorchScript, no CUDA)."""


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX); elsewhere bf16
    autocast is emulated and slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ModelLoadError(f"restorer device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("restorer device 'cuda' requested but CUDA is not available here")
    return torch.device(device)


class TorchScriptRestorer:
    """Runs a contract-checked TorchScript restorer on CPU or CUDA. Not thread-safe: one thread
    (the pipeline's restorer thread) calls `restore`."""

    def __init__(
        self,
        module: torch.jit.ScriptModule,
        spec: RestorerSpec,
        device: torch.device,
        half: bool = False,
        bf16_autocast: bool = False,
        max_batch: int = _DEFAULTS.batch_size,
    ) -> None:
        self.spec = spec
        self.device = device
        self.max_batch = max_batch
        self._module = module
        self._half = half
        self._bf16_autocast = bf16_autocast
        self._pinned_in: torch.Tensor | None = None
        self._pinned_out: torch.Tensor | None = None

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str = _DEFAULTS.device,
        fp16: bool = _DEFAULTS.fp16,
        bf16: bool = _DEFAULTS.bf16,
        threads: int | None = None,
        max_batch: int = _DEFAULTS.batch_size,
    ) -> TorchScriptRestorer:
        """Load and check a restorer. fp16 applies on CUDA only, bf16 (autocast) on CPUs with
        native bf16 only. `threads` sets torch's intra-op threads for the whole process."""
        path = Path(path)
        target = resolve_device(device)
        if threads:
            torch.set_num_threads(threads)
        module, spec = _read_model(path, target)
        half = fp16 and target.type == "cuda"
        if target.type == "cuda":
            module = module.half() if half else module
        else:
            module = module.to(memory_format=torch.channels_last)
        bf16_autocast = bf16 and target.type == "cpu" and cpu_supports_bf16()
        if bf16 and not bf16_autocast:
            logger.warning("bf16 requested but this device has no native bf16: running float32")
        restorer = cls(module, spec, target, half, bf16_autocast, max_batch)
        restorer._check_contract(path)
        logger.info(
            "restorer %s: input %d px, %d frame(s), output %d px, crop_scale %.2f, on %s%s",
            path,
            spec.input_size,
            spec.frames,
            spec.output_size,
            spec.crop_scale,
            target,
            " fp16" if half else " bf16" if bf16_autocast else "",
        )
        return restorer

    def _check_contract(self, path: Path) -> None:
        """Run a dummy batch; the output must be the input's shape, finite, in about [0, 1]."""
        generator = torch.Generator().manual_seed(0)
        dummy = torch.rand((CHECK_BATCH, *self.spec.input_shape), generator=generator)
        try:
            output = self._forward(dummy.to(self.device))
        except Exception as exc:  # a model may raise anything from its forward
            raise ContractError(
                f"{path}: forward fails on a {_shape(dummy)} batch (frames={self.spec.frames}): {_first_line(exc)}"
            ) from None
        if not isinstance(output, torch.Tensor) or not output.is_floating_point():
            raise ContractError(f"{path}: forward must return a float tensor, got {_describe(output)}")
        expected = (CHECK_BATCH, 3, self.spec.output_size, self.spec.output_size)
        if tuple(output.shape) != expected:
            raise ContractError(
                f"{path}: output shape {_shape(output)} for a {_shape(dummy)} input; restorer.json "
                f"(frames={self.spec.frames}, output_size={self.spec.output_size}) asks for "
                f"{' x '.join(map(str, expected))}"
            )
        low, high = float(output.min()), float(output.max())
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ContractError(f"{path}: output has non-finite values")
        if low < -OUTPUT_RANGE_SLACK or high > 1.0 + OUTPUT_RANGE_SLACK:
            raise ContractError(f"{path}: output range [{low:.3g}, {high:.3g}] is not about [0, 1]")

    def restore(self, crops: np.ndarray) -> np.ndarray:
        shape = self.spec.crops_shape
        if crops.shape[1:] != shape or crops.dtype != np.uint8:
            raise ValueError(
                f"restore: expected N x {' x '.join(map(str, shape))} uint8 crops, got {crops.shape} {crops.dtype}"
            )
        if len(crops) == 0:
            out = self.spec.output_size
            return np.empty((0, out, out, 3), np.uint8)
        starts = range(0, len(crops), self.max_batch)
        return np.concatenate([self._restore_batch(crops[start : start + self.max_batch]) for start in starts])

    def _restore_batch(self, crops: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            if self.device.type == "cuda":
                return self._restore_on_cuda(crops)
            pixels = torch.from_numpy(np.ascontiguousarray(crops))
            return batch_to_crops(self._forward(pixels_to_batch(pixels))).numpy()

    def _restore_on_cuda(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops go up (4x smaller than float) from pinned memory, asynchronously; the
        float conversion runs on the GPU; the stream is synchronised before the host reads."""
        count = len(crops)
        pinned_in, pinned_out = self._pinned_buffers()
        pinned_in[:count].numpy()[...] = crops
        pixels = pinned_in[:count].to(self.device, non_blocking=True)
        pinned_out[:count].copy_(batch_to_crops(self._forward(pixels_to_batch(pixels))), non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        return pinned_out[:count].numpy().copy()

    def _pinned_buffers(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._pinned_in is None:
            out = self.spec.output_size
            self._pinned_in = torch.empty((self.max_batch, *self.spec.crops_shape), dtype=torch.uint8).pin_memory()
            self._pinned_out = torch.empty((self.max_batch, out, out, 3), dtype=torch.uint8).pin_memory()
        return self._pinned_in, self._pinned_out

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """The model's float output for a float batch on its device (training's export compares it
        with the trained model: the file checked is the file as the pipeline loads it)."""
        return self._forward(batch.to(self.device))

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """N x 3 x S x S (or N x K x 3 x S x S) float32 in [0, 1] on the device -> the model's float32 output."""
        with torch.inference_mode():
            if self._half:
                return self._module(batch.half()).float()
            if self.device.type == "cpu" and batch.ndim == 4:
                batch = batch.contiguous(memory_format=torch.channels_last)
            if self._bf16_autocast:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return self._module(batch).float()
            return self._module(batch)


def _read_model(path: Path, device: torch.device) -> tuple[torch.jit.ScriptModule, RestorerSpec]:
    if not path.is_file():
        raise ModelLoadError(f"restorer model not found: {path}")
    extra_files = {SPEC_FILE_NAME: ""}
    try:
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra_files)
    except Exception:  # torch raises RuntimeError, ValueError or its own errors here
        logger.debug("torch.jit.load(%s) failed", path, exc_info=True)  # torch's own words, for --verbose
        raise ModelLoadError(f"{path}: not a TorchScript model (torch cannot load it)") from None
    metadata = extra_files[SPEC_FILE_NAME]
    if not metadata:
        raise ContractError(f"{path}: no {SPEC_FILE_NAME} in the model's extra files (save it with _extra_files)")
    try:
        spec = RestorerSpec.from_json(metadata)
    except (ValueError, TypeError) as exc:  # ContractError is a ValueError
        raise ContractError(f"{path}: {_first_line(exc)}") from None
    return module.eval(), spec


def prepare_crops(image: np.ndarray, faces: Sequence[Face], spec: RestorerSpec, max_face_px: float = 0) -> list[Face]:
    """The faces with `crop_box` (the square the model sees) and `crop` (its S x S pixels) set.

    A face wider or taller than `max_face_px` (when > 0) is returned without a crop, so it keeps
    its own pixels: the model's output holds a face only S / crop_scale pixels wide, and pasting
    it over a larger face would blur it."""
    prepared = []
    for face in faces:
        if max_face_px > 0 and max(face.box.w, face.box.h) > max_face_px:
            prepared.append(face)
            continue
        crop_box = square_crop_box(face.box, spec.crop_scale)
        crop = extract_crop(image, crop_box, spec.input_size)
        prepared.append(dataclasses.replace(face, crop_box=crop_box, crop=crop))
    return prepared


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _shape(tensor: torch.Tensor) -> str:
    return " x ".join(str(dim) for dim in tensor.shape)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor"
    return type(value).__name__
