"""Export a trained run as the pipeline's TorchScript model, with its metadata and metrics.

    python -m training.export --run runs/shipped --out models/face_restorer.ts

Loads `<run>/best.pt`, measures PSNR/SSIM of the model and of the bicubic input against the clean
faces for every evaluation preset on the held-out identities, traces the model (channels_last;
no optimize_for_inference, which was slower here), stores `restorer.json` (a RestorerSpec whose
`training` holds data, licence, degradations, architecture and those metrics) as an extra file,
and checks that the written file loads and honours the contract.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
import yaml

from streamer.model_contract import SPEC_FILE_NAME, ContractError, RestorerSpec
from streamer.restoration import ModelLoadError, TorchScriptRestorer
from training import data, degrade, tracks
from training.model import build_model, describe
from training.train import TrainConfig, evaluate

log = logging.getLogger(__name__)

MAX_MODEL_BYTES = 10 * 1024 * 1024
LICENCE = (
    "CelebA (celeba_wild_256 crops) is licensed for non-commercial research purposes only; "
    "these weights are derived from it and inherit that restriction."
)


def load_run(run_dir: Path, checkpoint: str = "best.pt") -> tuple[TrainConfig, torch.nn.Module, dict]:
    """The run's config, its model with the checkpoint's weights (eval mode), and the checkpoint."""
    recorded = yaml.safe_load((run_dir / "config.yaml").read_text())
    config = TrainConfig(**{name: recorded[name] for name in TrainConfig.model_fields if name in recorded})
    saved = torch.load(run_dir / checkpoint, weights_only=False)
    model = build_model(config.arch, config.frames)
    model.load_state_dict(saved["model"])
    return config, model.eval(), saved


def validation_metrics(model: torch.nn.Module, config: TrainConfig, presets=degrade.EVAL_PRESETS) -> dict:
    """Per preset: PSNR/SSIM of the model and of bicubic (its input) on all validation faces
    (a model trained on tracks: on validation tracks, bicubic being the newest frame)."""
    split = data.split_records()
    metrics = {}
    for preset in presets:
        if config.pairs == "tracks":
            inputs, targets = tracks.last_frames(
                *tracks.validation_tracks(
                    split.val,
                    preset,
                    config.input_size,
                    config.crop_scale,
                    Path(config.cache_dir),
                    spec=tracks.eval_spec(config.track_frames),
                ),
                config.frames,
            )
        else:
            inputs, targets = data.validation_pairs(
                split.val, preset, config.input_size, config.crop_scale, Path(config.cache_dir)
            )
        result = evaluate(model, data.to_tensor(inputs), data.to_tensor(targets))
        result = {key: round(value, 4) for key, value in result.items()}
        result["psnr_gain_db"] = round(result["psnr"] - result["bicubic_psnr"], 3)
        result["faces"] = len(inputs)
        metrics[preset] = result
        log.info(
            "%-9s PSNR %.2f dB (bicubic %.2f, %+.2f) SSIM %.4f (bicubic %.4f)",
            preset,
            result["psnr"],
            result["bicubic_psnr"],
            result["psnr_gain_db"],
            result["ssim"],
            result["bicubic_ssim"],
        )
    return metrics


def training_facts(config: TrainConfig, steps: int, metrics: dict) -> dict:
    split = data.split_records()
    return {
        "data": (
            f"CelebA in-the-wild crops ({data.WILD_CSV}), split by identity (seed {data.SPLIT_SEED}): "
            f"{len({r.identity for r in split.train})} training identities / {len(split.val_identities)} "
            f"held-out validation identities; faces under {data.MIN_SOURCE_FACE_PX} px in the source photo "
            "dropped; augmentation: flip, shift, zoom, rotation, colour jitter"
        ),
        "licence": LICENCE,
        "validation_identities": split.val_identities,
        "degradations": degrade.describe_presets(config.training_mix),
        "architecture": describe(config.arch, config.frames),
        "pairs": config.pairs
        if config.pairs == "stills"
        else {"tracks": tracks.training_spec(config.track_frames).describe()},
        "config": config.model_dump(),
        "steps": steps,
        "validation_metrics": metrics,
    }


def export_model(model: torch.nn.Module, spec: RestorerSpec, path: Path) -> None:
    """Trace `model` (channels_last) and save it with `spec` as restorer.json, atomically."""
    model = model.eval().to(memory_format=torch.channels_last)
    example = torch.rand(4, *spec.input_shape)
    if spec.frames == 1:
        example = example.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.jit.save(traced, str(tmp), _extra_files={SPEC_FILE_NAME: spec.to_json()})
    tmp.replace(path)


def verify_export(path: Path, reference: torch.nn.Module | None = None) -> RestorerSpec:
    """Load `path` with the pipeline's own loader, which checks the model contract (one check, one set of
    rules: restoration.TorchScriptRestorer.load), then what an export adds: the size limit, and that the
    file computes what the trained model computes. ContractError says what fails."""
    if path.stat().st_size > MAX_MODEL_BYTES:
        raise ContractError(f"{path}: {path.stat().st_size} bytes, over the {MAX_MODEL_BYTES}-byte limit")
    try:
        restorer = TorchScriptRestorer.load(path, device="cpu", fp16=False, bf16=False)
    except ModelLoadError as error:
        raise ContractError(str(error)) from None
    if reference is not None:
        for batch in (1, 3):  # and batch-size independent
            x = torch.rand(batch, *restorer.spec.input_shape)
            with torch.no_grad():
                drift = float((reference.eval()(x) - restorer.forward(x)).abs().max())
            if drift > 1e-4:
                raise ContractError(f"{path}: differs from the trained model by {drift:.2e}")
    return restorer.spec


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description="Export a training run as models/face_restorer.ts")
    parser.add_argument("--run", type=Path, default=Path("runs/shipped"))
    parser.add_argument("--checkpoint", default="best.pt", help="best.pt (best validation PSNR) or last.pt")
    parser.add_argument("--out", type=Path, default=Path("models/face_restorer.ts"))
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    config, model, saved = load_run(args.run, args.checkpoint)
    metrics = validation_metrics(model, config)
    steps = saved.get("state", {}).get("step") or saved.get("val", {}).get("step")
    spec = RestorerSpec(
        config.input_size, config.crop_scale, training=training_facts(config, steps, metrics), frames=config.frames
    )
    export_model(model, spec, args.out)
    verify_export(args.out, reference=model)
    log.info("wrote %s (%.2f MB)", args.out, args.out.stat().st_size / 1e6)


if __name__ == "__main__":
    main()
