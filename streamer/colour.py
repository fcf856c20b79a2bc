"""Colour: YUV <-> RGB with the stream's own matrix and range, and the tags that say which.

A decoded frame is YUV. The pipeline works in RGB and the sink writes YUV again; when both
conversions use the matrix (BT.601/709/2020) and range (limited/full) the input was coded with,
and round to nearest, a pixel the compositor did not touch comes back within one code value
of its input with no mean shift, and the output carries the input's tags, so players show it
as they showed the input. (FFmpeg's swscale fast path truncates: about one grey level darker
per round trip; its accurate mode costs 5-10x more.)

An untagged stream is converted with BT.601 limited range (what FFmpeg assumes) on both sides
and stays untagged, so its YUV values survive whatever a player assumes for it.
"""

from __future__ import annotations

import functools

import av
import cv2
import numpy as np

from streamer.values import ColourTags, SourcePlanes

# FFmpeg's AVColorSpace codes -> (Kr, Kb)
_MATRICES = {1: (0.2126, 0.0722), 5: (0.299, 0.114), 6: (0.299, 0.114), 9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}
BT601_KR_KB = (0.299, 0.114)
UNSPECIFIED, LIMITED, FULL = 0, 1, 2  # AVColorRange
# yuv formats read plane by plane: name -> (chroma subsampling x, y, bits)
_PLANAR_YUV = {
    "yuv420p": (2, 2, 8),
    "yuvj420p": (2, 2, 8),
    "yuv422p": (2, 1, 8),
    "yuvj422p": (2, 1, 8),
    "yuv444p": (1, 1, 8),
    "yuvj444p": (1, 1, 8),
    "yuv420p10le": (2, 2, 10),
    "yuv422p10le": (2, 1, 10),
    "yuv444p10le": (1, 1, 10),
    "yuv420p12le": (2, 2, 12),
    "yuv422p12le": (2, 1, 12),
    "yuv444p12le": (1, 1, 12),
}


def _kr_kb(tags: ColourTags) -> tuple[float, float]:
    return _MATRICES.get(tags.matrix, BT601_KR_KB)


# What a sink writes when it knows nothing about the input (frames made in memory).
BT601_LIMITED = ColourTags(matrix=6, primaries=6, transfer=6, range=LIMITED)


def tags_of(frame: av.VideoFrame) -> ColourTags:
    """The frame's tags; a yuvj* format is full range even when the range is not tagged."""
    colour_range = int(frame.color_range)
    if colour_range == UNSPECIFIED and frame.format.name.startswith("yuvj"):
        colour_range = FULL
    return ColourTags(int(frame.colorspace), int(frame.color_primaries), int(frame.color_trc), colour_range)


def _scales(tags: ColourTags, bits: int = 8) -> tuple[float, float, float]:
    """(luma offset, luma span, chroma span) in code values of `bits` bits."""
    unit = float(1 << (bits - 8))
    if tags.full_range:
        return 0.0, 255.0 * unit, 255.0 * unit
    return 16.0 * unit, 219.0 * unit, 224.0 * unit


def _rgb_to_yuv_matrix(tags: ColourTags) -> np.ndarray:
    """3x4 affine matrix: [Y, U, V] = M @ [R, G, B, 1], RGB and YUV in 8-bit code values."""
    kr, kb = _kr_kb(tags)
    kg = 1.0 - kr - kb
    offset, luma_span, chroma_span = _scales(tags)
    luma = np.array([kr, kg, kb])
    blue_diff = (np.array([0.0, 0.0, 1.0]) - luma) / (2.0 * (1.0 - kb))
    red_diff = (np.array([1.0, 0.0, 0.0]) - luma) / (2.0 * (1.0 - kr))
    rows = [
        np.append(luma * luma_span / 255.0, offset),
        np.append(blue_diff * chroma_span / 255.0, 128.0),
        np.append(red_diff * chroma_span / 255.0, 128.0),
    ]
    return np.array(rows, dtype=np.float64)


@functools.lru_cache(maxsize=32)
def _yuv_to_rgb_matrix(tags: ColourTags, bits: int = 8) -> np.ndarray:
    """3x4 affine matrix: [R, G, B] (8-bit) = M @ [Y, U, V, 1] (YUV in `bits`-bit code values),
    for cv2.transform; cached (a stream's frames share their tags), so read-only."""
    forward = _rgb_to_yuv_matrix(tags)
    inverse = np.linalg.inv(forward[:, :3])
    unit = float(1 << (bits - 8))
    matrix = np.hstack([inverse / unit, -(inverse @ forward[:, 3])[:, None]])
    if bits == 8:
        matrix = _for_fixed_point(matrix)
    matrix = matrix.astype(np.float32)
    matrix.flags.writeable = False
    return matrix


# cv2.transform's 8-bit path multiplies in fixed point, each coefficient and offset rounded to
# 1/1024. Rounding the coefficients here instead, and letting the offsets take up what that moves
# at mid-grey, keeps the error a fraction of a code value with no mean shift (cv2's own rounding
# shifted the mean by up to 0.09 code values, e.g. R darker by 0.08 with BT.601 limited range).
_FIXED_POINT = 1024.0
_MID_GREY = np.array([128.0, 128.0, 128.0])


def _for_fixed_point(matrix: np.ndarray) -> np.ndarray:
    coefficients = np.round(matrix[:, :3] * _FIXED_POINT) / _FIXED_POINT
    offsets = matrix[:, 3] + (matrix[:, :3] - coefficients) @ _MID_GREY
    offsets = np.round(offsets * _FIXED_POINT) / _FIXED_POINT
    return np.hstack([coefficients, offsets[:, None]])


def _plane(frame: av.VideoFrame, index: int, width: int, height: int, dtype: type) -> np.ndarray:
    plane = frame.planes[index]
    itemsize = np.dtype(dtype).itemsize
    rows: np.ndarray = np.frombuffer(memoryview(plane), dtype).reshape(plane.height, plane.line_size // itemsize)
    return rows[:height, :width]


# The frame is converted a band of rows at a time: a band's planes (about 3 MB at 1080p) stay in the
# CPU cache, a whole 1080p frame's (about 25 MB with the upsampled chroma) do not, and the cache
# misses cost more than the arithmetic (bench/pipeline_bench.py --profile).
_BAND_PIXELS = 1 << 18
# Nearest-neighbour doubling followed by [1 2 1] / 4 is 2x bilinear with centred samples (each
# pixel 3/4 of its own sample and 1/4 of the next one over, as cv2.resize INTER_LINEAR) at a
# third of cv2.resize's cost; the float kernel rounds ties to even, so no mean shift either.
_BILINEAR_2X = np.array([0.25, 0.5, 0.25], np.float32)
_AS_IS = np.array([1.0], np.float32)


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """HxWx3 uint8 RGB of a decoded frame, converted with its own matrix and range (rounded)."""
    layout = _PLANAR_YUV.get(frame.format.name)
    if layout is None:
        return np.ascontiguousarray(frame.to_ndarray(format="rgb24"))  # RGB, grey, nv12, ...: FFmpeg's conversion
    sub_x, sub_y, bits = layout
    width, height = frame.width, frame.height
    dtype = np.uint8 if bits == 8 else np.uint16
    luma = _plane(frame, 0, width, height, dtype)
    chroma = _chroma_side_by_side(frame, sub_x, sub_y, dtype)
    matrix = _yuv_to_rgb_matrix(tags_of(frame), bits)
    rgb = np.empty((height, width, 3), np.uint8)
    band = max(2, _BAND_PIXELS // width // 2 * 2)  # even: each band starts on a chroma row
    for top in range(0, height, band):
        bottom = min(top + band, height)
        yuv = cv2.merge([luma[top:bottom], *_full_size_chroma(chroma, top, bottom, width, sub_x, sub_y)])
        if bits == 8:
            cv2.transform(yuv, matrix, dst=rgb[top:bottom])  # rounded and clipped to uint8
        else:
            cv2.convertScaleAbs(cv2.transform(yuv, matrix), dst=rgb[top:bottom])  # rounded, clipped
    return rgb


def _chroma_side_by_side(frame: av.VideoFrame, sub_x: int, sub_y: int, dtype: type) -> np.ndarray:
    """The U and V planes side by side, each with its edge samples repeated around it: one image
    to upsample, in which the pixels at a plane's edge interpolate towards their own samples."""
    width, height = -(-frame.width // sub_x), -(-frame.height // sub_y)
    planes = [_plane(frame, i, width, height, dtype) for i in (1, 2)]
    return np.hstack([cv2.copyMakeBorder(plane, 1, 1, 1, 1, cv2.BORDER_REPLICATE) for plane in planes])


def _full_size_chroma(
    chroma: np.ndarray, top: int, bottom: int, width: int, sub_x: int, sub_y: int
) -> tuple[np.ndarray, np.ndarray]:
    """U and V of the frame's rows top..bottom at full size, upsampled smoothly from `chroma`
    (_chroma_side_by_side); top is a multiple of sub_y."""
    rows = chroma[top // sub_y : (bottom - 1) // sub_y + 3]  # with the chroma row above and below
    if sub_x == 2:
        rows = cv2.merge([rows, rows]).reshape(rows.shape[0], -1)
    if sub_y == 2:
        rows = np.repeat(rows, 2, axis=0)
    if sub_x == 2 or sub_y == 2:
        kernel_x, kernel_y = (_BILINEAR_2X if sub == 2 else _AS_IS for sub in (sub_x, sub_y))
        rows = cv2.sepFilter2D(rows, -1, kernel_x, kernel_y, borderType=cv2.BORDER_REPLICATE)
    rows = rows[sub_y : sub_y + bottom - top]  # without the context rows
    v_left = sub_x * (chroma.shape[1] // 2 + 1)
    return rows[:, sub_x : sub_x + width], rows[:, v_left : v_left + width]


def rgb_to_yuv420(image: np.ndarray, tags: ColourTags) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Y, U and V planes of an RGB image with even sides, converted with `tags`' matrix and
    range (rounded; each chroma sample is the mean of its 2x2 block). A band of rows at a time,
    as frame_to_rgb: a whole 1080p frame's temporaries cost more in cache misses and page faults
    than the arithmetic."""
    height, width = image.shape[:2]
    matrix = _for_fixed_point(_rgb_to_yuv_matrix(tags)).astype(np.float32)
    luma = np.empty((height, width), np.uint8)
    u, v = np.empty((height // 2, width // 2), np.uint8), np.empty((height // 2, width // 2), np.uint8)
    band = max(2, _BAND_PIXELS // width // 2 * 2)  # even: whole 2x2 chroma blocks
    for top in range(0, height, band):
        bottom = min(top + band, height)
        rows = image[top:bottom]
        cv2.extractChannel(cv2.transform(rows, matrix), 0, dst=luma[top:bottom])
        # U and V of the 2x2 blocks' mean RGB: one rounding (the mean of four rounded U values
        # rounds its 1 in 4 halves up, +0.125 on average); the mean RGB's own rounding is the same
        # in R, G and B, which U and V (their coefficients summing to 0) do not see
        means = cv2.resize(rows, (width // 2, (bottom - top) // 2), interpolation=cv2.INTER_AREA)
        chroma = cv2.transform(means, matrix)
        cv2.extractChannel(chroma, 1, dst=u[top // 2 : bottom // 2])
        cv2.extractChannel(chroma, 2, dst=v[top // 2 : bottom // 2])
    return luma, u, v


def source_planes(frame: av.VideoFrame) -> SourcePlanes | None:
    """Copies of a decoded frame's Y, U, V planes when it is 8-bit 4:2:0 with even sides (what a
    yuv420p sink writes), else None."""
    if frame.format.name not in ("yuv420p", "yuvj420p") or frame.width % 2 or frame.height % 2:
        return None
    width, height = frame.width, frame.height
    y = _plane(frame, 0, width, height, np.uint8).copy()
    u, v = (_plane(frame, i, width // 2, height // 2, np.uint8).copy() for i in (1, 2))
    return SourcePlanes(y, u, v, tags_of(frame))


# Changed pixels this many rows or columns apart are converted in one rectangle: fewer, larger
# conversions (each costs a few cv2 calls) against converting the unchanged pixels between them.
MERGE_GAP_PX = 32


def _keep_unchanged(image: np.ndarray, tags: ColourTags, source: SourcePlanes) -> tuple[np.ndarray, ...]:
    """The source's own samples wherever the compositor changed no pixel, and `image` converted
    where it did (a chroma sample is converted when any pixel of its 2x2 block changed). Only the
    rectangles around the changes are converted: the faces are a small part of a CCTV frame, and
    one rectangle around faces far apart would be most of it."""
    assert source.changed is not None
    rects = _changed_rects(source.changed)
    if not rects:
        return source.y, source.u, source.v
    planes = source.y.copy(), source.u.copy(), source.v.copy()
    for x0, y0, x1, y1 in rects:
        converted = rgb_to_yuv420(np.ascontiguousarray(image[y0:y1, x0:x1]), tags)
        changed = source.changed[y0:y1, x0:x1]
        blocks = changed.reshape(changed.shape[0] // 2, 2, changed.shape[1] // 2, 2).any(axis=(1, 3))
        for plane, new, where, scale in zip(planes, converted, (changed, blocks, blocks), (1, 2, 2)):
            window = plane[y0 // scale : y1 // scale, x0 // scale : x1 // scale]
            np.copyto(window, new, where=where)
    return planes


def _changed_rects(changed: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) rectangles of whole 2x2 blocks holding every True of an H x W bool map
    with even sides: the bands of rows with changes, each cut where its columns have none for
    more than MERGE_GAP_PX."""
    rects = []
    for top, bottom in _runs(changed.any(axis=1)):  # numpy: ~0.3 ms at 1080p; cv2.reduce takes 20
        for left, right in _runs(changed[top:bottom].any(axis=0)):
            rects.append((left - left % 2, top - top % 2, right + right % 2, bottom + bottom % 2))
    return rects


def _runs(marks: np.ndarray | np.bool_) -> list[tuple[int, int]]:
    """(start, stop) of the runs of non-zero marks, runs fewer than MERGE_GAP_PX apart joined."""
    marked = np.flatnonzero(marks)
    if marked.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(marked) > MERGE_GAP_PX)
    starts = [int(marked[0]), *(int(marked[cut + 1]) for cut in cuts)]
    stops = [*(int(marked[cut]) + 1 for cut in cuts), int(marked[-1]) + 1]
    return list(zip(starts, stops))


def yuv420_frame(image: np.ndarray, tags: ColourTags, source: SourcePlanes | None = None) -> av.VideoFrame:
    """A yuv420p VideoFrame of an RGB image with even sides, tagged with `tags`. With the
    `source` planes the image was decoded from (same size and tags, `changed` set), the pixels
    the compositor left alone keep their decoded samples exactly."""
    height, width = image.shape[:2]
    frame = av.VideoFrame(width, height, "yuv420p")
    planes: tuple[np.ndarray, ...]
    if (
        source is not None
        and source.changed is not None
        and source.tags == tags
        and source.changed.shape == (height, width)
    ):
        planes = _keep_unchanged(image, tags, source)
    else:
        planes = rgb_to_yuv420(image, tags)
    for plane, data in zip(frame.planes, planes):
        target = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
        target[:, : plane.width] = data
    frame.colorspace, frame.color_range = tags.matrix, tags.range
    frame.color_primaries, frame.color_trc = tags.primaries, tags.transfer
    return frame
