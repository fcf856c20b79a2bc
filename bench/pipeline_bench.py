"""Pipeline throughput against a serial loop of the same stages and the decode+encode bound.

    python bench/pipeline_bench.py [--max-frames N] [--model PATH] [--threads N] [--videos NAME ...]

For each video of ../shared/data/videos (crowd_walk_1080p: whole-frame detection; office_cctv_360p:
tiling on), in one run and with the same components and codec settings:
  bound       PyAV decode + encode alone (source -> sink; a decode thread and an encode thread, as in
              the pipeline): what the pipeline's I/O allows
  serial      every stage in one loop, one frame after another (restorer batch = one frame's faces)
  pipeline    the threaded pipeline (streamer/pipeline.py)
  no-restore  the threaded pipeline with the restorer off (detect, track, composite, write)
and the restorer alone on random crops at batch 1..32 (its best faces/s), against its faces/s
inside the pipeline (faces / the restorer thread's busy time), and the CPU cores each mode kept busy
(CPU time / wall time: a loaded machine shows below 2 on 2 cores). Prints one table and the ratios
the targets are stated in. Not a test: numbers depend on the machine and its load (printed).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from streamer import REPO_ROOT  # noqa: E402  (first: sets the OpenMP wait policy before torch loads)
from streamer.components import build_components, pipeline_settings  # noqa: E402
from streamer.config import Config, load_config  # noqa: E402
from streamer.pipeline import Components, Job, Pipeline  # noqa: E402
from streamer.workers import CaptureLimits  # noqa: E402

VIDEOS_DIR = REPO_ROOT.parent / "shared" / "data" / "videos"
# video -> config overrides (dotted key -> value). The targets count every detected face as
# restored, so the size cap that spares large faces (restoration.max_face_px) is lifted.
EVERY_FACE = {"restoration.max_face_px": 0}
VIDEOS = {
    "crowd_walk_1080p.mp4": EVERY_FACE,
    "office_cctv_360p.mp4": {**EVERY_FACE, "detection.tiling.enabled": True},
}
STANDALONE_BATCHES = (1, 4, 8, 16, 32)


@dataclasses.dataclass
class Row:
    video: str
    frames: int
    fps: dict[str, float]
    faces: int = 0
    stage_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    restorer_in_pipeline: float = 0.0  # faces/s while the restorer thread was busy
    mean_batch: float = 0.0  # faces per restorer call in the pipeline
    restorer_standalone: tuple[int, float] = (0, 0.0)  # (best batch, faces/s)
    cores_used: dict[str, float] = dataclasses.field(default_factory=dict)  # mode -> CPU s / wall s


def timed(work, cores_used: dict[str, float], mode: str) -> tuple[float, object]:
    """Wall seconds of work() and its result; records the CPU cores it kept busy on average
    (process CPU time / wall time: 2.0 = both cores of a 2-core machine)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    result = work()
    wall = time.perf_counter() - started
    cores_used[mode] = (time.process_time() - cpu_started) / wall
    return wall, result


def run_pipeline(job: Job, components: Components, config: Config, limit: int | None):
    settings = pipeline_settings(config, CaptureLimits(max_frames=limit))
    return Pipeline([job], components, settings).run()


def run_bound(job: Job, components: Components, limit: int | None) -> int:
    """Decode and encode only, with the same source and sink code and options, in two threads
    joined by a queue (as in the pipeline): what the pipeline's I/O alone allows."""
    frames: queue.Queue = queue.Queue(8)
    with components.open_source(job.input, job.source_id) as source:
        sink = components.open_sink(job.output, source.info)

        def decode() -> None:
            for frame in itertools.islice(source.frames(threading.Event()), limit):
                frames.put(frame)
            frames.put(None)

        decoder = threading.Thread(target=decode, daemon=True)
        decoder.start()
        count = 0
        for frame in iter(frames.get, None):
            sink.write(frame)
            count += 1
        decoder.join()
        sink.close()
    return count


def run_serial(job: Job, components: Components, every_n: int, limit: int | None) -> int:
    """The same stages as the pipeline, in one thread: the baseline the pipeline must beat."""
    detector = components.make_detector()
    try:
        stage = components.detect_stage(detector, every_n)
        with components.open_source(job.input, job.source_id) as source:
            sink = components.open_sink(job.output, source.info)
            count = 0
            for frame in itertools.islice(source.frames(threading.Event()), limit):
                faces = restore_serially(components, stage.faces_in(frame.image, frame.index))
                sink.write(dataclasses.replace(frame, image=components.compose(frame.image, faces)))
                count += 1
            sink.close()
    finally:
        detector.close()
    return count


def restore_serially(components: Components, faces: tuple) -> tuple:
    """The frame's faces with their crops restored (restorer batch = this frame's crops)."""
    cropped = [face for face in faces if face.crop is not None]  # larger faces keep their pixels
    if components.restorer is None or not cropped:
        return faces
    restored = iter(components.restorer.restore(np.stack([face.crop for face in cropped])))
    return tuple(dataclasses.replace(face, restored=next(restored)) if face.crop is not None else face
                 for face in faces)


def restorer_standalone(components: Components, seconds: float = 2.0) -> tuple[int, float]:
    """(batch, faces/s) of the restorer's best batch size on random crops."""
    size = components.restorer.spec.input_size
    crops = np.random.default_rng(0).integers(0, 256, (max(STANDALONE_BATCHES), size, size, 3), dtype=np.uint8)
    best = (0, 0.0)
    for batch in STANDALONE_BATCHES:
        components.restorer.restore(crops[:batch])  # warm-up
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            components.restorer.restore(crops[:batch])
            done += batch
        rate = done / (time.perf_counter() - started)
        best = max(best, (batch, rate), key=lambda entry: entry[1])
    return best


def bench_video(name: str, overrides: dict, args: argparse.Namespace, out_dir: Path) -> Row:
    flags = {key: (value, key) for key, value in overrides.items()}
    if args.model:
        flags["restoration.model"] = (str(args.model.resolve()), "--model")
    if args.threads:
        flags["restoration.threads"] = (args.threads, "--threads")
    config = load_config(args.config, flags)
    components = build_components(config)
    without_restorer = dataclasses.replace(components, restorer=None, crop_faces=None)
    job = Job("bench", str(VIDEOS_DIR / name), "", name)
    output = lambda tag: dataclasses.replace(job, output=str(out_dir / f"{tag}_{name}"))  # noqa: E731

    cores: dict[str, float] = {}
    bound_s, frames = timed(lambda: run_bound(output("bound"), components, args.max_frames), cores, "bound")
    serial_s, _ = timed(lambda: run_serial(output("serial"), components, config.detection.every_n_frames,
                                           args.max_frames), cores, "serial")
    pipeline_s, stats = timed(lambda: run_pipeline(output("pipeline"), components, config, args.max_frames),
                              cores, "pipeline")
    bare_s, _ = timed(lambda: run_pipeline(output("bare"), without_restorer, config, args.max_frames), cores,
                      "no-restore")
    source = stats.sources["bench"]
    return Row(
        video=name,
        frames=frames,
        fps={"bound": frames / bound_s, "serial": frames / serial_s, "pipeline": frames / pipeline_s,
             "no-restore": frames / bare_s},
        faces=source.faces,
        stage_ms=stats.stage_ms_per_frame(),
        restorer_in_pipeline=stats.restorer.faces_per_s,
        mean_batch=stats.restorer.faces / max(1, stats.restorer.batches),
        restorer_standalone=restorer_standalone(components),
        cores_used=cores,
    )


def print_table(rows: list[Row]) -> None:
    print(f"cpus={os.cpu_count()} load(1 min)={os.getloadavg()[0]:.2f} "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(default)')}")
    header = (f"{'video':24} {'frames':>6} {'faces':>6} {'bound':>7} {'serial':>7} {'pipeline':>8} {'no-rest':>7}"
              f" {'pipe/serial':>11} {'pipe/bound':>10} {'norest/bound':>12} {'restorer f/s pipe':>17}"
              f" {'(batch)':>7} {'standalone (batch)':>18} {'ratio':>5}")
    print(header)
    for row in rows:
        fps, (best_batch, standalone) = row.fps, row.restorer_standalone
        print(f"{row.video:24} {row.frames:>6} {row.faces:>6} {fps['bound']:>7.1f} {fps['serial']:>7.1f}"
              f" {fps['pipeline']:>8.1f} {fps['no-restore']:>7.1f} {fps['pipeline'] / fps['serial']:>11.2f}"
              f" {fps['pipeline'] / fps['bound']:>10.2f} {fps['no-restore'] / fps['bound']:>12.2f}"
              f" {row.restorer_in_pipeline:>17.0f} {row.mean_batch:>7.1f} {standalone:>11.0f} ({best_batch:>4})"
              f" {row.restorer_in_pipeline / standalone if standalone else 0:>5.2f}")
    print("fps columns: frames per second, wall clock, whole run incl. opening the file")
    for row in rows:
        stages = "  ".join(f"{stage} {ms:.1f}" for stage, ms in row.stage_ms.items())
        cores = "  ".join(f"{mode} {used:.2f}" for mode, used in row.cores_used.items())
        print(f"{row.video}: pipeline busy ms/frame: {stages}; CPU cores kept busy: {cores}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-frames", type=int, help="only the first N frames of each video")
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "default.yaml")
    parser.add_argument("--model", type=Path, help="restorer model (default: the config's)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--videos", nargs="*", choices=sorted(VIDEOS), default=sorted(VIDEOS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pipeline_bench_") as out_dir:
        rows = [bench_video(name, VIDEOS[name], args, Path(out_dir)) for name in args.videos]
    print_table(rows)


if __name__ == "__main__":
    main()
