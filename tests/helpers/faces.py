"""Test-side access to the shared data (CelebA faces, videos; the scenes themselves are samples/scene.py).

Without the shared data a test that needs it is skipped, with one message for all of them that says
how to get it; under CI (env CI=true) it fails instead, so a CI machine without the data cannot pass
by skipping."""

import os

import pytest

from streamer import SHARED_DATA

HOW_TO_GET_IT = (
    f"needs the shared data at {SHARED_DATA} (missing): put the project's shared/data folder beside the "
    "repository, or set SHARED_DATA=/path/to/data"
)


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_shared_data(*parts: str) -> None:
    """Skip (fail under CI) the calling test unless SHARED_DATA/parts... exists."""
    if not SHARED_DATA.joinpath(*parts).exists():
        if under_ci():
            pytest.fail(f"CI=true: {HOW_TO_GET_IT}", pytrace=False)
        pytest.skip(HOW_TO_GET_IT)


def require_faces() -> None:
    """The shared CelebA faces (faces/celeba_wild_256.csv and its photos)."""
    require_shared_data("faces", "celeba_wild_256.csv")
