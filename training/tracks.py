"""Synthetic face *tracks* from stills: K frames of one face as a tracker would crop them from video.

A multi-frame restorer learns from what differs between frames; a still photo has none of that, so
each training example is made into a short track:

1. motion (`TrackMotion`): the face drifts smoothly relative to the tracker's box, the box jitters
   by a fraction of a low-resolution pixel to a few pixels per frame, and scale and rotation change
   slowly (a walking face, a tracker that never sits exactly on it). Each frame is the photo warped
   by its own affine map, i.e. the crop cut with that frame's box;
2. optics, sampling, exposure, sensor (`degrade.sensor_image`): one draw of the preset per track
   (one camera), a blur that drifts slowly over the track, and *independent* noise in every frame;
3. the codec: the K low-resolution frames are coded as one real H.264 *sequence* (first frame I,
   the rest P, no B-frames: a live encoder), many tracks tiled into each frame of the sequence,
   because CCTV codec errors are temporal (P-frames copy and drift), not independent intra crops;
4. training only (`second_order`): with some probability a second round (blur, noise, a re-encode
   at another CRF and x264 preset), as a DVR export or a re-streamed feed does (Real-ESRGAN's
   second-order idea); then the preset's optional JPEG, and the pipeline's `resize_square`.

The target is the clean crop of the *target* frame (default the newest, K-1: a live stream is causal).
Every random choice comes from a `numpy.random.Generator`: a seed fixes the result.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import av
import cv2
import numpy as np

from streamer.model_contract import resize_square, square_crop_box
from streamer.values import Box
from training import data, degrade
from training.data import Augment, augment_matrix, jitter_colour

DEFAULT_FRAMES = 5
# Margin (low-res px, edge-replicated) around each track's tile so motion search mostly stays
# inside the track's own tile.
TILE_MARGIN = 8


@dataclass(frozen=True)
class TrackMotion:
    """How a face moves against its tracker box over a track (distances in low-resolution pixels,
    i.e. in pixels of the simulated frame, so a 12-px face and a 50-px face jitter alike)."""

    drift_px: tuple[float, float] = (0.0, 0.5)  # smooth drift per frame (a straight path)
    jitter_px: tuple[float, float] = (0.1, 0.7)  # per-frame std of the box's jitter
    scale_step: float = 0.01  # max relative scale change per frame (approaching / leaving)
    rotation_step_deg: float = 1.0  # max in-plane rotation change per frame
    blur_drift: float = 0.15  # the blur sigma changes by up to this fraction over the track


@dataclass(frozen=True)
class SecondOrder:
    """A second degradation round (training only): what a DVR's re-encode does to a coded feed."""

    probability: float = 0.3
    blur_sigma: tuple[float, float] = (0.0, 0.5)
    noise: tuple[float, float] = (0.0, 3.0)
    crf: tuple[int, int] = (20, 34)


X264_PRESETS_TRAINING = ("ultrafast", "superfast", "veryfast", "faster")


@dataclass(frozen=True)
class TrackSpec:
    frames: int = DEFAULT_FRAMES
    target_index: int = DEFAULT_FRAMES - 1
    motion: TrackMotion = TrackMotion()
    second_order: SecondOrder | None = None  # None: evaluation (presets only)
    vary_codec: bool = False  # training: draw the x264 preset too

    def describe(self) -> dict:
        return asdict(self)


TRAINING_SPEC = TrackSpec(second_order=SecondOrder(), vary_codec=True)
EVAL_SPEC = TrackSpec()


def training_spec(frames: int = DEFAULT_FRAMES) -> TrackSpec:
    return replace(TRAINING_SPEC, frames=frames, target_index=frames - 1)


def eval_spec(frames: int = DEFAULT_FRAMES) -> TrackSpec:
    return replace(EVAL_SPEC, frames=frames, target_index=frames - 1)


def last_frames(inputs: np.ndarray, targets: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Cached tracks (N x K x S x S x 3) cut to the newest `frames` (the target is the newest);
    `frames` == 1 gives single crops, N x S x S x 3 (a single-frame model on the same tracks)."""
    if frames > inputs.shape[1]:
        raise ValueError(f"tracks hold {inputs.shape[1]} frames, {frames} asked")
    if frames == 1:
        return np.ascontiguousarray(inputs[:, -1]), targets
    return np.ascontiguousarray(inputs[:, -frames:]), targets


# --- 1. motion ---------------------------------------------------------------------------------


def track_matrices(
    square: Box,
    low_side: float,
    frames: int,
    motion: TrackMotion,
    rng: np.random.Generator,
    base: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Per frame, a 2x3 affine map from the photo to that frame's high-resolution square crop.

    `base` (2x3, photo -> square) is the augmentation shared by all frames; the per-frame motion is
    applied around the square's centre. Frame offsets are relative to the mean position, so the
    face stays centred on average, as a tracker keeps it."""
    side = square.w
    to_high = side / low_side  # one low-resolution pixel in square pixels
    if base is None:
        cx, cy = square.center
        base = np.array([[1.0, 0.0, side / 2 - cx], [0.0, 1.0, side / 2 - cy]])
    angle = rng.uniform(0, 2 * math.pi)
    speed = rng.uniform(*motion.drift_px)
    drift = np.array([math.cos(angle), math.sin(angle)]) * speed
    jitter_std = rng.uniform(*motion.jitter_px)
    scale_step = rng.uniform(-motion.scale_step, motion.scale_step)
    rot_step = rng.uniform(-motion.rotation_step_deg, motion.rotation_step_deg)
    centre = (side / 2.0, side / 2.0)
    mid = (frames - 1) / 2.0
    out = []
    for k in range(frames):
        t = k - mid
        shift = (drift * t + rng.normal(0.0, jitter_std, size=2)) * to_high
        m = cv2.getRotationMatrix2D(centre, rot_step * t, (1.0 + scale_step) ** t)
        m[:, 2] += shift
        out.append(_compose(m, base))
    return out


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """outer o inner for 2x3 affine maps."""
    a = np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]])
    return a[:2]


def warp_frames(photo: np.ndarray, matrices: list[np.ndarray], side: int) -> list[np.ndarray]:
    return [
        cv2.warpAffine(photo, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        for m in matrices
    ]


# --- 2. camera: one draw per track, noise per frame --------------------------------------------


def frame_params(
    params: degrade.DegradeParams, frames: int, blur_drift: float, rng: np.random.Generator
) -> list[degrade.DegradeParams]:
    """The track's parameters per frame: everything shared except a blur that drifts linearly."""
    end = 1.0 + rng.uniform(-blur_drift, blur_drift)
    out = []
    for k in range(frames):
        f = 1.0 + (end - 1.0) * (k / max(1, frames - 1))
        out.append(replace(params, blur_sigma=params.blur_sigma * f, motion_px=params.motion_px * f))
    return out


# --- 3. the codec: one H.264 sequence, many tracks tiled ---------------------------------------


def h264_sequence_roundtrip(
    tracks: list[list[np.ndarray]], crf: int, preset: str = degrade.X264_PRESET
) -> tuple[list[list[np.ndarray]], list[str]]:
    """Code tracks (each a list of K small HxWx3 uint8 frames, one size per track) as one H.264
    sequence of K frames at `crf` (tracks tiled side by side, edge-replicated margins), decode it.

    Returns the decoded tracks and the picture type of each decoded frame ('I', 'P', ...)."""
    frames = len(tracks[0])
    cell = max(max(t[0].shape[:2]) for t in tracks) + 2 * TILE_MARGIN
    cell = math.ceil(cell / degrade.MACROBLOCK) * degrade.MACROBLOCK
    rows, cols = degrade._tile_grid(len(tracks))
    cols = max(cols, 2)  # a mosaic one tile wide decoded differently from run to run (uninitialised reads?)
    mosaics = []
    for k in range(frames):
        mosaic = np.zeros((rows * cell, cols * cell, 3), np.uint8)
        for index, track in enumerate(tracks):
            r, c = divmod(index, cols)
            img = track[k]
            h, w = img.shape[:2]
            padded = cv2.copyMakeBorder(
                img, TILE_MARGIN, cell - h - TILE_MARGIN, TILE_MARGIN, cell - w - TILE_MARGIN, cv2.BORDER_REPLICATE
            )
            mosaic[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = padded
        mosaics.append(mosaic)
    decoded, types = encode_decode_sequence(mosaics, crf, preset)
    out = []
    for index, track in enumerate(tracks):
        r, c = divmod(index, cols)
        h, w = track[0].shape[:2]
        y0, x0 = r * cell + TILE_MARGIN, c * cell + TILE_MARGIN
        out.append([np.ascontiguousarray(d[y0 : y0 + h, x0 : x0 + w]) for d in decoded])
    return out, types


def encode_decode_sequence(
    images: list[np.ndarray], crf: int, preset: str = degrade.X264_PRESET
) -> tuple[list[np.ndarray], list[str]]:
    """Code equally sized RGB frames as one H.264 stream (I then P frames, no B-frames, no scene-cut
    I-frames) and decode it; also returns each decoded frame's picture type."""
    buffer = io.BytesIO()
    height, width = images[0].shape[:2]
    with av.open(buffer, "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {
            "crf": str(crf),
            "preset": preset,
            "threads": "1",
            "bf": "0",
            "x264-params": f"keyint={max(2, len(images) + 1)}:scenecut=0:threads=1:lookahead-threads=1:sync-lookahead=0",
        }
        for image in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    buffer.seek(0)
    decoded, types = [], []
    with av.open(buffer, "r", format="h264") as container:
        for frame in container.decode(video=0):
            decoded.append(frame.to_ndarray(format="rgb24"))
            types.append(_picture_type(frame))
    return decoded, types


def _picture_type(frame: av.VideoFrame) -> str:
    from av.video.frame import PictureType

    return PictureType(int(frame.pict_type)).name


# --- 4. second order ---------------------------------------------------------------------------


def second_round(
    frames: list[np.ndarray], config: SecondOrder, rng: np.random.Generator
) -> tuple[list[np.ndarray], int, str]:
    """Blur and noise every frame (one blur, fresh noise); returns frames, CRF and x264 preset of the re-encode."""
    sigma = rng.uniform(*config.blur_sigma)
    std = rng.uniform(*config.noise)
    out = []
    for img in frames:
        x = img.astype(np.float32)
        if sigma > 0.05:
            x = cv2.GaussianBlur(x, (0, 0), sigma)
        x = x + rng.normal(0.0, std, size=x.shape).astype(np.float32)
        out.append(np.clip(x + 0.5, 0, 255).astype(np.uint8))
    crf = int(rng.integers(config.crf[0], config.crf[1] + 1))
    return out, crf, str(rng.choice(X264_PRESETS_TRAINING))


# --- the whole chain ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Track:
    """One degraded track: K model inputs (K x S x S x 3, oldest first) and the clean target frame."""

    inputs: np.ndarray
    target: np.ndarray
    params: degrade.DegradeParams


def clean_frames(
    photo: np.ndarray,
    face_box: Box,
    crop_scale: float,
    spec: TrackSpec,
    face_px: float,
    rng: np.random.Generator,
    base: np.ndarray | None = None,
) -> list[np.ndarray]:
    """The K high-resolution square crops of one track (before any degradation)."""
    square = square_crop_box(face_box, crop_scale)
    low_side = degrade.low_side_for(face_px, crop_scale)
    matrices = track_matrices(square, low_side, spec.frames, spec.motion, rng, base)
    return warp_frames(photo, matrices, int(square.w))


def degrade_tracks(
    squares: list[list[np.ndarray]],
    params: list[degrade.DegradeParams],
    rng: np.random.Generator,
    size: int,
    crop_scale: float,
    spec: TrackSpec,
) -> list[Track]:
    """Degrade tracks of clean high-resolution squares (each a list of K) into model inputs.

    Tracks that drew the same CRF (and x264 preset) are coded together as one H.264 sequence."""
    presets_x264 = [str(rng.choice(X264_PRESETS_TRAINING)) if spec.vary_codec else degrade.X264_PRESET for _ in params]
    sensed = []
    for track, p in zip(squares, params):
        per_frame = frame_params(p, len(track), spec.motion.blur_drift, rng)
        sensed.append([degrade.sensor_image(sq, fp, crop_scale, rng) for sq, fp in zip(track, per_frame)])
    coded = _code_groups(sensed, [(p.crf, x) for p, x in zip(params, presets_x264)])
    if spec.second_order is not None:
        members = [i for i in range(len(coded)) if rng.random() < spec.second_order.probability]
        keys = []
        for i in members:
            coded[i], crf, x264 = second_round(coded[i], spec.second_order, rng)
            keys.append((crf, x264))
        if members:
            for i, frames in zip(members, _code_groups([coded[i] for i in members], keys)):
                coded[i] = frames
    out = []
    for track, frames, p in zip(squares, coded, params):
        if p.jpeg_quality is not None:
            frames = [degrade.jpeg_roundtrip(f, p.jpeg_quality) for f in frames]
        inputs = np.stack([resize_square(f, size) for f in frames])
        target = resize_square(track[spec.target_index], size)
        out.append(Track(inputs, target, p))
    return out


def _code_groups(tracks: list[list[np.ndarray]], keys: list[tuple[int, str]]) -> list[list[np.ndarray]]:
    """H.264-code tracks grouped by (CRF, x264 preset) and by frame size class (so tiles stay small)."""
    out: list[list[np.ndarray]] = [[] for _ in tracks]
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault((*key, tracks[i][0].shape[0] // 32), []).append(i)
    for (crf, x264, _), members in sorted(groups.items()):
        decoded, _ = h264_sequence_roundtrip([tracks[i] for i in members], crf, x264)
        for i, frames in zip(members, decoded):
            out[i] = frames
    return out


def make_tracks(
    photos: list[np.ndarray],
    face_boxes: list[Box],
    presets: list[str],
    rng: np.random.Generator,
    size: int,
    crop_scale: float,
    spec: TrackSpec,
    augment: Augment | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs N x K x S x S x 3, targets N x S x S x 3), uint8, one track per photo.

    `augment` (training): a random shift/zoom/rotation shared by the track's frames, then one flip
    and one colour jitter for the whole track (the same face under the same light)."""
    params = [degrade.sample_params(degrade.PRESETS[p], rng) for p in presets]
    squares = []
    for photo, box, p in zip(photos, face_boxes, params):
        base = augment_matrix(box, crop_scale, augment, rng) if augment else None
        frames = clean_frames(photo, box, crop_scale, spec, p.face_px, rng, base)
        if augment is not None:
            flip = rng.random() < 0.5
            colour_seed = int(rng.integers(2**32))
            frames = [
                jitter_colour(f[:, ::-1] if flip else f, augment, np.random.default_rng(colour_seed)) for f in frames
            ]
        squares.append(frames)
    tracks = degrade_tracks(squares, params, rng, size, crop_scale, spec)
    return np.stack([t.inputs for t in tracks]), np.stack([t.target for t in tracks])


# --- the cache of tracks -----------------------------------------------------------------------


@dataclass(frozen=True)
class TrackShardJob:
    records: tuple[data.FaceRecord, ...]
    path: Path
    seed: int
    size: int
    crop_scale: float
    spec: TrackSpec
    preset: str | None  # None: the training mix, augmented; a name: that preset, no augmentation
    mix: tuple[tuple[str, float], ...] = ()


def _write_track_shard(job: TrackShardJob) -> Path:
    rng = np.random.default_rng(job.seed)
    photos = [data.load_photo(r.path) for r in job.records]
    boxes = [r.face_box for r in job.records]
    if job.preset is None:
        presets = degrade.sample_training_presets(len(photos), rng, dict(job.mix) or None)
        augment: Augment | None = Augment()
    else:
        presets, augment = [job.preset] * len(photos), None
    inputs, targets = make_tracks(photos, boxes, presets, rng, job.size, job.crop_scale, job.spec, augment)
    tmp = job.path.with_suffix(".partial.npz")
    np.savez(tmp, inputs=inputs, targets=targets)
    tmp.replace(job.path)
    return job.path


def _tag(spec: TrackSpec, *other: dict) -> str:
    return degrade.fingerprint({"track_spec": spec.describe()}, *other)


def training_track_shards(
    records: list[data.FaceRecord],
    variants: int,
    size: int,
    crop_scale: float,
    cache_dir: Path = data.DEFAULT_CACHE_DIR,
    shard_size: int = 128,
    seed: int = 0,
    workers: int = 2,
    mix: dict[str, float] | None = None,
    spec: TrackSpec = TRAINING_SPEC,
) -> list[Path]:
    """Cache `variants` augmented, degraded tracks of every training record; return the shard paths."""
    mix_items = tuple(sorted((mix or degrade.TRAINING_MIX).items()))
    tag = _tag(spec, asdict(Augment()), {"training_mix": dict(mix_items)})
    directory = cache_dir / f"tracks_s{size}_c{crop_scale}_k{spec.frames}_n{len(records)}_seed{seed}_d{tag}"
    jobs = [
        TrackShardJob(
            chunk,
            directory / f"v{variant:03d}_{shard:03d}.npz",
            data._seed_for(seed, "track", variant, shard),
            size,
            crop_scale,
            spec,
            None,
            mix_items,
        )
        for variant, shard, chunk in data.shuffled_shards(records, variants, shard_size, seed, "track-order")
    ]
    return data._run_jobs(jobs, workers, _write_track_shard)


def validation_tracks(
    records: list[data.FaceRecord],
    preset: str,
    size: int,
    crop_scale: float,
    cache_dir: Path = data.DEFAULT_CACHE_DIR,
    seed: int = 0,
    spec: TrackSpec = EVAL_SPEC,
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs N x K x S x S x 3, targets) for validation records under one preset (cached, deterministic)."""
    path = cache_dir / (
        f"valtracks_{preset}_s{size}_c{crop_scale}_k{spec.frames}_n{len(records)}_seed{seed}_d{_tag(spec)}.npz"
    )
    data._run_jobs(
        [TrackShardJob(tuple(records), path, data._seed_for(seed, "valtrack", preset), size, crop_scale, spec, preset)],
        1,
        _write_track_shard,
    )
    return data.load_shards([path])
