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
from streamer.values import ColourTags, SourcePlanes
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


# BT.601/709/2020 (Kr, Kb), written out here rather than taken from streamer.colour; 2 (unspecified) is read as BT.601
KR_KB = {1: (0.2126, 0.0722), 2: (0.299, 0.114), 6: (0.299, 0.114), 9: (0.2627, 0.0593)}
# (pixel format, matrix, range): each matrix and range in 4:2:0, and each layout and bit depth
CONVERSIONS = [
    ("yuv420p", 6, 1),
    ("yuv420p", 1, 1),
    ("yuv420p", 9, 1),
    ("yuvj420p", 6, 2),
    ("yuv420p", 1, 2),
    ("yuv420p", 9, 2),
    ("yuv420p", 2, 0),
    ("yuv422p", 1, 1),
    ("yuv444p", 6, 2),
    ("yuv420p10le", 9, 1),
    ("yuv422p10le", 1, 2),
    ("yuv444p12le", 6, 1),
]


def textured_frame(pix_fmt: str, matrix: int, colour_range: int, width: int = 175, height: int = 143) -> av.VideoFrame:
    """A frame of smooth waves plus noise in every plane (odd sides: the chroma planes' last
    samples cover one pixel), tagged with `matrix` and `colour_range`."""
    frame = av.VideoFrame(width, height, pix_fmt)
    bits = frame.format.components[0].bits
    top = (1 << bits) - 1
    rng = np.random.default_rng(matrix * 10 + colour_range)
    for index, plane in enumerate(frame.planes):
        samples = np.frombuffer(memoryview(plane), np.uint8 if bits == 8 else np.uint16).reshape(plane.height, -1)
        ys, xs = np.mgrid[0 : samples.shape[0], 0 : samples.shape[1]]
        waves = 0.5 + 0.4 * np.sin(xs / 7.0 + index) * np.cos(ys / 11.0)
        samples[:] = np.clip(waves * top + rng.normal(0, 0.1 * top, samples.shape), 0, top)
    frame.colorspace, frame.color_range = matrix, colour_range
    return frame


def upsampled(chroma: np.ndarray, sub_x: int, sub_y: int) -> np.ndarray:
    """Bilinear 2x along each subsampled axis, each sample centred on the pixels it covers (3/4
    of the nearest sample, 1/4 of the next), the edge samples repeated beyond the edge."""
    for axis, sub in ((0, sub_y), (1, sub_x)):
        if sub == 2:
            samples = np.moveaxis(chroma, axis, 0)
            padded = np.concatenate([samples[:1], samples, samples[-1:]])
            full = np.empty((2 * len(samples),) + samples.shape[1:])
            full[0::2] = 0.25 * padded[:-2] + 0.75 * samples
            full[1::2] = 0.75 * samples + 0.25 * padded[2:]
            chroma = np.moveaxis(full, 0, axis)
    return chroma


def reference_rgb(frame: av.VideoFrame) -> np.ndarray:
    """The frame in RGB computed in float64 from the textbook equations, rounded to nearest."""
    width, height = frame.width, frame.height
    sub_x = 2 if frame.planes[1].width < width else 1
    sub_y = 2 if frame.planes[1].height < height else 1
    bits = frame.format.components[0].bits
    unit = float(1 << (bits - 8))
    planes = [
        np.frombuffer(memoryview(p), np.uint8 if bits == 8 else np.uint16).reshape(p.height, -1)[:, : p.width]
        for p in frame.planes
    ]
    y = planes[0].astype(np.float64)
    u, v = (upsampled(p.astype(np.float64), sub_x, sub_y)[:height, :width] for p in planes[1:])
    if int(frame.color_range) == 2:  # full range
        luma, blue_diff, red_diff = y / (255 * unit), (u - 128 * unit) / (255 * unit), (v - 128 * unit) / (255 * unit)
    else:
        luma, blue_diff, red_diff = (
            (y - 16 * unit) / (219 * unit),
            (u - 128 * unit) / (224 * unit),
            (v - 128 * unit) / (224 * unit),
        )
    kr, kb = KR_KB[int(frame.colorspace)]
    red = luma + 2 * (1 - kr) * red_diff
    blue = luma + 2 * (1 - kb) * blue_diff
    green = (luma - kr * red - kb * blue) / (1 - kr - kb)
    return np.clip(np.floor(255 * np.stack([red, green, blue], axis=-1) + 0.5), 0, 255)


@pytest.mark.parametrize("pix_fmt, matrix, colour_range", CONVERSIONS, ids=lambda value: str(value))
def test_frame_to_rgb_matches_the_float64_conversion_without_mean_shift(monkeypatch, pix_fmt, matrix, colour_range):
    monkeypatch.setattr(colour, "_BAND_PIXELS", 175 * 10)  # many bands of 10 rows, the last one 3 rows
    frame = textured_frame(pix_fmt, matrix, colour_range)

    got = colour.frame_to_rgb(frame)

    difference = got.astype(np.float64) - reference_rgb(frame)
    assert got.shape == (143, 175, 3) and got.dtype == np.uint8
    # 8-bit chroma is upsampled in 8 bits: a chroma value halfway between two codes is off by 1/2,
    # which the blue (red) coefficient of ~2 (~1.6) can turn into 2 code values, rarely
    assert np.abs(difference).max() <= (2 if frame.format.components[0].bits == 8 else 1)
    assert (np.abs(difference) > 1).mean() < 0.005
    shift = difference.mean(axis=(0, 1))
    assert np.abs(shift).max() < 0.03, f"mean shift per channel (R, G, B): {shift}"


def planes_of(frame: av.VideoFrame) -> list[np.ndarray]:
    return [
        np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width].copy()
        for plane in frame.planes
    ]


def test_changed_pixels_anywhere_are_converted_and_every_other_sample_is_the_sources():
    """The sink converts only rectangles around the changes (faces far apart, labels, single
    pixels at odd places and at the edges): each changed pixel, and each chroma sample of a 2x2
    block with one, is the RGB converted; every other sample is the decoded one."""
    tags = ColourTags(1, 1, 1, 1)
    rng = np.random.default_rng(3)
    height, width = 240, 400
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    source_y, source_u, source_v = colour.rgb_to_yuv420(rng.integers(0, 256, (height, width, 3), np.uint8), tags)
    changed = np.zeros((height, width), bool)
    changed[10:50, 300:341] = True  # a face far right
    changed[11:30, 20:60] = True  # one in the same rows, far left
    changed[31:33, 70:75] = True  # a label close below it
    changed[200, 5] = changed[201, 380] = changed[239, 399] = changed[0, 0] = True  # odd, far, edges
    changed[120:180:7, 150:250:9] = True  # a sparse grid: runs just over and under the merge gap
    source = SourcePlanes(source_y.copy(), source_u.copy(), source_v.copy(), tags, changed)

    y, u, v = planes_of(colour.yuv420_frame(image, tags, source))

    full_y, full_u, full_v = colour.rgb_to_yuv420(image, tags)
    blocks = changed.reshape(height // 2, 2, width // 2, 2).any(axis=(1, 3))
    np.testing.assert_array_equal(y, np.where(changed, full_y, source_y))
    np.testing.assert_array_equal(u, np.where(blocks, full_u, source_u))
    np.testing.assert_array_equal(v, np.where(blocks, full_v, source_v))


def reference_yuv420(image: np.ndarray, matrix: int, full_range: bool) -> list[np.ndarray]:
    """Y, U, V of an RGB image in float64 from the textbook equations (chroma: the mean of each
    2x2 block), rounded to nearest."""
    kr, kb = KR_KB[matrix]
    red, green, blue = np.moveaxis(image.astype(np.float64) / 255, -1, 0)
    luma = kr * red + (1 - kr - kb) * green + kb * blue
    blue_diff, red_diff = (blue - luma) / (2 * (1 - kb)), (red - luma) / (2 * (1 - kr))
    luma_span, chroma_span, offset = (255, 255, 0) if full_range else (219, 224, 16)
    planes = [offset + luma_span * luma, 128 + chroma_span * blue_diff, 128 + chroma_span * red_diff]
    height, width = luma.shape
    planes[1:] = [p.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3)) for p in planes[1:]]
    return [np.clip(np.floor(p + 0.5), 0, 255) for p in planes]


@pytest.mark.parametrize("matrix, colour_range", [(6, 1), (1, 1), (9, 1), (1, 2), (2, 0)])
def test_rgb_to_yuv420_matches_the_float64_conversion_without_mean_shift(monkeypatch, matrix, colour_range):
    monkeypatch.setattr(colour, "_BAND_PIXELS", 176 * 10)  # many bands of 10 rows, the last one 2 rows
    image = make_frames(1, 176, 142, seed=matrix, noise=60)[0]

    planes = colour.rgb_to_yuv420(image, ColourTags(matrix, matrix, matrix, colour_range))

    want = reference_yuv420(image, matrix, colour_range == 2)
    for name, got, expected in zip("YUV", planes, want):
        difference = got.astype(np.float64) - expected
        assert got.shape == expected.shape and got.dtype == np.uint8
        assert np.abs(difference).max() <= 1, name
        assert abs(difference.mean()) < 0.05, f"{name}: mean shift {difference.mean():.3f}"
