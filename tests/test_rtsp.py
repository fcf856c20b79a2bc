"""Live sources against a real RTSP server (gst-rtsp-server on 127.0.0.1): read, reconnect, stall, stop.

The deadlines below are behaviour a camera operator relies on (a stall is noticed, stop is
prompt), checked with generous margins; they are not speed measurements.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from fractions import Fraction

import pytest

from streamer.sources import LIVE_TIME_BASE, SourceOptions, open_source
from tests.helpers.rtsp_server import RtspTestServer, require_gstreamer

FPS = 25  # FFmpeg probes about 20 frames before av.open returns: a higher rate connects faster
READ_TIMEOUT_S = 1.5
OPTIONS = SourceOptions(
    open_timeout_s=3.0, read_timeout_s=READ_TIMEOUT_S, reconnect_initial_s=0.2, reconnect_max_s=1.0
)


@pytest.fixture
def server():
    require_gstreamer()
    with RtspTestServer.start(width=160, height=120, fps=FPS) as running:
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


def test_reads_a_live_stream(server):
    with reading(server.url, first_frames=30) as reader:
        reader.finish()
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
