"""Any video a camera or recorder writes goes through source -> sink: every frame, its timestamp,
its pixels (upright, as a player shows them), and its audio streams, with no exception."""

from __future__ import annotations

import threading
from fractions import Fraction

import av
import numpy as np
import pytest

from streamer.sinks import SinkOptions, encoded_size, open_sink
from streamer.sources import SourceError, open_source
from tests.helpers.camera_clips import (
    FRAMES,
    CameraClip,
    frame_times_ms,
    write_camera_clip,
)
from tests.helpers.media import psnr

CASES = [
    CameraClip("h264_388x512"),
    CameraClip("h264_full_range", pix_fmt="yuvj420p"),
    CameraClip("h264_422", pix_fmt="yuv422p"),
    CameraClip("h264_10bit", pix_fmt="yuv420p10le"),
    CameraClip("h264_odd_175x143", pix_fmt="yuv444p", size=(175, 143)),
    CameraClip("hevc_388x512", codec="libx265", suffix=".mkv"),
    CameraClip("hevc_10bit", codec="libx265", pix_fmt="yuv420p10le"),
    CameraClip("mjpeg_odd_175x143", codec="mjpeg", pix_fmt="yuvj420p", size=(175, 143), suffix=".mkv"),
    CameraClip("mjpeg_422", codec="mjpeg", pix_fmt="yuvj422p", suffix=".mkv"),
    CameraClip("rotated_90", rotation=90, size=(176, 144)),
    CameraClip("rotated_270", rotation=270, size=(176, 144)),
    CameraClip("variable_rate", frame_ms=(40, 40, 120, 33, 67), size=(176, 144)),
    CameraClip("interlaced", interlaced=True, size=(176, 144)),
    CameraClip("one_audio", audio_streams=1, size=(176, 144)),
    CameraClip("two_audio", audio_streams=2, size=(176, 144)),
]


def decoded_reference(path) -> tuple[list[np.ndarray], list[Fraction], list[bool]]:
    """The input's frames as a player shows them (turned by the display matrix), their times, and
    whether each is flagged interlaced."""
    images, times, interlaced = [], [], []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            interlaced.append(frame.interlaced_frame)
            images.append(np.rot90(frame.to_ndarray(format="rgb24"), round(frame.rotation / 90) % 4))
            times.append(frame.pts * frame.time_base)
    return images, times, interlaced


@pytest.mark.parametrize("spec", CASES, ids=[spec.name for spec in CASES])
def test_every_camera_format_keeps_frames_times_pixels_and_audio(tmp_path, spec):
    clip = write_camera_clip(tmp_path, spec)
    want_images, want_times, interlaced = decoded_reference(clip)
    assert len(want_images) == FRAMES and all(interlaced) == spec.interlaced
    assert [round(t * 1000) for t in want_times] == frame_times_ms(spec)

    output = tmp_path / "out.mp4"
    with open_source(str(clip), "cam") as source, open_sink(str(output), source.info, SinkOptions()) as sink:
        info = source.info
        for frame in source.frames(threading.Event()):
            sink.write(frame)

    with av.open(str(output)) as container:
        assert len(container.streams.audio) == spec.audio_streams
        decoded = list(container.decode(video=0))
    got_times = [round(frame.pts * frame.time_base * 1000) for frame in decoded]
    assert got_times == frame_times_ms(spec)
    height, width = want_images[0].shape[:2]
    assert (info.width, info.height) == (width, height)
    assert (decoded[0].width, decoded[0].height) == encoded_size(width, height, "yuv420p")
    for frame, want in zip(decoded, want_images):
        got = frame.to_ndarray(format="rgb24")[:height, :width]  # odd sides are padded by one
        assert psnr(got, want) > 30, spec.name


@pytest.mark.parametrize(
    "name, text", [("notes.txt", "a text file\n" * 300), ("readme.nfo", "ANSI art\n" * 300)], ids=["txt", "nfo"]
)
def test_text_that_ffmpeg_renders_as_pictures_is_refused(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SourceError, match="not a video"):
        open_source(str(path), "cam")
