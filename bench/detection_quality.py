"""Detection and restoration quality against labelled faces, before and after the restore gate.

    python bench/detection_quality.py [--videos NAME ...] [--configs default tiles retinaface]

Videos (labelled frames: 150 in all):
  crowd_walk_1080p, office_cctv_360p  ../shared/data/videos, labels in bench/labels/faces.json
  demo_cctv                           samples/demo_cctv.mp4, true boxes by construction (samples/make_sample.py)
  distractors                         generated (samples/distractors.py): each scene held for 12 frames,
                                      real faces beside the back of heads, balloons, a clock, a hand, a timestamp
Configurations:
  default     configs/default.yaml (MediaPipe on the whole frame, every 3rd frame, tracker between)
  tiles       the same with --tiles
  retinaface  RetinaFace-MobileNet0.25 on the whole frame as the detector (detection rows only)

For each (video, configuration), in one run:
  detection precision by detection size and recall by true face size (< 20, 20-40, > 40 px; a match
  is IoU >= 0.3), on the labelled frames, the detector run on each of them;
  restoration precision: of the faces the pipeline's detect stage (streamer/detect_stage.py: detect,
  track, gate, crop) hands to the restorer on the labelled frames, the share that are real faces
  (IoU >= 0.3 with a true face, or the box's centre inside one), without the gate and with it;
  fps of the detect stage without and with the gate (every frame of the video, same process), and
  the gate's own time per frame (its checks and RetinaFace calls: the fps columns are noisy).
Not a test: the machine is shared, so the fps columns are noisy; the ratio is measured in one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# streamer first: importing it sets the OpenMP wait policy before torch loads
from streamer import REPO_ROOT
from streamer.colour import frame_to_rgb
from streamer.components import assemble_components, load_restorer
from streamer.config import Config, load_config
from streamer.retinaface import RetinaFaceModel
from streamer.stats import StageClock
from streamer.values import Box, Face

LABELS = REPO_ROOT / "bench" / "labels" / "faces.json"
VIDEOS_DIR = REPO_ROOT.parent / "shared" / "data" / "videos"
DEMO = REPO_ROOT / "samples" / "demo_cctv.mp4"
MATCH_IOU = 0.3
SIZES = ((0, 20, "<20"), (20, 40, "20-40"), (40, 1e9, ">40"))
DISTRACTOR_SCENES, SCENE_FRAMES = 66, 12  # 12: the tracker drops the last scene's faces before its last frame
DEMO_EVERY = 4


@dataclass
class Video:
    name: str
    frames: list[np.ndarray]
    truth: dict[int, list[Box]]  # labelled frame index -> true face boxes


@dataclass
class Counts:
    detections: dict[str, list[int]] = field(default_factory=lambda: {s[2]: [0, 0] for s in SIZES})  # [true, all]
    truths: dict[str, list[int]] = field(default_factory=lambda: {s[2]: [0, 0] for s in SIZES})  # [found, all]
    restored: dict[str, list[int]] = field(default_factory=dict)  # gate off/on -> [real, all]
    fps: dict[str, float] = field(default_factory=dict)
    gate_ms: float | None = None  # the gate's own time per frame (its checks and RetinaFace calls)


def size_bucket(box: Box) -> str:
    side = max(box.w, box.h)
    return next(label for low, high, label in SIZES if low <= side < high)


def matches(found: list[Box], truth: list[Box]) -> tuple[list[bool], list[bool]]:
    """Greedy one-to-one matching by IoU: (is each found box a true face, is each true face found)."""
    pairs = sorted(((f.iou(t), i, j) for i, f in enumerate(found) for j, t in enumerate(truth)), reverse=True)
    found_ok, truth_ok = [False] * len(found), [False] * len(truth)
    for iou, i, j in pairs:
        if iou >= MATCH_IOU and not found_ok[i] and not truth_ok[j]:
            found_ok[i] = truth_ok[j] = True
    return found_ok, truth_ok


def is_on_a_face(box: Box, truth: list[Box]) -> bool:
    """A restored box is on a real face when it matches one (IoU >= 0.3) or its centre lies inside
    one (the tracker's box can trail a moving face by a third of its width)."""
    cx, cy = box.center
    return any(box.iou(t) >= MATCH_IOU or (t.x <= cx <= t.x + t.w and t.y <= cy <= t.y + t.h) for t in truth)


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame_to_rgb(frame) for frame in container.decode(video=0)]


def labelled_video(name: str) -> Video:
    entry = json.loads(LABELS.read_text())["videos"][name]
    truth = {int(index): [Box(*box) for box in boxes] for index, boxes in entry["frames"].items()}
    return Video(name, decoded(VIDEOS_DIR / entry["file"]), truth)


def demo_video() -> Video:
    from samples.make_sample import (
        FPS,
        HEIGHT,
        SECONDS,
        WALKERS,
        WIDTH,
        plan_walkers,
        render_frame,
    )
    from samples.scene import cctv_background, load_faces

    seed = 7  # the seed demo_cctv.mp4 was made with (samples/README.md)
    rng = np.random.default_rng(seed)
    background = cctv_background(WIDTH, HEIGHT, seed)
    walkers = plan_walkers(load_faces(WALKERS, seed), FPS * SECONDS, rng)
    truth = {index: render_frame(background, walkers, index)[1] for index in range(0, FPS * SECONDS, DEMO_EVERY)}
    return Video("demo_cctv", decoded(DEMO), truth)


def distractor_video() -> Video:
    from samples.distractors import distractor_scene

    frames, truth = [], {}
    for index in range(DISTRACTOR_SCENES):
        scene = distractor_scene(index)
        frames += [scene.image] * SCENE_FRAMES
        truth[len(frames) - 1] = scene.faces  # the scene's last frame: the gate has had its checks
    return Video("distractors", frames, truth)


def load_video(name: str) -> Video:
    if name == "demo_cctv":
        return demo_video()
    if name == "distractors":
        return distractor_video()
    return labelled_video(name)


REPEATS = 1  # --repeats: timed passes of the detect stage per configuration
EXTRA: dict[str, object] = {}  # --set KEY=VALUE: config keys to try (e.g. the gate's settings)


def config_for(name: str, gate: bool) -> Config:
    overrides = {
        **EXTRA,
        "detection.tiling.enabled": name == "tiles",
        "verification.enabled": gate,
        "restoration.device": "cpu",
    }
    return load_config(
        REPO_ROOT / "configs" / "default.yaml", overrides={key: (value, "bench") for key, value in overrides.items()}
    )


def count_detections(video: Video, detect, counts: Counts) -> None:
    for index, truth in video.truth.items():
        found = [face.box for face in detect(video.frames[index])]
        found_ok, truth_ok = matches(found, truth)
        for box, ok in zip(found, found_ok):
            counts.detections[size_bucket(box)][0] += ok
            counts.detections[size_bucket(box)][1] += 1
        for box, ok in zip(truth, truth_ok):
            counts.truths[size_bucket(box)][0] += ok
            counts.truths[size_bucket(box)][1] += 1


def restored_faces(video: Video, stage) -> Iterator[tuple[int, list[Face]]]:
    """(frame index, faces handed to the restorer) for every frame, through the real detect stage."""
    for index, image in enumerate(video.frames):
        yield index, [face for face in stage.faces_in(image, index) if face.crop is not None]


def run_stage(video: Video, config: Config, restorer, counts: Counts, label: str) -> None:
    components = assemble_components(config, restorer)
    detector = components.make_detector()
    stage = components.detect_stage(detector, config.detection.every_n_frames)
    gate_clock = StageClock()
    if stage.gate is not None:
        review = stage.gate.review

        def timed_review(*args):
            with gate_clock.timing():
                return review(*args)

        stage.gate.review = timed_review
    real = restored = 0
    started = time.perf_counter()
    for index, faces in restored_faces(video, stage):
        if index in video.truth:
            real += sum(is_on_a_face(face.box, video.truth[index]) for face in faces)
            restored += len(faces)
    counts.fps[label] = max(counts.fps.get(label, 0.0), len(video.frames) / (time.perf_counter() - started))
    counts.restored[label] = [real, restored]
    if stage.gate is not None:
        counts.gate_ms = 1000.0 * gate_clock.seconds / len(video.frames)
    detector.close()


def evaluate(video: Video, config_name: str, restorer, retina: RetinaFaceModel) -> Counts:
    counts = Counts()
    if config_name == "retinaface":
        count_detections(video, lambda image: retina.detect(image, min_score=0.5), counts)
        started = time.perf_counter()
        for image in video.frames[:: max(1, len(video.frames) // 30)]:
            retina.detect(image, min_score=0.5)
        counts.fps["detector"] = min(30, len(video.frames)) / (time.perf_counter() - started)
        return counts
    config = config_for(config_name, gate=False)
    components = assemble_components(config, restorer)
    with components.make_detector() as detector:
        count_detections(video, detector.detect, counts)
    for _ in range(REPEATS):  # alternate, keep each one's best: the machine is shared
        run_stage(video, config, restorer, counts, "no gate")
        run_stage(video, config_for(config_name, gate=True), restorer, counts, "gate")
    return counts


def ratio(pair: list[int]) -> str:
    return f"{pair[0] / pair[1]:.2f} ({pair[0]}/{pair[1]})" if pair[1] else "-"


def table(results: list[tuple[str, str, Counts]]) -> str:
    sizes = [label for _, _, label in SIZES]
    header = (
        ["video", "config"]
        + [f"P {s}" for s in sizes]
        + [f"R {s}" for s in sizes]
        + ["restored real: no gate", "gate", "fps no gate", "fps gate", "gate ms/frame"]
    )
    rows = [header]
    for video, config, counts in results:
        rows.append(
            [video, config]
            + [ratio(counts.detections[s]) for s in sizes]
            + [ratio(counts.truths[s]) for s in sizes]
            + [ratio(counts.restored.get("no gate", [0, 0])), ratio(counts.restored.get("gate", [0, 0]))]
            + [
                f"{counts.fps.get('no gate', counts.fps.get('detector', 0)):.1f}",
                f"{counts.fps['gate']:.1f}" if "gate" in counts.fps else "-",
                f"{counts.gate_ms:.2f}" if counts.gate_ms is not None else "-",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--videos", nargs="+", default=["crowd_walk_1080p", "office_cctv_360p", "demo_cctv", "distractors"]
    )
    parser.add_argument("--configs", nargs="+", default=["default", "tiles", "retinaface"])
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config keys for every run, e.g. verification.min_score=0.5 (YAML values)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed passes each, best kept (fps columns)")
    args = parser.parse_args()
    global REPEATS
    REPEATS = args.repeats
    for item in args.set:
        key, value = item.split("=", 1)
        EXTRA[key] = yaml.safe_load(value)
    logging.basicConfig(level=logging.WARNING)
    restorer = load_restorer(config_for("default", gate=True))  # its spec decides the crops; it is not run
    retina = RetinaFaceModel(threads=1)
    results = []
    for name in args.videos:
        video = load_video(name)
        labelled = len(video.truth)
        print(
            f"{name}: {len(video.frames)} frames, {labelled} labelled, "
            f"{sum(len(b) for b in video.truth.values())} true faces",
            flush=True,
        )
        for config_name in args.configs:
            results.append((name, config_name, evaluate(video, config_name, restorer, retina)))
            print(table(results[-1:]).splitlines()[-1], flush=True)
    print()
    print("P: detection precision by detection size; R: recall by true face size (IoU >= 0.3);")
    print("restored real: share of the faces handed to the restorer on labelled frames that are real faces.")
    print(table(results))


if __name__ == "__main__":
    main()
