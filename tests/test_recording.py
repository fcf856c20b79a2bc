"""A live camera's recording: rotating segments, a new segment on a size change, retention,
crash safety (SIGKILL mid-segment), and a push that outlives its server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest

from streamer import REPO_ROOT
from streamer.sinks import (
    PushRetry,
    ReconnectingPushSink,
    RecordingOptions,
    SegmentRecorder,
    SinkError,
    SinkOptions,
    open_sink,
    retention_victims,
)
from streamer.sources import LIVE_TIME_BASE
from streamer.values import Frame, StreamInfo
from tests.helpers.media import make_frames, read_frames

FPS = 25
FAST = SinkOptions(preset="ultrafast")


def live_info(width: int = 64, height: int = 48) -> StreamInfo:
    return StreamInfo("cam", width, height, Fraction(FPS), LIVE_TIME_BASE, is_live=True)


def live_frames(count: int, width: int = 64, height: int = 48, start: int = 0) -> list[Frame]:
    """Frames as a live source gives them: 1/90000 time base, one frame period apart."""
    ticks = 90000 // FPS
    return [
        Frame("cam", start + k, (start + k) * ticks, LIVE_TIME_BASE, image)
        for k, image in enumerate(make_frames(count, width, height, noise=0))
    ]


def segments(folder: Path, camera: str = "cam1") -> list[Path]:
    return sorted(path for path in folder.glob(f"{camera}_*Z*.ts") if ".partial" not in path.name)


def test_a_live_file_output_is_a_segment_recorder_and_a_live_push_reconnects(tmp_path):
    recording = RecordingOptions()
    assert isinstance(open_sink(str(tmp_path / "cam1.mp4"), live_info(), FAST, recording), SegmentRecorder)
    push = open_sink("rtsp://127.0.0.1:9/x", live_info(), FAST, recording)  # nothing listens: no error at start
    assert isinstance(push, ReconnectingPushSink)


def test_segments_rotate_by_length_and_each_is_finalised_with_its_frames(tmp_path):
    recorder = SegmentRecorder(str(tmp_path / "cam1.mp4"), live_info(), FAST, RecordingOptions(segment_s=1.0))
    for frame in live_frames(60):  # 2.4 s: segments of 25, 25 and 10 frames
        recorder.write(frame)
    recorder.close()
    files = segments(tmp_path)
    assert [len(read_frames(path)[0]) for path in files] == [25, 25, 10]
    assert recorder.finished == files and not list(tmp_path.glob("*.partial*"))
    assert all(path.name.startswith("cam1_") and path.name.endswith("Z.ts") or "Z_" in path.name for path in files)


@pytest.mark.parametrize(
    "on_resize, expected_sizes",
    [
        ("segment", [(48, 64), (96, 128)]),  # the new size gets a segment of its own
        ("scale", [(48, 64)]),  # the new size is scaled to the first
    ],
)
def test_a_size_change_mid_stream_starts_a_segment_or_is_scaled(tmp_path, on_resize, expected_sizes):
    recorder = SegmentRecorder(
        str(tmp_path / "cam1.mp4"), live_info(), FAST, RecordingOptions(segment_s=0, on_resize=on_resize)
    )
    for frame in live_frames(10) + live_frames(10, 128, 96, start=10):
        recorder.write(frame)
    recorder.close()
    files = segments(tmp_path)
    decoded = [read_frames(path)[0] for path in files]
    assert [images[0].shape[:2] for images in decoded] == expected_sizes
    assert sum(len(images) for images in decoded) == 20


def test_retention_deletes_the_oldest_segments_beyond_the_size_or_age_limit(tmp_path):
    files = []
    for k, size in enumerate([100, 200, 300, 400]):
        path = tmp_path / f"cam1_2026010{k}T000000Z.ts"
        path.write_bytes(b"x" * size)
        os.utime(path, (1000.0 + k * 3600, 1000.0 + k * 3600))
        files.append(path)
    assert retention_victims(files, RecordingOptions(max_total_bytes=750), now=0) == files[:2]
    now = 1000.0 + 3 * 3600 + 10
    assert retention_victims(files, RecordingOptions(max_age_s=2.5 * 3600), now=now) == files[:1]
    assert retention_victims(files, RecordingOptions(), now=now) == []


def test_rotation_applies_retention_to_this_cameras_segments_only(tmp_path):
    other = tmp_path / "cam2_20260101T000000Z.ts"
    other.write_bytes(b"another camera")
    recorder = SegmentRecorder(
        str(tmp_path / "cam1.mp4"), live_info(), FAST, RecordingOptions(segment_s=0.4, max_total_bytes=1)
    )
    for frame in live_frames(40):
        recorder.write(frame)
    recorder.close()
    assert len(recorder.finished) >= 4 and segments(tmp_path) == []  # each finished segment went over the limit
    assert other.exists()


WRITER = """
import sys, time
from fractions import Fraction
sys.path.insert(0, {repo!r})
from streamer.sinks import RecordingOptions, SegmentRecorder, SinkOptions
from tests.test_recording import live_frames, live_info
recorder = SegmentRecorder({target!r}, live_info(), SinkOptions(preset="ultrafast"), RecordingOptions(segment_s=1.0))
for frame in live_frames(10_000):
    recorder.write(frame)
    print(frame.index, flush=True)
    time.sleep(1 / 25)
"""


def test_after_sigkill_every_finished_segment_and_the_current_one_up_to_its_last_second_play(tmp_path):
    repo = str(REPO_ROOT)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER.format(repo=repo, target=str(tmp_path / "cam1.mp4"))],
        stdout=subprocess.PIPE,
        text=True,
    )
    written = -1
    deadline = time.monotonic() + 60
    while written < 70 and time.monotonic() < deadline:  # 2.8 s of video: two finished segments, one current
        written = int(writer.stdout.readline())
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    finished, current = segments(tmp_path), sorted(tmp_path.glob("cam1_*.partial.ts"))
    assert len(finished) == 2 and len(current) == 1
    assert [len(read_frames(path)[0]) for path in finished] == [25, 25]
    playable = len(read_frames(current[0])[0])
    assert playable >= (written + 1 - 50) - FPS  # up to its last second (encoder delay included)
    # the next recorder of this camera gives the leftover its final name
    SegmentRecorder(str(tmp_path / "cam1.mp4"), live_info(), FAST, RecordingOptions()).close()
    assert len(segments(tmp_path)) == 3 and not list(tmp_path.glob("*.partial.ts"))


class FlakyPush:
    """A push target that fails while `down` is set."""

    def __init__(self) -> None:
        self.down, self.connects, self.frames = False, 0, []

    def connect(self):
        if self.down:
            raise SinkError("rtsp://admin:***@server/push: cannot open for writing: Connection refused")
        self.connects += 1
        return self

    def write(self, frame):
        if self.down:
            raise SinkError("rtsp://admin:***@server/push: cannot send frame: Broken pipe")
        self.frames.append(frame)

    def close(self):
        pass

    def abort(self):
        pass


def test_a_push_reconnects_after_its_server_restarts_and_counts_the_frames_dropped_meanwhile():
    target = FlakyPush()
    push = ReconnectingPushSink(
        "rtsp://admin:pw@server/push", live_info(), FAST, PushRetry(0.05, 0.1), connect=target.connect
    )
    frames = live_frames(40)
    for frame in frames[:10]:
        push.write(frame)
    target.down = True
    for frame in frames[10:20]:
        push.write(frame)
    target.down = False
    time.sleep(0.15)  # past the backoff
    for frame in frames[20:30]:
        push.write(frame)
    push.write(live_frames(1, 128, 96, start=30)[0])  # a new size is scaled to the first
    assert push.dropped == 10 and push.reconnects == 1 and target.connects == 2
    assert len(target.frames) == 21 and target.frames[-1].image.shape == (48, 64, 3)
