"""CPU that torch's OpenMP threads burn while the restorer waits, with and without the passive wait policy.

    python bench/openmp_idle.py [--runs 3] [--gap-ms 20]

Each run is a fresh process that does small 2-thread matrix products with short sleeps between them
(as the pipeline's restorer thread waits for the next batch), and reports its CPU seconds per wall
second. "spinning": torch imported with OMP_WAIT_POLICY unset (as run_stream.py did before it
imported `streamer` first); "passive": `import streamer` first, which sets OMP_WAIT_POLICY=PASSIVE
(every entry point now; tests/test_entry_points.py checks it). Prints one row per mode and the ratio.
Not a test: numbers depend on the machine and its load (printed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from streamer import REPO_ROOT  # as every entry point; the children below start without the policy

CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
if sys.argv[2] == "passive":
    import streamer  # noqa: F401  (sets OMP_WAIT_POLICY=PASSIVE before torch loads)
import torch
torch.set_num_threads(2)
x = torch.rand(384, 384)
for _ in range(20):
    x @ x
gap = float(sys.argv[3])
cpu0, wall0 = time.process_time(), time.perf_counter()
for _ in range(150):
    x @ x
    time.sleep(gap)
print((time.process_time() - cpu0) / (time.perf_counter() - wall0))
"""


def cpu_per_wall(mode: str, gap_s: float) -> float:
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO_ROOT), mode, str(gap_s)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gap-ms", type=float, default=20.0, help="idle time between two products")
    args = parser.parse_args()
    results: dict[str, list[float]] = {"spinning": [], "passive": []}
    for _ in range(args.runs):  # interleaved, so a burst of load hits both modes alike
        for mode in results:
            results[mode].append(cpu_per_wall(mode, args.gap_ms / 1000.0))
    print(f"cpus={os.cpu_count()} load(1 min)={os.getloadavg()[0]:.2f} runs={args.runs} gap={args.gap_ms:g} ms")
    print(f"{'mode':10} {'CPU s / wall s (median)':>24} {'runs':>24}")
    for mode, values in results.items():
        print(f"{mode:10} {statistics.median(values):>24.3f} {' '.join(f'{v:.3f}' for v in values):>24}")
    ratio = statistics.median(results["spinning"]) / max(1e-9, statistics.median(results["passive"]))
    print(f"spinning / passive: {ratio:.1f}x the CPU while mostly idle")


if __name__ == "__main__":
    main()
