"""Faces per second of the face restorer on the CPU, against reference networks in the same run.

    python bench/restorer_speed.py [--model models/face_restorer.ts] [--threads 2] [--seconds 3]

Rows: the shipped TorchScript model (and any `--also` models; a K-frame model is fed K-frame
windows, one window counting as one face); the `probe` U-Net (the earlier 0.70M-parameter size); the
seed notebook's autoencoder; and plain bicubic upscaling of a 24x24 crop (what `resize_square`
costs, the no-model baseline). Columns: batch 1, 4, 16 (the pipeline's batch sizes). Each cell is
the best of three timed windows, so a burst of load from other processes counts less. The last
column is the shipped model's speed divided by the row's, at batch 16 (0.5: half as fast).

OpenMP's default spin-waiting collapses 2-thread PyTorch on a shared CPU; importing `streamer` sets
OMP_WAIT_POLICY=PASSIVE unless it is set (the header says which policy was in effect).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import streamer  # noqa: E402, F401  (first: sets the OpenMP wait policy before torch loads)

# isort: split
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from streamer.model_contract import SPEC_FILE_NAME, RestorerSpec, resize_square  # noqa: E402
from training.model import build_model, count_parameters  # noqa: E402

BATCHES = (1, 4, 16)
SIZE = 64


def faces_per_second(run_batch, batch: int, seconds: float) -> float:
    """Best throughput of three windows of `seconds` / 3 each, after a warm-up."""
    for _ in range(3):
        run_batch(batch)
    best = 0.0
    for _ in range(3):
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / 3:
            run_batch(batch)
            count += batch
        best = max(best, count / (time.perf_counter() - started))
    return best


def torch_runner(module: torch.nn.Module, frames: int = 1):
    """Runs `module` on random batches; a K-frame model (contract v2) gets N x K x 3 x S x S windows,
    each window counting as one face."""
    if frames == 1:
        inputs = {b: torch.rand(b, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last) for b in BATCHES}
    else:
        inputs = {b: torch.rand(b, frames, 3, SIZE, SIZE) for b in BATCHES}

    def run(batch: int) -> None:
        with torch.inference_mode():
            module(inputs[batch])

    return run


def traced(arch: str) -> tuple[torch.nn.Module, int]:
    model = build_model(arch).eval().to(memory_format=torch.channels_last)
    example = torch.rand(4, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        return torch.jit.trace(model, example), count_parameters(model)


def load_model(path: Path) -> tuple[torch.nn.Module, int]:
    """A TorchScript restorer and the frames per face its restorer.json asks for."""
    extra = {SPEC_FILE_NAME: ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra).eval()
    return module, RestorerSpec.from_json(extra[SPEC_FILE_NAME]).frames


def bicubic_runner():
    crops = [np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)] * max(BATCHES)

    def run(batch: int) -> None:
        for crop in crops[:batch]:
            resize_square(crop, SIZE)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/face_restorer.ts"))
    parser.add_argument("--also", type=Path, nargs="*", default=[], help="more TorchScript restorers to time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per cell")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    rows = {}
    for index, path in enumerate([args.model, *args.also]):
        module, frames = load_model(path)
        params = sum(p.numel() for p in module.parameters())
        label = "shipped" if index == 0 else "model"
        rows[f"{label} ({path.name}, K={frames}, {params / 1e6:.2f}M)"] = torch_runner(module, frames)
    for arch in ("probe", "seed"):
        module, params = traced(arch)
        rows[f"{arch} ({params / 1e6:.2f}M)"] = torch_runner(module)
    rows["bicubic only (24 px -> 64)"] = bicubic_runner()

    print(
        f"threads={args.threads} OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(default)')} "
        f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f}"
    )
    print(f"{'faces/s':40s}" + "".join(f"{'batch ' + str(b):>12s}" for b in BATCHES) + f"{'shipped / row @16':>20s}")
    results = {name: [faces_per_second(run, b, args.seconds) for b in BATCHES] for name, run in rows.items()}
    shipped_16 = next(iter(results.values()))[-1]
    for name, speeds in results.items():
        print(f"{name:40s}" + "".join(f"{s:12.0f}" for s in speeds) + f"{shipped_16 / speeds[-1]:20.2f}")


if __name__ == "__main__":
    main()
