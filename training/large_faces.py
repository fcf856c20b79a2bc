"""Faces larger than restoration.max_face_px: does restoring them help, scored at their own resolution?

    python -m training.large_faces                     # crowd_walk_1080p degraded at 1080p (faces 40-130 px)
    python -m training.large_faces --height 720 --model models/face_restorer.ts

The restorer sees an S x S crop (S = 64, the face ~43 px wide); a face larger than that is shrunk to
the model's size and its output enlarged back when pasted. Whether that helps can only be judged at
the face's own resolution, which the video check (scored at S x S) cannot see. Here the crowd video is
degraded as training/video_check.py degrades it (blur, noise, H.264 with P-frames) but kept at a
height where its faces are large; the pipeline's detect stage finds and crops every face
(max_face_px lifted), and each face is scored at its crop box's native size against the original,
on the face region, binned by face size:

- `left alone`: the degraded pixels themselves (what the default pipeline shows for such a face);
- `pasted`: the model's output as the pipeline pastes it (brightness kept), enlarged onto the crop box;
- `native`: the model run on the crop at its native size (rounded to a multiple of 8 px; the network
  is fully convolutional), pasted the same way: a model that runs at the crop's own scale.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from streamer import REPO_ROOT, brightness, compositing
from streamer.components import build_components
from streamer.config import load_config
from streamer.model_contract import (
    batch_to_crops,
    crops_to_batch,
    cut_square,
    resize_square,
)
from training import metrics
from training.video_check import (
    DEFAULT_CONFIG,
    DEFAULT_VIDEO,
    CctvSettings,
    FaceSample,
    as_the_pipeline_pastes,
    read_frames,
    restore_with_model,
    scaled_box,
    write_degraded_video,
)

log = logging.getLogger(__name__)

BINS = ((0, 48), (48, 64), (64, 96), (96, 10_000))
DEFAULT_OUT_DIR = REPO_ROOT / "runs" / "large_faces"


@dataclass(frozen=True)
class NativeFace:
    sample: FaceSample  # the model-sized crop, as the pipeline restores it
    native: np.ndarray  # the crop box's degraded pixels at native size
    truth: np.ndarray  # the same box in the original, resized to the native size
    region: metrics.Region  # the face box in native crop pixels


def collect(original: Path, degraded: Path, config_path: Path, model: Path | None):
    overrides = {"restoration.device": ("cpu", "--device"), "restoration.max_face_px": (0, "--max-face-px")}
    if model is not None:
        overrides["restoration.model"] = (str(model), "--model")
    config = load_config(config_path, overrides)
    components = build_components(config)
    spec = components.restorer.spec
    faces = []
    with components.make_detector() as detector:
        stage = components.detect_stage(detector, config.detection.every_n_frames)
        for index, (truth_frame, frame) in enumerate(zip(read_frames(original), read_frames(degraded), strict=True)):
            factor = truth_frame.shape[0] / frame.shape[0]
            luma = brightness.frame_luma(frame)
            for face in stage.faces_in(frame, index):
                side = int(face.crop_box.w)
                sample = FaceSample(
                    track_id=face.track_id,
                    frame_index=index,
                    face_px=max(face.box.w, face.box.h),
                    crop=face.crop,
                    truth=face.crop,
                    region=metrics.face_region_in_crop(face.box, face.crop_box, spec.input_size),
                    restored=True,
                    frame_luma=luma,
                )
                faces.append(
                    NativeFace(
                        sample,
                        cut_square(frame, face.crop_box),
                        resize_square(cut_square(truth_frame, scaled_box(face.crop_box, factor)), side),
                        metrics.face_region_in_crop(face.box, face.crop_box, side),
                    )
                )
    return faces, components.restorer


def run_native(module: torch.jit.ScriptModule, faces: list[NativeFace]) -> list[np.ndarray]:
    """The model on each crop at its native size (a multiple of 8), pasted as the compositor pastes."""
    out = []
    with torch.inference_mode():
        for face in faces:
            side = face.native.shape[0]
            size = max(16, round(side / 8) * 8)
            x = crops_to_batch(torch.from_numpy(resize_square(face.native, size)[None]))
            restored = resize_square(batch_to_crops(module(x))[0].numpy(), side)
            out.append(compositing.restored_as_pasted(face.native, restored, face.region, face.sample.frame_luma))
    return out


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--model", type=Path, default=None, help="a one-frame restorer (default: the config's)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    settings = CctvSettings(height=args.height)
    args.out.mkdir(parents=True, exist_ok=True)
    degraded = args.out / f"{args.video.stem}_cctv_{settings.height}p_crf{settings.crf}.mp4"
    write_degraded_video(args.video, degraded, settings)
    faces, restorer = collect(args.video, degraded, args.config, args.model)
    samples = [f.sample for f in faces]
    pasted = as_the_pipeline_pastes(samples, restore_with_model(samples, restorer))
    native = run_native(restorer._module, faces) if restorer.spec.frames == 1 else None
    rows = []
    for low, high in BINS:
        members = [i for i, f in enumerate(faces) if low < f.sample.face_px <= high]
        if not members:
            continue
        row = {"face_px": f"{low}-{high}", "faces": len(members)}
        for name, images in (
            ("left_alone", [f.native for f in faces]),
            ("pasted", [resize_square(p, f.native.shape[0]) for p, f in zip(pasted, faces)]),
            ("native", native),
        ):
            if images is None:
                continue
            scores = [metrics.face_scores(images[i], faces[i].truth, faces[i].region) for i in members]
            row[name] = {"psnr": float(np.mean([s[0] for s in scores])), "ssim": float(np.mean([s[1] for s in scores]))}
        rows.append(row)
    print(f"{len(faces)} faces, video degraded at {settings.height}p (blur {settings.blur_sigma}, CRF {settings.crf})")
    print(f"{'face px':>10} {'faces':>6} " + " ".join(f"{n:>16}" for n in ("left alone", "pasted (S=64)", "native")))
    for row in rows:
        cells = " ".join(
            f"{row[n]['psnr']:>8.2f} / {row[n]['ssim']:.3f}" if n in row else f"{'-':>16}"
            for n in ("left_alone", "pasted", "native")
        )
        print(f"{row['face_px']:>10} {row['faces']:>6} {cells}")
    (args.out / "report.json").write_text(json.dumps({"rows": rows, "height": settings.height}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
