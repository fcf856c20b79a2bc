"""Evidence stays as it was: with lossless output, a timestamp burned in right beside a restored
face keeps every pixel, although it lies inside the square the restorer sees."""

from __future__ import annotations

import av
import cv2
import numpy as np

from streamer import colour
from streamer.components import build_components, pipeline_settings
from streamer.config import load_config
from streamer.model_contract import square_crop_box
from streamer.pipeline import Job, Pipeline
from streamer.values import Face
from streamer.workers import CaptureLimits
from tests.helpers.media import make_face_frames, read_frames, write_clip

FRAMES = 12


class TruthDetector:
    """Finds exactly the true faces of each frame, in order (the paste is under test, not detection)."""

    def __init__(self, boxes) -> None:
        self.boxes, self.calls = boxes, 0

    def detect(self, image):
        faces = [Face(box, 0.99) for box in self.boxes[self.calls]]
        self.calls += 1
        return faces

    def close(self) -> None:
        pass


def with_timestamps(frames, boxes) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The frames with a time of day drawn 3 px right of each face, and the masks of its pixels."""
    stamped, masks = [], []
    for index, (frame, frame_boxes) in enumerate(zip(frames, boxes)):
        image = frame.copy()
        for box in frame_boxes:
            origin = (int(box.x + box.w) + 3, int(box.y + box.h / 2) + 4)
            cv2.putText(image, f"03:14:{index:02d}", origin, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        stamped.append(image)
        masks.append(np.any(image != frame, axis=2))
    return stamped, masks


def test_a_timestamp_beside_a_restored_face_keeps_every_pixel(tmp_path, checker_model):
    frames, boxes = make_face_frames(FRAMES, (320, 240), face_px=36, faces=1, seed=5)
    frames, masks = with_timestamps(frames, boxes)
    clip = write_clip(tmp_path / "stamped.mkv", frames, codec="ffv1")
    config = load_config(
        None,
        {
            "restoration.model": (str(checker_model), "test"),
            "output.codec": ("ffv1", "test"),
            "output.container": ("mkv", "test"),
            "detection.every_n_frames": (1, "test"),
        },
    )
    components = build_components(config)
    components.make_detector = lambda: TruthDetector(boxes)
    components.make_gate = None  # every face is restored from the first frame
    output = tmp_path / "out.mkv"
    Pipeline([Job("cam", str(clip), str(output), "clip")], components, pipeline_settings(config, CaptureLimits())).run()

    inputs, _ = read_frames(clip)
    outputs, _ = read_frames(output)
    assert len(outputs) == FRAMES
    in_square = 0
    for before, after, mask, (box,) in zip(inputs, outputs, masks, boxes):
        np.testing.assert_array_equal(after[mask], before[mask])  # every timestamp pixel, bit-exact
        square = square_crop_box(box, 1.5)
        inside = np.zeros_like(mask)
        inside[int(square.y) : int(square.y + square.h), int(square.x) : int(square.x + square.w)] = True
        in_square += int((mask & inside).sum())
        cx, cy = int(box.x + box.w / 2), int(box.y + box.h / 2)
        middle = np.s_[cy - 4 : cy + 4, cx - 4 : cx + 4]
        assert np.abs(after[middle].astype(int) - before[middle]).mean() > 10  # the face itself was restored
    assert in_square > 100  # the timestamp lies inside the restorer's crop squares: a square paste would change it


def yuv_planes(path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every decoded frame's Y, U and V samples (8-bit 4:2:0), as stored."""
    with av.open(str(path)) as container:
        return [
            tuple(
                np.frombuffer(frame.planes[i], np.uint8)
                .reshape(frame.planes[i].height, -1)[:, : frame.planes[i].width]
                .copy()
                for i in range(3)
            )
            for frame in container.decode(video=0)
        ]


def run_lossless_4_2_0(tmp_path, checker_model, mode: str):
    """A lossless 4:2:0 clip of a moving face through the pipeline (every face found, every one
    restored) into a lossless 4:2:0 output. (clip, output, the true boxes, each frame's decoded and
    composited RGB)."""
    frames, boxes = make_face_frames(FRAMES, (320, 240), face_px=36, faces=1, seed=7)
    clip = write_clip(tmp_path / "cam.mp4", frames, codec="libx264", codec_options={"qp": "0"})
    config = load_config(
        None,
        {
            "restoration.model": (str(checker_model), "test"),
            "output.crf": (0, "test"),
            "detection.every_n_frames": (1, "test"),
            "compositing.mode": (mode, "test"),
        },
    )
    components = build_components(config)
    components.make_detector = lambda: TruthDetector(boxes)
    components.make_gate = None
    composited: list[tuple[np.ndarray, np.ndarray]] = []
    compose = components.compose

    def recording_compose(image, faces):
        result = compose(image, faces)
        composited.append((image, result.image))
        return result

    components.compose = recording_compose
    output = tmp_path / "out.mp4"
    Pipeline([Job("cam", str(clip), str(output), "clip")], components, pipeline_settings(config, CaptureLimits())).run()
    return clip, output, boxes, composited


def test_every_sample_outside_the_restored_faces_is_the_decoded_one(tmp_path, checker_model):
    """A lossless 4:2:0 input through a lossless 4:2:0 output: the sink writes the decoded Y, U, V
    samples back wherever the compositor changed nothing (no RGB round trip, not even one code value)."""
    clip, output, boxes, _ = run_lossless_4_2_0(tmp_path, checker_model, "paste")

    inputs, outputs = yuv_planes(clip), yuv_planes(output)
    assert len(outputs) == FRAMES
    for (y_in, u_in, v_in), (y_out, u_out, v_out), (box,) in zip(inputs, outputs, boxes):
        square = square_crop_box(box, 1.5)
        inside = np.zeros(y_in.shape, bool)
        inside[
            max(0, int(square.y)) : int(square.y + square.h) + 1, max(0, int(square.x)) : int(square.x + square.w) + 1
        ] = True
        np.testing.assert_array_equal(y_out[~inside], y_in[~inside])
        chroma_inside = inside.reshape(inside.shape[0] // 2, 2, inside.shape[1] // 2, 2).any(axis=(1, 3))
        np.testing.assert_array_equal(u_out[~chroma_inside], u_in[~chroma_inside])
        np.testing.assert_array_equal(v_out[~chroma_inside], v_in[~chroma_inside])
        assert (y_out[inside] != y_in[inside]).mean() > 0.05  # the face itself was restored


def test_every_inset_label_and_box_the_overlay_draws_reaches_the_output(tmp_path, checker_model):
    """Overlay mode draws far from the faces (insets beside them, labels, boxes); the write stage
    looks for changed pixels only where the compositor says it drew, and must find them all: every
    changed pixel is written from the composited frame, every other one is the decoded sample."""
    clip, output, boxes, composited = run_lossless_4_2_0(tmp_path, checker_model, "overlay")

    inputs, outputs = yuv_planes(clip), yuv_planes(output)
    assert len(outputs) == len(composited) == FRAMES
    drawn_far = 0
    for (before, after), (y_in, _, _), (y_out, _, _), (box,) in zip(composited, inputs, outputs, boxes):
        changed = (after != before).any(axis=2)
        expected_luma = colour.rgb_to_yuv420(after, colour.BT601_LIMITED)[0]  # the clip is untagged
        np.testing.assert_array_equal(y_out[~changed], y_in[~changed])
        assert np.abs(y_out[changed].astype(int) - expected_luma[changed]).max() <= 1
        square = square_crop_box(box, 1.5)
        far = np.ones_like(changed)
        far[max(0, int(square.y)) : int(square.y + square.h), max(0, int(square.x)) : int(square.x + square.w)] = False
        drawn_far += int((changed & far).sum())
    assert drawn_far > FRAMES * 100  # the insets and labels lie beside the faces' squares
