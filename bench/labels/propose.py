"""Propose face boxes to label: every candidate that RetinaFace (whole frame, enlarged for small
video) or MediaPipe (whole frame and tiles) finds at a low score, merged, drawn on numbered
contact sheets to look at; `bench/labels/faces.json` keeps the ones a person marked as faces.

    python -m bench.labels.propose --out /tmp/sheets     # writes candidates.json and sheet_*.png

The labels themselves were made by viewing the sheets (and the frames, for faces both detectors
missed); this script is here so the candidates can be regenerated and the labels checked.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import av
import cv2
import numpy as np

from streamer import REPO_ROOT
from streamer.colour import frame_to_rgb
from streamer.detection import MediaPipeFaceDetector, TilingOptions
from streamer.retinaface import RetinaFaceModel
from streamer.values import Box, Face

SHARED_VIDEOS = REPO_ROOT.parent / "shared" / "data" / "videos"
# video name -> (path, every Nth frame labelled, RetinaFace upscale)
VIDEOS = {
    "crowd_walk_1080p": (SHARED_VIDEOS / "crowd_walk_1080p.mp4", 10, 1.0),
    "office_cctv_360p": (SHARED_VIDEOS / "office_cctv_360p.mp4", 20, 3.0),
}
DETECTOR_MODEL = REPO_ROOT / "models" / "face_detection_full_range_sparse.tflite"
THUMB_PX, COLUMNS, ROWS = 112, 8, 6


def labelled_frames(path: Path, every: int) -> dict[int, np.ndarray]:
    frames = {}
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % every == 0:
                frames[index] = frame_to_rgb(frame)
    return frames


def candidates(
    image: np.ndarray, retina: RetinaFaceModel, detectors: list[MediaPipeFaceDetector], upscale: float
) -> list[Face]:
    big = cv2.resize(image, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC) if upscale != 1 else image
    found = [
        Face(Box(f.box.x / upscale, f.box.y / upscale, f.box.w / upscale, f.box.h / upscale), f.score)
        for f in retina.detect(big, min_score=0.3)
    ]
    for detector in detectors:
        found += detector.detect(image)
    merged: list[Face] = []
    for face in sorted(found, key=lambda f: -f.score):
        if all(face.box.iou(other.box) < 0.3 for other in merged):
            merged.append(face)
    return merged


def thumbnail(image: np.ndarray, box: Box, number: int) -> np.ndarray:
    side = 2.5 * max(box.w, box.h)
    cx, cy = box.center
    scale = THUMB_PX / side
    warp = np.array([[scale, 0, -(cx - side / 2) * scale], [0, scale, -(cy - side / 2) * scale]])
    thumb = cv2.warpAffine(image, warp, (THUMB_PX, THUMB_PX), flags=cv2.INTER_CUBIC)
    inner = (THUMB_PX - box.w * scale) / 2, (THUMB_PX - box.h * scale) / 2
    cv2.rectangle(
        thumb, (int(inner[0]), int(inner[1])), (int(THUMB_PX - inner[0]), int(THUMB_PX - inner[1])), (0, 255, 0), 1
    )
    cv2.putText(thumb, str(number), (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1, cv2.LINE_AA)
    cv2.putText(thumb, f"{int(box.w)}px", (2, THUMB_PX - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 0), 1)
    return thumb


def write_sheets(thumbs: list[np.ndarray], out: Path, prefix: str) -> None:
    per_sheet = COLUMNS * ROWS
    for start in range(0, len(thumbs), per_sheet):
        page = thumbs[start : start + per_sheet]
        page += [np.zeros_like(thumbs[0])] * (per_sheet - len(page))
        rows = [np.hstack(page[r * COLUMNS : (r + 1) * COLUMNS]) for r in range(ROWS)]
        cv2.imwrite(
            str(out / f"{prefix}_{start // per_sheet:02d}.png"), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    retina = RetinaFaceModel(threads=2)
    detectors = [
        MediaPipeFaceDetector(DETECTOR_MODEL, 0.3),
        MediaPipeFaceDetector(DETECTOR_MODEL, 0.3, TilingOptions(tile_size=320, overlap=96)),
    ]
    proposals = {}
    for name, (path, every, upscale) in VIDEOS.items():
        thumbs, listed = [], []
        for index, image in labelled_frames(path, every).items():
            for face in candidates(image, retina, detectors, upscale):
                listed.append(
                    {
                        "number": len(listed),
                        "frame": index,
                        "box": [round(v, 1) for v in (face.box.x, face.box.y, face.box.w, face.box.h)],
                    }
                )
                thumbs.append(thumbnail(image, face.box, len(thumbs)))
        write_sheets(thumbs, args.out, name)
        proposals[name] = listed
        print(f"{name}: {len(listed)} candidates")
    (args.out / "candidates.json").write_text(json.dumps(proposals, indent=1))
    for detector in detectors:
        detector.close()


if __name__ == "__main__":
    main()
