"""Datasets: a folder of class subfolders, the official Oxford-IIIT Pet layout, or a CSV of
``path,label``; detected automatically. A dataset is just paths + integer labels + class names;
images are decoded later by the pipeline, which skips (and reports) unreadable files."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..display import one_line
from ..errors import DataError
from ..options import AT_LEAST_ONE, OptionError
from .images import is_image_file

FORMATS = ("auto", "folder", "oxford-pets", "csv")


@dataclass
class ImageDataset:
    paths: list[str]
    labels: np.ndarray  # int64 [n]
    classes: list[str]
    root: str = ""
    format: str = "folder"
    split: str | None = None
    ignored: list[str] = field(default_factory=list)  # files that are not images by name
    empty_classes: list[str] = field(default_factory=list)  # class folders without an image

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:  # not the dataclass's: that one lists every path
        return one_line("ImageDataset", {"root": self.root, "format": self.format, "split": self.split,
                                         "images": len(self), "classes": len(self.classes)})

    def sample(self, n: int, seed: int = 0) -> ImageDataset:
        """A seeded, stratified subset of ``n`` images (all of them when ``n`` >= len): a quick
        look at a big folder, with every class kept in proportion."""
        n = AT_LEAST_ONE("n", n)
        if n >= len(self):
            return self
        from sklearn.model_selection import train_test_split

        idx, _ = train_test_split(np.arange(len(self)), train_size=n, random_state=seed,
                                  stratify=self._strata(min(n, len(self) - n), present_only=True))
        return self.subset(np.sort(idx))

    def subset(self, idx, split: str | None = None) -> ImageDataset:
        idx = np.asarray(idx, dtype=np.int64)
        return replace(self, paths=[self.paths[i] for i in idx], labels=self.labels[idx],
                       split=split or self.split, ignored=[], empty_classes=[])

    def train_val_split(self, val_fraction: float = 0.2, seed: int = 0,
                        names: tuple[str, str] = ("train", "val")) -> tuple[ImageDataset, ImageDataset]:
        """Seeded, stratified split (scikit-learn). ``val_fraction=0`` gives an empty val set.
        ``names``: the parts' ``split`` (e.g. ``("pool", "test")`` for a test set kept aside)."""
        n = len(self)
        if val_fraction <= 0:
            return self.subset(np.arange(n), names[0]), self.subset(np.arange(0), names[1])
        from sklearn.model_selection import train_test_split

        n_val = math.ceil(val_fraction * n)
        tr, va = train_test_split(np.arange(n), test_size=val_fraction, random_state=seed,
                                  stratify=self._strata(min(n_val, n - n_val)))
        return self.subset(np.sort(tr), names[0]), self.subset(np.sort(va), names[1])

    def _strata(self, smaller_part: int, present_only: bool = False) -> np.ndarray | None:
        """The labels to stratify a two-part split by, or None when scikit-learn would refuse:
        a class with one photo, or a part too small to hold every class. ``present_only``: count
        only the classes that have photos (a split keeps its historical rule: all of them)."""
        counts = np.bincount(self.labels, minlength=len(self.classes))
        if present_only:
            counts = counts[counts > 0]
        return self.labels if counts.min() >= 2 and smaller_part >= len(counts) else None

    def summary(self) -> dict:
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {
            "root": self.root, "format": self.format, "split": self.split, "images": len(self),
            "classes": len(self.classes), "per_class": {c: int(k) for c, k in zip(self.classes, counts)},
            **({"empty_classes": self.empty_classes} if self.empty_classes else {}),
        }


def detect_format(path: Path) -> str:
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return "csv"
    if path.is_dir():
        if (path / "images").is_dir() and (path / "annotations" / "list.txt").is_file():
            return "oxford-pets"
        return "folder"
    raise DataError(f"cannot tell the format of {path}: give a folder, an Oxford-IIIT Pet root or a CSV")


def load_dataset(
    data: str | Path, format: str = "auto", label: str = "breed", split: str | None = None
) -> ImageDataset:
    """Read a dataset description. ``split`` applies to Oxford-IIIT Pet (``trainval``, ``test``,
    or None for every listed image); for other formats only None/'all' is valid here (a run's
    own validation split is recomputed by :func:`transferlab.evaluation.evaluate`)."""
    path = Path(data)
    if not path.exists():
        raise DataError(f"data not found: {data}")
    if format not in FORMATS:
        raise DataError(f"unknown format '{format}' (choose from {', '.join(FORMATS)})")
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "folder":
        ds = _load_folder(path)
    elif fmt == "oxford-pets":
        ds = _load_oxford(path, label, split)
    else:
        ds = _load_csv(path)
    if fmt != "oxford-pets" and split not in (None, "all"):
        raise OptionError("split", f"{split} applies to Oxford-IIIT Pet data; {path} is a {fmt} dataset")
    if len(ds) == 0:
        raise DataError(f"no images found in {data}")
    if len(ds.classes) < 2:
        raise DataError(f"{data} has only {len(ds.classes)} class; need at least 2")
    return ds


def _load_folder(root: Path) -> ImageDataset:
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class subfolders (expected e.g. {root}/cat/*.jpg, {root}/dog/*.jpg)")
    paths, labels, ignored = [], [], []
    for i, c in enumerate(classes):
        for f in sorted((root / c).rglob("*"), key=_natural_key):
            if f.name.startswith(".") or not (f.is_file() or f.is_symlink()):
                continue  # a link that leads nowhere (or in a loop) is listed: decoding reports why
            if is_image_file(f):
                paths.append(str(f))
                labels.append(i)
            else:
                ignored.append(str(f))
    classes_with = sorted(set(labels))
    empty = [c for i, c in enumerate(classes) if i not in set(classes_with)]
    if empty:  # drop empty folders (the caller reports them), renumber
        keep = {old: new for new, old in enumerate(classes_with)}
        classes = [classes[i] for i in classes_with]
        labels = [keep[x] for x in labels]
    return ImageDataset(paths, np.asarray(labels, np.int64), classes, str(root), "folder", None, ignored, empty)


def _natural_key(p: Path):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


OXFORD_SPLITS = ("trainval", "test")


def _load_oxford(root: Path, label: str, split: str | None) -> ImageDataset:
    if label not in ("breed", "species"):
        raise OptionError("label", f"must be breed or species, not '{label}'")
    if split in (None, "all"):
        listfile = root / "annotations" / "list.txt"
    elif split in OXFORD_SPLITS:
        listfile = root / "annotations" / f"{split}.txt"
    else:
        raise DataError(f"Oxford-IIIT Pet splits are {', '.join(OXFORD_SPLITS)}, not '{split}'")
    if not listfile.is_file():
        raise DataError(f"missing {listfile}")
    rows = _oxford_rows(listfile)
    if label == "breed":
        breeds = {cid: b for _, cid, _, b in rows}
        classes = [breeds[c] for c in sorted(breeds)]
        index = {b: i for i, b in enumerate(classes)}
        labels = [index[b] for *_, b in rows]
    else:
        classes = ["cat", "dog"]
        labels = [s - 1 for _, _, s, _ in rows]
    paths = [str(root / "images" / f"{n}.jpg") for n, *_ in rows]
    return ImageDataset(paths, np.asarray(labels, np.int64), classes, str(root), "oxford-pets", split)


def _oxford_rows(listfile: Path) -> list[tuple[str, int, int, str]]:
    """``name class-id species breed-id`` lines -> (name, class id, species, breed name); a
    malformed line is a :class:`DataError` naming the file and its line number."""
    rows = []
    for n, line in enumerate(_read_text(listfile).split("\n"), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        where = f"{listfile}: line {n}"
        if len(parts) < 4:
            raise DataError(f"{where}: expected 'IMAGE CLASS-ID SPECIES BREED-ID', got '{line.strip()[:80]}'")
        try:
            class_id, species = int(parts[1]), int(parts[2])
        except ValueError:
            raise DataError(f"{where}: CLASS-ID and SPECIES must be integers, got '{line.strip()[:80]}'") from None
        if species not in (1, 2):
            raise DataError(f"{where}: species must be 1 (cat) or 2 (dog), got {species}")
        rows.append((parts[0], class_id, species, parts[0].rsplit("_", 1)[0]))
    return rows


def _read_text(path: Path) -> str:
    """A UTF-8 text file, with or without a byte-order mark (Excel writes one); anything else is
    a :class:`DataError` naming the line, never a silent mis-read."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line} is not UTF-8 text; save the file as UTF-8") from None


CSV_HEADERS = ("path", "file", "filename", "image")


def _csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(physical line number, fields) of the non-blank rows, header dropped. ``line_num`` counts
    the lines read so far, so it stays right across blank lines, CRLF and quoted newlines."""
    import io

    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter=delim)
    try:
        rows = [(reader.line_num, r) for r in reader if r and any(c.strip() for c in r)]
    except csv.Error as e:
        raise DataError(f"{path}: line {reader.line_num}: {e}") from None
    if rows and rows[0][1][0].strip().lower() in CSV_HEADERS:
        rows = rows[1:]
    return rows


def _load_csv(path: Path) -> ImageDataset:
    numbered = _csv_rows(path)
    for n, r in numbered:
        if len(r) < 2 or not r[0].strip() or not r[1].strip():
            raise DataError(f"{path}: line {n} is not 'path,label': '{','.join(r)[:80]}'")
    rows = [r for _, r in numbered]
    names = [r[1].strip() for r in rows]
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    base = path.parent
    paths = [str(p if (p := Path(r[0].strip())).is_absolute() else base / p) for r in rows]
    return ImageDataset(paths, np.asarray([index[n] for n in names], np.int64), classes, str(path), "csv")
