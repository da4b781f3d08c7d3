"""Datasets: formats, splits, and bad files skipped, counted, listed, never modified."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from transferlab.data.datasets import load_dataset
from transferlab.data.images import BadImage, _plain_jpeg, load_rgb, load_rgb_array
from transferlab.errors import DataError


def _digest_tree(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_image_modes_become_rgb(tmp_path, sample_images):
    photo = Image.open(sample_images["chelsea"]).convert("RGB")
    photo.convert("CMYK").save(tmp_path / "cmyk.jpg")
    photo.convert("P").save(tmp_path / "palette.png")
    rgba = photo.convert("RGBA")
    rgba.putalpha(0)  # fully transparent -> composited on white
    rgba.save(tmp_path / "rgba.png")
    grey16 = Image.fromarray(np.full((40, 60), 32768, np.uint16))
    grey16.save(tmp_path / "grey16.png")
    for name in ("cmyk.jpg", "palette.png", "rgba.png", "grey16.png"):
        im = load_rgb(tmp_path / name)
        assert im.mode == "RGB", name
    assert np.asarray(load_rgb(tmp_path / "rgba.png")).min() == 255
    assert abs(int(np.asarray(load_rgb(tmp_path / "grey16.png")).mean()) - 128) <= 1  # rescaled, not clipped
    # CMYK keeps the picture (close to the RGB original, not inverted)
    diff = np.abs(np.asarray(load_rgb(tmp_path / "cmyk.jpg"), float) - np.asarray(photo, float)).mean()
    assert diff < 20


def test_exif_orientation_applied(tmp_path, sample_images):
    photo = Image.open(sample_images["chelsea"]).convert("RGB")  # 451 x 300, landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    photo.save(tmp_path / "rot.jpg", exif=exif)
    assert load_rgb(tmp_path / "rot.jpg").size == (300, 451)


def test_draft_decoding_large_jpeg(tmp_path, sample_images):
    big = Image.open(sample_images["chelsea"]).convert("RGB").resize((2000, 1330), Image.Resampling.BICUBIC)
    big.save(tmp_path / "big.jpg", quality=92)
    small = load_rgb(tmp_path / "big.jpg", min_side=256)
    assert 256 <= min(small.size) < 700  # decoded at 1/2 or 1/4 scale, still large enough


@pytest.mark.parametrize("content,reason", [(b"", "not an image"), (b"hello, I am text", "not an image")])
def test_bad_files_raise_badimage(tmp_path, content, reason):
    f = tmp_path / "x.jpg"
    f.write_bytes(content)
    with pytest.raises(BadImage, match=reason):
        load_rgb(f)


def test_truncated_jpeg(tmp_path, sample_images):
    data = sample_images["chelsea"].read_bytes()
    f = tmp_path / "trunc.jpg"
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImage, match="truncated"):
        load_rgb(f)


def test_decompression_bomb(tmp_path, monkeypatch):
    Image.new("RGB", (200, 200)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)
    with pytest.raises(BadImage, match="decompression bomb"):
        load_rgb(tmp_path / "bomb.png")


def test_fast_jpeg_path_gives_pillows_pixels_and_errors(tmp_path, sample_images, petimages, oxford):
    """``load_rgb_array`` (simplejpeg for plain JPEGs) returns exactly Pillow's pixels on real
    photos, and leaves every file it must not decode itself to Pillow: EXIF (rotation),
    CMYK, truncated, large enough for draft decoding, a PNG named .jpg, a decompression bomb."""
    pytest.importorskip("simplejpeg")
    photos = sorted(petimages.glob("*/*.jpg"))[::200] + sorted((oxford / "images").glob("*.jpg"))[::100]
    assert len(photos) > 35
    for p in photos:
        fast = _plain_jpeg(p, 256)
        assert fast is not None and np.array_equal(fast, np.asarray(load_rgb(p, 256))), p
    photo = Image.open(sample_images["chelsea"]).convert("RGB")  # 451 x 300
    photo.convert("L").save(tmp_path / "grey.jpg")
    photo.save(tmp_path / "progressive.jpg", progressive=True, quality=90)
    for name in ("grey.jpg", "progressive.jpg"):
        assert _plain_jpeg(tmp_path / name, 256) is not None
        assert np.array_equal(load_rgb_array(tmp_path / name, 256), np.asarray(load_rgb(tmp_path / name, 256)))
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.save(tmp_path / "rot.jpg", exif=exif)
    photo.convert("CMYK").save(tmp_path / "cmyk.jpg")
    photo.resize((2000, 1330)).save(tmp_path / "big.jpg")
    photo.save(tmp_path / "png.jpg", format="PNG")
    for name in ("rot.jpg", "cmyk.jpg", "big.jpg", "png.jpg"):
        assert _plain_jpeg(tmp_path / name, 256) is None, name
        assert np.array_equal(load_rgb_array(tmp_path / name, 256), np.asarray(load_rgb(tmp_path / name, 256)))
    assert load_rgb_array(tmp_path / "rot.jpg").shape == (451, 300, 3)
    data = (tmp_path / "progressive.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImage, match="truncated"):
        load_rgb_array(tmp_path / "trunc.jpg")
    photo.save(tmp_path / "bomb.jpg")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Image, "MAX_IMAGE_PIXELS", 100 * 100)
        with pytest.raises(BadImage, match="decompression bomb"):
            load_rgb_array(tmp_path / "bomb.jpg")


def test_folder_format_and_seeded_stratified_split(petimages):
    ds = load_dataset(petimages)
    assert ds.format == "folder" and ds.classes == ["Cat", "Dog"] and len(ds) == 5999
    tr, va = ds.train_val_split(0.2, seed=0)
    _, va2 = ds.train_val_split(0.2, seed=0)
    _, va3 = ds.train_val_split(0.2, seed=1)
    assert va.paths == va2.paths and va.paths != va3.paths
    assert len(va) == 1200 and not set(tr.paths) & set(va.paths)
    assert abs(np.mean(va.labels) - np.mean(ds.labels)) < 0.002  # stratified


def test_oxford_format(oxford):
    tv = load_dataset(oxford, split="trainval")
    te = load_dataset(oxford, split="test")
    assert (len(tv), len(te), len(tv.classes)) == (710, 760, 37)
    assert tv.format == "oxford-pets" and "Bengal" in tv.classes and "beagle" in tv.classes
    sp = load_dataset(oxford, label="species", split="test")
    assert sp.classes == ["cat", "dog"]
    cats = [p for p, y in zip(sp.paths, sp.labels) if y == 0]
    assert all(p.split("/")[-1][0].isupper() for p in cats)  # cat breeds start with a capital
    with pytest.raises(DataError, match="splits"):
        load_dataset(oxford, split="nope")


def test_csv_format(tmp_path, petimages):
    (tmp_path / "sub").mkdir()
    shutil.copy(petimages / "Cat" / "1.jpg", tmp_path / "sub" / "a.jpg")
    (tmp_path / "list.csv").write_text(f"path,label\nsub/a.jpg,cat\n{petimages / 'Dog' / '1.jpg'},dog\n")
    ds = load_dataset(tmp_path / "list.csv")
    assert ds.format == "csv" and ds.classes == ["cat", "dog"]
    assert ds.paths[0] == str(tmp_path / "sub" / "a.jpg")


def test_missing_and_empty_data(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match="no class subfolders"):
        load_dataset(tmp_path)


def test_training_skips_bad_files_and_never_modifies_data(tmp_path, petimages, sample_images):
    """The issue's acceptance case: zero-byte, truncated, text-as-.jpg skipped; CMYK used."""
    from transferlab.training.api import train

    root = tmp_path / "data"
    for cls in ("Cat", "Dog"):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            shutil.copy(petimages / cls / f"{i}.jpg", root / cls / f"{i}.jpg")
    (root / "Cat" / "empty.jpg").write_bytes(b"")
    good = (petimages / "Dog" / "20.jpg").read_bytes()
    (root / "Dog" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "Cat" / "notes.jpg").write_text("this is not a picture")
    Image.open(petimages / "Cat" / "20.jpg").convert("CMYK").save(root / "Cat" / "cmyk.jpg")
    before = _digest_tree(root)

    run = train(root, out=tmp_path / "run", progress=False)
    m = json.loads((run.path / "metrics.json").read_text())
    assert m["skipped"] == 3
    assert {s["path"].rsplit("/", 1)[1] for s in m["skipped_files"]} == {"empty.jpg", "truncated.jpg", "notes.jpg"}
    cfg = json.loads((run.path / "config.json").read_text())
    assert cfg["data"]["images"] == 28 and cfg["data"]["skipped"] == 3
    assert _digest_tree(root) == before
    assert not list(root.rglob("*.tmp"))
