"""Restorers on synthetic H.264 face *tracks*, per preset, on the validation identities, in one run.

    python -m training.evaluate_tracks                                  # the committed table's settings
    python -m training.evaluate_tracks --subset 24 --presets moderate --no-identity
    python -m training.evaluate_tracks --update-baseline                # rewrite training/track_baseline.json

Every method restores the very same tracks (`training.tracks`, the evaluation spec: K frames, one
H.264 sequence each, the preset's degradation; seeded per (seed, preset)), and is scored on the
newest frame's clean crop (face region PSNR / SSIM, dlib identity distance, share of faces closer
in identity than bicubic; `training.evaluate`'s measures):

- `bicubic`: the newest frame as the pipeline crops it (no model);
- `aligned_average`: the K bicubic frames shifted onto the newest by phase correlation and averaged
  (a cheap temporal baseline: what plain averaging of the track buys);
- one row per model (`--model NAME=PATH`): a 1-frame model gets the newest crop, a K-frame model the
  track's last K crops (model contract v2).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from streamer import REPO_ROOT
from streamer.model_contract import ContractError
from streamer.restoration import ModelLoadError, TorchScriptRestorer
from training import data, degrade, tracks
from training.evaluate import (
    PresetRun,
    comparison_grid,
    evaluation_records,
    face_regions,
    format_table,
    identity_distances,
    save_png,
    summarise,
)

log = logging.getLogger(__name__)

BASELINE_FILE = REPO_ROOT / "training" / "track_baseline.json"
DEFAULT_OUT_DIR = REPO_ROOT / "runs" / "evaluation_tracks"
DEFAULT_MODELS = {"shipped": REPO_ROOT / "models" / "face_restorer.ts"}
DEFAULT_SUBSET = 240  # validation faces (of 463, spread over all 25 held-out identities)
DEFAULT_SEED = 0
CHECK_SUBSET, CHECK_PRESET = 32, "moderate"  # what tests/training/test_track_baseline.py repeats


@dataclass(frozen=True)
class TrackEvalSettings:
    models: dict[str, Path] = field(default_factory=lambda: dict(DEFAULT_MODELS))
    presets: tuple[str, ...] = degrade.EVAL_PRESETS
    subset: int | None = DEFAULT_SUBSET
    seed: int = DEFAULT_SEED
    frames: int = tracks.DEFAULT_FRAMES
    identity: bool = True
    workers: int = 2

    def describe(self) -> dict:
        return {
            "models": {name: _relative(path) for name, path in self.models.items()},
            "presets": list(self.presets),
            "subset": self.subset,
            "seed": self.seed,
            "frames": self.frames,
            "identity": self.identity,
            "track_spec": tracks.eval_spec(self.frames).describe(),
        }


def evaluation_tracks(
    records: list[data.FaceRecord], preset: str, settings: TrackEvalSettings, size: int, crop_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """(N x K x S x S x 3 tracks, N x S x S x 3 truths): the same for the same (records, preset, seed)."""
    rng = np.random.default_rng([settings.seed, zlib.crc32(f"track:{preset}".encode())])
    photos = [data.load_photo(r.path) for r in records]
    return tracks.make_tracks(
        photos,
        [r.face_box for r in records],
        [preset] * len(records),
        rng,
        size,
        crop_scale,
        tracks.eval_spec(settings.frames),
    )


def aligned_average(windows: np.ndarray) -> np.ndarray:
    """Each window's frames shifted onto its newest frame (phase correlation of their luma) and averaged."""
    out = np.empty_like(windows[:, -1])
    size = windows.shape[2]
    hann = cv2.createHanningWindow((size, size), cv2.CV_32F)
    for index, window in enumerate(windows):
        grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32) for f in window]
        frames = []
        for frame, g in zip(window, grey):
            (dx, dy), _ = cv2.phaseCorrelate(grey[-1], g, hann)
            shift = np.float32([[1, 0, -dx], [0, 1, -dy]])
            frames.append(
                cv2.warpAffine(
                    frame.astype(np.float32),
                    shift,
                    (size, size),
                    flags=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE,
                )
            )
        out[index] = np.clip(np.mean(frames, axis=0) + 0.5, 0, 255).astype(np.uint8)
    return out


def model_restorer(path: Path):
    """A function windows -> restored newest frames, feeding the model the frames its contract asks for."""
    restorer = TorchScriptRestorer.load(path, device="cpu", max_batch=64)
    frames = restorer.spec.frames

    def restore(windows: np.ndarray) -> np.ndarray:
        if frames > windows.shape[1]:
            raise ContractError(f"{path}: wants {frames} frames, the tracks have {windows.shape[1]}")
        cut = windows[:, -1] if frames == 1 else np.ascontiguousarray(windows[:, -frames:])
        return restorer.restore(cut)

    return restore, restorer.spec


def evaluate(settings: TrackEvalSettings) -> tuple[dict, dict[str, PresetRun]]:
    restorers = {}
    specs = []
    for name, path in settings.models.items():
        restorers[name], spec = model_restorer(path)
        specs.append(spec)
    spec = specs[0]
    if any((s.input_size, s.crop_scale) != (spec.input_size, spec.crop_scale) for s in specs):
        raise ContractError("the models use different crop contracts; they cannot be compared on the same tracks")
    records = evaluation_records(settings.subset)
    regions = face_regions(records, spec)
    runs = {}
    for preset in settings.presets:
        started = time.monotonic()
        windows, truths = evaluation_tracks(records, preset, settings, spec.input_size, spec.crop_scale)
        outputs = {"bicubic": windows[:, -1].copy(), "aligned_average": aligned_average(windows)}
        outputs.update({name: restore(windows) for name, restore in restorers.items()})
        runs[preset] = PresetRun(windows[:, -1], truths, outputs)
        log.info("%s: %d tracks, %d methods, %.1f s", preset, len(records), len(outputs), time.monotonic() - started)
    identity = identity_distances(runs, regions, settings.workers) if settings.identity else {}
    results = {preset: summarise(run, regions, identity.get(preset, {})) for preset, run in runs.items()}
    report = {
        "settings": settings.describe(),
        "faces": len(records),
        "identities": len({r.identity for r in records}),
        "results": results,
        "targets": {},
    }
    return report, runs


def gains_table(report: dict, over: str = "bicubic") -> str:
    """Per preset, each method's PSNR gain over `over` (dB)."""
    lines = []
    for preset, methods in report["results"].items():
        base = methods[over]["psnr"]
        cells = ", ".join(f"{m} {e['psnr'] - base:+.2f}" for m, e in methods.items() if m != over)
        lines.append(f"{preset:<9} gain over {over}: {cells}")
    return "\n".join(lines)


def baseline_document(report: dict, check: dict, settings: TrackEvalSettings) -> dict:
    return {
        "about": "Scores on synthetic H.264 tracks (python -m training.evaluate_tracks); a new shipped model must "
        "not be worse. Rewrite with --update-baseline only for a model that is at least as good.",
        "models_sha256": {
            name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in settings.models.items()
        },
        "check": check,
        "table": report,
    }


def check_settings() -> TrackEvalSettings:
    """The small evaluation the test suite repeats (the shipped model; no identity: dlib is slow)."""
    return TrackEvalSettings(presets=(CHECK_PRESET,), subset=CHECK_SUBSET, identity=False)


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _parse_model(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        type=_parse_model,
        action="append",
        metavar="NAME=PATH",
        help="a model to score (repeatable); default: shipped=models/face_restorer.ts",
    )
    parser.add_argument("--presets", nargs="+", default=list(degrade.EVAL_PRESETS), choices=list(degrade.PRESETS))
    parser.add_argument("--subset", type=int, default=DEFAULT_SUBSET, help="validation faces (0: all 463)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--no-identity", action="store_true", help="skip the (slow) dlib identity metric")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--update-baseline", action="store_true", help=f"rewrite {_relative(BASELINE_FILE)}")
    args = parser.parse_args(argv)
    settings = TrackEvalSettings(
        models=dict(args.model) if args.model else dict(DEFAULT_MODELS),
        presets=tuple(args.presets),
        subset=args.subset or None,
        seed=args.seed,
        identity=not args.no_identity,
        workers=args.workers,
    )
    try:
        report, runs = evaluate(settings)
    except (ModelLoadError, ContractError, data.DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(report))
    print(gains_table(report))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    save_png(comparison_grid(runs), args.out / "grid.png")
    print(f"wrote {args.out / 'report.json'} and {args.out / 'grid.png'}")
    if args.update_baseline:
        check, _ = evaluate(check_settings())
        BASELINE_FILE.write_text(json.dumps(baseline_document(report, check, settings), indent=2) + "\n")
        print(f"wrote {_relative(BASELINE_FILE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
