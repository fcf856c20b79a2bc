"""The per-track window of the last K crops that a K-frame restorer sees."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.track_window import TrackWindows
from streamer.values import Box, Face


def crop(value: int) -> np.ndarray:
    return np.full((4, 4, 3), value, np.uint8)


def values(window: np.ndarray) -> list[int]:
    return [int(frame[0, 0, 0]) for frame in window]


def test_a_young_track_repeats_its_oldest_crop_then_slides():
    windows = TrackWindows(frames=3)
    assert values(windows.push(0, 7, crop(10))) == [10, 10, 10]
    assert values(windows.push(1, 7, crop(11))) == [10, 10, 11]
    assert values(windows.push(2, 7, crop(12))) == [10, 11, 12]
    assert values(windows.push(3, 7, crop(13))) == [11, 12, 13]  # oldest first, newest last: causal


def test_tracks_do_not_share_windows():
    windows = TrackWindows(frames=2)
    windows.push(0, 1, crop(1))
    windows.push(0, 2, crop(2))
    assert values(windows.push(1, 1, crop(3))) == [1, 3]
    assert values(windows.push(1, 2, crop(4))) == [2, 4]


def test_two_cameras_with_the_same_track_ids_never_mix():
    camera_a, camera_b = TrackWindows(frames=2), TrackWindows(frames=2)  # one per source, as the pipeline keeps them
    camera_a.push(0, 1, crop(100))
    camera_b.push(0, 1, crop(200))
    assert values(camera_a.push(1, 1, crop(101))) == [100, 101]
    assert values(camera_b.push(1, 1, crop(201))) == [200, 201]


def test_an_ended_track_is_evicted_and_a_new_one_with_its_id_starts_fresh():
    windows = TrackWindows(frames=3, max_missing_frames=5)
    windows.push(0, 1, crop(1))
    windows.end_frame(5)
    assert len(windows) == 1  # missing for 5 frames: may come back (a missed detection)
    windows.end_frame(6)
    assert len(windows) == 0
    assert values(windows.push(7, 1, crop(9))) == [9, 9, 9]


def test_memory_stays_bounded_with_500_short_lived_tracks():
    windows = TrackWindows(frames=5, max_missing_frames=30, max_tracks=64)
    for frame in range(500):
        for track in (frame, frame + 1000):  # two new tracks every frame, each seen once
            windows.push(frame, track, crop(frame % 250))
        assert len(windows) <= 64
    assert len(windows) == 62  # the tracks of the last 31 frames (seen <= 30 frames ago)


def test_frames_must_come_in_order():
    windows = TrackWindows(frames=2)
    windows.push(5, 1, crop(1))
    with pytest.raises(ValueError, match="in order"):
        windows.push(4, 1, crop(2))


def test_faces_get_windows_and_faces_without_crops_are_left_alone():
    windows = TrackWindows(frames=2)
    face = Face(Box(0, 0, 4, 4), 0.9, track_id=3, crop=crop(5))
    big = Face(Box(0, 0, 90, 90), 0.9, track_id=4)  # not cropped (e.g. too large): no window
    untracked = Face(Box(0, 0, 4, 4), 0.9, crop=crop(8))
    out = windows.faces_with_windows(0, [face, big, untracked])
    assert values(out[0].window) == [5, 5] and out[1].window is None and values(out[2].window) == [8, 8]
    assert len(windows) == 1  # the untracked face keeps no state
