"""Test media made on the fly: H.264 clips with known frames, optional AAC audio, and faces.

    frames = make_frames(30, 64, 48)                               # known, varied RGB frames
    write_clip(tmp_path / "a.mp4", frames, fps=25, audio=True)     # H.264 (+ AAC) via PyAV
    frames, boxes = make_face_frames(40, (640, 360), face_px=64)   # faces from ../shared/data/faces

Frame i of a written clip has pts i in time base 1/fps (the muxer may rescale the time base;
the time pts * time_base stays i / fps). `codec="libx264rgb"` writes lossless RGB H.264 and
`codec="ffv1"` lossless FFV1 (use .mkv), so the decoded frames equal the written ones exactly.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import cv2
import numpy as np

from streamer import SHARED_DATA, colour
from streamer.values import Box
from tests.helpers.faces import require_faces

AUDIO_RATE = 48000
AUDIO_TONE_HZ = 440.0
# Pixel format each test codec writes by default (libx264rgb and ffv1 keep RGB exactly).
DEFAULT_PIX_FMT = {"libx264": "yuv420p", "libx264rgb": "rgb24", "ffv1": "bgr0", "mpeg4": "yuv420p"}
DEFAULT_CODEC_OPTIONS = {"libx264rgb": {"qp": "0"}}


def shared_data_dir() -> Path:
    """../shared/data next to the repository (override with env SHARED_DATA)."""
    return SHARED_DATA


def make_frames(count: int, width: int, height: int, seed: int = 0, noise: int = 48) -> list[np.ndarray]:
    """`count` distinct RGB frames: smooth colour waves drifting across the frame, plus fixed
    per-pixel noise in [0, noise).

    The noise makes every pixel distinct (good for exact comparisons); lossy 4:2:0 encoding cannot
    keep per-pixel colour noise, so quality checks of lossy output use noise=0.
    """
    rng = np.random.default_rng(seed)
    noise_image = rng.integers(0, max(noise, 1), size=(height, width, 3)).astype(np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for index in range(count):
        phase = 2 * np.pi * index / 30
        red = np.sin(2 * np.pi * xs / max(width, 2) + phase)
        green = np.sin(2 * np.pi * ys / max(height, 2) + 2 * phase)
        blue = np.sin(2 * np.pi * (xs + ys) / max(width + height, 2) - phase)
        waves = 100 + 80 * np.stack([red, green, blue], axis=-1)
        frames.append(np.ascontiguousarray((waves + noise_image).clip(0, 255).astype(np.uint8)))
    return frames


def write_clip(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: int | Fraction = 25,
    audio: bool = False,
    codec: str = "libx264",
    pix_fmt: str | None = None,
    codec_options: dict[str, str] | None = None,
) -> Path:
    """Encode RGB `frames` into `path` (container from the suffix), frame i at pts i / fps.

    With `audio`, an AAC 440 Hz tone as long as the video is interleaved with it. libx264rgb
    (lossless by default: qp 0) and ffv1 (in .mkv) keep the frames' pixels exactly.
    """
    path = Path(path)
    rate = Fraction(fps)
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=rate)
        video.pix_fmt = pix_fmt or DEFAULT_PIX_FMT.get(codec, "yuv420p")
        video.codec_context.time_base = 1 / rate
        video.options = dict(DEFAULT_CODEC_OPTIONS.get(codec, {}) if codec_options is None else codec_options)
        tone = _AudioTone(container) if audio else None
        for index, image in enumerate(frames):
            if index == 0:
                video.width, video.height = image.shape[1], image.shape[0]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = index
            frame.time_base = 1 / rate
            container.mux(video.encode(frame))
            if tone:
                tone.write_until(Fraction(index + 1) / rate)
        container.mux(video.encode(None))
        if tone:
            tone.flush()
    return path


class _AudioTone:
    """Writes an AAC sine tone into a container, in step with the video."""

    SAMPLES_PER_FRAME = 1024  # the AAC encoder's frame size

    def __init__(self, container: av.container.OutputContainer) -> None:
        self._container = container
        self._stream = container.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        self._written = 0

    def write_until(self, seconds: Fraction) -> None:
        while self._written < seconds * AUDIO_RATE:
            times = (self._written + np.arange(self.SAMPLES_PER_FRAME)) / AUDIO_RATE
            samples = (0.2 * np.sin(2 * np.pi * AUDIO_TONE_HZ * times)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(samples[np.newaxis, :], format="fltp", layout="mono")
            frame.sample_rate = AUDIO_RATE
            frame.pts = self._written
            frame.time_base = Fraction(1, AUDIO_RATE)
            self._container.mux(self._stream.encode(frame))
            self._written += self.SAMPLES_PER_FRAME

    def flush(self) -> None:
        self._container.mux(self._stream.encode(None))


def read_frames(path: str | Path) -> tuple[list[np.ndarray], list[Fraction | None]]:
    """Every decoded frame of the first video stream (RGB, converted as the pipeline's sources
    convert it: streamer.colour) and its time in seconds (None without a timestamp, as in a raw
    .h264 file)."""
    images, times = [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            images.append(colour.frame_to_rgb(frame))
            times.append(None if frame.pts is None else frame.pts * frame.time_base)
    return images, times


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ---- faces -------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _face_index() -> list[tuple[Path, Box]]:
    """(image path, face box inside the 256 px crop) for every CelebA-in-the-wild crop."""
    faces_dir = shared_data_dir() / "faces"
    with open(faces_dir / "celeba_wild_256.csv", newline="") as handle:
        return [
            (faces_dir / row["file"], Box(*(float(row[k]) for k in ("face_x", "face_y", "face_w", "face_h"))))
            for row in csv.DictReader(handle)
        ]


def _moving_background(width: int, height: int, index: int, rng_seed: int) -> np.ndarray:
    """A dim, textured 'corridor' that pans slowly, like a CCTV scene with camera shake."""
    rng = np.random.default_rng(rng_seed)
    grey = rng.integers(50, 150, size=(height // 24 + 2, width // 24 + 2, 1))
    tint = rng.integers(-12, 12, size=(1, 1, 3))
    texture = cv2.resize(
        np.clip(grey + tint, 0, 255).astype(np.uint8), (width + 16, height + 16), interpolation=cv2.INTER_CUBIC
    )
    offset = index % 16
    return np.ascontiguousarray(texture[offset : offset + height, offset : offset + width])


def _feather_mask(size: int, face: Box) -> np.ndarray:
    """An elliptical mask around the face box (1.4x), soft at the edge, as float32 HxWx1."""
    mask = np.zeros((size, size), np.float32)
    center = (int(face.center[0]), int(face.center[1]))
    axes = (int(face.w * 0.65), int(face.h * 0.8))
    cv2.ellipse(mask, center, axes, 0, 0, 360, 1.0, thickness=-1)
    blur = max(3, int(face.w * 0.3) | 1)
    return cv2.GaussianBlur(mask, (blur, blur), 0)[..., np.newaxis]


def _paste_face(frame: np.ndarray, crop: np.ndarray, mask: np.ndarray, x: int, y: int) -> None:
    """Blend `crop` (with `mask`) into `frame` at top-left (x, y), clipped to the frame."""
    height, width = frame.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + crop.shape[1], width), min(y + crop.shape[0], height)
    if x0 >= x1 or y0 >= y1:
        return
    part = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
    region = frame[y0:y1, x0:x1].astype(np.float32)
    blended = region * (1 - mask[part]) + crop[part].astype(np.float32) * mask[part]
    frame[y0:y1, x0:x1] = blended.astype(np.uint8)


def make_face_frames(
    count: int,
    size: tuple[int, int] = (640, 360),
    face_px: int | Sequence[int] = 64,
    seed: int = 0,
    faces: int = 2,
) -> tuple[list[np.ndarray], list[list[Box]]]:
    """`count` RGB frames of `size` (w, h) with `faces` CelebA faces drifting over a moving scene.

    face_px is the face box width in pixels (one per face, or one for all). Returns the frames
    and, per frame, the ground-truth face boxes (MediaPipe convention, frame pixels); a face box
    always stays inside the frame (the faces bounce off the edges).
    """
    require_faces()  # a test without the shared faces is skipped (fails under CI)
    width, height = size
    rng = np.random.default_rng(seed)
    widths = [face_px] * faces if isinstance(face_px, int) else list(face_px)
    index = _face_index()
    walkers = []
    for face_width, pick in zip(widths, rng.choice(len(index), size=len(widths), replace=False)):
        image_path, box = index[pick]
        scale = face_width / box.w
        side = round(256 * scale)
        crop = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
        crop = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        face = Box(box.x * scale, box.y * scale, box.w * scale, box.h * scale)
        start = rng.uniform([0, 0], [max(width - face.w, 1), max(height - face.h, 1)])
        velocity = rng.uniform(-3, 3, size=2)
        walkers.append((crop, _feather_mask(side, face), face, start, velocity))

    frames, boxes = [], []
    for frame_index in range(count):
        frame = _moving_background(width, height, frame_index, seed)
        frame_boxes = []
        for crop, mask, face, start, velocity in walkers:
            # The face box's top-left walks from `start`, bouncing off the frame edges.
            fx, fy = (
                _bounce(start[k] + velocity[k] * frame_index, limit)
                for k, limit in ((0, width - face.w), (1, height - face.h))
            )
            x, y = round(fx - face.x), round(fy - face.y)
            _paste_face(frame, crop, mask, x, y)
            frame_boxes.append(Box(x + face.x, y + face.y, face.w, face.h))
        frames.append(frame)
        boxes.append(frame_boxes)
    return frames, boxes


def _bounce(position: float, limit: float) -> float:
    """Reflect a position that walks past [0, limit] back inside (a ping-pong walk)."""
    if limit <= 0:
        return 0.0
    period = 2 * limit
    position = position % period
    return position if position <= limit else period - position
