"""List files written by other tools (Excel CSVs, hand-edited Oxford lists), links, and archives
that unpack to far more than they weigh: each is read right or refused with file and line."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile

import pytest

from transferlab.data import fetch as Fm
from transferlab.data.datasets import load_dataset
from transferlab.errors import DataError, FetchError


def _rows(petimages, n=2):
    return [(str(petimages / c / f"{i}.jpg"), c) for c in ("Cat", "Dog") for i in range(n)]


def test_csv_line_numbers_count_physical_lines(tmp_path, petimages):
    f = tmp_path / "l.csv"
    (cat, _), (cat2, _) = _rows(petimages)[:2]
    body = f'\ufeffpath,label\r\n\r\n"{cat}",Cat\r\n{cat2},"two\r\nlines"\r\n,Dog\r\n'
    f.write_bytes(body.encode())
    with pytest.raises(DataError, match=r"l\.csv: line 6 is not 'path,label'"):
        load_dataset(f)


def test_csv_that_is_not_utf8_names_the_line(tmp_path, petimages):
    f = tmp_path / "l.csv"
    f.write_bytes(b"path,label\n" + f"{petimages / 'Cat' / '1.jpg'},Cat\n".encode() + b"caf\xe9.jpg,Dog\n")
    with pytest.raises(DataError, match=r"line 3 is not UTF-8"):
        load_dataset(f)


@pytest.mark.parametrize("line,needle", [
    ("Abyssinian_1 1 1", "line 2: expected"),
    ("Abyssinian_1 one 1 1", "line 2: CLASS-ID and SPECIES must be integers"),
    ("Abyssinian_1 1 0 1", "line 2: species must be 1 (cat) or 2 (dog)"),
])
def test_malformed_oxford_lines(tmp_path, line, needle):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "list.txt").write_text(f"#Image CLASS-ID SPECIES BREED ID\n{line}\n")
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path)
    assert needle in str(e.value) and "list.txt" in str(e.value)


def test_empty_class_folders_are_named(tmp_path, petimages):
    import shutil

    for c in ("Cat", "Dog"):
        (tmp_path / c).mkdir()
        shutil.copy(petimages / c / "1.jpg", tmp_path / c / "1.jpg")
    (tmp_path / "Rabbit").mkdir()
    (tmp_path / "Zebra").mkdir()
    (tmp_path / "Zebra" / "notes.txt").write_text("no images here")
    ds = load_dataset(tmp_path)
    assert ds.classes == ["Cat", "Dog"] and ds.empty_classes == ["Rabbit", "Zebra"]
    assert ds.summary()["empty_classes"] == ["Rabbit", "Zebra"]


def test_links_to_nowhere_are_listed_and_say_why(tmp_path, petimages):
    from transferlab.data.geometry import DataConfig
    from transferlab.data.loader import iter_batches, load_image
    from transferlab.errors import ImageError

    for c in ("Cat", "Dog"):
        (tmp_path / c).mkdir()
    os.symlink(petimages / "Cat" / "1.jpg", tmp_path / "Cat" / "ok.jpg")
    os.symlink("loop.jpg", tmp_path / "Cat" / "loop.jpg")
    os.symlink("gone.jpg", tmp_path / "Dog" / "dangling.jpg")
    ds = load_dataset(tmp_path)
    assert sorted(os.path.basename(p) for p in ds.paths) == ["dangling.jpg", "loop.jpg", "ok.jpg"]
    batches = iter_batches(ds.paths, DataConfig(64, 73))
    failed = {os.path.basename(ds.paths[i]): why for b in batches for i, why in b.failed}
    assert failed == {"loop.jpg": "symbolic link loop", "dangling.jpg": "broken symbolic link"}
    with pytest.raises(ImageError, match="symbolic link loop"):
        load_image(tmp_path / "Cat" / "loop.jpg", DataConfig(64, 73))


# --------------------------------------------------------------------------------------------
# fetch: archives that unpack to far more than they weigh
# --------------------------------------------------------------------------------------------
def test_tar_bomb_refused_and_nothing_extracted(tmp_path):
    arc = tmp_path / "images.tar.gz"
    with tarfile.open(arc, "w:gz") as tf:
        info = tarfile.TarInfo("images/zeros.jpg")
        info.size = 40 << 20
        tf.addfile(info, io.BytesIO(b"\0" * info.size))
    dest = tmp_path / "dest"
    with pytest.raises(FetchError, match="too large"):
        Fm.extract(arc, dest)
    assert list(dest.iterdir()) == []


def test_zip_with_lying_sizes_is_refused(tmp_path):
    arc = tmp_path / "x.zip"
    with zipfile.ZipFile(arc, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("PetImages/Cat/0.jpg", b"\0" * (8 << 20))
    raw = bytearray(arc.read_bytes())
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # uncompressed size: local + central header
        at = raw.index(sig) + off
        raw[at:at + 4] = (1000).to_bytes(4, "little")
    arc.write_bytes(bytes(raw))
    dest = tmp_path / "dest"
    with pytest.raises(FetchError):
        Fm.extract(arc, dest)
    assert list(dest.iterdir()) == []


def test_declared_total_is_checked_and_understated_sizes_refused(tmp_path, monkeypatch):
    arc = tmp_path / "x.zip"
    with zipfile.ZipFile(arc, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(4):
            zf.writestr(f"d/{i}.bin", b"\0" * (1 << 20))
    monkeypatch.setattr(Fm, "MIN_ALLOWANCE", 0)
    monkeypatch.setattr(Fm, "MAX_UNPACKED", 3 << 20)  # the declared total (4 MiB) is checked first...
    with pytest.raises(FetchError, match="too large"):
        Fm.extract(arc, tmp_path / "a")
    real = Fm.zipfile.ZipFile.infolist

    def smaller(self):  # ...so make the headers claim less than the data holds
        infos = real(self)
        for m in infos:
            m.file_size //= 8
        return infos

    monkeypatch.setattr(Fm.zipfile.ZipFile, "infolist", smaller)
    with pytest.raises(FetchError):
        Fm.extract(arc, tmp_path / "b")
    assert list((tmp_path / "b").iterdir()) == []
