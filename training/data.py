"""Faces for training and validation: the identity split, augmentation, and degraded-pair caches.

Data: `../shared/data/faces/celeba_wild_256` (+ csv). Each 256x256 photo has its face box at
(64, 64, 128, 128), so the model contract's square crop (crop_scale 1.5) is the central 192 px.
Training pairs are (degraded input, clean target), both S x S x 3 uint8; the clean target is
exactly `extract_crop(photo, square_crop_box(face_box, crop_scale), S)`.

H.264 coding makes a degradation cost a few milliseconds, so training reads pairs from a cache of
shards (`.npz`, written atomically, skipped when present: generation resumes where it stopped).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from streamer import REPO_ROOT, SHARED_DATA
from streamer.model_contract import crops_to_batch, cut_square, resize_square, square_crop_box, windows_to_batch
from streamer.values import Box
from training import degrade

log = logging.getLogger(__name__)

FACES_DIR = SHARED_DATA / "faces"
WILD_CSV = "celeba_wild_256.csv"
DEFAULT_CACHE_DIR = REPO_ROOT / ".cache" / "pairs"
SPLIT_SEED = 1234
VAL_FRACTION = 0.1
# Faces smaller than this in the original photo were upscaled into the 256 crop: their "truth" is blurry.
MIN_SOURCE_FACE_PX = 64


class DataError(RuntimeError):
    """The face data set is missing or unreadable."""


@dataclass(frozen=True)
class FaceRecord:
    path: Path
    identity: int
    face_px_in_source: int
    face_box: Box  # in the 256x256 photo


@dataclass(frozen=True)
class Split:
    train: list[FaceRecord]
    val: list[FaceRecord]
    val_identities: list[int]


def load_records(faces_dir: Path = FACES_DIR) -> list[FaceRecord]:
    """All rows of celeba_wild_256.csv as records (paths absolute)."""
    csv_path = faces_dir / WILD_CSV
    if not csv_path.is_file():
        raise DataError(f"face list not found: {csv_path}")
    with csv_path.open(newline="") as handle:
        return [
            FaceRecord(
                path=faces_dir / row["file"],
                identity=int(row["identity"]),
                face_px_in_source=int(row["face_px_in_source"]),
                face_box=Box(float(row["face_x"]), float(row["face_y"]), float(row["face_w"]), float(row["face_h"])),
            )
            for row in csv.DictReader(handle)
        ]


def split_identities(
    identities: list[int], val_fraction: float = VAL_FRACTION, seed: int = SPLIT_SEED
) -> tuple[list[int], list[int]]:
    """(train identities, validation identities), both sorted; the same for the same inputs."""
    unique = sorted(set(identities))
    rng = np.random.default_rng(seed)
    val_count = max(1, int(round(len(unique) * val_fraction)))
    val = sorted(int(i) for i in rng.choice(unique, size=val_count, replace=False))
    train = sorted(set(unique) - set(val))
    return train, val


def split_records(faces_dir: Path = FACES_DIR, min_source_face_px: int = MIN_SOURCE_FACE_PX) -> Split:
    """The train/validation file lists: split by identity, small-source faces dropped from both."""
    records = load_records(faces_dir)
    _, val_ids = split_identities([r.identity for r in records])
    val_set = set(val_ids)
    usable = [r for r in records if r.face_px_in_source >= min_source_face_px]
    return Split(
        train=[r for r in usable if r.identity not in val_set],
        val=[r for r in usable if r.identity in val_set],
        val_identities=val_ids,
    )


def load_photo(path: Path) -> np.ndarray:
    """An RGB uint8 photo; DataError names the file when it can't be read."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"cannot read image: {path}")
    return np.ascontiguousarray(image[:, :, ::-1])


def clean_square(record: FaceRecord, crop_scale: float) -> np.ndarray:
    """The face's square crop at the photo's resolution (what the degradation starts from)."""
    return cut_square(load_photo(record.path), square_crop_box(record.face_box, crop_scale))


# --- augmentation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Augment:
    """Ranges of the random geometry and colour changes applied to a training photo."""

    max_shift: float = 0.04  # fraction of the square's side (a detector's box is never exact)
    max_scale: float = 0.08  # relative zoom, +-
    max_rotation_deg: float = 8.0
    brightness: float = 0.15  # multiplicative, +-
    contrast: float = 0.15
    saturation: float = 0.2


def augment_matrix(face_box: Box, crop_scale: float, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    """A random shift, zoom and rotation as a 2x3 map from the photo to its square crop."""
    square = square_crop_box(face_box, crop_scale)
    side = int(square.w)
    cx, cy = square.center
    angle = rng.uniform(-aug.max_rotation_deg, aug.max_rotation_deg)
    scale = 1.0 + rng.uniform(-aug.max_scale, aug.max_scale)
    shift = rng.uniform(-aug.max_shift, aug.max_shift, size=2) * side
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    # Move the (rotated, zoomed) square's centre to the output centre, plus the random shift.
    matrix[:, 2] += np.array([side / 2.0 - cx, side / 2.0 - cy]) + shift
    return matrix


def augmented_square(
    photo: np.ndarray, face_box: Box, crop_scale: float, aug: Augment, rng: np.random.Generator
) -> np.ndarray:
    """The square crop after a random flip, shift, zoom, rotation and colour jitter."""
    side = int(square_crop_box(face_box, crop_scale).w)
    matrix = augment_matrix(face_box, crop_scale, aug, rng)
    out = cv2.warpAffine(photo, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return jitter_colour(out, aug, rng)


def jitter_colour(image: np.ndarray, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    img = image.astype(np.float32)
    grey = img.mean(axis=2, keepdims=True)
    img = grey + (img - grey) * (1.0 + rng.uniform(-aug.saturation, aug.saturation))
    img = img.mean() + (img - img.mean()) * (1.0 + rng.uniform(-aug.contrast, aug.contrast))
    img = img * (1.0 + rng.uniform(-aug.brightness, aug.brightness))
    return np.ascontiguousarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))


# --- pairs and their cache ---------------------------------------------------------------------


def make_pairs(
    squares: list[np.ndarray], presets: list[str], rng: np.random.Generator, size: int, crop_scale: float
) -> tuple[np.ndarray, np.ndarray, list[degrade.DegradeParams]]:
    """(inputs, targets, each input's degradation) for high-resolution squares, each degraded with its preset."""
    inputs = np.empty((len(squares), size, size, 3), np.uint8)
    params: list[degrade.DegradeParams | None] = [None] * len(squares)
    for name in sorted(set(presets)):
        members = [i for i, p in enumerate(presets) if p == name]
        degraded, drawn = degrade.degrade_batch([squares[i] for i in members], name, rng, size, crop_scale)
        inputs[members] = degraded
        for index, one in zip(members, drawn):
            params[index] = one
    targets = np.stack([resize_square(sq, size) for sq in squares])
    return inputs, targets, params


def _seed_for(*parts: object) -> int:
    """A stable seed from labels (Python's hash() changes between runs)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


@dataclass(frozen=True)
class ShardJob:
    records: tuple[FaceRecord, ...]
    path: Path
    seed: int
    size: int
    crop_scale: float
    preset: str | None  # None: training mix with augmentation; a name: that preset, no augmentation
    mix: tuple[tuple[str, float], ...] = ()  # the training mix (preset, weight); empty: degrade.TRAINING_MIX


def _write_shard(job: ShardJob) -> Path:
    rng = np.random.default_rng(job.seed)
    if job.preset is None:
        aug = Augment()
        squares = [augmented_square(load_photo(r.path), r.face_box, job.crop_scale, aug, rng) for r in job.records]
        presets = degrade.sample_training_presets(len(squares), rng, dict(job.mix))
    else:
        squares = [clean_square(r, job.crop_scale) for r in job.records]
        presets = [job.preset] * len(squares)
    inputs, targets, _ = make_pairs(squares, presets, rng, job.size, job.crop_scale)
    tmp = job.path.with_suffix(".partial.npz")
    np.savez(tmp, inputs=inputs, targets=targets)
    tmp.replace(job.path)
    return job.path


def _run_jobs(jobs: list, workers: int, writer: Callable[[Any], Path] = _write_shard) -> list[Path]:
    """Run the shard jobs whose files are missing (`writer` makes one; default: still pairs)."""
    todo = [job for job in jobs if not job.path.exists()]
    if todo:
        log.info("generating %d of %d shards with %d processes", len(todo), len(jobs), workers)
        todo[0].path.parent.mkdir(parents=True, exist_ok=True)
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                list(pool.map(writer, todo))
        else:
            for job in todo:
                writer(job)
    return [job.path for job in jobs]


def shuffled_shards(
    records: list[FaceRecord], variants: int, shard_size: int, seed: int, order_tag: str
) -> Iterator[tuple[int, int, tuple[FaceRecord, ...]]]:
    """(variant, shard, records) for every shard: each variant shuffles the records anew, seeded by
    `order_tag`, so a shard mixes identities and CRFs."""
    for variant in range(variants):
        order = np.random.default_rng(_seed_for(seed, order_tag, variant)).permutation(len(records))
        for shard in range(math.ceil(len(records) / shard_size)):
            yield variant, shard, tuple(records[i] for i in order[shard * shard_size : (shard + 1) * shard_size])


def training_shards(
    records: list[FaceRecord],
    variants: int,
    size: int,
    crop_scale: float,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    shard_size: int = 256,
    seed: int = 0,
    workers: int = 2,
    mix: dict[str, float] | None = None,
) -> list[Path]:
    """Cache `variants` augmented+degraded copies of every training record; return the shard paths.

    Each variant shuffles the records anew, so a shard mixes identities and CRFs. `mix` (preset ->
    weight) replaces degrade.TRAINING_MIX and is part of the cache's name."""
    mix_items = tuple(sorted((mix or {}).items()))
    # The default mix is already in degrade.fingerprint(); only another one is added, so caches of
    # runs made before the mix became a setting keep their names.
    extra = [{"training_mix": dict(mix_items)}] if mix_items else []
    tag = degrade.fingerprint(asdict(Augment()), *extra)
    directory = cache_dir / f"train_s{size}_c{crop_scale}_n{len(records)}_seed{seed}_d{tag}"
    jobs = [
        ShardJob(
            chunk,
            directory / f"v{variant:03d}_{shard:03d}.npz",
            _seed_for(seed, variant, shard),
            size,
            crop_scale,
            None,
            mix_items,
        )
        for variant, shard, chunk in shuffled_shards(records, variants, shard_size, seed, "order")
    ]
    return _run_jobs(jobs, workers)


def validation_pairs(
    records: list[FaceRecord],
    preset: str,
    size: int,
    crop_scale: float,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) for the validation records under one evaluation preset (cached, deterministic)."""
    path = cache_dir / f"val_{preset}_s{size}_c{crop_scale}_n{len(records)}_seed{seed}_d{degrade.fingerprint()}.npz"
    _run_jobs([ShardJob(tuple(records), path, _seed_for(seed, "val", preset), size, crop_scale, preset)], 1)
    return load_shards([path])


def load_shards(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate cached shards into (inputs, targets) uint8 arrays."""
    inputs, targets = [], []
    for path in paths:
        with np.load(path) as shard:
            inputs.append(shard["inputs"])
            targets.append(shard["targets"])
    return np.concatenate(inputs), np.concatenate(targets)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """N x S x S x 3 uint8 -> the model's N x 3 x S x S float32 input (the contract's layout);
    N x K x S x S x 3 (tracks) -> N x K x 3 x S x S."""
    if images.ndim == 5:
        return windows_to_batch(torch.from_numpy(images))
    return crops_to_batch(torch.from_numpy(images))


def young_windows(windows: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """`share` of the N x K x ... windows (in place) made a young track's: seen for L in 1..K-1 frames,
    the K - L frames before its first repeat that first crop."""
    frames = windows.shape[1]
    for index in np.flatnonzero(rng.random(len(windows)) < share):
        seen = int(rng.integers(1, frames))
        windows[index, : frames - seen] = windows[index, frames - seen]
    return windows


class PairBatches:
    """Random mini-batches from in-memory pairs, with a random horizontal flip per batch.

    For windows of K frames, `young_share` of the windows are made into a young track's window: a
    track seen for only L < K frames, whose window repeats its oldest crop (streamer.track_window),
    so the model also learns to restore the first frames of every track and stills."""

    def __init__(
        self, inputs: np.ndarray, targets: np.ndarray, batch_size: int, seed: int, young_share: float = 0.0
    ) -> None:
        self.inputs, self.targets = inputs, targets
        self.batch_size = batch_size
        self.young_share = young_share
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.inputs)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.rng.integers(0, len(self.inputs), size=self.batch_size)
        x, y = self.inputs[index], self.targets[index]
        if self.rng.random() < 0.5:  # flip the width axis (-2 for both N x S x S x 3 and N x K x S x S x 3)
            x, y = x[..., ::-1, :], y[..., ::-1, :]
        if x.ndim == 5 and self.young_share > 0:
            x = young_windows(np.array(x), self.young_share, self.rng)
        return to_tensor(np.ascontiguousarray(x)), to_tensor(np.ascontiguousarray(y))
