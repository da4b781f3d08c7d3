"""Shared fixtures: real photos (scikit-image samples, ../shared/data) and an isolated cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PETIMAGES = SHARED_DATA / "petimages"
OXFORD = SHARED_DATA / "oxford-pets-subset"
EUROSAT = SHARED_DATA / "eurosat-rgb"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """The test session gets its own feature cache, never the user's (session scope, so that
    session fixtures which train runs use it too)."""
    import os

    old = os.environ.get("TRANSFERLAB_CACHE")
    os.environ["TRANSFERLAB_CACHE"] = str(tmp_path_factory.getbasetemp() / "cache")
    yield
    if old is None:
        os.environ.pop("TRANSFERLAB_CACHE", None)
    else:
        os.environ["TRANSFERLAB_CACHE"] = old


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


@pytest.fixture(scope="session")
def eurosat() -> Path:
    if not EUROSAT.is_dir():
        pytest.skip("../shared/data/eurosat-rgb not present")
    return EUROSAT


def _first(folder: Path, n: int) -> list[Path]:
    return sorted(folder.glob("*.jpg"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)[:n]


@pytest.fixture(scope="session")
def small_pets(tmp_path_factory, petimages) -> Path:
    """60 cats + 60 dogs from the shared PetImages, copied to a temp folder (class per folder)."""
    import shutil

    root = tmp_path_factory.mktemp("small_pets")
    for cls in ("Cat", "Dog"):
        (root / cls).mkdir()
        for p in _first(petimages / cls, 60):
            shutil.copy(p, root / cls / p.name)
    return root


@pytest.fixture(scope="session")
def small_pets_run(tmp_path_factory, small_pets) -> Path:
    """A linear run trained on ``small_pets`` (efficientnet_lite0), shared by several tests."""
    from transferlab.training.api import train

    out = tmp_path_factory.mktemp("runs") / "pets-linear"
    train(small_pets, backbone="efficientnet_lite0", mode="linear", out=out, progress=False)
    return out


@pytest.fixture(scope="session")
def heldout_pets_csv(tmp_path_factory, petimages) -> Path:
    """A CSV of 40 other PetImages photos (ids 2000+), labelled Cat/Dog."""
    d = tmp_path_factory.mktemp("heldout")
    lines = ["path,label"]
    for cls in ("Cat", "Dog"):
        for i in range(2000, 2020):
            p = petimages / cls / f"{i}.jpg"
            if p.exists():
                lines.append(f"{p},{cls}")
    f = d / "heldout.csv"
    f.write_text("\n".join(lines) + "\n")
    return f
