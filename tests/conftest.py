"""Fixtures shared by the CLI and end-to-end tests: generated clips, test models, a CLI runner."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamer import REPO_ROOT
from tests.helpers import faces as faces_helper
from tests.helpers.faces import HOW_TO_GET_IT
from tests.helpers.media import make_face_frames, make_frames, write_clip
from tests.helpers.models import save_model

FACE_CLIP_FRAMES = 24
FACE_CLIP_SIZE = (320, 240)
FACE_PX = 36


@dataclass(frozen=True)
class FaceClip:
    path: Path
    boxes: list  # per frame, the ground-truth face boxes


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="session")
def face_clip(tmp_path_factory) -> FaceClip:
    """An H.264 + AAC clip with two CelebA faces drifting over a moving scene (FACE_PX wide: CCTV-sized,
    under restoration.max_face_px)."""
    frames, boxes = make_face_frames(FACE_CLIP_FRAMES, FACE_CLIP_SIZE, face_px=FACE_PX, faces=2, seed=3)
    path = write_clip(tmp_path_factory.mktemp("media") / "faces.mp4", frames, fps=25, audio=True)
    return FaceClip(path, boxes)


@pytest.fixture(scope="session")
def plain_clip(tmp_path_factory) -> Path:
    """An H.264 + AAC clip without faces, made here (no shared data needed): for tests of the
    command line that need any valid input."""
    frames = make_frames(FACE_CLIP_FRAMES, *FACE_CLIP_SIZE, noise=0)
    return write_clip(tmp_path_factory.mktemp("media") / "plain.mp4", frames, fps=25, audio=True)


@pytest.fixture(scope="session")
def checker_model(tmp_path_factory) -> Path:
    """A contract-keeping restorer that visibly changes every face, in detail rather than brightness
    (a checkerboard), so the change survives the compositor's keep_brightness."""
    return save_model("checker", tmp_path_factory.mktemp("models") / "checker.ts")


@pytest.fixture
def run_cli():
    """Run `python run_stream.py ARGS` in a subprocess (from another cwd, as a user would)."""

    def run(*args: str, timeout_s: float = 120, env: dict[str, str] | None = None) -> CliResult:
        completed = subprocess.run(
            [sys.executable, str(REPO_ROOT / "run_stream.py"), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd="/",
            env={**os.environ, **(env or {})},
        )
        return CliResult(completed.returncode, completed.stdout, completed.stderr)

    return run


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Every skip for missing shared data is reported at one place, so `-ra` prints one line for all
    of them (with their count) instead of one line per test."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and isinstance(report.longrepr, tuple) and report.longrepr[2].endswith(HOW_TO_GET_IT):
        line = inspect.getsourcelines(faces_helper.require_shared_data)[1]
        report.longrepr = (str(Path(faces_helper.__file__).relative_to(REPO_ROOT)), line, report.longrepr[2])
