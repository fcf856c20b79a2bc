"""Train a face restorer on cached (degraded, clean) pairs, within a wall-clock budget.

    python -m training.train --config training/configs/shipped.yaml      # the shipped model
    python -m training.train --config training/configs/seed.yaml         # the seed's architecture, same budget
    python -m training.train --quick --out /tmp/quick                    # a tiny model in about a minute

Everything that shapes the result is in `TrainConfig` and written to `<run>/config.yaml`.
The learning rate follows a cosine over the *time* budget (`--minutes`), so a run ends when
planned on a shared CPU whatever its speed. `<run>/last.pt` is saved every few minutes and a run
started again with the same `--out` resumes from it; `<run>/best.pt` keeps the weights with the
best validation PSNR (held-out identities, preset `val_preset`); `<run>/loss_curve.png` plots
training loss and validation PSNR against steps.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field

from streamer.config import ConfigError, load_validated
from training import data, tracks
from training.losses import RestorationLoss, psnr_per_image, ssim_per_image
from training.model import build_model, describe, load_weights_into

log = logging.getLogger(__name__)


class TrainConfig(BaseModel):
    """Training's settings, validated like the pipeline's config (streamer.config.load_validated): an unknown
    key, a wrong type or a value out of range is an error naming the file line or the flag."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "shipped"
    arch: str = "unet"  # training.model.ARCHITECTURES; "seed" is the seed notebook's autoencoder
    pairs: Literal["stills", "tracks"] = (
        "stills"  # "stills": one degraded crop per photo; "tracks": synthetic H.264 tracks (training/tracks.py)
    )
    frames: int = Field(
        1, ge=1, le=16
    )  # K frames the model sees (tracks only; a 1-frame model on tracks sees the target frame)
    track_frames: int = Field(5, ge=1, le=64)  # frames per cached track
    young_share: float = Field(
        0.0, ge=0.0, le=1.0
    )  # K-frame models: share of windows made a young track's (training.data.young_windows)
    input_size: int = Field(64, ge=8, le=1024)
    crop_scale: float = Field(1.5, ge=1.0, le=4.0)
    minutes: float = Field(75.0, gt=0)  # wall-clock budget of the whole run (resumes included)
    batch_size: int = Field(16, ge=1, le=4096)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    ema_decay: float = Field(
        0.999, ge=0.0, lt=1.0
    )  # validation, best.pt and export use an exponential moving average of the weights
    ssim_weight: float = Field(0.1, ge=0)  # loss = Charbonnier + ssim_weight x (1 - SSIM)
    variants: int = Field(12, ge=1)  # degraded copies of each training photo in the cache
    training_mix: dict[str, float] | None = None  # preset -> weight for the training pairs; None: degrade.TRAINING_MIX
    train_limit: int = Field(0, ge=0)  # use only the first N training photos (0: all)
    val_limit: int = Field(0, ge=0)  # use only the first N validation photos (0: all)
    val_preset: str = "moderate"
    val_every_s: float = Field(240.0, gt=0)
    checkpoint_every_s: float = Field(120.0, gt=0)
    log_every_steps: int = Field(50, ge=1)
    seed: int = 0
    threads: int = Field(2, ge=1, le=256)
    init_from: str = ""  # a checkpoint (.pt) whose model weights start this run (a fresh run only)
    cache_dir: str = str(data.DEFAULT_CACHE_DIR)
    out: str = "runs/shipped"


QUICK = dict(
    name="quick",
    arch="tiny",
    minutes=0.6,
    batch_size=16,
    lr=3e-3,
    warmup_steps=20,
    variants=1,
    train_limit=256,
    val_limit=48,
    val_every_s=8.0,
    checkpoint_every_s=15.0,
    log_every_steps=20,
    out="runs/quick",
)


def load_config(path: Path | None, overrides: dict) -> TrainConfig:
    """Defaults, then the YAML file, then command-line overrides, validated (streamer.config.ConfigError
    names the bad key's line or flag)."""
    flags = {key: (value, f"--{key.replace('_', '-')}") for key, value in overrides.items()}
    return load_validated(TrainConfig, path, flags)


# --- data --------------------------------------------------------------------------------------


def load_data(config: TrainConfig) -> tuple[data.PairBatches, tuple[torch.Tensor, torch.Tensor]]:
    split = data.split_records()
    train = split.train[: config.train_limit or None]
    val = split.val[: config.val_limit or None]
    cache = Path(config.cache_dir)
    if config.pairs == "tracks":
        spec = tracks.training_spec(config.track_frames)
        shards = tracks.training_track_shards(
            train,
            config.variants,
            config.input_size,
            config.crop_scale,
            cache,
            seed=config.seed,
            mix=config.training_mix,
            spec=spec,
        )
        inputs, targets = tracks.last_frames(*data.load_shards(shards), config.frames)
        val_in, val_tg = tracks.last_frames(
            *tracks.validation_tracks(
                val,
                config.val_preset,
                config.input_size,
                config.crop_scale,
                cache,
                spec=tracks.eval_spec(config.track_frames),
            ),
            config.frames,
        )
    elif config.pairs == "stills":
        shards = data.training_shards(
            train,
            config.variants,
            config.input_size,
            config.crop_scale,
            cache,
            seed=config.seed,
            mix=config.training_mix,
        )
        inputs, targets = data.load_shards(shards)
        val_in, val_tg = data.validation_pairs(val, config.val_preset, config.input_size, config.crop_scale, cache)
    else:
        raise ValueError(f"pairs must be 'stills' or 'tracks', got {config.pairs!r}")
    log.info(
        "training %s: %d from %d photos (%d identities held out), %d frame(s) each",
        config.pairs,
        len(inputs),
        len(train),
        len(split.val_identities),
        config.frames,
    )
    batches = data.PairBatches(inputs, targets, config.batch_size, seed=config.seed, young_share=config.young_share)
    return batches, (data.to_tensor(val_in), data.to_tensor(val_tg))


# --- evaluation --------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: torch.nn.Module | None = None,
    batch_size: int = 64,
) -> dict:
    """Mean PSNR/SSIM of the model's output and of its input (bicubic) against the targets."""
    was_training = model.training
    model.eval()
    outputs = torch.cat([model(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)])
    model.train(was_training)
    if inputs.ndim == 5:  # a window of frames: bicubic is the newest (target) frame
        inputs = inputs[:, -1]
    result = {
        "psnr": float(psnr_per_image(outputs, targets).mean()),
        "ssim": float(ssim_per_image(outputs, targets).mean()),
        "bicubic_psnr": float(psnr_per_image(inputs, targets).mean()),
        "bicubic_ssim": float(ssim_per_image(inputs, targets).mean()),
    }
    if loss_fn is not None:
        result["loss"] = float(loss_fn(outputs, targets))
    return result


# --- the training state ------------------------------------------------------------------------


@dataclass
class RunState:
    step: int = 0
    elapsed_s: float = 0.0
    best_psnr: float = -math.inf
    train_history: list = None  # [{"step", "loss"}]
    val_history: list = None  # [{"step", "elapsed_s", "psnr", "ssim", "loss", ...}]

    def __post_init__(self) -> None:
        self.train_history = self.train_history or []
        self.val_history = self.val_history or []


def learning_rate(config: TrainConfig, state: RunState) -> float:
    """Linear warm-up, then a cosine that reaches ~0 when the time budget is spent."""
    warm = min(1.0, (state.step + 1) / max(1, config.warmup_steps))
    progress = min(1.0, state.elapsed_s / (config.minutes * 60.0))
    return config.lr * warm * 0.5 * (1.0 + math.cos(math.pi * progress))


def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """ema <- ema + (1 - d) (model - ema), with d ramping up over the first steps so the
    average is not dominated by the initial weights."""
    d = min(decay, (1.0 + step) / (10.0 + step))
    with torch.no_grad():
        torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1.0 - d)


def save_checkpoint(path: Path, model, ema, optimizer, state: RunState, batches: data.PairBatches) -> None:
    tmp = path.with_suffix(".partial.pt")
    torch.save(
        {
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "state": asdict(state),
            "batch_rng": batches.rng.bit_generator.state,
        },
        tmp,
    )
    tmp.replace(path)


def resume(path: Path, model, ema, optimizer, batches: data.PairBatches) -> RunState:
    if not path.exists():
        return RunState()
    checkpoint = torch.load(path, weights_only=False)
    model.load_state_dict(checkpoint["model"])
    ema.load_state_dict(checkpoint.get("ema", checkpoint["model"]))
    optimizer.load_state_dict(checkpoint["optimizer"])
    batches.rng.bit_generator.state = checkpoint["batch_rng"]
    state = RunState(**checkpoint["state"])
    log.info("resumed %s at step %d (%.1f of the budget's minutes spent)", path, state.step, state.elapsed_s / 60)
    return state


def plot_curves(state: RunState, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    if state.train_history:
        left.plot([h["step"] for h in state.train_history], [h["loss"] for h in state.train_history])
    left.set(xlabel="step", ylabel="training loss", yscale="log", title="training loss")
    if state.val_history:
        steps = [h["step"] for h in state.val_history]
        right.plot(steps, [h["psnr"] for h in state.val_history], marker="o", label="model")
        right.plot(steps, [h["bicubic_psnr"] for h in state.val_history], "--", label="bicubic (input)")
        right.legend()
    right.set(xlabel="step", ylabel="PSNR (dB)", title="validation PSNR, held-out identities")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- the loop ----------------------------------------------------------------------------------


def initial_weights(path: str) -> dict:
    """A starting point's weights: a training checkpoint (.pt) or an exported TorchScript model (.ts)."""
    if path.endswith(".ts"):
        return torch.jit.load(path, map_location="cpu").state_dict()
    return torch.load(path, weights_only=False)["model"]


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.run_dir = Path(config.out)
        torch.manual_seed(config.seed)
        self.model = build_model(config.arch, config.frames).to(memory_format=torch.channels_last)
        self.loss_fn = RestorationLoss(config.ssim_weight)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.batches, (self.val_inputs, self.val_targets) = load_data(config)
        if config.init_from:
            load_weights_into(self.model, initial_weights(config.init_from))
        self.ema = copy.deepcopy(self.model).eval()
        self.state = resume(self.run_dir / "last.pt", self.model, self.ema, self.optimizer, self.batches)

    def validate(self) -> dict:
        result = evaluate(self.ema, self.val_inputs, self.val_targets, self.loss_fn)
        result.update(step=self.state.step, elapsed_s=round(self.state.elapsed_s, 1))
        self.state.val_history.append(result)
        log.info(
            "step %d val[%s] PSNR %.2f dB (bicubic %.2f) SSIM %.4f loss %.4f",
            self.state.step,
            self.config.val_preset,
            result["psnr"],
            result["bicubic_psnr"],
            result["ssim"],
            result["loss"],
        )
        if result["psnr"] > self.state.best_psnr:
            self.state.best_psnr = result["psnr"]
            torch.save({"model": self.ema.state_dict(), "val": result}, self.run_dir / "best.pt")
        return result

    def train_step(self) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.config, self.state)
        x, y = self.batches.next()
        if x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.contiguous(memory_format=torch.channels_last)
        loss = self.loss_fn(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        update_ema(self.ema, self.model, self.config.ema_decay, self.state.step)
        self.state.step += 1
        return loss.item()

    def checkpoint(self) -> None:
        save_checkpoint(self.run_dir / "last.pt", self.model, self.ema, self.optimizer, self.state, self.batches)
        plot_curves(self.state, self.run_dir / "loss_curve.png")

    def run(self) -> RunState:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        facts = describe(self.config.arch, self.config.frames)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump({**self.config.model_dump(), **facts}))
        budget_s = self.config.minutes * 60.0
        if not self.state.val_history:
            self.validate()
        started, last_val, last_save = time.monotonic(), 0.0, 0.0
        resumed_at, losses = self.state.elapsed_s, []
        while self.state.elapsed_s < budget_s:
            losses.append(self.train_step())
            self.state.elapsed_s = resumed_at + time.monotonic() - started
            if len(losses) == self.config.log_every_steps:
                self._log_progress(float(np.mean(losses)))
                losses = []
            run_s = self.state.elapsed_s - resumed_at
            if run_s - last_val >= self.config.val_every_s:
                self.validate()
                last_val = run_s
            if run_s - last_save >= self.config.checkpoint_every_s:
                self.checkpoint()
                last_save = run_s
        self.validate()
        self.checkpoint()
        return self.state

    def _log_progress(self, loss: float) -> None:
        self.state.train_history.append({"step": self.state.step, "loss": loss})
        log.info(
            "step %d loss %.4f lr %.2e %.1f/%.1f min",
            self.state.step,
            loss,
            learning_rate(self.config, self.state),
            self.state.elapsed_s / 60,
            self.config.minutes,
        )


def train(config: TrainConfig) -> RunState:
    """Train (or resume) the run described by `config`; returns its final state."""
    torch.set_num_threads(config.threads)
    return Trainer(config).run()


def parse_args(argv: list[str] | None) -> tuple[Path | None, dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="a YAML file of TrainConfig settings")
    parser.add_argument("--quick", action="store_true", help="a tiny model in about a minute (for tests)")
    parser.add_argument("--arch", help="unet (shipped), probe, tiny, or seed (the seed notebook's autoencoder)")
    parser.add_argument("--minutes", type=float, help="wall-clock budget of the run")
    parser.add_argument("--out", help="run directory (checkpoints, config, curves); resumes if it has last.pt")
    parser.add_argument("--cache-dir", dest="cache_dir", help="where degraded pairs are cached")
    parser.add_argument("--variants", type=int, help="degraded copies of each training photo in the cache")
    parser.add_argument("--init-from", dest="init_from", help="start from this checkpoint's weights")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--frames", type=int, help="frames the model sees (with tracks)")
    parser.add_argument("--pairs", choices=("stills", "tracks"), help="training data: degraded stills or tracks")
    args = parser.parse_args(argv)
    overrides = dict(QUICK) if args.quick else {}
    overrides.update({k: v for k, v in vars(args).items() if k not in ("config", "quick") and v is not None})
    return args.config, overrides


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config_path, overrides = parse_args(argv)
    try:
        config = load_config(config_path, overrides)
    except ConfigError as error:
        raise SystemExit(f"error: {error}") from None
    state = train(config)
    log.info("done: %d steps, best validation PSNR %.2f dB", state.step, state.best_psnr)


if __name__ == "__main__":
    main()
