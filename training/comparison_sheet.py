"""A comparison sheet of real footage: each face as the pipeline crops it, beside each restorer's output.

    python -m training.comparison_sheet                                   # office_cctv_360p.mp4 -> docs/
    python -m training.comparison_sheet --video ../shared/data/videos/crowd_walk_1080p.mp4 --every 20

The faces are found by the pipeline's own detect stage (configs/default.yaml's detector and tracker,
restoration.max_face_px lifted so every face is shown); a K-frame model gets each face's window of its
track's last K crops, as in the pipeline. One row per face (the longest tracks, a few frames apart):
the input crop (what a viewer sees without a model, upscaled bicubically), then each model's output
as pasted (brightness kept as the compositor keeps it), all enlarged with nearest-neighbour so the
pixels shown are the models' own. There is no ground truth: this is for looking, not for scoring.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

from streamer import REPO_ROOT, SHARED_DATA, brightness
from streamer.components import build_components
from streamer.config import load_config
from streamer.restoration import TorchScriptRestorer
from streamer.values import Face
from training import metrics
from training.evaluate import save_png
from training.video_check import (
    DEFAULT_CONFIG,
    FaceSample,
    as_the_pipeline_pastes,
    read_frames,
    restore_with_model,
)

log = logging.getLogger(__name__)

DEFAULT_VIDEO = SHARED_DATA / "videos" / "office_cctv_360p.mp4"
DEFAULT_OUT = REPO_ROOT / "docs" / "multi_frame_comparison.png"
ZOOM = 3
LABEL_H = 22


def collect(video: Path, config_path: Path, max_frames: int) -> tuple[list[FaceSample], object]:
    config = load_config(
        config_path, {"restoration.device": ("cpu", "--device"), "restoration.max_face_px": (0, "--max-face-px")}
    )
    components = build_components(config)
    samples = []
    with components.make_detector() as detector:
        stage = components.detect_stage(detector, config.detection.every_n_frames)
        for index, frame in enumerate(read_frames(video)):
            if index >= max_frames:
                break
            luma = brightness.frame_luma(frame)
            for face in stage.faces_in(frame, index):
                samples.append(_sample(face, index, luma))
    return samples, components.restorer.spec


def _sample(face: Face, index: int, luma: float) -> FaceSample:
    size = face.crop.shape[0]
    return FaceSample(
        track_id=face.track_id,
        frame_index=index,
        face_px=max(face.box.w, face.box.h),
        crop=face.crop,
        truth=face.crop,
        region=metrics.face_region_in_crop(face.box, face.crop_box, size),
        restored=True,
        frame_luma=luma,
    )


def pick_rows(samples: list[FaceSample], rows: int, every: int) -> list[int]:
    """Sample indices: frames `every` apart from the longest tracks, up to `rows`."""
    by_track: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_track.setdefault(s.track_id, []).append(i)
    picks: list[int] = []
    for members in sorted(by_track.values(), key=len, reverse=True):
        start = min(len(members) - 1, 8)  # past the young-track frames
        picks += members[start::every][:3]
        if len(picks) >= rows:
            break
    return picks[:rows]


def sheet(samples: list[FaceSample], outputs: dict[str, np.ndarray], picks: list[int]) -> np.ndarray:
    size = samples[0].crop.shape[0] * ZOOM
    header = np.full((LABEL_H, size * len(outputs), 3), 255, np.uint8)
    for col, name in enumerate(outputs):
        cv2.putText(header, name, (col * size + 4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    rows = [header]
    for i in picks:
        tiles = [cv2.resize(images[i], (size, size), interpolation=cv2.INTER_NEAREST) for images in outputs.values()]
        caption = f"track {samples[i].track_id} frame {samples[i].frame_index} face {samples[i].face_px:.0f}px"
        cv2.putText(tiles[0], caption, (3, size - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
        rows.append(np.hstack(tiles))
    return np.vstack(rows)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME=PATH",
        required=True,
        help="a restorer to show (repeatable), e.g. multi_frame=models/face_restorer.ts",
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--frames", type=int, default=300, help="read at most this many frames")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--every", type=int, default=15, help="frames between a track's rows")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    samples, _ = collect(args.video, args.config, args.frames)
    if not samples:
        print(f"error: no faces found in {args.video}", file=sys.stderr)
        return 2
    outputs = {"input (bicubic)": np.stack([s.crop for s in samples])}
    for name, path in (m.split("=", 1) for m in args.model):
        restorer = TorchScriptRestorer.load(path, device="cpu")
        outputs[name] = as_the_pipeline_pastes(samples, restore_with_model(samples, restorer))
    save_png(sheet(samples, outputs, pick_rows(samples, args.rows, args.every)), args.out)
    print(f"wrote {args.out} ({len(samples)} faces seen)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
