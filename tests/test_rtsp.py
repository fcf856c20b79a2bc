"""Against a real RTSP server (gst-rtsp-server on 127.0.0.1): live source read, reconnect, stall, stop; push sink.

The deadlines below are behaviour a camera operator relies on (a stall is noticed, stop is
prompt), checked with generous margins; they are not speed measurements.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import av
import pytest

from streamer.sinks import SinkOptions, open_sink
from streamer.sources import LIVE_TIME_BASE, SourceOptions, open_source
from streamer.values import Frame, StreamInfo
from tests.helpers.media import make_face_frames, make_frames, psnr
from tests.helpers.rtsp_server import RtspTestServer, require_gstreamer, write_frames_dir

FPS = 25  # FFmpeg probes about 20 frames before av.open returns: a higher rate connects faster
READ_TIMEOUT_S = 1.5
OPTIONS = SourceOptions(open_timeout_s=3.0, read_timeout_s=READ_TIMEOUT_S, reconnect_initial_s=0.2, reconnect_max_s=1.0)


@pytest.fixture(scope="module")
def served_frames() -> list:
    """What the camera shows, looped: faces drifting over a scene."""
    return make_face_frames(FPS, (160, 120), face_px=40, faces=1)[0]


@pytest.fixture
def server(tmp_path, served_frames):
    require_gstreamer()
    frames_dir = write_frames_dir(tmp_path / "camera", served_frames)
    with RtspTestServer.start(width=160, height=120, fps=FPS, frames_dir=frames_dir) as running:
        yield running


class Reader(threading.Thread):
    """Iterates a live source in the background, the way the pipeline's capture thread does."""

    def __init__(self, source) -> None:
        super().__init__(daemon=True)
        self.source = source
        self.stop = threading.Event()
        self.frames = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for frame in self.source.frames(self.stop):
                self.frames.append(frame)
        except BaseException as error:  # surfaced by the test through .error
            self.error = error

    def wait_for(self, condition, timeout_s: float, what: str) -> float:
        """Seconds until condition() held; fails the test after timeout_s."""
        start = time.monotonic()
        while not condition():
            assert self.error is None, f"reader failed: {self.error!r}"
            if time.monotonic() - start > timeout_s:
                pytest.fail(f"{what}: not within {timeout_s} s (stats: {self.source.stats})")
            time.sleep(0.02)
        return time.monotonic() - start

    def finish(self) -> float:
        """Set stop; seconds until the iterator ended."""
        start = time.monotonic()
        self.stop.set()
        self.join(timeout=10)
        assert not self.is_alive(), "the live iterator ignored stop"
        assert self.error is None, f"reader failed: {self.error!r}"
        return time.monotonic() - start


@contextmanager
def reading(url: str, options: SourceOptions = OPTIONS, first_frames: int = 10):
    """Open `url`, iterate it in a Reader thread, and yield the reader once frames flow."""
    with open_source(url, "cam", options) as source:
        reader = Reader(source)
        reader.start()
        try:
            reader.wait_for(lambda: len(reader.frames) >= first_frames, 10, "first frames")
            yield reader
        finally:
            reader.stop.set()
            reader.join(timeout=10)


def assert_timeline_is_continuous(frames) -> None:
    assert [frame.index for frame in frames] == list(range(len(frames)))
    pts = [frame.pts for frame in frames]
    assert all(later > earlier for earlier, later in zip(pts, pts[1:])), "live pts must always increase"


def test_reads_a_live_stream(server, served_frames):
    with reading(server.url, first_frames=30) as reader:
        reader.finish()
    # every frame received is one the camera showed (RGB in the right order, not shifted)
    assert all(max(psnr(frame.image, shown) for shown in served_frames) > 35 for frame in reader.frames[::5])
    info = reader.source.info
    assert (info.width, info.height, info.is_live) == (160, 120, True)
    assert info.rate == Fraction(FPS) and info.time_base == LIVE_TIME_BASE
    assert reader.frames[0].pts == 0 and reader.frames[0].image.shape == (120, 160, 3)
    assert_timeline_is_continuous(reader.frames)
    assert reader.source.stats.disconnects == 0


def test_reconnects_after_the_server_is_killed_and_restarted(server):
    with reading(server.url) as reader:
        server.kill()
        reader.wait_for(lambda: reader.source.stats.disconnects >= 1, READ_TIMEOUT_S + 3, "the end of stream noticed")
        frames_before_restart = len(reader.frames)
        server.restart()
        reader.wait_for(lambda: len(reader.frames) >= frames_before_restart + 20, 15, "frames after the restart")
        reader.finish()
    assert reader.source.stats.reconnects >= 1
    assert_timeline_is_continuous(reader.frames)


def test_frozen_server_is_detected_as_a_stall_and_the_stream_recovers(server):
    with reading(server.url) as reader:
        stats = reader.source.stats
        server.freeze()
        detected_after = reader.wait_for(lambda: stats.disconnects >= 1, READ_TIMEOUT_S + 2.5, "stall")
        assert "stalled" in stats.last_error or "exit" in stats.last_error.lower()
        server.resume()
        frames_after_stall = len(reader.frames)
        reader.wait_for(lambda: len(reader.frames) >= frames_after_stall + 10, 15, "frames after resume")
        reader.finish()
    assert detected_after >= READ_TIMEOUT_S - 0.5  # a live stream's normal gaps are not stalls
    assert stats.reconnects >= 1
    assert_timeline_is_continuous(reader.frames)


def test_stop_ends_the_iterator_promptly_while_it_waits_to_reconnect(server):
    slow_backoff = SourceOptions(
        open_timeout_s=3.0, read_timeout_s=READ_TIMEOUT_S, reconnect_initial_s=20.0, reconnect_max_s=60.0
    )
    with reading(server.url, slow_backoff, first_frames=5) as reader:
        server.kill()  # the source now waits 10-20 s before its next attempt
        reader.wait_for(lambda: reader.source.stats.disconnects >= 1, READ_TIMEOUT_S + 3, "the end of stream noticed")
        assert reader.finish() < 1.5


def test_push_sink_delivers_every_frame_to_an_rtsp_server(tmp_path):
    require_gstreamer()
    received = tmp_path / "received.h264"
    images = make_frames(40, 160, 120, noise=0)
    info = StreamInfo("cam", 160, 120, Fraction(FPS), Fraction(1, FPS), is_live=False)  # paced: 1.6 s
    with RtspTestServer.start(record_to=received) as server:
        with open_sink(server.push_url, info, SinkOptions()) as sink:
            for index, image in enumerate(images):
                sink.write(Frame("cam", index, index, Fraction(1, FPS), image))
        decoded = wait_for_file_frames(received, len(images) - 1)
    # gst-rtsp-server handles the TEARDOWN while the last packet may still be in its pipeline,
    # so the final frame can be lost on the server's side.
    assert len(images) - 1 <= len(decoded) <= len(images)
    assert min(psnr(got, want) for got, want in zip(decoded, images)) > 30


def wait_for_file_frames(path: Path, count: int, timeout_s: float = 5.0) -> list:
    """Decoded frames of `path` once it holds `count` of them (the server writes asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while True:
        decoded = decodable_frames(path) if path.exists() and path.stat().st_size else []
        if len(decoded) >= count or time.monotonic() > deadline:
            return decoded
        time.sleep(0.1)


def decodable_frames(path: Path) -> list:
    """The frames of a raw H.264 file up to its first packet that does not decode. When the stream
    is torn down, the server may write the last frame's first bytes only (seen: a 6-byte packet
    after 39 whole frames), so a strict read fails on frames that all arrived; a break in the
    middle still shows, as missing frames."""
    frames = []
    with av.open(str(path)) as container:
        try:
            for packet in container.demux(video=0):
                frames.extend(frame.to_ndarray(format="rgb24") for frame in packet.decode())
        except av.error.InvalidDataError:
            pass
    return frames
