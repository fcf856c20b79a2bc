"""A real compressed clip against its pristine original: how much each restorer recovers of one face.

    python -m training.pair_check                         # carphone (../shared/data/videos)
    python -m training.pair_check --model shipped=models/face_restorer.ts --model one_frame=models/face_restorer_1frame.ts

Unlike the video check (training/video_check.py), nothing here is synthetic: the distorted clip
is a real, heavily compressed H.264 encode (carphone: 176 x 144, ~9 kbit/s). The face box is
marked once, before any restorer runs: the pipeline's detector finds the face in each *pristine*
frame (the largest face; a frame where it misses keeps the previous box), so every method is
scored on the same crops wherever the face moves. Each frame's crop is cut from the distorted
frame exactly as the pipeline cuts it (`model_contract.extract_crop`); a K-frame model gets the
track's last K crops (streamer.track_window), causally. Scores: face-region PSNR / SSIM against
the pristine crop and temporal error (video_check's measures), each model's output as pasted.
Faces here are larger than restoration.max_face_px, so the default pipeline leaves them alone
("bicubic" is then what a viewer sees, at the model's scale); this check restores them anyway.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from streamer import REPO_ROOT, SHARED_DATA, brightness
from streamer.components import build_components
from streamer.config import ConfigError, load_config
from streamer.model_contract import ContractError, extract_crop, square_crop_box
from streamer.restoration import ModelLoadError, TorchScriptRestorer
from streamer.sources import SourceError
from training import metrics
from training.evaluate import save_png
from training.video_check import (
    DEFAULT_CONFIG,
    FaceSample,
    as_the_pipeline_pastes,
    read_frames,
    restore_with_model,
    summarise,
    track_grid,
)

log = logging.getLogger(__name__)

VIDEOS = SHARED_DATA / "videos"
DEFAULT_PAIR = (VIDEOS / "carphone_pristine.mp4", VIDEOS / "carphone_distorted.mp4")
DEFAULT_MODELS = {"shipped": REPO_ROOT / "models" / "face_restorer.ts"}
DEFAULT_OUT_DIR = REPO_ROOT / "runs" / "pair_check"


def face_boxes(pristine: list[np.ndarray], config_path: Path):
    """The largest face's box in each pristine frame (the previous frame's where the detector misses)."""
    components = build_components(load_config(config_path, {"restoration.device": ("cpu", "--device")}))
    boxes, last = [], None
    with components.make_detector() as detector:
        for frame in pristine:
            faces = detector.detect(frame)
            if faces:
                last = max(faces, key=lambda f: f.box.w * f.box.h).box
            boxes.append(last)
    if last is None:
        raise SourceError("the detector found no face in the pristine clip")
    first = next(b for b in boxes if b is not None)
    return [b if b is not None else first for b in boxes], components.restorer.spec


def pair_samples(pristine: list[np.ndarray], distorted: list[np.ndarray], boxes, spec) -> list[FaceSample]:
    samples = []
    for index, (truth, frame, box) in enumerate(zip(pristine, distorted, boxes)):
        crop_box = square_crop_box(box, spec.crop_scale)
        samples.append(
            FaceSample(
                track_id=0,
                frame_index=index,
                face_px=max(box.w, box.h),
                crop=extract_crop(frame, crop_box, spec.input_size),
                truth=extract_crop(truth, crop_box, spec.input_size),
                region=metrics.face_region_in_crop(box, crop_box, spec.input_size),
                restored=True,
                frame_luma=brightness.frame_luma(frame),
            )
        )
    return samples


def run(pair: tuple[Path, Path], models: dict[str, Path], config: Path, out_dir: Path) -> dict:
    pristine, distorted = (list(read_frames(path)) for path in pair)
    if len(pristine) != len(distorted) or pristine[0].shape != distorted[0].shape:
        raise SourceError(f"{pair[0].name} and {pair[1].name} differ in frame count or size")
    boxes, spec = face_boxes(pristine, config)
    samples = pair_samples(pristine, distorted, boxes, spec)
    outputs = {"bicubic": np.stack([s.crop for s in samples])}
    for name, path in models.items():
        restorer = TorchScriptRestorer.load(path, device="cpu")
        outputs[f"pasted:{name}"] = as_the_pipeline_pastes(samples, restore_with_model(samples, restorer))
    report = summarise(samples, outputs)
    report["pair"] = [str(p) for p in pair]
    report["face_px_median"] = float(np.median([s.face_px for s in samples]))
    out_dir.mkdir(parents=True, exist_ok=True)
    save_png(track_grid(samples, outputs, tracks=1, frames=6), out_dir / "grid.png")
    return report


def format_table(report: dict) -> str:
    lines = [
        f"{report['faces']} frames, face {report['face_px_median']:.0f} px (median)",
        f"{'method':<20} {'PSNR dB':>8} {'SSIM':>7} {'temporal err':>12}",
    ]
    for method, t in report["totals"].items():
        if method == "truth":
            continue
        lines.append(f"{method:<20} {t['psnr']:>8.2f} {t['ssim']:>7.4f} {t['temporal_error']:>12.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pristine", type=Path, default=DEFAULT_PAIR[0])
    parser.add_argument("--distorted", type=Path, default=DEFAULT_PAIR[1])
    parser.add_argument("--model", action="append", metavar="NAME=PATH", help="a restorer to score (repeatable)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="pipeline config (the detector)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    models = {n: Path(p) for n, p in (m.split("=", 1) for m in args.model)} if args.model else dict(DEFAULT_MODELS)
    try:
        report = run((args.pristine, args.distorted), models, args.config, args.out)
    except (SourceError, ConfigError, ModelLoadError, ContractError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(report))
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / 'report.json'} and {args.out / 'grid.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
