"""File sources: every frame in order with its pts; bad files are one-line SourceErrors; URL handling."""

from __future__ import annotations

import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from streamer.sources import SourceError, SourceOptions, open_source
from streamer.urls import is_live_url, mask_credentials
from tests.helpers.media import make_frames, write_clip
from tests.helpers.rtsp_server import free_port

FPS = 25
COUNT = 12


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return make_frames(COUNT, 64, 48)


@pytest.fixture(scope="module")
def lossless_clip(tmp_path_factory, frames) -> Path:
    """Lossless RGB H.264 with AAC audio: decoded frames must equal `frames` exactly."""
    path = tmp_path_factory.mktemp("clips") / "lossless.mp4"
    return write_clip(path, frames, fps=FPS, audio=True, codec="libx264rgb")


def read_all(path: str | Path, **kwargs):
    with open_source(str(path), "cam", **kwargs) as source:
        return source.info, list(source.frames(threading.Event())), source.stats


def test_file_source_yields_every_frame_with_its_pts(lossless_clip, frames):
    info, decoded, stats = read_all(lossless_clip)

    assert [frame.index for frame in decoded] == list(range(COUNT))
    assert all(np.array_equal(got.image, want) for got, want in zip(decoded, frames))
    assert [frame.pts * frame.time_base for frame in decoded] == [Fraction(i, FPS) for i in range(COUNT)]
    assert all(frame.image.flags.c_contiguous and frame.image.dtype == np.uint8 for frame in decoded)
    assert stats.decoded == COUNT and stats.corrupt_packets == 0 and stats.last_error is None


def test_file_source_info_describes_the_stream(lossless_clip, tmp_path, frames):
    info, _, _ = read_all(lossless_clip)
    assert (info.width, info.height, info.rate, info.is_live) == (64, 48, Fraction(FPS), False)
    assert info.audio_from == str(lossless_clip)

    silent = write_clip(tmp_path / "silent.mp4", frames[:3], fps=FPS)
    assert read_all(silent)[0].audio_from is None


def test_stop_event_ends_a_file_early(lossless_clip):
    stop = threading.Event()
    with open_source(str(lossless_clip), "cam") as source:
        taken = []
        for frame in source.frames(stop):
            taken.append(frame.index)
            if frame.index == 2:
                stop.set()
    assert taken == [0, 1, 2]


def test_corrupt_packet_is_skipped_and_counted(tmp_path, frames):
    # FFV1 with slice CRCs rejects a damaged packet with InvalidDataError; all-intra (g=1), so the others decode.
    clean = write_clip(tmp_path / "clean.mkv", frames, codec="ffv1", codec_options={"slicecrc": "1", "g": "1"})
    damaged = tmp_path / "damaged.mkv"
    copy_with_damaged_packet(clean, damaged, packet_index=5)

    _, decoded, stats = read_all(damaged)

    assert stats.corrupt_packets == 1
    assert len(decoded) == COUNT - 1
    assert np.array_equal(decoded[5].image, frames[6])  # the frame after the bad one is intact


def copy_with_damaged_packet(source: Path, target: Path, packet_index: int) -> None:
    with av.open(str(source)) as inp, av.open(str(target), "w") as out:
        stream = inp.streams.video[0]
        out_stream = out.add_stream_from_template(stream)
        real_packets = (packet for packet in inp.demux(stream) if packet.dts is not None)
        for index, packet in enumerate(real_packets):
            if index == packet_index:
                data = bytes(packet)
                cut = len(data) // 3
                damaged = av.Packet(data[:cut] + bytes((byte * 7 + 13) % 256 for byte in data[cut:]))
                damaged.pts, damaged.dts, damaged.time_base = packet.pts, packet.dts, packet.time_base
                packet = damaged
            packet.stream = out_stream
            out.mux(packet)


def test_partially_decodable_file_yields_what_decodes_and_says_so(tmp_path, frames):
    # moov first (faststart), media data cut: the frames before the cut still decode.
    whole = write_clip(tmp_path / "whole.mp4", frames, codec="libx264rgb")
    with av.open(str(whole)) as check:
        assert check.streams.video[0].frames == COUNT
    faststart = tmp_path / "faststart.mp4"
    copy_stream(whole, faststart, "video", options={"movflags": "+faststart"})
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(faststart.read_bytes()[: faststart.stat().st_size * 2 // 3])

    _, decoded, stats = read_all(cut)

    assert 0 < len(decoded) < COUNT
    assert all(np.array_equal(got.image, want) for got, want in zip(decoded, frames))
    assert f"decoded {len(decoded)} of {COUNT} frames" in stats.last_error


def copy_stream(source: Path, target: Path, kind: str, options: dict[str, str] | None = None) -> None:
    """Stream-copy the first `kind` ("video" or "audio") stream of `source` into `target`."""
    with av.open(str(source)) as inp, av.open(str(target), "w", options=options or {}) as out:
        stream = inp.streams.get(**{kind: 0})[0]
        out_stream = out.add_stream_from_template(stream)
        for packet in inp.demux(stream):
            if packet.dts is not None:
                packet.stream = out_stream
                out.mux(packet)


def make_bad_input(kind: str, folder: Path, good_clip: Path) -> Path:
    path = folder / f"{kind}.mp4"
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "not_video":
        path.write_text("this is a text file, not a video\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated_before_moov":
        # libx264 MP4 without faststart: the moov atom is at the end, so a cut file has none.
        path.write_bytes(good_clip.read_bytes()[: good_clip.stat().st_size // 2])
    elif kind == "audio_only":
        copy_stream(good_clip, path, "audio")
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "no such file"),
        ("directory", "not a file"),
        ("not_video", "cannot open"),
        ("empty", "cannot open"),
        ("truncated_before_moov", "cannot open"),
        ("audio_only", "no video stream"),
    ],
)
def test_bad_file_is_a_one_line_source_error_naming_the_path(kind, message, tmp_path, lossless_clip):
    path = make_bad_input(kind, tmp_path, lossless_clip)
    with pytest.raises(SourceError) as raised:
        open_source(str(path), "cam")
    text = str(raised.value)
    assert str(path) in text and message in text
    assert "\n" not in text


def test_unreachable_live_url_fails_at_open_with_masked_credentials():
    url = f"rtsp://admin:hunter2@127.0.0.1:{free_port()}/stream"  # nothing listens there
    options = SourceOptions(connect_attempts=2, reconnect_initial_s=0.05, open_timeout_s=2)
    with pytest.raises(SourceError) as raised:
        open_source(url, "cam", options)
    text = str(raised.value)
    assert "hunter2" not in text and "rtsp://admin:***@127.0.0.1" in text
    assert "2 attempts" in text and "\n" not in text


@pytest.mark.parametrize(
    "text, live",
    [
        ("rtsp://cam.local/stream", True),
        ("RTSP://cam.local/stream", True),
        ("rtmp://server/app/key", True),
        ("https://example.com/live.m3u8", True),
        ("udp://239.0.0.1:1234", True),
        ("srt://host:9000", True),
        ("/footage/rtsp_cam1.mp4", False),
        ("rtsp_recording.mp4", False),
        ("C:\\footage\\cam.mp4", False),
        ("file:///footage/cam.mp4", False),
    ],
)
def test_live_urls_are_told_from_file_paths(text, live):
    assert is_live_url(text) is live


@pytest.mark.parametrize(
    "text, masked",
    [
        ("rtsp://admin:secret@10.0.0.5:554/s", "rtsp://admin:***@10.0.0.5:554/s"),
        ("rtsp://admin:p@ss/word@cam/s", "rtsp://admin:***@cam/s"),
        ("failed 'rtsp://u:pw@h/a' then 'rtmp://x:y@z/b'", "failed 'rtsp://u:***@h/a' then 'rtmp://x:***@z/b'"),
        ("http://cam/video?user=admin&password=secret&ch=1", "http://cam/video?user=admin&password=***&ch=1"),
        ("rtsp://cam.local:554/stream", "rtsp://cam.local:554/stream"),
        # typos: the password is masked whatever the scheme looks like
        ("rtsp:/admin:secret@cam/s: no such file", "rtsp:/admin:***@cam/s: no such file"),
        ("rtsp:admin:secret@cam/s", "rtsp:admin:***@cam/s"),
        ("rtsp//admin:secret@cam/s", "rtsp//admin:***@cam/s"),
        ("//admin:secret@cam/s", "//admin:***@cam/s"),
        ("admin:secret@cam:554/s", "admin:***@cam:554/s"),
        ("error: 'rtsp:///admin:se/cr@et@cam/s'", "error: 'rtsp:///admin:***@cam/s'"),
        ("12:00:01 WARNING cam1: up, a@b", "12:00:01 WARNING cam1: up, a@b"),  # no password: left alone
        ("down (rtsp://admin:secret@cam/s: refused)", "down (rtsp://admin:***@cam/s: refused)"),
        ("(rtsp://admin:***@cam/s)", "(rtsp://admin:***@cam/s)"),  # masking twice changes nothing
    ],
)
def test_credentials_are_masked(text, masked):
    assert mask_credentials(text) == masked


def test_source_options_reject_bad_values():
    with pytest.raises(ValueError, match="transport"):
        SourceOptions(transport="http")
    with pytest.raises(ValueError, match="read_timeout_s"):
        SourceOptions(read_timeout_s=0)


def test_close_during_iteration_waits_for_the_iterator(lossless_clip):
    # A pipeline may close its sources from another thread while a reader is still inside
    # frames(); the reader must be able to finish instead of reading a closed container.
    source = open_source(str(lossless_clip), "cam")
    frames = source.frames(threading.Event())
    next(frames)
    source.close()
    assert len(list(frames)) == COUNT - 1
    with pytest.raises(RuntimeError, match="closed"):
        next(source.frames(threading.Event()))


@pytest.mark.parametrize(
    "value, url",
    [
        ("p@ss/wo:rd", "rtsp://admin:p%40ss%2Fwo%3Ard@cam:554/live"),  # encoded for the user
        ("already%2Fencoded", "rtsp://admin:already%2Fencoded@cam:554/live"),  # an encoded value stays as it is
    ],
)
def test_a_password_from_the_environment_is_percent_encoded_in_the_url(value, url):
    from urllib.parse import unquote, urlsplit

    from streamer.config import expand_env

    expanded = expand_env("rtsp://admin:${PASS}@cam:554/live", {"PASS": value}, "SOURCE[0]")
    assert expanded == url
    assert urlsplit(expanded).hostname == "cam" and unquote(urlsplit(expanded).password) == unquote(value)


def test_reconnect_backoff_is_capped_low_while_the_stream_was_up_recently(monkeypatch):
    from streamer import sources

    now = [1000.0]
    monkeypatch.setattr(sources.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(sources.random, "uniform", lambda low, high: high)  # the longest wait of each draw
    backoff = sources._Backoff(initial_s=0.5, max_s=30.0, recent_max_s=2.0)
    never_up = [backoff.next_delay() for _ in range(8)]
    assert never_up == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]  # a camera never seen: the full cap
    backoff.reset()  # frames flowed
    just_dropped = [backoff.next_delay() for _ in range(5)]
    assert just_dropped == [0.5, 1.0, 2.0, 2.0, 2.0]  # a reboot is found within ~2 s of its return
    now[0] += sources.RECENT_S + 1  # away for over a minute: back to the slow cap
    assert [backoff.next_delay() for _ in range(5)] == [2.0, 4.0, 8.0, 16.0, 30.0]
