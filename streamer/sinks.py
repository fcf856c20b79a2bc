"""Sinks: encode RGB frames into a video file, or push them to an rtsp:// / rtmp:// server (PyAV).

    with open_sink("out.mp4", source.info, SinkOptions()) as sink:   # an exception inside aborts
        for frame in frames:
            sink.write(frame)
    # leaving the block without an exception = sink.close(): the file is finalised

Files: the video goes to a temporary name in the target's folder (`out.partial.mp4`) and is
renamed to the target when `close()` succeeds; `abort()` (or an exception in the `with` block)
removes it, so a failed run leaves no file behind. The frame size comes from the first frame
written (side-by-side output is wider than the source); every later frame must have that size.
Each frame keeps its pts and time base (the stream's average rate is the input's); a frame
without a pts, or with one that does not increase, is placed one nominal frame after the last.

Audio: with `copy_audio` and `info.audio_from` set, `close()` remuxes the encoded video and the
packets of every audio stream of the source into the target without re-encoding the audio, keeping the timestamps
(audio after the last video frame is left out, so a stopped run's audio ends with its video).

Colour: for yuv420p (the default) RGB is converted back with the input's own matrix and range
and the output carries the input's colour tags (`streamer.colour`; `info.colour`, or BT.601
limited range for frames made in memory), so pixels the compositor left alone keep their values
(within one code value, no mean shift) and players show them as they showed the input.
4:2:0 needs even sizes, so an odd width or height is padded by repeating the last column or
row (the output is then 1 px wider or taller; every input pixel is kept). Any other pix_fmt gets the RGB
frame and FFmpeg converts it: with `LOSSLESS_FILE_OPTIONS` (FFV1, bgr0, in a .mkv) the decoded
output equals the written RGB exactly, which is what pixel-exact tests need.

Push targets (rtsp://, rtmp://): frames are encoded (libx264 with tune=zerolatency unless
codec_options say otherwise) and sent; no audio, no temporary file. Frames of a live source go
out as they come; frames of a file are paced to their pts (like ffmpeg -re), so viewers and
servers get a real-time stream instead of a burst they would drop.

Live recordings (`SegmentRecorder`, what a live camera's file output is): the video is cut into
segments of `RecordingOptions.segment_s` seconds named by camera and UTC start time
(`out/cam1_20261201T055000Z.ts`), each written as `NAME.partial.ts` and renamed when it closes.
The container is one that needs no index at the end (MPEG-TS by default, chosen with
bench/crash_recovery.py), so after a SIGKILL the current segment plays up to its last second;
the next run renames such leftovers to their final names. A frame of another size starts a new
segment at that size (or, with `on_resize="scale"`, is scaled to the first size). Retention
deletes a camera's oldest finished segments beyond an age or a total size.

Pushes that must survive the server (`ReconnectingPushSink`, what a live camera's push output
is): a failed send or connection closes the push, frames are dropped (and counted) while it
waits, with exponential backoff, to connect again; a frame of another size is scaled to the
first size (a push cannot change size mid-stream).
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import cv2
import numpy as np

from streamer import colour
from streamer.config import OutputConfig
from streamer.errors import UserError
from streamer.urls import mask_credentials, push_format, url_scheme
from streamer.values import ColourTags, Frame, SourcePlanes, StreamInfo

logger = logging.getLogger(__name__)

X264_FAMILY = ("libx264", "libx264rgb", "libx265")  # codecs that take crf and preset
ENCODER_THREADING = "SLICE"  # see _Encoder._start
PARTIAL_TAG = ".partial"


class SinkError(UserError):
    """An output cannot be written (one line, credentials masked)."""


_OUTPUT = OutputConfig()  # the schema's defaults (config.py holds them all)


@dataclass(frozen=True)
class SinkOptions:
    codec: str = _OUTPUT.codec
    crf: int | None = _OUTPUT.crf  # x264/x265 only
    preset: str | None = _OUTPUT.preset  # x264/x265 only
    pix_fmt: str = "yuv420p"
    codec_options: Mapping[str, str] = field(default_factory=dict)  # passed to the encoder as-is
    copy_audio: bool = True
    transport: str = "tcp"  # rtsp push transport

    def encoder_options(self, push: bool) -> dict[str, str]:
        options = {}
        if self.codec in X264_FAMILY:
            if self.crf is not None:
                options["crf"] = str(self.crf)
            if self.preset is not None:
                options["preset"] = self.preset
            if push:
                # No B-frames, no lookahead: a frame's packet leaves with its encode() call. A live 720p25
                # camera at superfast (bench --presets): ~7 ms inside the encoder, not ~170 ms (4 frames
                # held for B-frames), for ~25 % more bytes. Recordings keep the B-frames: the frames
                # they hold cost no one latency, and files stay smaller.
                options["tune"] = "zerolatency"
        options.update({str(k): str(v) for k, v in self.codec_options.items()})
        return options


@dataclass(frozen=True)
class SegmentFormat:
    """A container a live recording is written in, with the muxer options that keep it playable
    up to about its last second when the process is killed (no index written at the end)."""

    suffix: str
    options: Mapping[str, str]


# Measured by bench/crash_recovery.py (SIGKILL mid-write, then decode what is on disk).
SEGMENT_FORMATS = {
    # fragmented MP4: a moof+mdat every second, the moov (without samples) at the start
    "mp4": SegmentFormat(
        ".mp4",
        {"movflags": "frag_keyframe+empty_moov+default_base_moof", "frag_duration": "1000000", "flush_packets": "1"},
    ),
    # Matroska: a cluster every second, no cues needed to play
    "mkv": SegmentFormat(".mkv", {"cluster_time_limit": "1000", "flush_packets": "1"}),
    # MPEG-TS: no header or index at all; every 188-byte packet stands alone
    "ts": SegmentFormat(".ts", {"flush_packets": "1"}),
}

# Pixel-exact output for tests and forensic review: decoded frames equal the RGB written.
LOSSLESS_FILE_OPTIONS = SinkOptions(codec="ffv1", crf=None, preset=None, pix_fmt="bgr0")


def open_sink(
    target: str, info: StreamInfo, options: SinkOptions | None = None, recording: RecordingOptions | None = None
) -> FileSink | PushSink | SegmentRecorder | ReconnectingPushSink:
    """A sink writing to a file path, or pushing to an rtsp:// or rtmp:// URL. With `recording`,
    a live source's file output is a SegmentRecorder and its push a ReconnectingPushSink."""
    options = options or SinkOptions()
    _check_encoder(options, mask_credentials(target))
    live_recording = recording if info.is_live else None
    if url_scheme(target):
        if push_format(target) is None:
            raise SinkError(f"{mask_credentials(target)}: cannot push to this URL (use rtsp:// or rtmp://)")
        if live_recording is not None:
            return ReconnectingPushSink(target, info, options)
        return PushSink(target, info, options)
    if live_recording is not None:
        return SegmentRecorder(target, info, options, live_recording)
    return FileSink(target, info, options)


def _check_encoder(options: SinkOptions, shown_as: str) -> None:
    """Refuse an unknown codec or a pixel format it cannot write before anything is created."""
    try:
        codec = av.codec.Codec(options.codec, "w")
    except ValueError:  # av.codec.codec.UnknownCodecError
        raise SinkError(f"{shown_as}: unknown encoder {options.codec!r}") from None
    formats = [video_format.name for video_format in codec.video_formats or ()]
    if codec.type != "video" or options.pix_fmt not in formats:
        raise SinkError(
            f"{shown_as}: encoder {options.codec} cannot write pix_fmt {options.pix_fmt!r} "
            f"(it takes: {', '.join(formats) or 'no video'})"
        )


def _pad_to_even(image: np.ndarray) -> np.ndarray:
    """Repeat the last row/column when a side is odd (4:2:0 chroma needs even sizes)."""
    pad_bottom, pad_right = image.shape[0] % 2, image.shape[1] % 2
    if not (pad_bottom or pad_right):
        return image
    return cv2.copyMakeBorder(image, 0, pad_bottom, 0, pad_right, cv2.BORDER_REPLICATE)


def encoded_size(width: int, height: int, pix_fmt: str) -> tuple[int, int]:
    """The size a sink writes for `width` x `height` input (yuv420p rounds odd sides up)."""
    if pix_fmt == "yuv420p":
        return width + width % 2, height + height % 2
    return width, height


def _to_video_frame(
    image: np.ndarray, pix_fmt: str, tags: ColourTags, source: SourcePlanes | None = None
) -> av.VideoFrame:
    if pix_fmt == "yuv420p":
        return colour.yuv420_frame(_pad_to_even(image), tags, source)
    return av.VideoFrame.from_ndarray(image, format="rgb24")


class _Encoder:
    """One video stream in an output container; its size is fixed by the first frame."""

    def __init__(
        self, container: av.container.OutputContainer, info: StreamInfo, options: SinkOptions, push: bool
    ) -> None:
        self._container = container
        self._info = info
        self._options = options
        self._push = push
        self._stream: av.VideoStream | None = None
        self._image_shape: tuple[int, ...] | None = None
        self._last_pts: int | None = None
        self._frame_ticks = max(1, round(1 / (info.rate * info.time_base)))
        self._tags = info.colour or colour.BT601_LIMITED

    @property
    def started(self) -> bool:
        return self._stream is not None

    def _start(self, image: np.ndarray) -> None:
        stream = self._container.add_stream(self._options.codec, rate=self._info.rate)
        stream.width, stream.height = encoded_size(image.shape[1], image.shape[0], self._options.pix_fmt)
        if (stream.width, stream.height) != (image.shape[1], image.shape[0]):
            logger.info(
                "%s: %dx%d frames are written as %dx%d (yuv420p needs even sizes: the last column or row "
                "is repeated; every input pixel is kept)",
                self._info.source_id,
                image.shape[1],
                image.shape[0],
                stream.width,
                stream.height,
            )
        stream.pix_fmt = self._options.pix_fmt
        stream.time_base = self._info.time_base
        stream.codec_context.time_base = self._info.time_base
        stream.options = self._options.encoder_options(self._push)
        # x264's sliced threads (PyAV's default, said here so it stays): no frame waits inside the
        # encoder for the threads. Frame threads (FRAME) hold 10 frames at 1080p superfast, not 4,
        # for ~5 % more CPU and ~1 % fewer bytes on 2 cores (bench --presets).
        stream.codec_context.thread_type = ENCODER_THREADING
        if self._options.pix_fmt == "yuv420p":
            context = stream.codec_context
            tags = self._tags
            context.colorspace, context.color_primaries = tags.matrix, tags.primaries
            context.color_trc, context.color_range = tags.transfer, tags.range
        self._stream = stream
        self._image_shape = image.shape

    def encode(self, frame: Frame) -> None:
        if self._stream is None:
            self._start(frame.image)
        if frame.image.shape != self._image_shape:
            raise ValueError(
                f"frame {frame.index}: size {frame.image.shape} differs from the first frame's {self._image_shape}"
            )
        video_frame = _to_video_frame(frame.image, self._options.pix_fmt, self._tags, frame.planes)
        video_frame.pts = self._next_pts(frame)
        video_frame.time_base = self._info.time_base
        self._container.mux(self._stream.encode(video_frame))

    def _next_pts(self, frame: Frame) -> int:
        pts = frame.pts
        if pts is not None and frame.time_base != self._info.time_base:
            pts = round(pts * frame.time_base / self._info.time_base)
        if pts is None or (self._last_pts is not None and pts <= self._last_pts):
            pts = 0 if self._last_pts is None else self._last_pts + self._frame_ticks
        self._last_pts = pts
        return pts

    @property
    def end_seconds(self) -> Fraction:
        """The time just after the last frame encoded."""
        if self._last_pts is None:
            return Fraction(0)
        return (self._last_pts + self._frame_ticks) * self._info.time_base

    def flush(self) -> None:
        if self._stream is not None:
            self._container.mux(self._stream.encode(None))


def _close_quietly(container: av.container.OutputContainer, shown_as: str) -> None:
    """Close an output being abandoned; its errors no longer matter to anyone."""
    try:
        container.close()
    except (av.FFmpegError, OSError) as error:
        logger.debug("%s: closing an abandoned output: %s", shown_as, error)


class _Sink:
    """The context-manager protocol both sinks share: an exception in the block aborts."""

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class FileSink(_Sink):
    """Writes a video file through a temporary name; see the module docstring."""

    def __init__(self, target: str, info: StreamInfo, options: SinkOptions) -> None:
        self.target = Path(target)
        self.info = info
        self.options = options
        if not self.target.parent.is_dir():
            raise SinkError(f"{target}: folder {self.target.parent} does not exist")
        self._audio_from = info.audio_from if options.copy_audio else None
        self.partial = self._partial_path("")
        # With audio to add, the encoder writes a video-only file that close() remuxes into `partial`.
        self._video_path = self._partial_path(".video") if self._audio_from else self.partial
        self._container = _open_output(str(self._video_path), str(self.target))
        self._encoder = _Encoder(self._container, info, options, push=False)

    def _partial_path(self, tag: str) -> Path:
        return self.target.with_name(f"{self.target.stem}{tag}{PARTIAL_TAG}{self.target.suffix}")

    def write(self, frame: Frame) -> None:
        try:
            self._encoder.encode(frame)
        except av.FFmpegError as error:
            raise SinkError(f"{self.target}: cannot encode frame {frame.index}: {error}") from None

    def close(self) -> None:
        """Finalise: flush the encoder, add the audio, rename to the target. Aborts on failure."""
        if self._container is None:
            return
        try:
            self._finish()
        except SinkError:
            self.abort()
            raise
        except (av.FFmpegError, OSError) as error:
            self.abort()
            raise SinkError(f"{self.target}: cannot finalise: {error}") from None

    def _finish(self) -> None:
        if not self._encoder.started:
            raise SinkError(f"{self.target}: no frames were written")
        self._encoder.flush()
        self._container.close()
        self._container = None
        if self._audio_from:
            _remux_with_audio(self._video_path, self._audio_from, self.partial, self._encoder.end_seconds)
            self._video_path.unlink()
        os.replace(self.partial, self.target)

    def abort(self) -> None:
        """Stop writing and remove every temporary file; the target is not created."""
        if self._container is not None:
            _close_quietly(self._container, str(self.target))
            self._container = None
        for path in (self._video_path, self.partial):
            path.unlink(missing_ok=True)


def _open_output(path: str, shown_as: str, **open_args) -> av.container.OutputContainer:
    try:
        return av.open(path, "w", **open_args)
    except (av.FFmpegError, OSError, ValueError) as error:
        raise SinkError(mask_credentials(f"{shown_as}: cannot open for writing: {error}")) from None


def _remux_with_audio(video_path: Path, audio_from: str, output_path: Path, video_end: Fraction) -> None:
    """Stream-copy the video of `video_path` and the audio of `audio_from` (up to `video_end`
    seconds) into `output_path`."""
    # Keep negative timestamps (AAC priming) instead of shifting every stream: the video's pts must stay the input's.
    keep_timestamps = {"avoid_negative_ts": "disabled"}
    with (
        av.open(str(video_path)) as video_in,
        av.open(audio_from) as audio_in,
        av.open(str(output_path), "w", options=keep_timestamps) as out,
    ):
        if not audio_in.streams.audio:
            raise SinkError(f"{audio_from}: no audio stream to copy")
        video = video_in.streams.video[0]
        out_video = out.add_stream_from_template(video)
        # Every audio stream (a recorder may write two: a camera microphone and an intercom).
        out_audio = {audio.index: out.add_stream_from_template(audio) for audio in audio_in.streams.audio}
        packets = _by_time(
            _with_times(video_in.demux(video), out_video),
            _with_times(audio_in.demux(*audio_in.streams.audio), out_audio, until=video_end),
        )
        for packet in packets:
            out.mux(packet)


def _with_times(packets, out_streams, until: Fraction | None = None):
    """(seconds, packet) for real packets, retargeted to `out_streams` (one stream, or a dict by
    input stream index); leaves out the packets at or after `until`."""
    streams = out_streams if isinstance(out_streams, dict) else None
    ended: set[int] = set()
    for packet in packets:
        if packet.dts is None:  # the demuxer's final empty packet
            continue
        seconds = packet.dts * packet.time_base
        if until is not None and packet.pts is not None and packet.pts * packet.time_base >= until:
            ended.add(packet.stream.index)
            if streams is None or ended >= streams.keys():
                return  # every stream has passed `until`: leave the rest of a long file unread
            continue
        packet.stream = streams[packet.stream.index] if streams is not None else out_streams
        yield seconds, packet


def _by_time(*timed_streams):
    """Merge (seconds, packet) iterators by time: interleaved packets make a well-laid-out file."""
    for _, packet in heapq.merge(*timed_streams, key=lambda item: item[0]):
        yield packet


class _RealTimePacer:
    """Sleeps so that frames leave no earlier than their pts say, counted from the first frame."""

    def __init__(self) -> None:
        self._start: tuple[float, Fraction] | None = None  # (wall clock, stream seconds) of frame 0

    def wait_for(self, frame: Frame) -> None:
        if frame.pts is None:
            return
        seconds = frame.pts * frame.time_base
        if self._start is None:
            self._start = (time.monotonic(), seconds)
        due = self._start[0] + float(seconds - self._start[1])
        time.sleep(max(0.0, due - time.monotonic()))


class PushSink(_Sink):
    """Encodes frames and pushes them to an rtsp:// (RTSP ANNOUNCE/RECORD) or rtmp:// (FLV) server."""

    def __init__(self, target: str, info: StreamInfo, options: SinkOptions) -> None:
        self.target = target
        self.masked_target = mask_credentials(target)
        open_args = {"format": push_format(target)}
        if open_args["format"] == "rtsp":
            open_args["options"] = {"rtsp_transport": options.transport}
        self._container = _open_output(target, self.masked_target, **open_args)
        self._encoder = _Encoder(self._container, info, options, push=True)
        self._pacer = None if info.is_live else _RealTimePacer()

    def write(self, frame: Frame) -> None:
        if self._pacer:
            self._pacer.wait_for(frame)
        try:
            self._encoder.encode(frame)
        except (av.FFmpegError, OSError) as error:
            message = f"{self.masked_target}: cannot send frame {frame.index}: {error}"
            raise SinkError(mask_credentials(message)) from None

    def close(self) -> None:
        if self._container is None:
            return
        container, self._container = self._container, None
        try:
            self._encoder.flush()
            container.close()
        except (av.FFmpegError, OSError) as error:
            raise SinkError(mask_credentials(f"{self.masked_target}: {error}")) from None

    def abort(self) -> None:
        """A push has nothing to remove: stop sending."""
        if self._container is not None:
            _close_quietly(self._container, self.masked_target)
            self._container = None


@dataclass(frozen=True)
class RecordingOptions:
    """How a live camera's file output is cut and kept (see the module docstring)."""

    segment_s: float = 600.0  # length of a segment; 0: one segment per connection (no rotation)
    format: Literal["ts", "mkv", "mp4"] = "ts"  # a key of SEGMENT_FORMATS
    on_resize: Literal["segment", "scale"] = "segment"  # a frame of another size: new segment, or scaled
    max_age_s: float = 0.0  # delete finished segments older than this; 0: keep
    max_total_bytes: int = 0  # delete the oldest finished segments beyond this total; 0: no limit


class SegmentRecorder(_Sink):
    """A live camera's recording: rotating, crash-safe segments (see the module docstring)."""

    def __init__(self, target: str, info: StreamInfo, options: SinkOptions, recording: RecordingOptions) -> None:
        target_path = Path(target)
        if not target_path.parent.is_dir():
            raise SinkError(f"{target}: folder {target_path.parent} does not exist")
        self.folder, self.camera = target_path.parent, target_path.stem
        self.info, self.options, self.recording = info, options, recording
        self.format = SEGMENT_FORMATS[recording.format]
        self.finished: list[Path] = []  # segments closed by this recorder, in order
        self._segment: _Segment | None = None
        self._first_size: tuple[int, int] | None = None  # (width, height) of the first frame (on_resize="scale")
        self._recover_leftovers()

    def pattern(self) -> str:
        """The glob of this camera's finished segments."""
        return f"{self.camera}_*{self.format.suffix}"

    def write(self, frame: Frame) -> None:
        image = self._sized(frame.image)
        if self._segment is not None and self._segment.must_end_before(image, frame, self.recording.segment_s):
            self._close_segment()
        if self._segment is None:
            self._segment = _Segment(self._new_path(), self.format, self.info, self.options, frame)
            logger.info(
                "%s: recording %s (%dx%d)", self.camera, self._segment.target.name, image.shape[1], image.shape[0]
            )
        self._segment.write(dataclasses.replace(frame, image=image))

    def _sized(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        if self._first_size is None:
            self._first_size = (width, height)
        if self.recording.on_resize == "scale" and (width, height) != self._first_size:
            return cv2.resize(image, self._first_size, interpolation=cv2.INTER_AREA)
        return image

    def _new_path(self) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        name, number = f"{self.camera}_{stamp}", 2
        while (self.folder / f"{name}{self.format.suffix}").exists() or (
            self.folder / f"{name}{PARTIAL_TAG}{self.format.suffix}"
        ).exists():
            name, number = f"{self.camera}_{stamp}_{number}", number + 1
        return self.folder / f"{name}{self.format.suffix}"

    def _close_segment(self) -> None:
        segment, self._segment = self._segment, None
        if segment is not None and segment.close():
            self.finished.append(segment.target)
            logger.info("%s: segment %s finished (%d frames)", self.camera, segment.target.name, segment.frames)
        self._apply_retention()

    def close(self) -> None:
        """Finalise the current segment (never removes a recording)."""
        self._close_segment()

    def abort(self) -> None:
        """Stop now: the segment written so far is kept (it is evidence, and it plays)."""
        self._close_segment()

    def _recover_leftovers(self) -> None:
        """Segments a killed run left as NAME.partial: they play; give them their final names."""
        for partial in sorted(self.folder.glob(f"{self.camera}_*{PARTIAL_TAG}{self.format.suffix}")):
            final = partial.with_name(partial.name.replace(PARTIAL_TAG, "", 1))
            if not final.exists():
                os.replace(partial, final)
                logger.warning("%s: kept %s, left unfinished by an earlier run", self.camera, final.name)

    def _apply_retention(self) -> None:
        delete = retention_victims(sorted(self.folder.glob(self.pattern())), self.recording, time.time())
        for path in delete:
            path.unlink(missing_ok=True)
            logger.info("%s: retention: deleted %s", self.camera, path.name)


def retention_victims(segments: list[Path], recording: RecordingOptions, now: float) -> list[Path]:
    """The finished segments (oldest first) to delete: older than max_age_s, then the oldest
    while the total is over max_total_bytes."""
    sizes = {path: path.stat().st_size for path in segments if path.exists() and PARTIAL_TAG not in path.name}
    kept = list(sizes)
    victims = []
    if recording.max_age_s > 0:
        victims = [path for path in kept if now - path.stat().st_mtime > recording.max_age_s]
        kept = [path for path in kept if path not in victims]
    if recording.max_total_bytes > 0:
        total = sum(sizes[path] for path in kept)
        while kept and total > recording.max_total_bytes:
            oldest = kept.pop(0)
            total -= sizes[oldest]
            victims.append(oldest)
    return victims


class _Segment:
    """One segment file: written as NAME.partial, renamed to NAME when closed; pts start at 0."""

    def __init__(self, target: Path, fmt: SegmentFormat, info: StreamInfo, options: SinkOptions, first: Frame) -> None:
        self.target = target
        self.partial = target.with_name(f"{target.stem}{PARTIAL_TAG}{target.suffix}")
        self._container = _open_output(str(self.partial), str(target), options=dict(fmt.options))
        self._encoder = _Encoder(self._container, info, options, push=False)
        self._shape = first.image.shape
        self._start_s = _seconds(first) or Fraction(0)
        self.frames = 0

    def must_end_before(self, image: np.ndarray, frame: Frame, segment_s: float) -> bool:
        if image.shape != self._shape:
            return True
        seconds = _seconds(frame)
        return segment_s > 0 and seconds is not None and seconds - self._start_s >= Fraction(segment_s)

    def write(self, frame: Frame) -> None:
        seconds = _seconds(frame)
        pts = None if seconds is None else round((seconds - self._start_s) / self._encoder_time_base)
        try:
            self._encoder.encode(dataclasses.replace(frame, pts=pts, time_base=self._encoder_time_base))
        except av.FFmpegError as error:
            raise SinkError(f"{self.target}: cannot encode frame {frame.index}: {error}") from None
        self.frames += 1

    @property
    def _encoder_time_base(self) -> Fraction:
        return self._encoder._info.time_base

    def close(self) -> bool:
        """Flush and rename; True when a segment with frames was kept."""
        try:
            self._encoder.flush()
            self._container.close()
        except (av.FFmpegError, OSError) as error:
            logger.warning("%s: closing: %s (the frames written so far are kept)", self.target.name, error)
            _close_quietly(self._container, str(self.target))
        if not self.frames:
            self.partial.unlink(missing_ok=True)
            return False
        os.replace(self.partial, self.target)
        return True


def _seconds(frame: Frame) -> Fraction | None:
    return None if frame.pts is None else frame.pts * Fraction(frame.time_base)


@dataclass(frozen=True)
class PushRetry:
    initial_s: float = 0.5
    max_s: float = 10.0


class ReconnectingPushSink(_Sink):
    """A push that outlives its server: see the module docstring. `dropped` and `reconnects` count."""

    def __init__(
        self, target: str, info: StreamInfo, options: SinkOptions, retry: PushRetry | None = None, connect=None
    ) -> None:
        self.target, self.info, self.options = target, info, options
        self.masked_target = mask_credentials(target)
        self.retry = retry or PushRetry()
        self._connect = connect or (lambda: PushSink(target, info, options))
        self._push: PushSink | None = None
        self._first_size: tuple[int, int] | None = None
        self._delay_s = self.retry.initial_s
        self._next_attempt = 0.0
        self.dropped = 0
        self.reconnects = 0
        self._connected_once = False
        self.last_error: str | None = None

    def write(self, frame: Frame) -> None:
        frame = self._sized(frame)
        push = self._push or self._try_connect()
        if push is None:
            self.dropped += 1
            return
        try:
            push.write(frame)
        except SinkError as error:
            self._lost(str(error))
            self.dropped += 1
        else:
            self._delay_s = self.retry.initial_s

    def _sized(self, frame: Frame) -> Frame:
        height, width = frame.image.shape[:2]
        if self._first_size is None:
            self._first_size = (width, height)
        if (width, height) == self._first_size:
            return frame
        return dataclasses.replace(frame, image=cv2.resize(frame.image, self._first_size, interpolation=cv2.INTER_AREA))

    def _try_connect(self) -> PushSink | None:
        """The new push, or None while waiting for the next attempt or after a failed one."""
        if time.monotonic() < self._next_attempt:
            return None
        try:
            self._push = self._connect()
        except SinkError as error:
            self._lost(str(error))
            return None
        if self._connected_once:
            self.reconnects += 1
            logger.warning("%s: push reconnected (%d frames dropped so far)", self.masked_target, self.dropped)
        self._connected_once = True
        return self._push

    def _lost(self, reason: str) -> None:
        if self._push is not None:
            self._push.abort()
            self._push = None
        delay, self._delay_s = self._delay_s, min(self._delay_s * 2, self.retry.max_s)
        self._next_attempt = time.monotonic() + delay
        if reason != self.last_error:
            logger.warning(
                "%s; retrying the push in %.1f s (frames are dropped meanwhile)", mask_credentials(reason), delay
            )
        self.last_error = reason

    def close(self) -> None:
        if self._push is not None:
            push, self._push = self._push, None
            try:
                push.close()
            except SinkError as error:
                logger.warning("%s", error)

    def abort(self) -> None:
        if self._push is not None:
            self._push.abort()
            self._push = None
