"""Test-side access to the shared CelebA faces (the scenes themselves are samples/scene.py)."""
import pytest

from samples.scene import FACES_CSV, FACES_DIR


def require_faces() -> None:
    """Skip the calling test when the shared CelebA faces are not on this machine."""
    if not FACES_CSV.is_file():
        pytest.skip(f"shared face photos not found at {FACES_DIR}")
