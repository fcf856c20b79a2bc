"""The small typed values that flow between the pipeline's stages.

Images are always HxWx3 uint8 RGB, C-contiguous (MediaPipe silently finds nothing in a
non-contiguous view). Boxes are in pixels of the frame they belong to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np


def check_rgb_image(image: np.ndarray, what: str) -> None:
    """Raise ValueError naming `what` unless `image` is a contiguous HxWx3 uint8 array."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{what}: expected a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what}: expected shape (H, W, 3), got {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"{what}: expected dtype uint8, got {image.dtype}")
    if not image.flags.c_contiguous:
        raise ValueError(f"{what}: expected a C-contiguous array (use np.ascontiguousarray)")


@dataclass(frozen=True)
class Box:
    """An axis-aligned box: top-left corner (x, y), width w, height h, in pixels."""

    x: float
    y: float
    w: float
    h: float

    def __post_init__(self) -> None:
        if self.w <= 0 or self.h <= 0:
            raise ValueError(f"Box: expected positive width and height, got w={self.w}, h={self.h}")

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.w / 2.0, self.y + self.h / 2.0)

    @property
    def area(self) -> float:
        return self.w * self.h

    def overlaps_frame(self, width: int, height: int) -> bool:
        """False for a box wholly outside a width x height frame (a face the tracker carried out of
        the picture): it has no pixels to restore."""
        return self.x + self.w >= 1 and self.y + self.h >= 1 and self.x <= width - 1 and self.y <= height - 1

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x + self.w, other.x + other.w) - max(self.x, other.x))
        iy = max(0.0, min(self.y + self.h, other.y + other.h) - max(self.y, other.y))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class ColourTags:
    """A stream's colour description, as FFmpeg's enum codes (2 = unspecified matrix, primaries,
    transfer; range 0 = unspecified, 1 = limited (MPEG), 2 = full (JPEG))."""

    matrix: int = 2  # AVColorSpace: 1 BT.709, 5/6 BT.601, 9 BT.2020
    primaries: int = 2  # AVColorPrimaries
    transfer: int = 2  # AVColorTransferCharacteristic
    range: int = 0  # AVColorRange

    @property
    def full_range(self) -> bool:
        return self.range == 2


@dataclass(frozen=True)
class StreamInfo:
    """What a sink needs to know about the stream it writes."""

    source_id: str
    width: int
    height: int
    rate: Fraction  # frames per second (the input's average rate)
    time_base: Fraction  # the unit of Frame.pts
    is_live: bool
    # A file whose audio the sink copies into the output (None: no audio, or a live source).
    audio_from: str | None = None
    # The input's colour tags: the sink converts back with the same matrix and range and writes
    # the same tags (None: frames made in memory; written as BT.601 limited range).
    colour: ColourTags | None = None


@dataclass(frozen=True)
class SourcePlanes:
    """The decoded 8-bit 4:2:0 planes (Y, U, V) a frame's RGB image was converted from, with
    their colour tags. A sink writing the same format and tags puts these very samples back
    wherever the compositor left the picture alone (`changed`, set by the write stage), so every
    pixel that is not a restored face stays bit-exact, not merely within one code value."""

    y: np.ndarray = field(repr=False)
    u: np.ndarray = field(repr=False)
    v: np.ndarray = field(repr=False)
    tags: ColourTags
    changed: np.ndarray | None = field(default=None, repr=False)  # H x W bool: pixels the compositor changed


@dataclass(frozen=True)
class Frame:
    """One decoded picture with the timing it had in its source."""

    source_id: str
    index: int  # 0-based position in the source's output order
    pts: int | None  # presentation timestamp in time_base units, as the source gave it
    time_base: Fraction
    image: np.ndarray = field(repr=False)
    captured: float | None = field(default=None, compare=False, repr=False)  # time.monotonic() at capture (latency)
    planes: SourcePlanes | None = field(default=None, compare=False, repr=False)  # the decoded YUV, when 4:2:0

    def __post_init__(self) -> None:
        check_rgb_image(self.image, f"Frame {self.source_id}#{self.index}")

    @property
    def seconds(self) -> float | None:
        """The presentation time in seconds; None when the source gave no timestamp."""
        return None if self.pts is None else float(self.pts * self.time_base)


# MediaPipe face detection's six landmarks, in its order ("right" is the person's right).
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")


@dataclass(frozen=True)
class Face:
    """A detected (or tracked) face, and what restoration made of it.

    crop_box is the square region of the frame the model sees (model_contract.square_crop_box);
    crop is that region resized to the model's input size, restored is the model's output for it.
    keypoints are the detector's landmarks in frame pixels, in MediaPipe's order (KEYPOINT_NAMES);
    empty when the detector gives none (RetinaFace's five: eyes, nose, mouth corners).
    window is what a K-frame model sees (model contract v2): the track's last K crops, oldest
    first, ending with `crop` (streamer.track_window); None for a one-frame model.
    """

    box: Box
    score: float
    track_id: int = -1
    crop_box: Box | None = None
    crop: np.ndarray | None = field(default=None, repr=False)
    restored: np.ndarray | None = field(default=None, repr=False)
    keypoints: tuple[tuple[float, float], ...] = ()
    window: np.ndarray | None = field(default=None, repr=False)
    # The restore gate's verdict (streamer.verification): None = not judged, False = not confirmed
    # as a real face, so it is not cropped, not restored, and keeps its pixels.
    verified: bool | None = None


@dataclass(frozen=True)
class FramePacket:
    """A frame and its faces: the unit that moves from detection to the sink."""

    frame: Frame
    faces: tuple[Face, ...] = ()
