"""Pipeline throughput against a serial loop of the same stages and the decode+encode bound.

    python bench/pipeline_bench.py [--max-frames N] [--model PATH] [--threads N] [--videos NAME ...]
    python bench/pipeline_bench.py --search [--videos NAME ...]   # where the detector looks
    python bench/pipeline_bench.py --latency [--seconds S] [--set KEY=VALUE ...]  # a live 720p25 RTSP camera
    python bench/pipeline_bench.py --presets                      # x264 presets at 1080p
    python bench/pipeline_bench.py --profile                      # ms/frame of the steps at 1080p

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

--search: tiling on (crowd_walk_1080p played SEARCH_LOOPS times over, office_cctv_360p once, and a
generated 1080p crowd whose true boxes are known), in one run:
  bound       decode + encode alone
  every tile  the pipeline with detection.search.policy every_tile (every tile every N frames)
  adaptive    the pipeline with the adaptive policy (streamer/search_policy.py, the default)
with fps, faces restored and the detect stage's ms/frame; then, on the same frames without
encoding, each policy's recall by face size against the reference (the detector on every tile of
every frame; on the generated scene, against the true boxes too), frames to first detection, and
the detector's own ms/frame.
--latency: a generated 720p25 scene served by the RTSP test server (tests/helpers/rtsp_server.py)
through the pipeline with configs/live_rtsp.yaml: latency from a frame decoded to the frame
written (p50/p95), and drops.
--presets: x264 alone on the crowd clip's decoded frames: each preset's CPU ms and bytes per 1080p frame
at the configs' crf values, x264's threading (sliced, frame, one thread), and a live 720p25 camera's
time inside the encoder (frame sent -> packet out) as a recording and as a push (tune=zerolatency).
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
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from streamer import REPO_ROOT, SHARED_DATA  # noqa: E402  (first: sets the OpenMP wait policy before torch loads)

# isort: split
from bench.search_quality import FirstDetection, Recall, boxes, frames_of, search_and_track  # noqa: E402
from streamer.components import build_components, pipeline_settings  # noqa: E402
from streamer.config import Config, OutputConfig, load_config  # noqa: E402
from streamer.detect_stage import DetectStage  # noqa: E402
from streamer.pipeline import Components, Job, Pipeline  # noqa: E402
from streamer.search_policy import EveryNthFrame  # noqa: E402
from streamer.tracking import FaceTracker  # noqa: E402
from streamer.values import Frame  # noqa: E402
from streamer.workers import CaptureLimits  # noqa: E402

VIDEOS_DIR = SHARED_DATA / "videos"
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
                faces = restore_serially(components, stage.faces_in(frame.image, frame.index, frame.seconds))
                image = components.compose(frame.image, faces).image
                sink.write(dataclasses.replace(frame, image=image))
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
    # a K-frame restorer takes each face's window of its track's crops (Face.window), as in the pipeline
    inputs = [face.crop if face.window is None else face.window for face in cropped]
    restored = iter(components.restorer.restore(np.stack(inputs)))
    return tuple(
        dataclasses.replace(face, restored=next(restored)) if face.crop is not None else face for face in faces
    )


def restorer_standalone(components: Components, seconds: float = 2.0) -> tuple[int, float]:
    """(batch, faces/s) of the restorer's best batch size on random crops."""
    shape = components.restorer.spec.crops_shape  # S x S x 3, or K x S x S x 3 for a K-frame model
    crops = np.random.default_rng(0).integers(0, 256, (max(STANDALONE_BATCHES), *shape), dtype=np.uint8)
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
    serial_s, _ = timed(
        lambda: run_serial(output("serial"), components, config.detection.every_n_frames, args.max_frames),
        cores,
        "serial",
    )
    pipeline_s, stats = timed(
        lambda: run_pipeline(output("pipeline"), components, config, args.max_frames), cores, "pipeline"
    )
    bare_s, _ = timed(
        lambda: run_pipeline(output("bare"), without_restorer, config, args.max_frames), cores, "no-restore"
    )
    source = stats.sources["bench"]
    return Row(
        video=name,
        frames=frames,
        fps={
            "bound": frames / bound_s,
            "serial": frames / serial_s,
            "pipeline": frames / pipeline_s,
            "no-restore": frames / bare_s,
        },
        faces=source.faces,
        stage_ms=stats.stage_ms_per_frame(),
        restorer_in_pipeline=stats.restorer.faces_per_s,
        mean_batch=stats.restorer.faces / max(1, stats.restorer.batches),
        restorer_standalone=restorer_standalone(components),
        cores_used=cores,
    )


def print_table(rows: list[Row]) -> None:
    print(
        f"cpus={os.cpu_count()} load(1 min)={os.getloadavg()[0]:.2f} "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(default)')}"
    )
    header = (
        f"{'video':24} {'frames':>6} {'faces':>6} {'bound':>7} {'serial':>7} {'pipeline':>8} {'no-rest':>7}"
        f" {'pipe/serial':>11} {'pipe/bound':>10} {'norest/bound':>12} {'restorer f/s pipe':>17}"
        f" {'(batch)':>7} {'standalone (batch)':>18} {'ratio':>5}"
    )
    print(header)
    for row in rows:
        fps, (best_batch, standalone) = row.fps, row.restorer_standalone
        print(
            f"{row.video:24} {row.frames:>6} {row.faces:>6} {fps['bound']:>7.1f} {fps['serial']:>7.1f}"
            f" {fps['pipeline']:>8.1f} {fps['no-restore']:>7.1f} {fps['pipeline'] / fps['serial']:>11.2f}"
            f" {fps['pipeline'] / fps['bound']:>10.2f} {fps['no-restore'] / fps['bound']:>12.2f}"
            f" {row.restorer_in_pipeline:>17.0f} {row.mean_batch:>7.1f} {standalone:>11.0f} ({best_batch:>4})"
            f" {row.restorer_in_pipeline / standalone if standalone else 0:>5.2f}"
        )
    print("fps columns: frames per second, wall clock, whole run incl. opening the file")
    for row in rows:
        stages = "  ".join(f"{stage} {ms:.1f}" for stage, ms in row.stage_ms.items())
        cores = "  ".join(f"{mode} {used:.2f}" for mode, used in row.cores_used.items())
        print(f"{row.video}: pipeline busy ms/frame: {stages}; CPU cores kept busy: {cores}")


TILED = {**EVERY_FACE, "detection.tiling.enabled": True}
SEARCH_LOOPS = {"crowd_walk_1080p.mp4": 4, "office_cctv_360p.mp4": 1}
POLICIES = ("every_tile", "adaptive")


def looped_clip(name: str, loops: int, out_dir: Path) -> Path:
    """The video stream of `name` played `loops` times over (packets copied, timestamps shifted)."""
    import av

    if loops == 1:
        return VIDEOS_DIR / name
    target = out_dir / f"loop{loops}_{name}"
    with av.open(str(VIDEOS_DIR / name)) as source, av.open(str(target), "w") as output:
        video = source.streams.video[0]
        stream = output.add_stream_from_template(video)
        packets = [packet for packet in source.demux(video) if packet.dts is not None]
        span = max(packet.pts + (packet.duration or 0) for packet in packets) - min(p.pts for p in packets)
        for loop in range(loops):
            for packet in packets:
                packet.stream = stream
                packet.pts += span if loop else 0
                packet.dts += span if loop else 0
                output.mux(packet)
    return target


def tiled_config(args: argparse.Namespace, policy: str, extra: dict | None = None) -> Config:
    flags = {key: (value, key) for key, value in {**TILED, **(extra or {})}.items()}
    flags["detection.search.policy"] = (policy, "--search")
    if args.budget_ms:
        flags["detection.search.budget_ms"] = (args.budget_ms, "--budget-ms")
    if args.model:
        flags["restoration.model"] = (str(args.model.resolve()), "--model")
    return load_config(args.config, flags)


def decoded_frames(path: Path, limit: int | None):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for index, frame in enumerate(itertools.islice(container.decode(stream), limit)):
            yield Frame("bench", index, frame.pts, stream.time_base, frame.to_ndarray(format="rgb24"))


def search_quality(frames, truths_of, config: Config, components: dict[str, Components]) -> dict:
    """Each policy's recall against the reference (every tile, every frame) on the same frames,
    frames to first detection, and detector ms/frame; with `truths_of`, the reference's and the
    policies' recall against the true boxes too."""
    reference = EveryNthFrame(components["every_tile"].make_detector(), 1)
    searches = {
        "every_tile": EveryNthFrame(components["every_tile"].make_detector(), config.detection.every_n_frames),
        "adaptive": components["adaptive"].make_detector(),
    }
    stages = {
        name: DetectStage(search, FaceTracker(**config.tracking.model_dump()), None)
        for name, search in searches.items()
    }
    recall = {name: Recall() for name in stages}
    truth_recall = {name: Recall() for name in ("reference", *stages)}
    first = {name: FirstDetection() for name in stages}
    count = 0
    try:
        for frame in frames:
            count += 1
            found = boxes(reference.find(frame.image, 0, frame.seconds, ()) or [])
            truths = truths_of(frame.index) if truths_of else None
            if truths is not None:
                truth_recall["reference"].add(truths, found)
            for name, stage in stages.items():
                faces = boxes(search_and_track(stage, frame))
                recall[name].add(found, faces)
                first[name].add(frame.index, found, faces)
                if truths is not None:
                    truth_recall[name].add(truths, faces)
    finally:
        for search in (reference, *searches.values()):
            search.close()
    for detection in first.values():
        detection.finish()
    detect_ms = {name: 1000 * search.counters.seconds / max(1, count) for name, search in searches.items()}
    detect_ms["reference"] = 1000 * reference.counters.seconds / max(1, count)
    calls = {name: search.counters.calls / max(1, count) for name, search in searches.items()}
    calls["reference"] = reference.counters.calls / max(1, count)
    return {
        "frames": count,
        "recall": recall,
        "truth_recall": truth_recall if truths_of else None,
        "first": first,
        "detect_ms": detect_ms,
        "calls": calls,
    }


def bench_search(name: str, args: argparse.Namespace, out_dir: Path) -> dict:
    configs = {policy: tiled_config(args, policy) for policy in POLICIES}
    components = {policy: build_components(config) for policy, config in configs.items()}
    clip = looped_clip(name, SEARCH_LOOPS[name], out_dir)
    job = Job("bench", str(clip), "", name)
    output = lambda tag: dataclasses.replace(job, output=str(out_dir / f"{tag}_{name}"))  # noqa: E731
    cores: dict[str, float] = {}
    bound_s, frames = timed(lambda: run_bound(output("bound"), components["adaptive"], args.max_frames), cores, "bound")
    runs = {"bound": {"fps": frames / bound_s}}
    for policy in POLICIES:
        wall, stats = timed(
            lambda policy=policy: run_pipeline(output(policy), components[policy], configs[policy], args.max_frames),
            cores,
            policy,
        )
        source = stats.sources["bench"]
        runs[policy] = {
            "fps": frames / wall,
            "restored": source.restored,
            "faces": source.faces,
            "stage_ms": stats.stage_ms_per_frame(),
        }
    quality = search_quality(decoded_frames(clip, args.max_frames), None, configs["adaptive"], components)
    return {
        "video": f"{name} x{SEARCH_LOOPS[name]}",
        "frames": frames,
        "runs": runs,
        "quality": quality,
        "cores": cores,
    }


def bench_generated_scene(args: argparse.Namespace, frames: int = 75) -> dict:
    """The policies against the true boxes of a generated 1080p crowd (30 CelebA faces walking)."""
    from samples.scene import crowd_walkers, walking_scene

    config = tiled_config(args, "adaptive")
    components = {policy: build_components(tiled_config(args, policy)) for policy in POLICIES}
    walkers = crowd_walkers(1920, 1080, 30, frames, seed=7)
    truths: dict[int, list] = {}

    def images():
        for index, (image, true_boxes) in enumerate(walking_scene(1920, 1080, walkers, frames, seed=7)):
            truths[index] = true_boxes
            yield image

    quality = search_quality(frames_of(images()), truths.get, config, components)
    return {"video": "generated crowd 1080p", "frames": quality["frames"], "quality": quality}


def print_search(rows: list[dict]) -> None:
    print(f"cpus={os.cpu_count()} load(1 min)={os.getloadavg()[0]:.2f} (a shared machine shows > 2)")
    print("pipeline, tiling on:")
    print(
        f"{'video':26} {'frames':>6} {'bound fps':>9} {'every-tile fps':>14} {'adaptive fps':>12} "
        f"{'adapt/every':>11} {'adapt/bound':>11} {'restored e/a':>14} {'detect ms/frame e/a':>20}"
    )
    for row in rows:
        if "runs" not in row:
            continue
        runs = row["runs"]
        every, adaptive, bound = runs["every_tile"], runs["adaptive"], runs["bound"]["fps"]
        print(
            f"{row['video']:26} {row['frames']:>6} {bound:>9.1f} {every['fps']:>14.1f} {adaptive['fps']:>12.1f} "
            f"{adaptive['fps'] / every['fps']:>11.2f} {adaptive['fps'] / bound:>11.2f} "
            f"{every['restored']:>6}/{adaptive['restored']:<7} "
            f"{every['stage_ms']['detect']:>9.1f}/{adaptive['stage_ms']['detect']:<9.1f}"
        )
        for policy in POLICIES:
            stages = "  ".join(f"{stage} {ms:.1f}" for stage, ms in runs[policy]["stage_ms"].items())
            print(f"    {policy}: busy ms/frame: {stages}")
    print(
        "detection on the same frames (no encoding); recall of the reference's boxes (every tile, every frame) "
        "by face size; first detection: mean/worst frames, faces never found"
    )
    for row in rows:
        quality = row["quality"]
        labels = quality["recall"]["adaptive"].labels()
        print(
            f"{row['video']} ({quality['frames']} frames); reference detector "
            f"{quality['detect_ms']['reference']:.1f} ms/frame, {quality['calls']['reference']:.1f} calls/frame; "
            "reference boxes by size "
            + ", ".join(f"{label}: {total}" for label, total in zip(labels, quality["recall"]["adaptive"].total))
        )
        for policy in POLICIES:
            recall, (mean, worst, never) = quality["recall"][policy], quality["first"][policy].summary()
            by_bin = " ".join("  -  " if value is None else f"{value:5.3f}" for value in recall.by_bin())
            truth = quality["truth_recall"]
            vs_truth = (
                f"; vs true boxes >=20 px: {truth[policy].at_least(20):.3f} "
                f"(reference {truth['reference'].at_least(20):.3f})"
                if truth
                else ""
            )
            print(
                f"    {policy:10} recall {by_bin}  >=20 px {recall.at_least(20):.3f}; first detection "
                f"{mean:.1f}/{worst} frames, never {never}; detector {quality['detect_ms'][policy]:.1f} ms/frame "
                f"({quality['detect_ms']['reference'] / max(1e-9, quality['detect_ms'][policy]):.1f}x less than "
                f"the reference), {quality['calls'][policy]:.1f} calls/frame{vs_truth}"
            )


class TimedSource:
    """A source whose frames are stamped when decoded (into `stamps`, by frame index)."""

    def __init__(self, source, stamps: dict[int, float]) -> None:
        self._source, self.stamps = source, stamps

    def __getattr__(self, name: str):
        return getattr(self._source, name)

    def __enter__(self) -> TimedSource:
        self._source.__enter__()
        return self

    def __exit__(self, *exc_info):
        return self._source.__exit__(*exc_info)

    def frames(self, stop: threading.Event):
        for frame in self._source.frames(stop):
            self.stamps[frame.index] = time.perf_counter()
            yield frame


class TimedSink:
    """A sink that records, per frame written, its index and the seconds from decoded (the stamp) to written."""

    def __init__(self, sink, stamps: dict[int, float], latencies: list[tuple[int, float]]) -> None:
        self._sink, self.stamps, self.latencies = sink, stamps, latencies

    def write(self, frame: Frame) -> None:
        self._sink.write(frame)
        self.latencies.append((frame.index, time.perf_counter() - self.stamps.pop(frame.index)))

    def close(self) -> None:
        self._sink.close()

    def abort(self) -> None:
        self._sink.abort()


WARM_UP_FRAMES = 25  # --latency: the first second of the live camera is not counted


def bench_latency(args: argparse.Namespace, out_dir: Path) -> dict:
    """A live 720p25 camera (the RTSP test server looping a generated scene) through the pipeline."""
    from samples.scene import crowd_walkers, walking_scene
    from tests.helpers.rtsp_server import RtspTestServer, gstreamer_problem, write_frames_dir

    problem = gstreamer_problem()
    if problem:
        raise SystemExit(f"error: --latency needs the RTSP test server: {problem}")
    walkers = crowd_walkers(1280, 720, 8, 50, seed=3)
    frames_dir = write_frames_dir(out_dir / "camera", (image for image, _ in walking_scene(1280, 720, walkers, 50)))
    flags = {"source.inputs": ([], "-"), "restoration.max_face_px": (0, "-"), **setting_overrides(args.set)}
    config = load_config(REPO_ROOT / "configs" / "live_rtsp.yaml", flags)
    components = build_components(config)
    stamps: dict[int, float] = {}
    latencies: list[tuple[int, float]] = []  # (frame index, seconds decoded -> written)
    timed_components = dataclasses.replace(
        components,
        open_source=lambda url, source_id, **kwargs: TimedSource(
            components.open_source(url, source_id, **kwargs), stamps
        ),
        open_sink=lambda target, info, **kwargs: TimedSink(
            components.open_sink(target, info, **kwargs), stamps, latencies
        ),
    )
    with RtspTestServer.start(width=1280, height=720, fps=25, frames_dir=frames_dir) as server:
        job = Job("camera", server.url, str(out_dir / "live.mp4"), "rtsp 720p25")
        settings = pipeline_settings(config, CaptureLimits(duration_s=args.seconds))
        stats = Pipeline([job], timed_components, settings).run()
    source = stats.sources["camera"]
    if len(latencies) <= 2 * WARM_UP_FRAMES:
        raise SystemExit(f"error: --latency: only {len(latencies)} frames written in {args.seconds} s")
    # After the first second (the models' first calls are slow): latency, and the frames dropped
    # there (a live source numbers the frames it captured, so a dropped one leaves a gap).
    written = [index for index, _ in latencies if index >= WARM_UP_FRAMES]
    steady = np.array([seconds for index, seconds in latencies if index >= WARM_UP_FRAMES]) * 1000
    return {
        "frames_in": source.frames_in,
        "frames_out": source.frames_out,
        "drops": source.drops,
        "steady_drops": written[-1] - WARM_UP_FRAMES + 1 - len(written),
        "steady_frames": written[-1] - WARM_UP_FRAMES + 1,
        "restored": source.restored,
        "p50": float(np.percentile(steady, 50)),
        "p95": float(np.percentile(steady, 95)),
        "max": float(steady.max()),
        "seconds": args.seconds,
        "fps": stats.fps("camera"),
        "stage_ms": stats.stage_ms_per_frame(),
        "settings": args.set,
    }


def setting_overrides(settings: list[str]) -> dict[str, tuple[object, str]]:
    """--set KEY=VALUE (a dotted config key, a YAML value) as load_config's overrides."""
    import yaml

    overrides = {}
    for setting in settings:
        key, separator, value = setting.partition("=")
        if not separator:
            raise SystemExit(f"error: --set {setting}: expected KEY=VALUE, e.g. detection.every_n_frames=1")
        overrides[key] = (yaml.safe_load(value), f"--set {key}")
    return overrides


def print_latency(result: dict) -> None:
    print(f"cpus={os.cpu_count()} load(1 min)={os.getloadavg()[0]:.2f}")
    print(
        f"live 720p25 (configs/live_rtsp.yaml: tiling + adaptive search, overlay: a face is restored when it beats "
        f"its track's best view), {result['seconds']} s:"
        f" {result['frames_in']} frames in, {result['frames_out']} out, {result['drops']} dropped,"
        f" {result['restored']} faces restored, {result['fps']:.1f} fps; after the first second:"
        f" {result['steady_drops']} of {result['steady_frames']} frames dropped"
    )
    print(
        f"latency decoded -> written (after the first second): p50 {result['p50']:.0f} ms, "
        f"p95 {result['p95']:.0f} ms, max {result['max']:.0f} ms"
    )
    stages = "  ".join(f"{stage} {ms:.1f}" for stage, ms in result["stage_ms"].items())
    print(f"busy ms/frame: {stages}" + (f"; settings: {' '.join(result['settings'])}" if result["settings"] else ""))


# --presets: x264 threading on 2 cores, name -> (thread_type, thread_count). SLICE (what the sinks
# set; PyAV's default too): x264's sliced threads, one slice per core, no frame waits in the
# encoder for the threads; FRAME: frame threads (1.5 x cores), each frame waits about that many
# frames inside the encoder; 1: one thread, nothing in parallel.
THREADINGS = {"SLICE": ("SLICE", 0), "FRAME": ("FRAME", 0), "1": ("SLICE", 1)}
ENCODE_PRESETS = ("ultrafast", "superfast", "veryfast")
CONFIG_CRFS = {"batch.yaml": 18, "default.yaml": 20, "live_rtsp.yaml": 23}
LIVE_SIZE, LIVE_FPS = (1280, 720), 25


@dataclass
class EncodeRun:
    """One encoder over a list of frames: what it cost and what each frame waited."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    bytes: int = 0
    frames: int = 0
    call_ms: list[float] = dataclasses.field(default_factory=list)  # per encode() call: what sink.write blocks
    inside_ms: list[float] = dataclasses.field(default_factory=list)  # frame sent -> its packet out
    held: int = 0  # frames sent before the first packet came out

    def add(self, other: EncodeRun) -> None:
        self.wall_s, self.cpu_s, self.bytes = (
            self.wall_s + other.wall_s,
            self.cpu_s + other.cpu_s,
            self.bytes + other.bytes,
        )
        self.frames, self.held = self.frames + other.frames, max(self.held, other.held)
        self.call_ms += other.call_ms
        self.inside_ms += other.inside_ms

    def ms(self, seconds: float) -> float:
        return 1000 * seconds / self.frames


def encode_frames(frames: list, options: dict[str, str], threading: str, pace_fps: float | None = None) -> EncodeRun:
    """Encode yuv420p frames with libx264 (as fast as it goes, or one every 1/pace_fps s like a camera)."""
    import av

    context = av.CodecContext.create("libx264", "w")
    context.width, context.height, context.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
    context.time_base, context.framerate = Fraction(1, 25), Fraction(25)
    context.thread_type, context.thread_count = THREADINGS[threading]
    context.options = options
    run, sent = EncodeRun(frames=len(frames)), {}

    def collect(packets) -> None:
        now = time.perf_counter()
        for packet in packets:
            run.bytes += packet.size
            run.inside_ms.append(1000 * (now - sent.pop(packet.pts)))

    started, cpu_started = time.perf_counter(), time.process_time()
    for index, frame in enumerate(frames):
        if pace_fps:
            time.sleep(max(0.0, started + index / pace_fps - time.perf_counter()))
        frame.pts, frame.time_base = index, Fraction(1, 25)
        sent[index] = call_started = time.perf_counter()
        packets = context.encode(frame)
        run.call_ms.append(1000 * (time.perf_counter() - call_started))
        if not run.inside_ms and not packets:
            run.held += 1
        collect(packets)
    collect(context.encode(None))
    run.wall_s, run.cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
    return run


def bench_presets(args: argparse.Namespace, out_dir: Path) -> None:
    """x264 on the crowd clip (decoded once, yuv420p as decoded; no RGB conversion timed), in one run:
    1080p as fast as it goes, each preset at each shipped config's crf and, at the default crf, each
    threading: wall and CPU ms/frame, bytes/frame, frames held inside the encoder, against the
    shipped default (superfast, SLICE) at the same crf; then a live 720p25 camera (the frames
    scaled, sent every 40 ms): how long a frame spends inside the encoder (sent -> its packet out)
    and how long encode() blocks, as a recording (no tune) and as a push (tune=zerolatency)."""
    import av

    del out_dir  # nothing is written: packets are counted and dropped
    with av.open(str(VIDEOS_DIR / "crowd_walk_1080p.mp4")) as container:
        frames = list(itertools.islice(container.decode(video=0), args.max_frames or 105))
    print(f"cpus={os.cpu_count()} load(1 min)={os.getloadavg()[0]:.2f}; crowd_walk_1080p, {len(frames)} frames")
    print_encode_speed(frames)
    print_live_encoder_latency([frame.reformat(width=LIVE_SIZE[0], height=LIVE_SIZE[1]) for frame in frames[:75]])
    print(f"load(1 min) after: {os.getloadavg()[0]:.2f}")


def print_encode_speed(frames: list) -> None:
    """1080p as fast as it goes, two passes (the second in reverse order, so drifting load is shared)."""
    from streamer.sinks import SinkOptions

    default = OutputConfig()
    rows = [(crf, preset, "SLICE") for crf in sorted(set(CONFIG_CRFS.values())) for preset in ENCODE_PRESETS]
    rows += [
        (default.crf, preset, threads) for preset in ENCODE_PRESETS for threads in THREADINGS if threads != "SLICE"
    ]
    runs = {row: EncodeRun() for row in rows}
    for order in (rows, rows[::-1]):
        for crf, preset, threads in order:
            options = SinkOptions(codec="libx264", crf=crf, preset=preset).encoder_options(push=False)
            runs[(crf, preset, threads)].add(encode_frames(frames, options, threads))
    print(f"1080p, as fast as it goes; ratios against {default.preset} SLICE (the shipped default) at the same crf")
    print(
        f"{'crf':>3} {'preset':10} {'threads':7} {'wall ms':>7} {'CPU ms':>6} {'kB/frame':>8} {'held':>4} "
        f"{'CPU x':>6} {'size x':>6}"
    )
    for crf, preset, threads in rows:
        run, base = runs[(crf, preset, threads)], runs[(crf, default.preset, "SLICE")]
        print(
            f"{crf:>3} {preset:10} {threads:7} {run.ms(run.wall_s):7.1f} {run.ms(run.cpu_s):6.1f} "
            f"{run.bytes / run.frames / 1000:8.1f} {run.held:>4} {run.cpu_s / base.cpu_s:5.2f}x "
            f"{run.bytes / base.bytes:5.2f}x"
        )


def print_live_encoder_latency(frames: list) -> None:
    """A live camera's frames, one every 1/LIVE_FPS s: the time each spends inside the encoder."""
    from streamer.sinks import SinkOptions

    crf = CONFIG_CRFS["live_rtsp.yaml"]
    print(f"live {LIVE_SIZE[0]}x{LIVE_SIZE[1]}, {len(frames)} frames sent every {1000 // LIVE_FPS} ms, crf {crf}")
    print(
        f"{'preset':10} {'threads':7} {'tune':12} {'inside p50':>10} {'p95':>6} {'encode() p95':>12} {'CPU ms':>6} "
        f"{'kB/frame':>8} {'held':>4}"
    )
    for preset in ("ultrafast", "superfast"):
        for threads in THREADINGS:
            for push in (False, True):
                options = SinkOptions(codec="libx264", crf=crf, preset=preset).encoder_options(push=push)
                run = encode_frames(frames, options, threads, pace_fps=LIVE_FPS)
                print(
                    f"{preset:10} {threads:7} {options.get('tune', '-'):12} {np.percentile(run.inside_ms, 50):10.1f} "
                    f"{np.percentile(run.inside_ms, 95):6.1f} {np.percentile(run.call_ms, 95):12.1f} "
                    f"{run.ms(run.cpu_s):6.1f} {run.bytes / run.frames / 1000:8.1f} {run.held:>4}"
                )


def bench_profile(args: argparse.Namespace) -> None:
    """Milliseconds per 1080p frame of each step around detection, with the pipeline's own functions,
    cv2 on one thread (x264 keeps its frame threads): decoding; the capture stage's colour conversion
    (colour.frame_to_rgb) against the previous implementation (_previous_frame_to_rgb, the baseline)
    and FFmpeg's truncating rgb24, interleaved frame by frame; the copy of the decoded planes kept for
    the sink; compositing four restored faces; the search policy's change map; the write stage's
    change mask and conversion back to YUV (colour.yuv420_frame with the source planes: only the
    rectangle around the faces is converted; and without them: the whole frame); x264 encoding
    (superfast, as configs/default.yaml). Wall and CPU (this thread) ms per frame; the inputs are 60
    decoded frames, so a step meets its input outside the CPU cache, as in the pipeline."""
    import av
    import cv2

    from streamer import colour, compositing
    from streamer.search_policy import change_map_of
    from streamer.values import Box, Face, FramePacket
    from streamer.workers import _with_changes

    cv2.setNumThreads(1)
    with av.open(str(VIDEOS_DIR / "crowd_walk_1080p.mp4")) as container:
        stream = container.streams.video[0]
        started, cpu = time.perf_counter(), time.thread_time()
        decoded = list(itertools.islice(container.decode(stream), args.max_frames or 60))
        steps = {"decode (PyAV, YUV)": _per_frame_ms(started, cpu, len(decoded))}
    conversions = {
        "YUV -> RGB: colour.frame_to_rgb": colour.frame_to_rgb,
        "YUV -> RGB: previous frame_to_rgb (baseline)": _previous_frame_to_rgb,
        "YUV -> RGB: FFmpeg rgb24 (truncates)": lambda frame: frame.to_ndarray(format="rgb24"),
    }
    _interleaved(conversions, decoded, steps)
    images = [colour.frame_to_rgb(frame) for frame in decoded]

    def per_frame(name: str, work, inputs: list) -> list:
        """`work` on each input, timed with the results dropped at once (as _interleaved), then
        again untimed for the results a later step needs."""
        _interleaved({name: lambda item: work(*item)}, inputs, steps)
        return [work(*item) for item in inputs]

    planes = per_frame("copy of the decoded planes (source_planes)", colour.source_planes, [(f,) for f in decoded])
    crop = np.full((64, 64, 3), 128, np.uint8)
    faces = tuple(
        Face(
            box=Box(300.0 + 300 * k, 400.0, 40.0, 48.0),
            score=0.9,
            crop_box=Box(270.0 + 300 * k, 364.0, 100.0, 100.0),
            crop=crop,
            restored=crop,
        )
        for k in range(4)
    )
    composites = per_frame(
        "compose: paste 4 faces",
        lambda image: compositing.compose_touching(image, faces, "paste"),
        [(i,) for i in images],
    )
    composed = [composite.image for composite in composites]
    per_frame("search: change map", change_map_of, [(i,) for i in images])
    packets = [
        FramePacket(Frame("profile", n, n, stream.time_base, image, planes=p), faces)
        for n, (image, p) in enumerate(zip(images, planes))
    ]
    sources = per_frame(
        "write: change mask (drawn rectangles)",
        _with_changes,
        [(packet, c.image, c.touched) for packet, c in zip(packets, composites)],
    )
    tags = colour.tags_of(decoded[0])
    with_sources = [(c, tags, s) for c, s in zip(composed, sources)]
    video_frames = per_frame("RGB -> YUV: yuv420_frame, source planes", colour.yuv420_frame, with_sources)
    per_frame("RGB -> YUV: yuv420_frame, whole frame", colour.yuv420_frame, [(c, tags) for c in composed])
    with av.open(os.devnull, "w", format="mp4") as output:
        encoder = output.add_stream("libx264", rate=25)
        encoder.width, encoder.height, encoder.pix_fmt = 1920, 1080, "yuv420p"
        encoder.options = {"preset": "superfast", "crf": "20"}
        per_frame("encode x264 superfast (sliced threads)", encoder.encode, [(f,) for f in video_frames])
        for packet in encoder.encode(None):
            del packet
    print(f"cpus={os.cpu_count()} load(1 min)={os.getloadavg()[0]:.2f}; crowd_walk_1080p, {len(decoded)} frames")
    print(f"{'step':48} {'wall':>6} {'cpu':>6}  ms/frame")
    for name, (wall, cpu) in steps.items():
        print(f"{name:48} {wall:6.2f} {cpu:6.2f}")
    new, old = steps["YUV -> RGB: colour.frame_to_rgb"], steps["YUV -> RGB: previous frame_to_rgb (baseline)"]
    print(f"frame_to_rgb, previous / now: {old[0] / new[0]:.2f}x wall, {old[1] / new[1]:.2f}x cpu")


def _per_frame_ms(started: float, cpu: float, frames: int) -> tuple[float, float]:
    """(wall, CPU) ms per frame since perf_counter() == started and thread_time() == cpu."""
    return 1000 * (time.perf_counter() - started) / frames, 1000 * (time.thread_time() - cpu) / frames


def _interleaved(functions: dict, inputs: list, steps: dict) -> None:
    """Each function on each input, taking turns input by input (so load changes on a shared
    machine fall on all of them alike); adds each one's (wall, CPU) ms per input to `steps`.
    The results are dropped at once, so each function can reuse the memory of its last one."""
    totals = {name: [0.0, 0.0] for name in functions}
    for item in inputs:
        for name, function in functions.items():
            started, cpu = time.perf_counter(), time.thread_time()
            function(item)
            totals[name][0] += time.perf_counter() - started
            totals[name][1] += time.thread_time() - cpu
    for name, (wall, cpu) in totals.items():
        steps[name] = (1000 * wall / len(inputs), 1000 * cpu / len(inputs))


def _previous_frame_to_rgb(frame) -> np.ndarray:
    """colour.frame_to_rgb as it was before the banded conversion (8-bit 4:2:0 only): each chroma
    plane resized to full size with cv2.resize (bilinear), merged with the luma, and the whole
    frame through one cv2.transform. The baseline of --profile."""
    import cv2

    from streamer import colour

    width, height = frame.width, frame.height
    planes = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in frame.planes]
    chroma = [cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR) for plane in planes[1:]]
    return cv2.transform(cv2.merge([planes[0], *chroma]), colour._yuv_to_rgb_matrix(colour.tags_of(frame)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-frames", type=int, help="only the first N frames of each video")
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "default.yaml")
    parser.add_argument("--model", type=Path, help="restorer model (default: the config's)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--videos", nargs="*", choices=sorted(VIDEOS), default=sorted(VIDEOS))
    parser.add_argument("--search", action="store_true", help="every-tile reference vs the adaptive search")
    parser.add_argument("--no-scene", action="store_true", help="--search without the generated crowd")
    parser.add_argument(
        "--budget-ms",
        type=float,
        help="--search: the adaptive search's detector ms per frame "
        "(default: the config's, unset: a quarter of the reference's)",
    )
    parser.add_argument("--latency", action="store_true", help="a live 720p25 RTSP camera: latency, drops")
    parser.add_argument("--seconds", type=float, default=30.0, help="--latency: how long the live run lasts")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="--latency: a config setting over configs/live_rtsp.yaml's, e.g. detection.every_n_frames=1 (repeatable)",
    )
    parser.add_argument("--presets", action="store_true", help="x264 presets at 1080p: speed and size")
    parser.add_argument("--profile", action="store_true", help="ms per 1080p frame of decode, colour, compose, encode")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pipeline_bench_") as out_dir:
        if args.profile:
            bench_profile(args)
        elif args.presets:
            bench_presets(args, Path(out_dir))
        elif args.latency:
            print_latency(bench_latency(args, Path(out_dir)))
        elif args.search:
            rows = [bench_search(name, args, Path(out_dir)) for name in args.videos]
            if not args.no_scene:
                rows.append(bench_generated_scene(args))
            print_search(rows)
        else:
            print_table([bench_video(name, VIDEOS[name], args, Path(out_dir)) for name in args.videos])


if __name__ == "__main__":
    main()
