"""Every entry point makes OpenMP wait passively: OMP_WAIT_POLICY is PASSIVE when torch is imported.

OpenMP reads the variable once, when torch loads it; spinning threads burn 0.3 CPU-seconds per idle
second and starve the pipeline's other stages on a small CPU. Each entry point (run_stream.py, the
bench scripts, training's modules with a main) is loaded in a fresh interpreter without the variable,
with an import hook that reports the policy at the moment torch is first imported (and exits there, so
the check does not pay for loading torch). An entry point that imports no torch at load must still
have set the policy by then: torch may load later, in its main.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streamer import REPO_ROOT

CHECK = r"""
import importlib.abc, os, runpy, sys
sys.path.insert(0, sys.argv[1])

class ReportTorchImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            print("torch imported with OMP_WAIT_POLICY=%s" % os.environ.get("OMP_WAIT_POLICY"), flush=True)
            os._exit(0)
        return None

sys.meta_path.insert(0, ReportTorchImport())
kind, name = sys.argv[2], sys.argv[3]
if kind == "script":
    sys.argv = [name]
    runpy.run_path(name, run_name="__entry_point_check__")
else:
    runpy.run_module(name, run_name="__entry_point_check__")
print("loaded with OMP_WAIT_POLICY=%s" % os.environ.get("OMP_WAIT_POLICY"), flush=True)
"""


def entry_points() -> list[tuple[str, str]]:
    """(kind, name) of every file with a `__main__` block: scripts by path, training's modules by name."""
    found = [("script", str(REPO_ROOT / "run_stream.py"))]
    found += [("script", str(path)) for path in sorted((REPO_ROOT / "bench").glob("*.py"))]
    found += [
        ("script", str(path))
        for path in sorted((REPO_ROOT / "samples").glob("*.py"))
        if '__name__ == "__main__"' in path.read_text()
    ]
    found += [
        ("module", f"training.{path.stem}")
        for path in sorted((REPO_ROOT / "training").glob("*.py"))
        if '__name__ == "__main__"' in path.read_text()
    ]
    return found


@pytest.mark.parametrize(("kind", "name"), entry_points(), ids=lambda value: os.path.basename(str(value)))
def test_openmp_waits_passively_before_torch_loads(kind: str, name: str) -> None:
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    completed = subprocess.run(
        [sys.executable, "-c", CHECK, str(REPO_ROOT), kind, name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip().endswith("OMP_WAIT_POLICY=PASSIVE"), completed.stdout
