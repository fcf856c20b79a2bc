"""Small TorchScript restorers for tests, saved with (or without) restorer.json.

`save_model(kind, path)` writes one of KINDS: models that keep the contract ("identity",
"brighten", "checker") and models that break it in one way each.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from streamer.model_contract import SPEC_FILE_NAME, RestorerSpec

TEST_INPUT_SIZE = 32
TEST_CROP_SCALE = 2.0
BRIGHTEN_BY = 0.2
CHECKER_AMPLITUDE, CHECKER_SQUARE_PX = 0.2, 4


class Identity(nn.Module):
    """A 1x1 convolution with identity weights: exact in float32, and it has weights to move."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Brighten(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.amount = BRIGHTEN_BY  # an attribute: TorchScript cannot read a module-level float

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x + self.amount, 0.0, 1.0)


class Checker(nn.Module):
    """Changes every face visibly but not its brightness: +-CHECKER_AMPLITUDE in a checkerboard of
    CHECKER_SQUARE_PX squares (large enough to survive upscaling and H.264), so the compositor's
    keep_brightness (which undoes a change of a face's mean) leaves the change in place."""

    def __init__(self) -> None:
        super().__init__()
        self.amplitude, self.square = CHECKER_AMPLITUDE, CHECKER_SQUARE_PX

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(x.shape[2], device=x.device) // self.square
        cols = torch.arange(x.shape[3], device=x.device) // self.square
        signs = ((rows[:, None] + cols[None, :]) % 2).to(x.dtype) * 2.0 - 1.0
        return torch.clamp(x + self.amplitude * signs, 0.0, 1.0)


class HalfSize(nn.Module):
    """Breaks the contract: returns N x 3 x S/2 x S/2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(x, 2)


class FixedInput16(nn.Module):
    """Breaks the contract when its spec says another size: a linear layer fixes the input at 16 px."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * 16 * 16, 3 * 16 * 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1)).reshape(x.shape)


class Bytes(nn.Module):
    """Breaks the contract: answers in [0, 255] instead of [0, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 255.0


class WindowOldest(nn.Module):
    """A K-frame model (contract v2): N x K x 3 x S x S -> the window's oldest frame, N x 3 x S x S."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


class Upscale2x(nn.Module):
    """A super-resolving model: N x 3 x S x S -> N x 3 x 2S x 2S (nearest)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")


KINDS = {
    "identity": Identity,
    "brighten": Brighten,
    "checker": Checker,
    "half_size": HalfSize,
    "fixed_input_16": FixedInput16,
    "bytes": Bytes,
    "window_oldest": WindowOldest,
    "upscale_2x": Upscale2x,
}


def make_spec(input_size: int = TEST_INPUT_SIZE, **v2: int) -> RestorerSpec:
    """A test spec; `v2`: frames, target_index, output_size."""
    return RestorerSpec(
        input_size=input_size, crop_scale=TEST_CROP_SCALE, training={"data": "none: a test model"}, **v2
    )


def save_model(kind: str, path: Path, spec: RestorerSpec | str | None = None, with_spec: bool = True) -> Path:
    """Script a KINDS model and save it to `path`, with restorer.json (`spec`, or raw JSON text
    to test bad metadata; default make_spec()) unless `with_spec` is False."""
    module = torch.jit.script(KINDS[kind]().eval())
    spec_json = spec if isinstance(spec, str) else (spec or make_spec()).to_json()
    extra_files = {SPEC_FILE_NAME: spec_json} if with_spec else {}
    torch.jit.save(module, str(path), _extra_files=extra_files)
    return path
