"""File sinks: playable H.264 with the input's frames, pts and audio; temp + rename; abort; odd sizes."""

from __future__ import annotations

import io
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from streamer.sinks import LOSSLESS_FILE_OPTIONS, SinkError, SinkOptions, _Encoder, open_sink
from streamer.sources import open_source
from streamer.urls import mask_credentials
from streamer.values import Frame, StreamInfo
from tests.helpers.media import make_frames, psnr, read_frames, write_clip
from tests.helpers.rtmp_server import RtmpTestServer
from tests.helpers.rtsp_server import free_port

FPS = 25
COUNT = 20


@pytest.fixture(scope="module")
def clip_with_audio(tmp_path_factory) -> Path:
    frames = make_frames(COUNT, 96, 64, noise=0)
    return write_clip(tmp_path_factory.mktemp("clips") / "input.mp4", frames, fps=FPS, audio=True)


def transcode(source_path: Path, target: Path, options: SinkOptions | None = None, limit: int | None = None) -> None:
    """Source -> sink, the way the pipeline does it (optionally only the first `limit` frames)."""
    with open_source(str(source_path), "cam") as source, open_sink(str(target), source.info, options) as sink:
        for frame in source.frames(threading.Event()):
            if limit is not None and frame.index >= limit:
                break
            sink.write(frame)


def stream_summary(path: Path) -> dict[str, str]:
    with av.open(str(path)) as container:
        return {stream.type: stream.codec_context.name for stream in container.streams}


def audio_end_seconds(path: Path) -> Fraction:
    with av.open(str(path)) as container:
        return max(
            (packet.pts + packet.duration) * packet.time_base
            for packet in container.demux(audio=0)
            if packet.pts is not None
        )


def test_h264_file_has_the_inputs_frames_pts_and_audio(tmp_path, clip_with_audio):
    output = tmp_path / "out.mp4"
    transcode(clip_with_audio, output)

    expected_images, expected_times = read_frames(clip_with_audio)
    images, times = read_frames(output)
    assert stream_summary(output) == {"video": "h264", "audio": "aac"}
    assert times == expected_times
    assert len(images) == COUNT
    assert min(psnr(got, want) for got, want in zip(images, expected_images)) > 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # the temporary file was renamed


def test_lossless_option_reproduces_the_decoded_input_exactly(tmp_path, clip_with_audio):
    output = tmp_path / "out.mkv"
    transcode(clip_with_audio, output, LOSSLESS_FILE_OPTIONS)

    expected_images, expected_times = read_frames(clip_with_audio)
    images, times = read_frames(output)
    assert stream_summary(output) == {"video": "ffv1", "audio": "aac"}
    assert times == expected_times
    assert all(np.array_equal(got, want) for got, want in zip(images, expected_images))


def test_stopped_run_keeps_audio_only_as_long_as_its_video(tmp_path, clip_with_audio):
    output = tmp_path / "short.mp4"
    transcode(clip_with_audio, output, limit=5)

    assert len(read_frames(output)[0]) == 5
    assert audio_end_seconds(output) <= Fraction(5, FPS) + Fraction(1024, 48000)
    assert audio_end_seconds(clip_with_audio) > Fraction(COUNT - 1, FPS)


def silent_info(width: int, height: int) -> StreamInfo:
    return StreamInfo("cam", width, height, Fraction(FPS), Fraction(1, FPS), is_live=False)


def frames_for(images: list[np.ndarray], pts: list[int | None] | None = None) -> list[Frame]:
    pts = pts if pts is not None else list(range(len(images)))
    return [Frame("cam", index, p, Fraction(1, FPS), image) for index, (p, image) in enumerate(zip(pts, images))]


def write_frames(target: Path, frames: list[Frame], options: SinkOptions | None = None) -> None:
    height, width = frames[0].image.shape[:2]
    with open_sink(str(target), silent_info(width, height), options) as sink:
        for frame in frames:
            sink.write(frame)


def test_abort_leaves_no_file(tmp_path):
    target = tmp_path / "aborted.mp4"
    sink = open_sink(str(target), silent_info(64, 48), SinkOptions())
    for frame in frames_for(make_frames(3, 64, 48)):
        sink.write(frame)
    sink.abort()
    assert list(tmp_path.iterdir()) == []


def test_exception_inside_the_with_block_aborts(tmp_path):
    with pytest.raises(RuntimeError, match="stage failed"):
        with open_sink(str(tmp_path / "out.mp4"), silent_info(64, 48)) as sink:
            sink.write(frames_for(make_frames(1, 64, 48))[0])
            raise RuntimeError("stage failed")
    assert list(tmp_path.iterdir()) == []


def test_odd_size_is_padded_to_even_for_yuv420p(tmp_path):
    images = make_frames(4, 65, 47, noise=0)
    write_frames(tmp_path / "odd.mp4", frames_for(images))

    decoded, _ = read_frames(tmp_path / "odd.mp4")
    assert decoded[0].shape == (48, 66, 3)
    assert psnr(decoded[2][:47, :65], images[2]) > 30
    assert np.abs(decoded[2][47].astype(int) - decoded[2][46]).mean() < 8  # the padding repeats the last row


def test_odd_size_stays_exact_with_the_lossless_option(tmp_path):
    images = make_frames(4, 65, 47)
    write_frames(tmp_path / "odd.mkv", frames_for(images), LOSSLESS_FILE_OPTIONS)

    decoded, _ = read_frames(tmp_path / "odd.mkv")
    assert all(np.array_equal(got, want) for got, want in zip(decoded, images))


def test_output_size_comes_from_the_first_frame(tmp_path):
    # side-by-side output is twice as wide as the stream the sink was opened for
    wide = make_frames(3, 128, 48)
    with open_sink(str(tmp_path / "wide.mp4"), silent_info(64, 48)) as sink:
        for frame in frames_for(wide):
            sink.write(frame)
    assert read_frames(tmp_path / "wide.mp4")[0][0].shape == (48, 128, 3)


def test_a_frame_of_another_size_is_refused(tmp_path):
    first, other = frames_for(make_frames(1, 64, 48))[0], frames_for(make_frames(1, 32, 48))[0]
    with pytest.raises(ValueError, match="differs"):
        with open_sink(str(tmp_path / "out.mp4"), silent_info(64, 48)) as sink:
            sink.write(first)
            sink.write(other)
    assert list(tmp_path.iterdir()) == []


def test_missing_or_repeated_pts_are_placed_after_the_previous_frame(tmp_path):
    write_frames(tmp_path / "pts.mkv", frames_for(make_frames(4, 64, 48), pts=[0, None, 1, 5]), LOSSLESS_FILE_OPTIONS)
    assert read_frames(tmp_path / "pts.mkv")[1] == [Fraction(p, FPS) for p in (0, 1, 2, 5)]


@pytest.mark.parametrize(
    "target, options, message",
    [
        ("no_such_folder/out.mp4", SinkOptions(), "does not exist"),
        ("out.unknownext", SinkOptions(), "cannot open for writing"),
        ("srt://user:secret@127.0.0.1:9/x", SinkOptions(), "cannot push"),
        ("out.mp4", SinkOptions(codec="h264_nonexistent"), "unknown encoder"),
        ("out.mp4", SinkOptions(codec="aac"), "cannot write pix_fmt"),
        ("out.mp4", SinkOptions(pix_fmt="rgb24"), "cannot write pix_fmt 'rgb24'"),
    ],
)
def test_unwritable_target_is_a_one_line_sink_error(target, options, message, tmp_path):
    target = target if "://" in target else str(tmp_path / target)
    with pytest.raises(SinkError) as raised:
        open_sink(target, silent_info(64, 48), options)
    text = str(raised.value)
    assert message in text and "\n" not in text and "secret" not in text
    assert mask_credentials(target) in text
    assert list(tmp_path.iterdir()) == []


def test_closing_without_frames_is_an_error_and_leaves_no_file(tmp_path):
    sink = open_sink(str(tmp_path / "empty.mp4"), silent_info(64, 48))
    with pytest.raises(SinkError, match="no frames"):
        sink.close()
    assert list(tmp_path.iterdir()) == []


def test_push_to_a_server_that_is_not_there_is_a_masked_sink_error():
    target = f"rtsp://user:secret@127.0.0.1:{free_port()}/out"
    frame = frames_for(make_frames(1, 64, 48))[0]
    with pytest.raises(SinkError) as raised:
        with open_sink(target, silent_info(64, 48)) as sink:
            sink.write(frame)
    assert "secret" not in str(raised.value) and "rtsp://user:***@127.0.0.1" in str(raised.value)


def test_push_sink_delivers_every_frame_to_an_rtmp_server(tmp_path):
    images = make_frames(40, 160, 120, noise=0)
    server = RtmpTestServer(tmp_path / "received.npy")
    try:
        info = StreamInfo("cam", 160, 120, Fraction(25), Fraction(1, 25), is_live=True)  # live: not paced
        with open_sink(server.push_url, info, SinkOptions()) as sink:
            for index, image in enumerate(images):
                sink.write(Frame("cam", index, index, Fraction(1, 25), image))
        received = server.frames()
    finally:
        server.stop()
    assert len(received) == len(images)
    assert min(psnr(got, want) for got, want in zip(received, images)) > 30


class PacketCounter:
    """An output container that counts the packets muxed after each frame (what a viewer gets)."""

    def __init__(self) -> None:
        self.container = av.open(io.BytesIO(), "w", format="mpegts")
        self.muxed: list[int] = []

    def add_stream(self, *args, **kwargs):
        return self.container.add_stream(*args, **kwargs)

    def mux(self, packets) -> None:
        self.muxed.append(len(packets))


@pytest.mark.parametrize("push", [True, False])
def test_a_pushed_frame_leaves_the_encoder_with_its_own_write(push):
    """A push is watched live: each frame's packet goes out when the frame is written (no B-frames,
    lookahead or frame threads holding it: ~170 ms at 25 fps otherwise). A recording may hold a few."""
    info = StreamInfo("cam", 320, 240, Fraction(FPS), Fraction(1, FPS), is_live=True)
    output = PacketCounter()
    encoder = _Encoder(output, info, SinkOptions(preset="superfast"), push=push)  # type: ignore[arg-type]
    for index, image in enumerate(make_frames(8, 320, 240, noise=30)):
        encoder.encode(Frame("cam", index, index, Fraction(1, FPS), image))
    if push:
        assert output.muxed == [1] * 8
    else:
        assert output.muxed[0] == 0  # B-frames: the first frame waits for the next ones
