"""--frame-hashes: the decoded input's per-frame MD5s, in FFmpeg's framemd5 format."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import av
import pytest

from streamer.frame_hashes import hashes_path, write_frame_hashes
from tests.helpers.media import make_frames, write_clip


def hash_rows(path) -> list[list[str]]:
    """The data rows of a framemd5 file: [stream, dts, pts, duration, size, hash]."""
    rows = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            rows.append([field.strip() for field in line.split(",")])
    return rows


def decoded_md5s(path) -> list[tuple[int, str]]:
    """(pts, md5 of the raw planes) of every frame, decoded independently of the module under test."""
    with av.open(str(path)) as container:
        return [
            (frame.pts, hashlib.md5(frame.to_ndarray().tobytes()).hexdigest()) for frame in container.decode(video=0)
        ]


@pytest.fixture(scope="module")
def yuv_clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("hashes") / "clip.mp4", make_frames(12, 64, 48), fps=25, audio=True)


def test_each_frame_is_hashed_as_md5_of_its_decoded_raw_planes_with_its_pts(yuv_clip, tmp_path):
    target = tmp_path / "clip.framemd5"
    assert write_frame_hashes(str(yuv_clip), target) == 12
    text = target.read_text()
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert header[:3] == ["#format: frame checksums", "#version: 2", "#hash: MD5"]
    assert "#media_type 0: video" in header and "#dimensions 0: 64x48" in header
    with av.open(str(yuv_clip)) as container:
        assert f"#tb 0: {container.streams.video[0].time_base}" in header
    rows = hash_rows(target)
    expected = decoded_md5s(yuv_clip)
    assert [(int(row[2]), row[5]) for row in rows] == expected  # pts and hash, frame by frame
    assert all(int(row[4]) == 64 * 48 * 3 // 2 for row in rows)  # yuv420p: the raw planes, no padding
    assert not list(tmp_path.glob(".*partial"))


def test_max_frames_hashes_only_the_frames_processed(yuv_clip, tmp_path):
    target = tmp_path / "first.framemd5"
    assert write_frame_hashes(str(yuv_clip), target, max_frames=5) == 5
    assert len(hash_rows(target)) == 5


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the ffmpeg command is not installed")
def test_the_hashes_equal_those_of_ffmpeg_framemd5(yuv_clip, tmp_path):
    target = tmp_path / "ours.framemd5"
    write_frame_hashes(str(yuv_clip), target)
    theirs = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(yuv_clip), "-map", "0:v:0", "-f", "framemd5", "-"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    their_hashes = [line.split(",")[-1].strip() for line in theirs.splitlines() if line and not line.startswith("#")]
    assert [row[5] for row in hash_rows(target)] == their_hashes


def test_the_hashes_go_beside_the_output():
    assert hashes_path("out/cam3.mp4").as_posix() == "out/cam3.input.framemd5"


def test_the_cli_writes_the_hashes_and_refuses_a_live_stream(run_cli, tmp_path, yuv_clip):
    result = run_cli(yuv_clip, "-o", tmp_path / "out.mp4", "--frame-hashes", "--no-restore", "-q")
    assert result.returncode == 0, result.stderr
    assert [row[5] for row in hash_rows(tmp_path / "out.input.framemd5")] == [md5 for _, md5 in decoded_md5s(yuv_clip)]
    live = run_cli("rtsp://127.0.0.1:9/none", "-o", tmp_path / "live.mp4", "--frame-hashes")
    assert live.returncode == 2 and len(live.error_lines) == 1 and "--frame-hashes needs files" in live.error_lines[0]
