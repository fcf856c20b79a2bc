"""What each degradation stage costs, and what the restorer wins back: a preset with one stage off at a time.

    python -m training.ablation                        # moderate, 200 validation faces
    python -m training.ablation --preset severe --subset 100

Each variant of the preset switches one stage of `degrade.py` off (or all but the sampling). The
same validation faces are degraded with the same seed in every variant, so each face draws the same
size, CRF and blur in all of them; bicubic (the input itself) and the model are scored on the face
region (PSNR, as `training.evaluate`). Read the table as:

- `stage cost`: how much bicubic gains when the stage is off, i.e. what that stage destroys;
- `gain`: the model over bicubic. A stage whose removal shrinks the gain is one the model undoes;
  a negative gain is an input the model makes worse (e.g. it sharpens a face that was never blurred).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from streamer.model_contract import ContractError, RestorerSpec, resize_square
from streamer.restoration import ModelLoadError, TorchScriptRestorer
from training import baselines, data, degrade, evaluate

log = logging.getLogger(__name__)

DEFAULT_SUBSET = 200


def _no_blur(s: degrade.Severity) -> degrade.Severity:
    return dataclasses.replace(s, blur_sigma=(0.0, 0.0), motion_px=(0.0, 0.0))


def _no_noise(s: degrade.Severity) -> degrade.Severity:
    return dataclasses.replace(s, shot_noise=(0.0, 0.0), read_noise=(0.0, 0.0))


def _no_light_error(s: degrade.Severity) -> degrade.Severity:
    return dataclasses.replace(s, exposure=(1.0, 1.0), color_cast=0.0)


def _lossless_codec(s: degrade.Severity) -> degrade.Severity:
    # CRF 0 is lossless H.264; only the 4:2:0 chroma subsampling remains.
    return dataclasses.replace(s, crf=(0, 0), jpeg_probability=0.0)


def _sampling_only(s: degrade.Severity) -> degrade.Severity:
    return _lossless_codec(_no_light_error(_no_noise(_no_blur(s))))


VARIANTS: dict[str, Callable[[degrade.Severity], degrade.Severity]] = {
    "as is": lambda s: s,
    "no optical blur": _no_blur,
    "no sensor noise": _no_noise,
    "no exposure error": _no_light_error,
    "lossless codec": _lossless_codec,
    "sampling only": _sampling_only,
}


def ablate(
    records: list[data.FaceRecord],
    preset: str,
    restorers: dict[str, evaluate.Restorer],
    spec: RestorerSpec,
    seed: int = evaluate.DEFAULT_SEED,
) -> dict[str, dict[str, float]]:
    """Per variant, per restorer: the mean face-region PSNR over `records`."""
    squares = [data.clean_square(r, spec.crop_scale) for r in records]
    truths = np.stack([resize_square(sq, spec.input_size) for sq in squares])
    regions = evaluate.face_regions(records, spec)
    results = {}
    for name, switch_off in VARIANTS.items():
        # One seed for every variant: parameters are drawn before any noise, so each face draws the
        # same size, blur and CRF in all of them.
        rng = np.random.default_rng(seed)
        inputs, _ = degrade.degrade_batch(
            squares, switch_off(degrade.PRESETS[preset]), rng, spec.input_size, spec.crop_scale
        )
        results[name] = {
            method: float(evaluate.quality_scores(restore(inputs), truths, regions)[:, 0].mean())
            for method, restore in restorers.items()
        }
        log.info("%s: %s", name, ", ".join(f"{m} {v:.2f} dB" for m, v in results[name].items()))
    return results


def format_table(results: dict[str, dict[str, float]], preset: str, faces: int) -> str:
    full = results["as is"]["bicubic"]
    lines = [
        f"{preset}, {faces} validation faces, face-region PSNR (dB)",
        f"{'variant':<18} {'bicubic':>8} {'ours':>7} {'gain':>6} {'stage cost':>10}",
    ]
    for name, row in results.items():
        lines.append(
            f"{name:<18} {row['bicubic']:>8.2f} {row['ours']:>7.2f} {row['ours'] - row['bicubic']:>+6.2f} "
            f"{row['bicubic'] - full:>10.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default=evaluate.TARGET_PRESET, choices=list(degrade.PRESETS))
    parser.add_argument("--subset", type=int, default=DEFAULT_SUBSET, help="validation faces (spread over identities)")
    parser.add_argument("--seed", type=int, default=evaluate.DEFAULT_SEED)
    parser.add_argument("--model", type=Path, default=evaluate.DEFAULT_MODEL)
    args = parser.parse_args(argv)
    try:
        model = TorchScriptRestorer.load(args.model, device="cpu", max_batch=64)
        records = evaluate.evaluation_records(args.subset)
        results = ablate(
            records,
            args.preset,
            {"bicubic": baselines.bicubic, "ours": evaluate.still_restorer(model)},
            model.spec,
            args.seed,
        )
    except (ModelLoadError, ContractError, data.DataError) as exc:
        print(f"ablation: {exc}", file=sys.stderr)
        return 2
    print(format_table(results, args.preset, len(records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
