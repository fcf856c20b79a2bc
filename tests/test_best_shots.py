"""Best shots: the quality score's parts, the top N per track, and tracks ending."""

from __future__ import annotations

from fractions import Fraction

import cv2
import numpy as np
import pytest

from streamer.best_shots import NO_KEYPOINTS_FRONTAL, BestShots, frontalness, score_face
from streamer.model_contract import square_crop_box
from streamer.values import Box, Face, Frame, FramePacket, StreamInfo

WIDTH, HEIGHT = 320, 240
INFO = StreamInfo("cam1", WIDTH, HEIGHT, Fraction(25), Fraction(1, 25), is_live=False)


def textured(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8))


def face_at(x: float, y: float, side: float, score: float = 0.9, track_id: int = 1, keypoints=()) -> Face:
    return Face(box=Box(x, y, side, side), score=score, track_id=track_id, keypoints=keypoints)


def frontal_keypoints(box: Box, nose_shift: float = 0.0) -> tuple:
    """Eyes at 30% / 70% of the box width, the nose `nose_shift` half-eye-distances off centre."""
    eye_y, half = box.y + 0.4 * box.h, 0.2 * box.w
    centre = box.x + 0.5 * box.w
    return ((centre - half, eye_y), (centre + half, eye_y), (centre + nose_shift * half, box.y + 0.6 * box.h))


@pytest.mark.parametrize("shift, expected", [(0.0, 1.0), (0.5, 0.5), (-0.5, 0.5), (1.0, 0.0), (2.0, 0.0)])
def test_frontalness_is_one_facing_the_camera_and_falls_to_zero_at_a_profile(shift, expected):
    box = Box(100, 100, 40, 40)
    assert frontalness(frontal_keypoints(box, shift)) == pytest.approx(expected, abs=1e-6)


def test_frontalness_is_unknown_without_keypoints():
    assert frontalness(()) == NO_KEYPOINTS_FRONTAL


def score(image: np.ndarray, face: Face):
    return score_face(image, face, square_crop_box(face.box, 1.5))


@pytest.mark.parametrize(
    "better, worse, part",
    [
        # (a better shot, a worse shot, the part that differs)
        (face_at(100, 80, 48), face_at(100, 80, 24), "size"),
        (face_at(100, 80, 32, score=0.95), face_at(100, 80, 32, score=0.55), "detector"),
        (face_at(100, 80, 32), face_at(WIDTH - 20, 80, 32), "edge"),  # the second is cut by the frame's edge
    ],
)
def test_the_better_shot_scores_higher_in_its_part_and_in_total(better, worse, part):
    image = textured()
    high, low = score(image, better), score(image, worse)
    assert getattr(high, part) > getattr(low, part)
    assert high.total > low.total


def test_a_blurred_face_scores_lower_sharpness_than_a_sharp_one():
    image = textured()
    blurred = cv2.GaussianBlur(image, (0, 0), 3)
    face = face_at(100, 80, 40)
    assert score(image, face).sharpness > 0.9
    assert score(blurred, face).sharpness < 0.5


def test_a_profile_scores_lower_than_a_frontal_face():
    image = textured()
    box = Box(100, 80, 40, 40)
    frontal = face_at(100, 80, 40, keypoints=frontal_keypoints(box, 0.0))
    profile = face_at(100, 80, 40, keypoints=frontal_keypoints(box, 0.9))
    assert score(image, frontal).total > score(image, profile).total


def packet(index: int, faces, image=None) -> FramePacket:
    frame = Frame("cam1", index, index, Fraction(1, 25), textured(index) if image is None else image)
    return FramePacket(frame, tuple(faces))


def collector(top_n=3, end_after=5, min_gap_s=0.0):
    ended = []
    return BestShots(INFO, ended.append, top_n=top_n, end_after_frames=end_after, min_gap_s=min_gap_s), ended


def test_keeps_the_top_n_shots_of_a_track_best_first_with_native_and_model_crops():
    shots, ended = collector(top_n=3)
    sides = [20, 44, 24, 40, 28, 36, 22]  # bigger faces score higher (same detector score, texture)
    for index, side in enumerate(sides):
        face = face_at(100, 80, side)
        restored = np.full((64, 64, 3), index, np.uint8)
        shots.observe(packet(index, [Face(face.box, 0.9, 1, square_crop_box(face.box, 1.5), None, restored)]))
    shots.close()
    [track] = ended
    assert [shot.frame_index for shot in track.shots] == [1, 3, 5]  # sides 44, 40, 36
    assert (track.first_frame, track.last_frame, track.frames) == (0, 6, 7)
    best = track.shots[0]
    side = int(best.crop_box.w)
    assert best.original.shape == (side, side, 3)  # the frame's own pixels, not resized
    assert np.array_equal(
        best.original,
        packet(1, []).frame.image[
            int(best.crop_box.y) : int(best.crop_box.y) + side, int(best.crop_box.x) : int(best.crop_box.x) + side
        ],
    )
    assert best.restored.shape == (64, 64, 3) and best.restored[0, 0, 0] == 1  # that frame's model output
    assert best.time_s == pytest.approx(1 / 25) and best.wall_clock is None  # files: no wall clock


def test_a_track_not_seen_for_end_after_frames_is_flushed_while_others_go_on():
    shots, ended = collector(end_after=5)
    for index in range(20):
        faces = [face_at(200, 80, 30, track_id=2)]
        if index < 4:
            faces.append(face_at(40, 80, 30, track_id=1))
        shots.observe(packet(index, faces))
        if index == 3 + 5:
            assert ended == []  # seen at frame 3: still within its 5 quiet frames
    assert [track.track_id for track in ended] == [1]
    shots.close()
    assert [track.track_id for track in ended] == [1, 2]


def test_a_track_id_seen_again_after_its_flush_is_a_new_segment():
    shots, ended = collector(end_after=2)
    for index in range(17):
        shots.observe(packet(index, [face_at(40, 80, 30, track_id=7)] if index in (0, 1, 2, 10, 11, 12) else []))
    assert [(t.track_id, t.segment, t.key) for t in ended] == [(7, 1, "track_0007"), (7, 2, "track_0007_2")]


def test_memory_is_bounded_by_n_shots_per_live_track():
    shots, _ = collector(top_n=2, end_after=1000)
    for index in range(200):
        shots.observe(packet(index, [face_at(40 + index % 50, 80, 20 + index % 30, track_id=1)], image=textured(0)))
    assert len(shots._tracks[1].heap) == 2


def test_ties_keep_the_earlier_frame_so_runs_repeat():
    shots, ended = collector(top_n=1)
    image = textured(0)
    for index in range(5):
        shots.observe(packet(index, [face_at(100, 80, 30)], image=image))
    shots.close()
    assert ended[0].shots[0].frame_index == 0


def test_live_shots_carry_the_wall_clock():
    live = StreamInfo("cam1", WIDTH, HEIGHT, Fraction(25), Fraction(1, 90000), is_live=True)
    ended = []
    shots = BestShots(live, ended.append, clock=lambda: 1_700_000_000.5)
    shots.observe(packet(0, [face_at(100, 80, 30)]))
    shots.close()
    assert ended[0].shots[0].wall_clock == 1_700_000_000.5 and ended[0].first_wall_clock == 1_700_000_000.5


def test_overlay_shows_each_face_with_its_tracks_best_restored_view_so_far():
    from streamer.best_shots import BestShotInsets

    insets = BestShotInsets(BestShots(INFO, lambda track: None, top_n=1, end_after_frames=100))
    shown = []
    for index, side in enumerate([40, 24, 30]):  # the first (largest) face is the best shot
        face = face_at(100, 80, side)
        restored = np.full((64, 64, 3), index, np.uint8)
        out = insets.observe(packet(index, [Face(face.box, 0.9, 1, square_crop_box(face.box, 1.5), None, restored)]))
        shown.append(int(out.faces[0].restored[0, 0, 0]))
        assert out.faces[0].box == face.box  # the inset stays beside the face where it is now
    assert shown == [0, 0, 0]


def test_kept_shots_are_apart_in_time_not_three_copies_of_one_moment():
    shots, ended = collector(top_n=3, end_after=1000, min_gap_s=0.4)  # 10 frames at 25 fps
    sides = {3: 40, 4: 42, 5: 41, 20: 30, 21: 31, 40: 36}  # a good moment (frames 3-5), two weaker ones
    for index in range(45):
        shots.observe(packet(index, [face_at(100, 80, sides.get(index, 20))], image=textured(0)))
    shots.close()
    kept = [shot.frame_index for shot in ended[0].shots]
    assert kept[0] == 4  # the best of the good moment, once
    assert sorted(kept) == [4, 21, 40]
    assert all(abs(a - b) >= 10 for a in kept for b in kept if a != b)


def cropped(face: Face) -> Face:
    """The face as the detect stage hands it to the restore filter: cropped, to be restored."""
    return Face(face.box, face.score, face.track_id, square_crop_box(face.box, 1.5), np.zeros((64, 64, 3), np.uint8))


def restored_flags(selector, frames) -> list[bool]:
    """For each frame (a list of faces), whether each face kept its crop (is restored)."""
    image = textured(7)  # the same picture throughout: only the boxes change the scores
    flags = []
    for faces in frames:
        flags += [face.crop is not None for face in selector.select(image, [cropped(face) for face in faces])]
    return flags


@pytest.mark.parametrize(
    "sides, expected",
    [
        ([24, 40, 30, 40, 48], [True, True, False, False, True]),  # larger = better; a tie is not better
        ([48, 40, 32, 24], [True, False, False, False]),  # a shrinking face keeps its first view
        ([20, 24, 28, 32], [True, True, True, True]),  # every face improves on its track's best
    ],
)
def test_overlay_restores_a_face_only_when_it_beats_its_tracks_best_view(sides, expected):
    from streamer.best_shots import RestoreWhenBetter

    selector = RestoreWhenBetter(refresh_frames=100)
    assert restored_flags(selector, [[face_at(100, 80, side)] for side in sides]) == expected
    assert selector.skipped == expected.count(False)


def test_a_tracks_view_is_restored_again_every_refresh_frames_even_when_not_better():
    from streamer.best_shots import RestoreWhenBetter

    selector = RestoreWhenBetter(refresh_frames=3)
    flags = restored_flags(selector, [[face_at(100, 80, 40)]] * 7)
    assert flags == [True, False, False, True, False, False, True]


def test_tracks_are_judged_apart_and_an_ended_track_is_forgotten():
    from streamer.best_shots import RestoreWhenBetter

    selector = RestoreWhenBetter(refresh_frames=100, forget_after_frames=2)
    big_1, small_1, track_2 = face_at(100, 80, 48), face_at(100, 80, 24), face_at(200, 80, 30, track_id=2)
    frames = [[big_1, track_2], [small_1, track_2], [track_2], [track_2], [track_2], [small_1]]
    # track 1's small face does not beat its big one; after 3 frames away track 1 starts afresh
    assert restored_flags(selector, frames) == [True, True, False, False, False, False, False, True]


def test_faces_without_a_crop_or_a_track_pass_the_filter_unchanged():
    from streamer.best_shots import RestoreWhenBetter

    selector = RestoreWhenBetter()
    unverified = face_at(100, 80, 40)  # the restore gate said no: no crop
    untracked = cropped(face_at(10, 10, 30, track_id=-1))
    assert selector.select(textured(), [unverified, untracked]) == [unverified, untracked]


def test_overlay_shows_the_latest_restored_view_when_the_best_shot_has_none():
    from streamer.best_shots import BestShotInsets

    insets = BestShotInsets(BestShots(INFO, lambda track: None, top_n=1, end_after_frames=100))
    big, small = face_at(100, 80, 48), face_at(100, 80, 24)
    # the best shot (the big face) was not restored (a dropped frame, or the filter's refresh came later)
    insets.observe(packet(0, [Face(big.box, 0.9, 1, square_crop_box(big.box, 1.5))]))
    restored = np.full((64, 64, 3), 9, np.uint8)
    out = insets.observe(packet(1, [Face(small.box, 0.9, 1, square_crop_box(small.box, 1.5), None, restored)]))
    assert out.faces[0].restored is restored
    out = insets.observe(packet(2, [Face(small.box, 0.9, 1, square_crop_box(small.box, 1.5))]))
    assert out.faces[0].restored is restored  # shown on the next frames too
