"""Shared fixtures: real photos (scikit-image samples, ../shared/data) and an isolated cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PETIMAGES = SHARED_DATA / "petimages"
OXFORD = SHARED_DATA / "oxford-pets-subset"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own feature cache, never the user's."""
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def sample_images(tmp_path_factory) -> dict[str, Path]:
    """scikit-image's bundled photos saved as files: chelsea (a cat), coffee (espresso), astronaut."""
    from skimage import data

    d = tmp_path_factory.mktemp("samples")
    out = {}
    for name in ("chelsea", "coffee", "astronaut"):
        p = d / f"{name}.jpg"
        Image.fromarray(getattr(data, name)()).save(p, quality=95)
        out[name] = p
    return out


@pytest.fixture(scope="session")
def petimages() -> Path:
    if not PETIMAGES.is_dir():
        pytest.skip("../shared/data/petimages not present")
    return PETIMAGES


@pytest.fixture(scope="session")
def oxford() -> Path:
    if not OXFORD.is_dir():
        pytest.skip("../shared/data/oxford-pets-subset not present")
    return OXFORD
