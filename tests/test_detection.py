"""Face detection: tiled detection finds the small faces whole-frame detection misses, once each."""

from __future__ import annotations

import itertools

import av
import numpy as np
import pytest

from samples.scene import Placement, frame_with_faces, grid_placements
from streamer import REPO_ROOT
from streamer.detection import (
    DetectorLoadError,
    MediaPipeFaceDetector,
    Tile,
    TilingOptions,
    suppress_duplicates,
    tile_grid,
    touches_inner_edge,
)
from streamer.values import Box, Face
from tests.helpers.faces import require_faces

FULL_RANGE = REPO_ROOT / "models" / "face_detection_full_range_sparse.tflite"
TILING = TilingOptions(tile_size=320, overlap=96)


def matches(truth: Box, faces: list[Face]) -> list[Face]:
    return [face for face in faces if truth.iou(face.box) > 0.3]


def recall(truths: list[Box], faces: list[Face]) -> float:
    return sum(bool(matches(truth, faces)) for truth in truths) / len(truths)


@pytest.fixture(scope="module")
def small_faces_1080p() -> tuple[np.ndarray, list[Box]]:
    require_faces()
    placements = grid_placements(1920, 1080, face_widths=[24, 28, 32, 36, 40], columns=8, rows=4)
    return frame_with_faces(1920, 1080, placements, seed=1)


def test_tiles_find_small_faces_that_whole_frame_detection_misses(small_faces_1080p):
    frame, truths = small_faces_1080p
    with MediaPipeFaceDetector(FULL_RANGE, min_score=0.5) as whole:
        whole_faces = whole.detect(frame)
    with MediaPipeFaceDetector(FULL_RANGE, min_score=0.5, tiling=TILING) as tiled:
        tiled_faces = tiled.detect(frame)
    assert recall(truths, whole_faces) <= 0.2
    assert recall(truths, tiled_faces) >= 0.8


def test_tiled_detection_reports_each_face_once(small_faces_1080p):
    frame, truths = small_faces_1080p
    with MediaPipeFaceDetector(FULL_RANGE, min_score=0.5, tiling=TILING) as tiled:
        faces = tiled.detect(frame)
    duplicated = [truth for truth in truths if len(matches(truth, faces)) > 1]
    assert duplicated == []
    assert len(faces) <= len(truths) + 1  # at most one stray box


def test_face_cut_by_a_tile_border_is_found_whole():
    require_faces()
    # 640 px wide, tiles 320/96 start at x = 0, 160, 320: x = 320 is an inner edge of two tiles,
    # and the middle tile holds the face whole.
    frame, (truth,) = frame_with_faces(640, 360, [Placement(x=302, y=150, width=36)], seed=3)
    with MediaPipeFaceDetector(FULL_RANGE, min_score=0.5, tiling=TILING) as tiled:
        found = matches(truth, tiled.detect(frame))
    assert len(found) == 1  # the half that the outer tiles saw is suppressed
    assert truth.iou(found[0].box) > 0.5


def test_min_face_px_drops_smaller_faces(small_faces_1080p):
    frame, _ = small_faces_1080p
    with MediaPipeFaceDetector(FULL_RANGE, min_score=0.5, tiling=TILING, min_face_px=34) as tiled:
        faces = tiled.detect(frame)
    assert faces and all(max(face.box.w, face.box.h) >= 34 for face in faces)


@pytest.mark.parametrize(
    ("width", "height", "options"),
    [(1920, 1080, TilingOptions(320, 96)), (640, 360, TilingOptions(256, 64)), (200, 100, TilingOptions(320, 96))],
)
def test_tile_grid_covers_the_frame_with_the_requested_overlap(width, height, options):
    tiles = tile_grid(width, height, options)
    covered = np.zeros((height, width), bool)
    for tile in tiles:
        assert 0 <= tile.x and tile.x + tile.w <= width and 0 <= tile.y and tile.y + tile.h <= height
        covered[tile.y : tile.y + tile.h, tile.x : tile.x + tile.w] = True
    assert covered.all()
    xs = sorted({tile.x for tile in tiles})
    assert all(tiles[0].w - (b - a) >= options.overlap for a, b in zip(xs, xs[1:]))


def test_only_inner_tile_edges_count_as_cuts():
    tile = Tile(0, 0, 320, 320)  # top-left tile of a 640 x 640 frame
    assert touches_inner_edge(Box(300, 100, 20, 20), tile, 640, 640)  # reaches the right edge
    assert not touches_inner_edge(Box(0, 0, 20, 20), tile, 640, 640)  # frame corner
    assert not touches_inner_edge(Box(100, 100, 20, 20), tile, 640, 640)


def test_suppression_prefers_the_whole_face_over_the_part_a_tile_edge_cut():
    whole = Face(Box(100, 100, 40, 40), score=0.6)
    half = Face(Box(120, 100, 20, 40), score=0.9)  # IoU 0.5 with `whole`, but all inside it
    other = Face(Box(300, 100, 40, 40), score=0.7)
    kept = suppress_duplicates([half, whole, other], cut=[True, False, False], threshold=0.4)
    assert kept == [other, whole] or kept == [whole, other]


def test_missing_or_broken_model_file_is_a_one_line_error(tmp_path):
    with pytest.raises(DetectorLoadError, match="not found"):
        MediaPipeFaceDetector(tmp_path / "nope.tflite")
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"this is not a model")
    with pytest.raises(DetectorLoadError, match="broken.tflite") as caught:
        MediaPipeFaceDetector(broken)
    assert "\n" not in str(caught.value)


def test_non_contiguous_frame_is_rejected_not_silently_empty():
    with MediaPipeFaceDetector(FULL_RANGE) as detector:
        with pytest.raises(ValueError, match="contiguous"):
            detector.detect(np.zeros((100, 200, 3), np.uint8)[:, ::2])


def test_the_demo_clip_is_small_and_its_faces_are_found_with_tiles():
    demo = REPO_ROOT / "samples" / "demo_cctv.mp4"
    assert demo.stat().st_size < 2_000_000
    with av.open(str(demo)) as container:
        decoded = itertools.islice(container.decode(video=0), 60, 100, 10)
        frames = [frame.to_ndarray(format="rgb24") for frame in decoded]
    assert frames[0].shape == (360, 640, 3)
    with MediaPipeFaceDetector(FULL_RANGE, min_score=0.5, tiling=TILING) as tiled:
        counts = [len(tiled.detect(frame)) for frame in frames]
    assert min(counts) >= 2, counts
