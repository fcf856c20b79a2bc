"""Clips shaped like what cameras and recorders write: odd sizes, H.264/H.265/MJPEG, full-range,
4:2:2 and 10-bit pixels, rotation tags, variable frame rate, interlaced coding, 0-2 audio streams.

    spec = CameraClip("hevc_10bit", codec="libx265", pix_fmt="yuv420p10le")
    path = write_camera_clip(tmp_path, spec)
    frames, times = read_frames(path)        # tests.helpers.media

A few frames each (FRAMES), so a whole matrix of them costs a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.helpers.media import make_frames

FRAMES = 6
TIME_BASE = Fraction(1, 1000)
AUDIO_RATE = 16000


@dataclass(frozen=True)
class CameraClip:
    name: str
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    size: tuple[int, int] = (388, 512)  # (width, height) as encoded
    suffix: str = ".mp4"
    rotation: int = 0  # display matrix, degrees counter-clockwise
    frame_ms: tuple[int, ...] = (40,)  # gaps between frames, cycled (several values: variable frame rate)
    interlaced: bool = False
    audio_streams: int = 0
    options: dict[str, str] = field(default_factory=dict)


def frame_times_ms(spec: CameraClip) -> list[int]:
    times, now = [], 0
    for index in range(FRAMES):
        times.append(now)
        now += spec.frame_ms[index % len(spec.frame_ms)]
    return times


def write_camera_clip(folder: Path, spec: CameraClip) -> Path:
    """Encode FRAMES frames of `spec` into folder/<name><suffix>; pts in milliseconds."""
    path = Path(folder) / f"{spec.name}{spec.suffix}"
    width, height = spec.size
    images = make_frames(FRAMES, width, height, noise=0)
    with av.open(str(path), "w") as container:
        video = container.add_stream(spec.codec, rate=Fraction(1000, spec.frame_ms[0]))
        video.width, video.height, video.pix_fmt = width, height, spec.pix_fmt
        video.time_base = video.codec_context.time_base = TIME_BASE
        options = dict(spec.options)
        if spec.codec == "libx265":
            options.setdefault("x265-params", "log-level=error")
        if spec.interlaced:
            video.codec_context.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
        video.options = options
        if spec.rotation:
            video.set_display_rotation(spec.rotation)
        audio = [_add_audio(container) for _ in range(spec.audio_streams)]
        for image, ms in zip(images, frame_times_ms(spec)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=spec.pix_fmt)
            frame.pts, frame.time_base = ms, TIME_BASE
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        end_ms = frame_times_ms(spec)[-1] + spec.frame_ms[0]
        for stream in audio:
            _write_silence(container, stream, end_ms)
    return path


def _add_audio(container: av.container.OutputContainer) -> av.AudioStream:
    return container.add_stream("aac", rate=AUDIO_RATE, layout="mono")


def _write_silence(container: av.container.OutputContainer, stream: av.AudioStream, end_ms: int) -> None:
    written = 0
    while written * 1000 < end_ms * AUDIO_RATE:
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, written, Fraction(1, AUDIO_RATE)
        container.mux(stream.encode(frame))
        written += 1024
    container.mux(stream.encode(None))
