"""Generate samples/demo_cctv.mp4: CelebA faces walking through a synthetic CCTV corridor.

    python -m samples.make_sample            # writes samples/demo_cctv.mp4 (needs ../shared/data/faces)
    python -m samples.make_sample --check    # and reports how many faces MediaPipe finds in it

Deterministic for a given --seed: the same faces, paths, noise and encoder settings.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from samples.scene import FacePhoto, Placement, cctv_background, load_faces, paste_face
from streamer.detection import MediaPipeFaceDetector, TilingOptions
from streamer.values import Box

logger = logging.getLogger(__name__)

SAMPLES_DIR = Path(__file__).resolve().parent
DEFAULT_OUTPUT = SAMPLES_DIR / "demo_cctv.mp4"
DETECTOR_MODEL = SAMPLES_DIR.parent / "models" / "face_detection_full_range_sparse.tflite"
WIDTH, HEIGHT, FPS, SECONDS = 640, 360, 20, 8
WALKERS = 6
BLUR_SIGMA = 0.8  # a soft, cheap lens
NOISE_SIGMA = 3.0  # sensor noise, in 8-bit levels
CRF = 30  # low-ish quality, like a CCTV recorder's stream
MATCH_IOU = 0.3


@dataclass(frozen=True)
class Walker:
    """One person: a face photo moving (and growing, when walking toward the camera) along a line."""

    photo: FacePhoto
    start: tuple[float, float]  # face box top-left at the first frame
    end: tuple[float, float]
    start_width: float
    end_width: float
    first_frame: int
    last_frame: int
    clothes_rgb: tuple[int, int, int]

    def placement(self, index: int) -> Placement | None:
        if not self.first_frame <= index <= self.last_frame:
            return None
        t = (index - self.first_frame) / max(1, self.last_frame - self.first_frame)
        x = self.start[0] + t * (self.end[0] - self.start[0])
        y = self.start[1] + t * (self.end[1] - self.start[1])
        width = self.start_width + t * (self.end_width - self.start_width)
        return Placement(int(round(x)), int(round(y)), int(round(width)))


def plan_walkers(photos: list[FacePhoto], frames: int, rng: np.random.Generator) -> list[Walker]:
    """Half of the people cross the corridor sideways, half walk from its far end toward the camera;
    their starts are staggered so 3-5 faces are in view at once."""
    walkers = []
    for index, photo in enumerate(photos):
        first = int(index * frames / (len(photos) + 1))
        last = min(frames - 1, first + int(rng.integers(frames // 2, frames)))
        clothes = tuple(int(c) for c in rng.integers(20, 110, size=3))
        if index % 2 == 0:  # sideways, at a constant distance
            y, width = float(rng.uniform(90, 200)), float(rng.uniform(26, 34))
            xs = (40.0, WIDTH - 80.0) if index % 4 == 0 else (WIDTH - 80.0, 40.0)
            end = (xs[1], y + float(rng.uniform(-20, 20)))
            walkers.append(Walker(photo, (xs[0], y), end, width, width, first, last, clothes))
        else:  # toward the camera: from the vanishing point, down and bigger
            start = (float(rng.uniform(260, 360)), float(rng.uniform(70, 100)))
            end = (float(rng.uniform(80, WIDTH - 120)), float(rng.uniform(200, 240)))
            walkers.append(Walker(photo, start, end, 22.0, 40.0, first, last, clothes))
    return walkers


def render_frame(background: np.ndarray, walkers: list[Walker], index: int) -> tuple[np.ndarray, list[Box]]:
    """The clean frame and the true face boxes of the people in it."""
    image = background.copy()
    boxes = []
    in_view = [(walker, walker.placement(index)) for walker in walkers if walker.placement(index) is not None]
    for walker, placement in sorted(in_view, key=lambda pair: pair[1].width):  # far ones first: near ones hide them
        _draw_body(image, placement, walker.clothes_rgb)
        boxes.append(paste_face(image, walker.photo, placement))
    _draw_timestamp(image, index)
    return image, boxes


def _draw_body(image: np.ndarray, placement: Placement, rgb: tuple[int, int, int]) -> None:
    size = placement.width
    centre = (placement.x + size // 2, placement.y + int(2.6 * size))
    cv2.ellipse(image, centre, (int(1.1 * size), int(1.6 * size)), 0, 0, 360, rgb, -1, cv2.LINE_AA)


def _draw_timestamp(image: np.ndarray, index: int) -> None:
    seconds = index // FPS
    text = f"CAM 03  2026-01-12 03:14:{seconds:02d}"
    cv2.putText(image, text, (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (230, 230, 230), 1, cv2.LINE_AA)


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur and sensor noise; compression comes from the encoder."""
    soft = cv2.GaussianBlur(image, (0, 0), BLUR_SIGMA).astype(np.float32)
    noisy = soft + rng.normal(0.0, NOISE_SIGMA, size=image.shape).astype(np.float32)
    return np.clip(noisy + 0.5, 0, 255).astype(np.uint8)


def generate(path: Path, seed: int) -> list[list[Box]]:
    """Write the clip to `path`; return the true face boxes of each frame."""
    rng = np.random.default_rng(seed)
    frames = FPS * SECONDS
    background = cctv_background(WIDTH, HEIGHT, seed)
    walkers = plan_walkers(load_faces(WALKERS, seed), frames, rng)
    truths = []
    with av.open(str(path), "w") as container:
        stream = _add_h264_stream(container)
        for index in range(frames):
            image, boxes = render_frame(background, walkers, index)
            truths.append(boxes)
            _encode(container, stream, degrade(image, rng), index)
        container.mux(stream.encode(None))
    return truths


def _add_h264_stream(container: av.container.OutputContainer) -> av.VideoStream:
    stream = container.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    stream.time_base = Fraction(1, FPS)
    # One encoder thread: x264's output then depends only on its input (reproducible bytes).
    stream.codec_context.thread_count = 1
    stream.options = {"crf": str(CRF), "preset": "medium", "tune": "film"}
    return stream


def _encode(container: av.container.OutputContainer, stream: av.VideoStream, image: np.ndarray, index: int) -> None:
    # OpenCV's RGB -> I420 is several times cheaper than PyAV's reformat.
    i420 = cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420)
    frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
    frame.pts = index
    container.mux(stream.encode(frame))


def detection_rate(path: Path, truths: list[list[Box]], tiling: TilingOptions | None) -> float:
    """The fraction of true faces (fully inside the frame) that the detector finds in the clip."""
    found = total = 0
    with av.open(str(path)) as container, MediaPipeFaceDetector(DETECTOR_MODEL, 0.5, tiling) as detector:
        for frame, boxes in zip(container.decode(video=0), truths):
            detections = detector.detect(frame.to_ndarray(format="rgb24"))
            for box in filter(_inside_frame, boxes):
                total += 1
                found += any(box.iou(face.box) > MATCH_IOU for face in detections)
    return found / max(1, total)


def _inside_frame(box: Box) -> bool:
    return box.x >= 0 and box.y >= 0 and box.x + box.w <= WIDTH and box.y + box.h <= HEIGHT


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--check", action="store_true", help="report the MediaPipe detection rate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    truths = generate(args.output, args.seed)
    faces = sum(len(boxes) for boxes in truths)
    size_kb = args.output.stat().st_size / 1e3
    logger.info("wrote %s: %d frames, %d faces, %.0f kB", args.output, len(truths), faces, size_kb)
    if args.check:
        for label, tiling in (("whole frame", None), ("tiles 320/96", TilingOptions(320, 96))):
            logger.info("detection rate, %s: %.2f", label, detection_rate(args.output, truths, tiling))


if __name__ == "__main__":
    main()
