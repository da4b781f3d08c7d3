"""iPhone photos: HEIC (and AVIF where Pillow has it) made by the libraries' own encoders from
real Oxford-IIIT Pet photos, read wherever photos are read: the catalog's uploads, `predict` on a
folder, training data (a folder dataset and its loader).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

pytest.importorskip("pillow_heif")
pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from tests._helpers import run_cli
from transferlab.apps.serve import Settings, create_app

BREEDS = ("pug", "Samoyed", "beagle")


@pytest.fixture(scope="module")
def predictor():
    from transferlab.export import load_predictor

    return load_predictor("efficientnet_lite0")


@pytest.fixture(scope="module")
def oxford_photos(oxford) -> list[Path]:
    names = {"pug": "pug", "Samoyed": "samoyed", "beagle": "beagle"}
    return [sorted((oxford / "images").glob(f"{names[b]}_*.jpg"))[0] for b in BREEDS]


def heic(path: Path, quality: int = 90) -> bytes:
    """The photo as an iPhone would store it: HEIC from pillow-heif's (libheif's) encoder."""
    import pillow_heif

    im = Image.open(path).convert("RGB")
    buf = io.BytesIO()
    pillow_heif.from_pillow(im).save(buf, quality=quality)
    data = buf.getvalue()
    assert data[4:12] in (b"ftypheic", b"ftypmif1", b"ftypheix")  # a real HEIF container
    return data


def top1(client, data: bytes, name: str) -> tuple[str, float, dict]:
    r = client.post("/api/predict", files={"file": (name, data, "application/octet-stream")},
                    params={"heatmap": "false"})
    assert r.status_code == 200, r.text
    j = r.json()
    return j["top"][0]["label"], j["top"][0]["score"], j


def test_heic_from_oxford_predicts_the_same_breed_as_its_jpeg(tmp_path, predictor, oxford_photos):
    client = TestClient(create_app(Settings(model="efficientnet_lite0", db=str(tmp_path / "c.sqlite")),
                                   predictor=predictor))
    with client:
        for path in oxford_photos:
            jpeg_label, jpeg_p, _ = top1(client, path.read_bytes(), path.name)
            data = heic(path)
            label, p, j = top1(client, data, path.stem + ".HEIC")
            assert label == jpeg_label and abs(p - jpeg_p) < 0.1, (path.name, jpeg_label, jpeg_p, label, p)
            assert j["photo_url"].endswith(".heic")
            assert client.get(j["photo_url"]).content == data  # stored as uploaded
            r = client.post("/api/pets", data={"name": path.stem, "photo": j["photo"]})
            assert r.status_code == 201 and r.json()["breed"] == jpeg_label
            thumb = Image.open(io.BytesIO(client.get(r.json()["thumbnail_url"]).content))
            assert thumb.format == "JPEG" and 0 < max(thumb.size) <= 320  # what every browser can show
            print(f"\n{path.name}: JPEG {jpeg_label} {jpeg_p:.3f} · HEIC ({len(data)} bytes) {label} {p:.3f}")
        page = client.post("/predict", files={"file": ("x.heic", heic(oxford_photos[0]), "image/heic")})
        assert page.status_code == 200 and 'id="photo" src="/thumbs/' in page.text


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF codec")
def test_avif_upload_predicts_the_same_breed_as_its_jpeg(tmp_path, predictor, oxford_photos):
    client = TestClient(create_app(Settings(model="efficientnet_lite0", db=str(tmp_path / "c.sqlite")),
                                   predictor=predictor))
    path = oxford_photos[0]
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="AVIF", quality=85)
    with client:
        jpeg_label, _, _ = top1(client, path.read_bytes(), path.name)
        label, _, j = top1(client, buf.getvalue(), "x.avif")
    assert label == jpeg_label and j["photo_url"].endswith(".avif")


def test_predict_folder_and_training_data_read_heic(tmp_path, oxford_photos, monkeypatch, capsys):
    from transferlab import load_dataset
    from transferlab.data.images import load_rgb_array

    folder = tmp_path / "intake"
    for b, path in zip(BREEDS, oxford_photos):
        (folder / b).mkdir(parents=True)
        (folder / b / path.name).write_bytes(path.read_bytes())
        (folder / b / (path.stem + ".heic")).write_bytes(heic(path))
    code, out, err = run_cli(["predict", "efficientnet_lite0", folder, "--json", "--top-k", "1"], monkeypatch, capsys)
    assert code == 0, err
    rows = json.loads(out)
    rows = rows["predictions"] if isinstance(rows, dict) else rows
    by_name = {Path(r["path"]).name: r for r in rows}
    assert len(by_name) == 6
    for path in oxford_photos:
        a, b = by_name[path.name], by_name[path.stem + ".heic"]
        assert _label(a) == _label(b), (a, b)

    ds = load_dataset(folder)  # training data: a folder with class subfolders
    assert len(ds) == 6 and sum(str(p).endswith(".heic") for p in ds.paths) == 3
    for p in ds.paths:
        if str(p).endswith(".heic"):
            a, b = load_rgb_array(p), load_rgb_array(Path(str(p)[:-5] + ".jpg"))
            assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() < 6  # lossy, same photo


def _label(row: dict) -> str:
    for k in ("label", "prediction", "top1"):
        if k in row:
            return row[k]
    return row["top"][0]["label"]
