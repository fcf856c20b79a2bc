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


def _yuv_to_rgb_matrix(tags: ColourTags, bits: int = 8) -> np.ndarray:
    """3x4 affine matrix: [R, G, B] (8-bit) = M @ [Y, U, V, 1] (YUV in `bits`-bit code values)."""
    forward = _rgb_to_yuv_matrix(tags)
    inverse = np.linalg.inv(forward[:, :3])
    unit = float(1 << (bits - 8))
    scale = inverse / unit
    return np.hstack([scale, -(inverse @ forward[:, 3])[:, None]]).astype(np.float32)


def _plane(frame: av.VideoFrame, index: int, width: int, height: int, dtype: type) -> np.ndarray:
    plane = frame.planes[index]
    itemsize = np.dtype(dtype).itemsize
    rows: np.ndarray = np.frombuffer(memoryview(plane), dtype).reshape(plane.height, plane.line_size // itemsize)
    return rows[:height, :width]


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """HxWx3 uint8 RGB of a decoded frame, converted with its own matrix and range (rounded)."""
    layout = _PLANAR_YUV.get(frame.format.name)
    if layout is None:
        return np.ascontiguousarray(frame.to_ndarray(format="rgb24"))  # RGB, grey, nv12, ...: FFmpeg's conversion
    sub_x, sub_y, bits = layout
    width, height = frame.width, frame.height
    chroma_w, chroma_h = -(-width // sub_x), -(-height // sub_y)
    dtype = np.uint8 if bits == 8 else np.uint16
    luma = _plane(frame, 0, width, height, dtype)
    chroma = [_plane(frame, i, chroma_w, chroma_h, dtype) for i in (1, 2)]
    if sub_x > 1 or sub_y > 1:
        chroma = [_upsample(c, width, height, sub_x, sub_y) for c in chroma]
    yuv = cv2.merge([luma, *chroma])
    matrix = _yuv_to_rgb_matrix(tags_of(frame), bits)
    if bits == 8:
        return cv2.transform(yuv, matrix)  # float maths, rounded and clipped to uint8
    return np.clip(np.rint(cv2.transform(yuv.astype(np.float32), matrix)), 0, 255).astype(np.uint8)


def _upsample(chroma: np.ndarray, width: int, height: int, sub_x: int, sub_y: int) -> np.ndarray:
    """Chroma at full size: each sample spread over the sub_x x sub_y pixels it covers, smoothly."""
    full = cv2.resize(chroma, (chroma.shape[1] * sub_x, chroma.shape[0] * sub_y), interpolation=cv2.INTER_LINEAR)
    return full[:height, :width]


def rgb_to_yuv420(image: np.ndarray, tags: ColourTags) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Y, U and V planes of an RGB image with even sides, converted with `tags`' matrix and
    range (rounded; each chroma sample is the mean of its 2x2 block)."""
    height, width = image.shape[:2]
    yuv = cv2.transform(image, _rgb_to_yuv_matrix(tags).astype(np.float32))
    luma, u, v = cv2.split(yuv)
    half = (width // 2, height // 2)
    return luma, cv2.resize(u, half, interpolation=cv2.INTER_AREA), cv2.resize(v, half, interpolation=cv2.INTER_AREA)


def source_planes(frame: av.VideoFrame) -> SourcePlanes | None:
    """Copies of a decoded frame's Y, U, V planes when it is 8-bit 4:2:0 with even sides (what a
    yuv420p sink writes), else None."""
    if frame.format.name not in ("yuv420p", "yuvj420p") or frame.width % 2 or frame.height % 2:
        return None
    width, height = frame.width, frame.height
    y = _plane(frame, 0, width, height, np.uint8).copy()
    u, v = (_plane(frame, i, width // 2, height // 2, np.uint8).copy() for i in (1, 2))
    return SourcePlanes(y, u, v, tags_of(frame))


def _keep_unchanged(image: np.ndarray, tags: ColourTags, source: SourcePlanes) -> tuple[np.ndarray, ...]:
    """The source's own samples wherever the compositor changed no pixel, and `image` converted
    where it did (a chroma sample is converted when any pixel of its 2x2 block changed). Only the
    rectangle around the changes is converted: the faces are a small part of a CCTV frame."""
    assert source.changed is not None
    left, top, width, height = cv2.boundingRect(source.changed.view(np.uint8))
    if width == 0:
        return source.y, source.u, source.v
    x0, y0 = left - left % 2, top - top % 2  # whole 2x2 chroma blocks
    x1, y1 = left + width + (left + width) % 2, top + height + (top + height) % 2
    converted = rgb_to_yuv420(np.ascontiguousarray(image[y0:y1, x0:x1]), tags)
    changed = source.changed[y0:y1, x0:x1]
    blocks = changed.reshape(changed.shape[0] // 2, 2, changed.shape[1] // 2, 2).any(axis=(1, 3))
    planes = source.y.copy(), source.u.copy(), source.v.copy()
    for plane, new, where, scale in zip(planes, converted, (changed, blocks, blocks), (1, 2, 2)):
        window = plane[y0 // scale : y1 // scale, x0 // scale : x1 // scale]
        np.copyto(window, new, where=where)
    return planes


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
