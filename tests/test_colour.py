"""Colour fidelity: the output carries the input's colour tags, and a frame that goes through
source -> sink unchanged keeps its YUV values (no mean shift, not even with lossy H.264)."""

from __future__ import annotations

import threading

import av
import numpy as np
import pytest

from streamer import colour
from streamer.sinks import SinkOptions, open_sink
from streamer.sources import open_source
from streamer.values import ColourTags
from tests.helpers.camera_clips import CameraClip, write_camera_clip
from tests.helpers.media import make_frames

BT709 = "colorprim=bt709:transfer=bt709:colormatrix=bt709"
BT601 = "colorprim=smpte170m:transfer=smpte170m:colormatrix=smpte170m"
# name -> (clip, the tags a decoder reads from it: matrix, primaries, transfer, range)
CASES = {
    "untagged": (CameraClip("untagged", size=(320, 240)), (2, 2, 2, 0)),
    "bt601_limited": (CameraClip("bt601", size=(320, 240), options={"x264-params": BT601}), (6, 6, 6, 1)),
    "bt709_limited": (CameraClip("bt709", size=(320, 240), options={"x264-params": BT709}), (1, 1, 1, 1)),
    "bt601_full": (
        CameraClip("bt601f", pix_fmt="yuvj420p", size=(320, 240), options={"x264-params": BT601}),
        (6, 6, 6, 2),
    ),
    "bt709_full": (
        CameraClip("bt709f", pix_fmt="yuvj420p", size=(320, 240), options={"x264-params": BT709}),
        (1, 1, 1, 2),
    ),
}


def tags_and_luma(path) -> tuple[tuple[int, int, int, int], list[np.ndarray]]:
    with av.open(str(path)) as container:
        context = container.streams.video[0].codec_context
        tags = (int(context.colorspace), int(context.color_primaries), int(context.color_trc), int(context.color_range))
        luma = [
            np.frombuffer(f.planes[0], np.uint8).reshape(f.height, -1)[:, : f.width].astype(np.float64)
            for f in container.decode(video=0)
        ]
    return tags, luma


@pytest.mark.parametrize("case", list(CASES))
def test_output_keeps_the_colour_tags_and_shows_no_mean_shift(tmp_path, case):
    spec, want_tags = CASES[case]
    clip = write_camera_clip(tmp_path, spec)
    tags_in, luma_in = tags_and_luma(clip)
    assert tags_in == want_tags  # the clip is what the case says

    output = tmp_path / "out.mp4"
    with open_source(str(clip), "cam") as source, open_sink(str(output), source.info, SinkOptions()) as sink:
        for frame in source.frames(threading.Event()):
            sink.write(frame)

    tags_out, luma_out = tags_and_luma(output)
    assert tags_out == tags_in
    shift = np.mean([(b - a).mean() for a, b in zip(luma_in, luma_out)])
    assert abs(shift) < 0.1, f"{case}: luma mean shift {shift:.3f} grey levels"


@pytest.mark.parametrize(
    "tags", [ColourTags(6, 6, 6, 1), ColourTags(1, 1, 1, 1), ColourTags(1, 1, 1, 2), ColourTags(2, 2, 2, 0)]
)
def test_yuv_to_rgb_and_back_keeps_each_luma_value_within_one(tags):
    image = make_frames(1, 64, 48, noise=40)[0]
    frame = colour.yuv420_frame(image, tags)
    decoded = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
    decoded.colorspace, decoded.color_range = tags.matrix, tags.range

    again = colour.yuv420_frame(colour.frame_to_rgb(decoded), tags)

    before, after = frame.to_ndarray().astype(int), again.to_ndarray().astype(int)
    assert np.abs(after[:48] - before[:48]).max() <= 1
    assert abs((after - before).mean()) < 0.05
