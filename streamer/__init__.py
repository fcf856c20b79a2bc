"""The stream processor's stages (see DESIGN.md).

Importing this package makes OpenMP threads wait passively (unless OMP_WAIT_POLICY is already set):
the default spin-waiting burns a core while torch is idle and starves the pipeline's other stages
on a small CPU. OpenMP reads the variable once, when torch loads it, so every entry point imports
`streamer` (or `training`, which imports it) before torch; tests/test_entry_points.py checks that.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO_ROOT = Path(__file__).resolve().parents[1]  # relative paths in configs and scripts start here
# The shared, read-only data (CelebA faces, test videos): ../shared/data beside the repository, or
# $SHARED_DATA. Training, the benchmarks and some tests need it; the pipeline does not.
SHARED_DATA = Path(os.environ.get("SHARED_DATA") or REPO_ROOT.parent / "shared" / "data")
