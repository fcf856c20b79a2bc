"""Sources: decoded RGB frames from a video file or a live stream URL (PyAV).

    with open_source("cam.mp4", "cam1", SourceOptions()) as source:
        for frame in source.frames(stop):          # stop: threading.Event
            ...

Files: every frame comes out, in order, with the pts and time base the decoder gave it; the
iterator ends at the end of the file (or when `stop` is set). A packet the decoder rejects
(`av.error.InvalidDataError`) is skipped and counted in `stats.corrupt_packets`.
A file that is missing, is not video, or yields no decodable frame (for example an MP4 cut
before its moov atom was written) raises SourceError at `open_source`. A file that decodes
partially (cut in the middle of its media data) yields the frames that decode, then logs a
warning and records "decoded N of M frames" in `stats.last_error`.

Live URLs (rtsp://, rtmp://, http(s)://, udp://, srt://, ...; a plain path is always a file):
`open_source` makes the first connection and fails with SourceError when the stream cannot be
read after `connect_attempts` tries, so a wrong URL is a clear start-up error. Once a stream has
been seen, the iterator reconnects forever (exponential backoff with jitter, capped at
`reconnect_max_s`) and only ends when `stop` is set. An end of stream (a killed camera ends
FFmpeg's read loop without an error) and a read timeout (a stalled camera: no frame for
`read_timeout_s`) both count as a disconnect. `stop` is checked between frames and during the
backoff wait; a read blocked on a silent network returns within `read_timeout_s`
(`open_timeout_s` while connecting), which bounds how long stopping can take. An http(s) URL
is live too: one that points at a finite file would be replayed after every end.

Pictures: every frame comes out as contiguous RGB at its full decoded size (odd sizes too),
turned upright when the stream carries a rotation (display matrix), as a player would show it:
a quarter turn is lossless, and detection needs upright faces. A text file that FFmpeg would
render as pictures (the tty demuxer: .txt, .nfo, ANSI art) is refused with a SourceError.

close() is safe from another thread while frames() runs (see _Source).

Live timestamps: frames get time base 1/90000 and pts starting at 0. Within a connection the
pts follow the stream's pts (shifted); a frame whose pts is missing or does not increase, and
the first frame after a reconnect, is placed by the wall clock (at least one nominal frame
period after the previous frame). So a live source's pts always increase, across reconnects.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from streamer import colour
from streamer.config import SourceConfig
from streamer.errors import UserError
from streamer.stats import SourceStats
from streamer.urls import is_live_url, mask_credentials, not_a_file_hint, url_scheme
from streamer.values import Frame, SourcePlanes, StreamInfo

logger = logging.getLogger(__name__)

LIVE_TIME_BASE = Fraction(1, 90000)  # the RTP video clock; fine-grained enough for any frame rate
FALLBACK_RATE = Fraction(25)  # when a stream does not say its frame rate


class SourceError(UserError):
    """A source the user named cannot be read (one line, credentials masked)."""


# A source's options are the config's `source` section (its `inputs` aside): the schema holds the
# defaults and the rules.
SourceOptions = SourceConfig


def open_source(
    url_or_path: str, source_id: str, options: SourceOptions | None = None, stats: SourceStats | None = None
) -> FileSource | LiveSource:
    """Open a video file or a live stream URL; raises SourceError when it cannot be read. The source
    counts into `stats` (a pipeline passes its run's SourceStats for this source), or its own."""
    options = options or SourceOptions()
    if is_live_url(url_or_path):
        return LiveSource(url_or_path, source_id, options, stats)
    return FileSource(url_or_path, source_id, stats)


class _Decoding:
    """One opened container: its video stream and an iterator over its decoded frames."""

    def __init__(self, container: av.container.InputContainer, where: str, stats: SourceStats) -> None:
        self.container = container
        self.error: str | None = None  # why decoding ended early (a read or decoder error)
        if not container.streams.video:
            container.close()
            raise SourceError(f"{where}: no video stream")
        self.stream = container.streams.video[0]
        refusal = _not_camera_video(container, self.stream)
        if refusal:
            container.close()
            raise SourceError(f"{where}: {refusal}")
        self.stream.thread_type = "AUTO"
        self._where = where
        self._stats = stats
        self.decoded = self._decode()

    @property
    def rate(self) -> Fraction:
        return Fraction(self.stream.average_rate or self.stream.guessed_rate or FALLBACK_RATE)

    def _decode(self) -> Iterator[av.VideoFrame]:
        """Decoded frames until the end or a read error (recorded in stats.last_error)."""
        packets = self.container.demux(self.stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except (av.FFmpegError, OSError) as error:
                self._end_with(error)
                return
            try:
                yield from packet.decode()
            except av.error.InvalidDataError:
                self._stats.corrupt_packets += 1
            except av.FFmpegError as error:
                self._end_with(error)
                return

    def _end_with(self, error: Exception) -> None:
        self.error = mask_credentials(f"{self._where}: {error}")
        self._stats.last_error = self.error

    def close(self) -> None:
        self.decoded.close()
        self.container.close()


# FFmpeg renders text files (.txt, .nfo, ANSI art) as "video" through these demuxers and codecs;
# no camera writes them, so they are refused rather than "restored" into a video of text.
TEXT_DEMUXERS = frozenset({"tty", "bin", "xbin", "adf", "idf"})
TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})


def _not_camera_video(container: av.container.InputContainer, stream: av.VideoStream) -> str | None:
    """Why this input is not a camera's video (None when it is one)."""
    demuxers = set(container.format.name.split(","))
    codec = stream.codec_context.name
    if demuxers & TEXT_DEMUXERS or codec in TEXT_CODECS:
        return f"not a video: FFmpeg reads it as text rendered to pictures ({container.format.name}/{codec})"
    return None


def _open_container(target: str, where: str, **open_args) -> av.container.InputContainer:
    try:
        return av.open(target, "r", **open_args)
    except (av.FFmpegError, OSError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        if isinstance(error, av.error.InvalidDataError) and Path(target).is_file():
            reason = _unreadable_file(Path(target))
        raise SourceError(mask_credentials(f"{where}: cannot open: {reason}")) from None


# The first bytes of the video files FFmpeg reads (MP4/MOV, Matroska/WebM, AVI, FLV): such a
# file that FFmpeg cannot open is a damaged or cut recording, not some other kind of file.
_VIDEO_SIGNATURES = (
    (4, b"ftyp"),
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"free"),
    (4, b"wide"),
    (0, b"\x1aE\xdf\xa3"),
    (0, b"RIFF"),
    (0, b"FLV"),
)


def _unreadable_file(path: Path) -> str:
    """Why FFmpeg found no valid data in a file, in the user's words."""
    with path.open("rb") as handle:
        head = handle.read(12)
    if any(head[at : at + len(magic)] == magic for at, magic in _VIDEO_SIGNATURES):
        return "truncated or damaged video (its header or index is missing)"
    return "not a video (no video format FFmpeg knows)"


def _first_frame(decoding: _Decoding, where: str) -> av.VideoFrame:
    frame = next(decoding.decoded, None)
    if frame is None:
        decoding.close()
        reason = decoding.error or f"{where}: no decodable video frame"
        raise SourceError(f"{reason} (truncated or corrupt?)")
    return frame


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns the frame's display matrix asks for (a phone or a camera
    mounted on its side records the pixels sideways and tags the rotation)."""
    return round(frame.rotation / 90) % 4


def upright_size(frame: av.VideoFrame) -> tuple[int, int]:
    """(width, height) of the frame as a player shows it."""
    if _quarter_turns(frame) % 2:
        return frame.height, frame.width
    return frame.width, frame.height


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    """The frame as a player shows it: RGB, turned upright (a lossless quarter turn), contiguous."""
    rgb = colour.frame_to_rgb(frame)
    turns = _quarter_turns(frame)
    if turns:
        rgb = np.rot90(rgb, turns)
    # PyAV pads each row to its line size; for a width that is not a multiple of it (388, 362 px)
    # a view of the padded buffer is strided, which MediaPipe and cv2 reject.
    return np.ascontiguousarray(rgb)


def _planes(frame: av.VideoFrame) -> SourcePlanes | None:
    """The decoded 4:2:0 planes, kept so the sink can write untouched pixels back exactly; None
    for a frame turned upright (its planes are sideways) or of another format."""
    return None if _quarter_turns(frame) else colour.source_planes(frame)


class _Source:
    """What both kinds of source share: info, stats, close(), and the context-manager protocol.

    close() may come from another thread while frames() is blocked in FFmpeg (a pipeline
    shutting down); closing the container under a running read would crash FFmpeg, so the close
    is then left to the iterator, which releases everything as soon as it returns.
    """

    info: StreamInfo
    stats: SourceStats

    def __init__(self) -> None:
        self._state_lock = threading.Lock()
        self._iterating = False
        self._closed = False

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        with self._state_lock:
            if self._closed or self._iterating:
                raise RuntimeError(f"{self.info.source_id}: frames() on a closed or already iterated source")
            self._iterating = True
        try:
            yield from self._frames(stop)
        finally:
            with self._state_lock:
                self._iterating = False
                closed = self._closed
            if closed:
                self._release()

    def close(self) -> None:
        with self._state_lock:
            self._closed = True
            busy = self._iterating
        if not busy:
            self._release()

    def _frames(self, stop: threading.Event) -> Iterator[Frame]:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class FileSource(_Source):
    """Every frame of a video file, in order; see the module docstring for errors."""

    def __init__(self, path: str, source_id: str, stats: SourceStats | None = None) -> None:
        super().__init__()
        self.path = path
        self.stats = stats or SourceStats(source_id, path)
        if not Path(path).exists():
            raise SourceError(f"{mask_credentials(path)}: no such file{not_a_file_hint(path)}")
        if not Path(path).is_file():
            raise SourceError(f"{path}: not a file")
        container = _open_container(path, path)
        self._decoding = _Decoding(container, path, self.stats)
        self._first = _first_frame(self._decoding, path)
        has_audio = bool(container.streams.audio)
        width, height = upright_size(self._first)
        self.info = StreamInfo(
            source_id=source_id,
            width=width,
            height=height,
            rate=self._decoding.rate,
            time_base=Fraction(self._decoding.stream.time_base),
            is_live=False,
            audio_from=path if has_audio else None,
            colour=colour.tags_of(self._first),
        )

    def _frames(self, stop: threading.Event) -> Iterator[Frame]:
        first, self._first = self._first, None
        if first is None:
            raise RuntimeError(f"{self.path}: frames() can be iterated only once")
        for index, decoded in enumerate(_chain(first, self._decoding.decoded)):
            if stop.is_set():
                return
            self.stats.decoded += 1
            yield Frame(
                self.info.source_id,
                index,
                decoded.pts,
                Fraction(decoded.time_base),
                _rgb(decoded),
                planes=_planes(decoded),
            )
        self._check_complete()

    def _check_complete(self) -> None:
        """Warn when the file ended before the frame count its header promised (a cut file)."""
        expected = self._decoding.stream.frames
        if expected and self.stats.decoded < expected:
            self.stats.truncated = True
            self.stats.last_error = f"{self.path}: truncated: decoded {self.stats.decoded} of {expected} frames"
        if self.stats.last_error:
            logger.warning("%s", self.stats.last_error)

    def _release(self) -> None:
        self._decoding.close()


def _chain(first: av.VideoFrame, rest: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
    yield first
    yield from rest


RECENT_S = 60.0  # a stream seen this recently is retried with the lower backoff cap


class _Backoff:
    """Exponential backoff, capped, with jitter: each wait is drawn from [delay/2, delay] so that
    cameras that dropped together do not all reconnect at the same instant. While the stream was
    up within RECENT_S the cap is `recent_max_s`: a camera that just rebooted is found again
    within seconds, and one that stays away falls back to the slower `max_s`."""

    def __init__(self, initial_s: float, max_s: float, recent_max_s: float | None = None) -> None:
        self._initial_s = initial_s
        self._max_s = max_s
        self._recent_max_s = min(max_s, recent_max_s if recent_max_s is not None else max_s)
        self._delay_s = initial_s
        self._up_at: float | None = None  # when the stream last worked

    def next_delay(self) -> float:
        recent = self._up_at is not None and time.monotonic() - self._up_at < RECENT_S
        cap = self._recent_max_s if recent else self._max_s
        delay = min(self._delay_s, cap)
        self._delay_s = min(delay * 2, cap if recent else self._max_s)
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        """The stream works: the next loss starts from the initial delay, with the recent cap."""
        self._delay_s = self._initial_s
        self._up_at = time.monotonic()


class _LiveClock:
    """Maps the stream's pts to an always-increasing live timeline (see the module docstring)."""

    def __init__(self, rate: Fraction) -> None:
        self._frame_ticks = max(1, round(1 / (rate * LIVE_TIME_BASE)))
        self._last_pts: int | None = None
        self._last_wall = 0.0
        self._offset: int | None = None  # live pts - stream pts, for the current connection

    def new_connection(self) -> None:
        self._offset = None

    def place(self, stream_pts: int | None, stream_time_base: Fraction, now: float) -> int:
        candidate = None
        if stream_pts is not None and self._offset is not None:
            candidate = self._to_live_ticks(stream_pts, stream_time_base) + self._offset
        if candidate is None or (self._last_pts is not None and candidate <= self._last_pts):
            candidate = self._by_wall_clock(now)
            if stream_pts is not None:
                self._offset = candidate - self._to_live_ticks(stream_pts, stream_time_base)
        self._last_pts, self._last_wall = candidate, now
        return candidate

    def _by_wall_clock(self, now: float) -> int:
        if self._last_pts is None:
            return 0
        elapsed_ticks = round((now - self._last_wall) / LIVE_TIME_BASE)
        return self._last_pts + max(elapsed_ticks, self._frame_ticks)

    @staticmethod
    def _to_live_ticks(pts: int, time_base: Fraction) -> int:
        return round(pts * Fraction(time_base) / LIVE_TIME_BASE)


class LiveSource(_Source):
    """A live stream that reconnects forever once it has been seen; see the module docstring."""

    def __init__(self, url: str, source_id: str, options: SourceOptions, stats: SourceStats | None = None) -> None:
        super().__init__()
        self.url = url
        self.masked_url = mask_credentials(url)
        self.options = options
        self.stats = stats or SourceStats(source_id, self.masked_url)
        self._connection, first = self._first_connection()
        width, height = upright_size(first)
        self.info = StreamInfo(
            source_id=source_id,
            width=width,
            height=height,
            rate=self._connection.rate,
            time_base=LIVE_TIME_BASE,
            is_live=True,
            audio_from=None,
            colour=colour.tags_of(first),
        )
        self._pending = first
        self._clock = _LiveClock(self.info.rate)

    def _first_connection(self) -> tuple[_Decoding, av.VideoFrame]:
        backoff = _Backoff(self.options.reconnect_initial_s, self.options.reconnect_max_s)
        for attempt in range(1, self.options.connect_attempts + 1):
            try:
                return self._connect()
            except SourceError as error:
                last_error = error
                logger.warning("%s (attempt %d of %d)", error, attempt, self.options.connect_attempts)
            if attempt < self.options.connect_attempts:
                time.sleep(backoff.next_delay())
        raise SourceError(f"{last_error} (gave up after {self.options.connect_attempts} attempts)")

    def _connect(self) -> tuple[_Decoding, av.VideoFrame]:
        """Open the URL and decode its first frame; SourceError when either fails."""
        open_args = {"timeout": (self.options.open_timeout_s, self.options.read_timeout_s)}
        if url_scheme(self.url) in ("rtsp", "rtsps"):
            open_args["options"] = {"rtsp_transport": self.options.transport}
        container = _open_container(self.url, self.masked_url, **open_args)
        decoding = _Decoding(container, self.masked_url, self.stats)
        return decoding, _first_frame(decoding, self.masked_url)

    def _frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Frames until `stop` is set, reconnecting whenever the stream is lost."""
        backoff = _Backoff(
            self.options.reconnect_initial_s, self.options.reconnect_max_s, self.options.reconnect_recent_max_s
        )
        try:
            while not stop.is_set():
                if self._connection is None and not self._reconnect(stop, backoff):
                    continue
                yield from self._frames_of_connection(stop, backoff)
                reason = self._connection.error or "end of stream"
                self._drop_connection()
                if not stop.is_set():
                    self.stats.disconnects += 1
                    self.stats.last_error = f"{self.masked_url}: stream lost: {reason}"
                    logger.warning("%s; reconnecting", self.stats.last_error)
        finally:
            self._drop_connection()

    def _reconnect(self, stop: threading.Event, backoff: _Backoff) -> bool:
        """Wait the backoff delay (returns early on stop), then try once; True when connected."""
        if stop.wait(backoff.next_delay()):
            return False
        try:
            self._connection, self._pending = self._connect()
        except SourceError as error:
            self.stats.last_error = str(error)
            logger.info("%s", error)
            return False
        self.stats.reconnects += 1
        self._clock.new_connection()
        logger.info("%s: reconnected", self.masked_url)
        return True

    def _frames_of_connection(self, stop: threading.Event, backoff: _Backoff) -> Iterator[Frame]:
        """Frames of the current connection until it ends, stalls, or `stop` is set."""
        decoded, self._pending = self._pending, None
        while decoded is not None:
            backoff.reset()  # the stream works again: the next loss starts from the initial delay
            yield self._live_frame(decoded)
            if stop.is_set():
                return
            asked = time.monotonic()
            decoded = next(self._connection.decoded, None)
            waited = time.monotonic() - asked
            # FFmpeg's read timeout can hand out one buffered frame before it gives up, so a
            # stall shows first as one late frame: treat it as the stall it is.
            if decoded is not None and waited > self.options.read_timeout_s:
                self._connection.error = f"stalled: no frame for {waited:.1f} s"
                return

    def _live_frame(self, decoded: av.VideoFrame) -> Frame:
        pts = self._clock.place(decoded.pts, decoded.time_base, time.monotonic())
        frame = Frame(
            self.info.source_id, self.stats.decoded, pts, LIVE_TIME_BASE, _rgb(decoded), planes=_planes(decoded)
        )
        self.stats.decoded += 1
        return frame

    def _drop_connection(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._pending = None

    def _release(self) -> None:
        self._drop_connection()
