"""Face restoration networks: ours (a residual U-Net) and the seed notebook's autoencoder.

Both map N x 3 x S x S float RGB in [0, 1] to the same shape (the model contract).

`RestorerUNet`: a pixel-unshuffle stem (2x2 pixels -> 12 channels, lossless, so the network
works at S/2 from its first layer and costs a quarter of a full-resolution one), three levels of
residual blocks (S/2, S/4, S/8), skip connections by addition, pixel-shuffle upsampling, and a
head that predicts a *residual* over the input: a face that needs no change costs no capacity.
The output is clamped to [0, 1] in eval mode (the exported model).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class UNetConfig:
    # Most capacity sits at S/4 and S/8, where a 3x3 conv costs 1/4 and 1/16 of one at S/2 and
    # sees a wider context (a 20-px face upscaled 3x needs the whole face); S/2 stays narrow.
    widths: tuple[int, int, int] = (32, 80, 128)  # channels at S/2, S/4, S/8
    encoder_blocks: tuple[int, int, int] = (1, 2, 3)  # residual blocks per level, top to bottom
    decoder_blocks: tuple[int, int] = (2, 1)  # after merging the skip at S/4 and at S/2


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


def _blocks(channels: int, count: int) -> nn.Sequential:
    return nn.Sequential(*[ResidualBlock(channels) for _ in range(count)])


class Upsample(nn.Module):
    """2x upsampling: a 1x1 conv to 4x the output channels, then pixel shuffle (no checkerboard)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels * 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), 2)


class RestorerUNet(nn.Module):
    """`frames` == 1: N x 3 x S x S -> N x 3 x S x S. `frames` == K > 1: N x K x 3 x S x S (a track's last
    K crops, oldest first) -> the restored frame `target_index`, N x 3 x S x S.

    Multi-frame fusion is early: the K frames, pixel-unshuffled, are the stem's K x 12 input
    channels, so fusing costs one wider first convolution; the residual is added to the target frame."""

    def __init__(self, config: UNetConfig = UNetConfig(), frames: int = 1, target_index: int = -1) -> None:
        super().__init__()
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.frames = frames
        self.target_index = target_index % frames
        w1, w2, w3 = config.widths
        e1, e2, e3 = config.encoder_blocks
        d2, d1 = config.decoder_blocks
        self.stem = nn.Conv2d(12 * frames, w1, 3, padding=1)
        self.enc1 = _blocks(w1, e1)
        self.down1 = nn.Conv2d(w1, w2, 3, stride=2, padding=1)
        self.enc2 = _blocks(w2, e2)
        self.down2 = nn.Conv2d(w2, w3, 3, stride=2, padding=1)
        self.mid = _blocks(w3, e3)
        self.up2 = Upsample(w3, w2)
        self.dec2 = _blocks(w2, d2)
        self.up1 = Upsample(w2, w1)
        self.dec1 = _blocks(w1, d1)
        self.head = nn.Conv2d(w1, 12, 3, padding=1)
        # Start as the identity map: the residual head begins at zero.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frames > 1:
            target = x[:, self.target_index]
            x = x.flatten(1, 2)  # N x K*3 x S x S: frame k's channels are 3k..3k+2
        else:
            target = x
        s1 = self.enc1(self.stem(F.pixel_unshuffle(x, 2)))
        s2 = self.enc2(self.down1(s1))
        y = self.mid(self.down2(s2))
        y = self.dec2(self.up2(y) + s2)
        y = self.dec1(self.up1(y) + s1)
        out = target + F.pixel_shuffle(self.head(y), 2)
        # Clamp only for inference: in training a clamp passes no gradient where the output
        # overshoots, and a step that pushes many pixels past [0, 1] can leave the net stuck there.
        return out if self.training else torch.clamp(out, 0.0, 1.0)


class SeedAutoencoder(nn.Module):
    """The seed notebook's network: conv32-pool-conv16-pool-conv16-up-conv32-up, the input
    concatenated, a 3-channel conv with a sigmoid. Kept as the baseline to beat."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv4 = nn.Conv2d(16, 32, 3, padding=1)
        self.out = nn.Conv2d(32 + 3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.max_pool2d(F.relu(self.conv1(x)), 2)
        y = F.max_pool2d(F.relu(self.conv2(y)), 2)
        y = F.relu(self.conv3(y))
        y = F.relu(self.conv4(F.interpolate(y, scale_factor=2.0, mode="nearest")))
        y = F.interpolate(y, scale_factor=2.0, mode="nearest")
        return torch.sigmoid(self.out(torch.cat([y, x], dim=1)))


# Named sizes: `unet` is the shipped model; `probe` is the earlier 0.56M-parameter probe (for
# speed comparisons); `tiny` is for --quick runs and tests.
UNET_SIZES: dict[str, UNetConfig] = {
    "unet": UNetConfig(),
    "probe": UNetConfig(widths=(32, 64, 96), encoder_blocks=(1, 2, 2), decoder_blocks=(1, 1)),
    "tiny": UNetConfig(widths=(16, 24, 32), encoder_blocks=(1, 1, 1), decoder_blocks=(1, 1)),
}
ARCHITECTURES = (*UNET_SIZES, "seed")


def build_model(arch: str, frames: int = 1, target_index: int = -1) -> nn.Module:
    """A fresh network by name: one of ARCHITECTURES; `frames` > 1 makes a multi-frame U-Net."""
    if arch == "seed":
        if frames != 1:
            raise ValueError("the seed architecture takes one frame")
        return SeedAutoencoder()
    if arch not in UNET_SIZES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    return RestorerUNet(UNET_SIZES[arch], frames, target_index)


def describe(arch: str, frames: int = 1, target_index: int = -1) -> dict:
    """Architecture facts for configs and model metadata."""
    model = build_model(arch, frames, target_index)
    facts = {"arch": arch, "parameters": count_parameters(model), "frames": frames}
    if arch in UNET_SIZES:
        facts["config"] = asdict(UNET_SIZES[arch])
        facts["target_index"] = target_index % frames
    return facts


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load `state` (e.g. a single-frame model's) into `model`; a stem that takes more frames than
    the state's gets the state's stem as its target frame's slice and zeros for the other frames,
    so a multi-frame model starts out as exactly the single-frame model it grows from."""
    own = model.state_dict()
    state = dict(state)
    stem = state.get("stem.weight")
    if stem is not None and own["stem.weight"].shape[1] != stem.shape[1] and isinstance(model, RestorerUNet):
        if own["stem.weight"].shape[1] != 12 * model.frames or stem.shape[1] != 12:
            raise ValueError(f"cannot grow a stem of {stem.shape[1]} input channels to {own['stem.weight'].shape[1]}")
        grown = torch.zeros_like(own["stem.weight"])
        t = model.target_index
        grown[:, 12 * t : 12 * (t + 1)] = stem
        state["stem.weight"] = grown
    model.load_state_dict(state)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
