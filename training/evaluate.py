"""Evaluate the face restorer against the baselines on validation identities, per severity preset.

    python -m training.evaluate                       # all presets, all val faces, all methods
    python -m training.evaluate --subset 40 --presets moderate
    python -m training.evaluate --update-baseline     # rewrite training/baseline_metrics.json

For each preset, the validation faces (identities training never sees, `data.split_records`)
are degraded with a seed fixed per (seed, preset), so every method restores the very same
inputs, and each method is scored against the clean crop:

- PSNR and SSIM on the face region (`metrics.face_region_in_crop`: the face box mapped into the
  S x S crop, i.e. the central 1/crop_scale of it, not the padded margin),
- identity distance (`identity.FaceEmbedder`: dlib embedding distance to the clean face, all
  images aligned with the clean face's landmarks), and the share of faces whose distance is
  lower than bicubic's.

Methods: `bicubic` (the degraded input as the pipeline crops it), `seed_preprocessing` (the seed's
gamma + NL-means), `seed_architecture` (the seed's network trained on our pairs), `ours` (the
model's output), and `ours_pasted`: ours as the pipeline composites it, where a face in a well-lit
frame keeps its own brightness (`streamer.brightness`). A crop has no frame, so each face's frame
is taken to be a scene as bright as the crowd video under the face's own exposure and camera gain
(`scene_luma`): the daylight presets' frames come out lit, night's dark.
Writes a JSON report and a comparison grid PNG, and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from streamer import REPO_ROOT, brightness, compositing
from streamer.model_contract import ContractError, RestorerSpec, square_crop_box
from streamer.restoration import ModelLoadError, TorchScriptRestorer
from training import baselines, data, degrade, metrics
from training.identity import distances_to_clean
from training.metrics import Region

log = logging.getLogger(__name__)

DEFAULT_MODEL = REPO_ROOT / "models" / "face_restorer.ts"
DEFAULT_OUT_DIR = REPO_ROOT / "runs" / "evaluation"
BASELINE_FILE = REPO_ROOT / "training" / "baseline_metrics.json"
DEFAULT_SEED = 0

METHODS = ("bicubic", "seed_preprocessing", "seed_architecture", "ours", "ours_pasted")
# The mean luma of the crowd video (../shared/data/videos/crowd_walk_1080p.mp4), a well-exposed
# daylight scene: the scene `scene_luma` darkens or brightens as a face's degradation did.
WELL_EXPOSED_SCENE_LUMA = 106.0
# The issue's targets, checked at this preset.
TARGET_PRESET = "moderate"
TARGET_GAIN_OVER_BICUBIC_DB = 3.0
TARGET_GAIN_OVER_SEED_ARCH_DB = 1.5
TARGET_IDENTITY_IMPROVED_SHARE = 0.8
# The subset the fast baseline check (tests/training/test_baseline_metrics.py) recomputes.
CHECK_SUBSET = 40
CHECK_PRESETS = (TARGET_PRESET,)
CHECK_METHODS = ("bicubic", "ours")
GRID_FACES_PER_PRESET = 3
_INFERENCE_BATCH = 64

Restorer = Callable[[np.ndarray], np.ndarray]  # N x S x S x 3 uint8 -> same


class EvaluationError(RuntimeError):
    """The evaluation's models cannot be compared (no model to define the crop, or two contracts)."""


@dataclass(frozen=True)
class EvalSettings:
    presets: tuple[str, ...] = degrade.EVAL_PRESETS
    methods: tuple[str, ...] = METHODS
    subset: int | None = None  # evaluate this many validation faces (spread over the list); None: all
    seed: int = DEFAULT_SEED
    identity: bool = True
    workers: int = 2  # processes for the identity metric (the slowest part)
    model: Path = DEFAULT_MODEL
    seed_model: Path = baselines.SEED_ARCH_MODEL

    def describe(self) -> dict:
        return {
            "presets": list(self.presets),
            "methods": list(self.methods),
            "subset": self.subset,
            "seed": self.seed,
            "identity": self.identity,
            "model": _repo_relative(self.model),
            "seed_model": _repo_relative(self.seed_model),
        }


@dataclass(frozen=True)
class PresetRun:
    """One preset's inputs, truths and every method's outputs (N x S x S x 3 uint8 each)."""

    inputs: np.ndarray
    truths: np.ndarray
    outputs: dict[str, np.ndarray]


# --- inputs ------------------------------------------------------------------------------------


def evaluation_records(subset: int | None) -> list[data.FaceRecord]:
    """The validation faces; a subset is spread evenly over them (many identities, not the first few)."""
    records = data.split_records().val
    if subset is None or subset >= len(records):
        return records
    picks = np.linspace(0, len(records) - 1, subset).round().astype(int)
    return [records[i] for i in picks]


def face_regions(records: list[data.FaceRecord], spec: RestorerSpec) -> list[Region]:
    return [
        metrics.face_region_in_crop(r.face_box, square_crop_box(r.face_box, spec.crop_scale), spec.input_size)
        for r in records
    ]


def degraded_pairs(
    records: list[data.FaceRecord], preset: str, spec: RestorerSpec, seed: int
) -> tuple[np.ndarray, np.ndarray, list[degrade.DegradeParams]]:
    """(inputs, truths, degradations) for `records` under `preset`: the same for the same (records, preset, seed)."""
    rng = np.random.default_rng([seed, zlib.crc32(preset.encode())])
    squares = [data.clean_square(r, spec.crop_scale) for r in records]
    return data.make_pairs(squares, [preset] * len(squares), rng, spec.input_size, spec.crop_scale)


# --- restorers ---------------------------------------------------------------------------------


def still_restorer(restorer: TorchScriptRestorer) -> Restorer:
    """crops -> restored crops for any model: a K-frame model sees each still as a track seen once
    (its window repeats the crop K times, as streamer.track_window gives a new track's first frame)."""
    frames = restorer.spec.frames
    if frames == 1:
        return restorer.restore
    return lambda crops: restorer.restore(np.repeat(crops[:, None], frames, axis=1))


def build_restorers(settings: EvalSettings) -> tuple[dict[str, Restorer], RestorerSpec]:
    """The methods' restorers and the contract they share (taken from our model, else the seed model's)."""
    if "ours_pasted" in settings.methods and "ours" not in settings.methods:
        raise EvaluationError("ours_pasted is ours as the pipeline pastes it: evaluate ours with it")
    restorers: dict[str, Restorer] = {}
    specs: list[RestorerSpec] = []
    for method, path in (("ours", settings.model), ("seed_architecture", settings.seed_model)):
        if method in settings.methods:
            restorer = TorchScriptRestorer.load(path, device="cpu", max_batch=_INFERENCE_BATCH)
            restorers[method] = still_restorer(restorer)
            specs.append(restorer.spec)
    if not specs:
        raise EvaluationError("evaluation needs a model (ours or seed_architecture) to define the crop contract")
    if any((s.input_size, s.crop_scale) != (specs[0].input_size, specs[0].crop_scale) for s in specs):
        raise EvaluationError("ours and the seed architecture use different crop contracts; they cannot be compared")
    if "bicubic" in settings.methods:
        restorers["bicubic"] = baselines.bicubic
    if "seed_preprocessing" in settings.methods:
        restorers["seed_preprocessing"] = baselines.seed_preprocessing
    return {m: restorers[m] for m in settings.methods if m != "ours_pasted"}, specs[0]


def scene_luma(params: degrade.DegradeParams) -> float:
    """The mean luma of the frame around a degraded face: a well-exposed scene of
    WELL_EXPOSED_SCENE_LUMA seen with the face's exposure, colour cast and camera gain."""
    scene = np.full((4, 4, 3), WELL_EXPOSED_SCENE_LUMA, np.float32)
    noiseless = dataclasses.replace(params, shot_noise=0.0, read_noise=0.0)
    return brightness.frame_luma(degrade.expose_and_add_noise(scene, noiseless, np.random.default_rng(0)))


def as_pasted(
    inputs: np.ndarray, ours: np.ndarray, params: list[degrade.DegradeParams], regions: list[Region]
) -> np.ndarray:
    """Our outputs as the pipeline's compositor leaves them: each face keeps as much of its input's
    brightness as its frame's light says (compositing.keep_brightness)."""
    return np.stack(
        [
            compositing.restored_as_pasted(crop, out, region, scene_luma(p))
            for crop, out, p, region in zip(inputs, ours, params, regions)
        ]
    )


# --- scoring -----------------------------------------------------------------------------------


def quality_scores(outputs: np.ndarray, truths: np.ndarray, regions: list[Region]) -> np.ndarray:
    """N x 2: face-region (PSNR, SSIM) per face."""
    return np.array([metrics.face_scores(out, truth, region) for out, truth, region in zip(outputs, truths, regions)])


def identity_distances(
    runs: dict[str, PresetRun], regions: list[Region], workers: int
) -> dict[str, dict[str, np.ndarray]]:
    """Per preset and method, each face's identity distance to its clean face (the same for every preset)."""
    keys = [(preset, method) for preset, run in runs.items() for method in run.outputs]
    truths = next(iter(runs.values())).truths
    candidates = [[runs[preset].outputs[method][index] for preset, method in keys] for index in range(len(truths))]
    table = distances_to_clean(truths, regions, candidates, workers)
    distances: dict[str, dict[str, np.ndarray]] = {preset: {} for preset in runs}
    for column, (preset, method) in enumerate(keys):
        distances[preset][method] = table[:, column]
    return distances


def summarise(run: PresetRun, regions: list[Region], identity: dict[str, np.ndarray]) -> dict:
    """Per method: mean face-region PSNR and SSIM, mean identity distance, share of faces closer than bicubic.

    `identity` holds per-face identity distances per method (empty: not measured)."""
    summary = {}
    for method, outputs in run.outputs.items():
        scores = quality_scores(outputs, run.truths, regions)
        entry = {"psnr": float(scores[:, 0].mean()), "ssim": float(scores[:, 1].mean())}
        if method in identity:
            entry["identity_distance"] = float(identity[method].mean())
            if "bicubic" in identity and method != "bicubic":
                entry["identity_closer_than_bicubic"] = float(np.mean(identity[method] < identity["bicubic"]))
        summary[method] = entry
    return summary


def check_targets(results: dict) -> dict:
    """The issue's targets at TARGET_PRESET, each {value, target, met}; only those the run can judge."""
    scores = results.get(TARGET_PRESET, {})
    ours = scores.get("ours")
    if ours is None:
        return {}
    checks = {}
    if "bicubic" in scores:
        gain = ours["psnr"] - scores["bicubic"]["psnr"]
        checks["psnr_gain_over_bicubic_db"] = _target(gain, TARGET_GAIN_OVER_BICUBIC_DB)
    if "seed_architecture" in scores:
        gain = ours["psnr"] - scores["seed_architecture"]["psnr"]
        checks["psnr_gain_over_seed_architecture_db"] = _target(gain, TARGET_GAIN_OVER_SEED_ARCH_DB)
    if "identity_closer_than_bicubic" in ours:
        checks["identity_closer_than_bicubic_share"] = _target(
            ours["identity_closer_than_bicubic"], TARGET_IDENTITY_IMPROVED_SHARE
        )
    return checks


def _target(value: float, target: float) -> dict:
    return {"value": round(value, 4), "target": target, "met": bool(value >= target)}


# --- the run -----------------------------------------------------------------------------------


def evaluate(settings: EvalSettings) -> tuple[dict, dict[str, PresetRun]]:
    """Score every method on every preset; return (report, the preset runs for the grid)."""
    restorers, spec = build_restorers(settings)
    records = evaluation_records(settings.subset)
    regions = face_regions(records, spec)
    runs = {}
    for preset in settings.presets:
        started = time.monotonic()
        inputs, truths, params = degraded_pairs(records, preset, spec, settings.seed)
        outputs = {method: restore(inputs) for method, restore in restorers.items()}
        if "ours_pasted" in settings.methods:
            outputs["ours_pasted"] = as_pasted(inputs, outputs["ours"], params, regions)
        runs[preset] = PresetRun(inputs, truths, {method: outputs[method] for method in settings.methods})
        log.info(
            "%s: %d faces restored by %d methods in %.1f s",
            preset,
            len(records),
            len(outputs),
            time.monotonic() - started,
        )
    started = time.monotonic()
    identity = identity_distances(runs, regions, settings.workers) if settings.identity else {}
    if settings.identity:
        log.info("identity distances in %.1f s", time.monotonic() - started)
    results = {preset: summarise(run, regions, identity.get(preset, {})) for preset, run in runs.items()}
    report = {
        "settings": settings.describe(),
        "faces": len(records),
        "identities": len({r.identity for r in records}),
        "contract": {"input_size": spec.input_size, "crop_scale": spec.crop_scale},
        "face_region": "the face box mapped into the S x S crop (its central 1/crop_scale), not the margin",
        "results": results,
        "targets": check_targets(results),
    }
    return report, runs


def format_table(report: dict) -> str:
    header = f"{'preset':<10} {'method':<20} {'PSNR dB':>8} {'SSIM':>7} {'id dist':>8} {'id<bicubic':>10}"
    lines = [header, "-" * len(header)]
    for preset, methods in report["results"].items():
        for method, entry in methods.items():
            distance = entry.get("identity_distance")
            closer = entry.get("identity_closer_than_bicubic")
            lines.append(
                f"{preset:<10} {method:<20} {entry['psnr']:>8.2f} {entry['ssim']:>7.4f} "
                f"{_optional(distance, '8.4f'):>8} {_optional(closer, '10.0%'):>10}"
            )
    for name, check in report["targets"].items():
        verdict = "met" if check["met"] else "NOT MET"
        lines.append(f"target {name}: {check['value']:.3f} (>= {check['target']}) {verdict}")
    return "\n".join(lines)


def _optional(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


# --- the grid ----------------------------------------------------------------------------------

_GRID_ZOOM = 2  # nearest-neighbour, so the pixels a viewer sees are the model's
_LABEL_HEIGHT = 18


def comparison_grid(runs: dict[str, PresetRun], faces_per_preset: int = GRID_FACES_PER_PRESET) -> np.ndarray:
    """RGB image: one row per face (a few per preset, named on the left), columns input | methods | truth.

    The input column is the degraded crop as the pipeline feeds it to a model, i.e. bicubic."""
    methods = [m for m in next(iter(runs.values())).outputs if m != "bicubic"]
    tile = _GRID_ZOOM * next(iter(runs.values())).inputs.shape[1]
    rows = [_label_strip(["", "input = bicubic", *methods, "truth"], [_LABEL_WIDTH] + [tile] * (len(methods) + 2))]
    for preset, run in runs.items():
        picks = np.linspace(0, len(run.inputs) - 1, min(faces_per_preset, len(run.inputs))).round().astype(int)
        for index in picks:
            tiles = [run.inputs[index], *(run.outputs[m][index] for m in methods), run.truths[index]]
            name = _label_strip([preset], [_LABEL_WIDTH], height=tile)
            rows.append(np.hstack([name, *(_zoom(t) for t in tiles)]))
    return np.vstack(rows)


_LABEL_WIDTH = 64


def _zoom(tile: np.ndarray) -> np.ndarray:
    return cv2.resize(tile, None, fx=_GRID_ZOOM, fy=_GRID_ZOOM, interpolation=cv2.INTER_NEAREST)


def _label_strip(labels: list[str], widths: list[int], height: int = _LABEL_HEIGHT) -> np.ndarray:
    """White cells of the given widths with a small black label in each."""
    strip = np.full((height, sum(widths), 3), 255, np.uint8)
    left = 0
    for label, width in zip(labels, widths):
        cv2.putText(
            strip, label, (left + 2, min(height - 5, 13)), cv2.FONT_HERSHEY_SIMPLEX, 0.32, (0, 0, 0), 1, cv2.LINE_AA
        )
        left += width
    return strip


def save_png(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(image[:, :, ::-1])):
        raise EvaluationError(f"cannot write {path}")


# --- the committed baseline --------------------------------------------------------------------


def check_settings(model: Path = DEFAULT_MODEL) -> EvalSettings:
    """The small evaluation tests/training/test_baseline_metrics.py repeats on every run of the suite."""
    return EvalSettings(presets=CHECK_PRESETS, methods=CHECK_METHODS, subset=CHECK_SUBSET, model=model)


def baseline_document(table: dict, check: dict, model: Path) -> dict:
    """What BASELINE_FILE holds: the full table of the shipped model and the subset the tests repeat."""
    return {
        "about": "Scores of the shipped restorer; a new model must not be worse. Rewrite with "
        "`python -m training.evaluate --update-baseline` only for a model that is at least as good.",
        "model": _repo_relative(model),
        "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "check": check,
        "table": table,
    }


# --- CLI ---------------------------------------------------------------------------------------


def _repo_relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(degrade.EVAL_PRESETS), choices=list(degrade.PRESETS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--subset", type=int, default=None, help="evaluate N validation faces (default: all)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--seed-model", type=Path, default=baselines.SEED_ARCH_MODEL)
    parser.add_argument("--no-identity", action="store_true", help="skip the (slow) identity metric")
    parser.add_argument("--workers", type=int, default=2, help="processes for the identity metric")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="folder for report.json and grid.png")
    parser.add_argument(
        "--update-baseline",
        action="store_true",
        help=f"also rewrite {_repo_relative(BASELINE_FILE)} (full run + the CI subset)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    settings = EvalSettings(
        presets=tuple(args.presets),
        methods=tuple(args.methods),
        subset=args.subset,
        seed=args.seed,
        identity=not args.no_identity,
        workers=args.workers,
        model=args.model,
        seed_model=args.seed_model,
    )
    try:
        report, runs = evaluate(settings)
    except (EvaluationError, ModelLoadError, ContractError, data.DataError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    print(format_table(report))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    save_png(comparison_grid(runs), args.out / "grid.png")
    print(f"wrote {args.out / 'report.json'} and {args.out / 'grid.png'}")
    if args.update_baseline:
        check, _ = evaluate(check_settings(settings.model))
        BASELINE_FILE.write_text(json.dumps(baseline_document(report, check, settings.model), indent=2) + "\n")
        print(f"wrote {_repo_relative(BASELINE_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
