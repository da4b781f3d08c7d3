"""``fetch``: download the official dataset archives with resume, checksum and safe extraction.

torchvision's ``download_and_extract_archive`` neither resumes nor guards against path traversal
in zip files, so this small downloader is written here on urllib.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from . import progress as _progress
from .errors import FetchError


@dataclass(frozen=True)
class Archive:
    url: str
    md5: str | None = None  # None: integrity comes from the archive's own CRCs
    size: int | None = None


@dataclass(frozen=True)
class Source:
    name: str
    archives: tuple[Archive, ...]
    subdir: str  # the dataset root inside DIR after extraction ("" = DIR itself)
    citation: str


SOURCES = {
    "oxford-pets": Source(
        "oxford-pets",
        (
            Archive("https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
                    "5c4f3ee8e5d25df40f4fd59a7f44e54c"),
            Archive("https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",
                    "95a8c909bbe2e81eed6a22bccdf3f68f"),
        ),
        "",
        "Parkhi, Vedaldi, Zisserman, Jawahar: Cats and Dogs, CVPR 2012 (CC BY-SA 4.0)",
    ),
    "petimages": Source(
        "petimages",
        (Archive("https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/"
                 "kagglecatsanddogs_5340.zip"),),
        "PetImages",
        "Microsoft Research Asirra cats and dogs (Kaggle dogs-vs-cats)",
    ),
}

CHUNK = 1 << 16
TIMEOUT = 30


def fetch(name: str, dest: str | Path, mirror: str | None = None) -> Path:
    """Download and extract dataset ``name`` into ``dest``; returns the dataset root to train on.

    ``mirror``: base URL that replaces each archive's directory (for a local copy or a test server).
    Partial downloads in ``dest/.downloads`` are resumed with an HTTP Range request.
    """
    if name not in SOURCES:
        raise FetchError(f"unknown dataset '{name}' (choose from {', '.join(SOURCES)})")
    src = SOURCES[name]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for a in src.archives:
        url = f"{mirror.rstrip('/')}/{a.url.rsplit('/', 1)[1]}" if mirror else a.url
        archive = download(url, dest / ".downloads", md5=a.md5, size=a.size)
        extract(archive, dest)
    root = dest / src.subdir if src.subdir else dest
    return root


def download(url: str, folder: Path, md5: str | None = None, size: int | None = None) -> Path:
    """Resumable download to ``folder/<name>``; the final name appears only once complete and checked."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / url.rsplit("/", 1)[1]
    if final.exists() and (md5 is None or _md5(final) == md5):
        return final
    part = final.with_name(final.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "transferlab"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # already complete
            resp = None
        else:
            raise FetchError(f"download failed: {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise FetchError(f"cannot download {url} ({reason}); are you offline? "
                         "Download the archive by hand and pass --mirror file-server URL, or use local data") from None
    if resp is not None:
        with resp:
            if have and resp.status != 206:  # server ignored Range: start again
                have = 0
            length = resp.headers.get("Content-Length")
            total = (int(length) + have) if length else size
            with open(part, "ab" if have else "wb") as f, _progress.bar(final.name, total) as advance:
                advance(have)
                try:
                    while chunk := resp.read(CHUNK):
                        f.write(chunk)
                        advance(len(chunk))
                except (OSError, TimeoutError) as e:
                    raise FetchError(f"download of {url} interrupted ({e}); run fetch again to resume") from None
    got = part.stat().st_size
    expected = size
    if expected is not None and got != expected:
        raise FetchError(f"{final.name}: got {got} bytes, expected {expected}; run fetch again to resume")
    if md5 is not None and (digest := _md5(part)) != md5:
        part.unlink()
        raise FetchError(f"{final.name}: checksum mismatch (md5 {digest}, expected {md5}); removed, try again")
    os.replace(part, final)
    return final


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _inside(root: Path, member: str) -> bool:
    target = (root / member).resolve()
    return target == root.resolve() or root.resolve() in target.parents


def extract(archive: Path, dest: Path) -> None:
    """Extract tar.* or zip into ``dest``, refusing absolute paths, ``..``, links and devices."""
    name = archive.name.lower()
    try:
        if name.endswith((".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")):
            with tarfile.open(archive) as tf:
                for m in tf.getmembers():
                    if not _inside(dest, m.name) or m.issym() or m.islnk() or m.isdev():
                        raise FetchError(f"{archive.name}: unsafe member '{m.name}'; nothing extracted")
                tf.extractall(dest, filter="data")
        elif name.endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for m in zf.infolist():
                    if not _inside(dest, m.filename) or (m.external_attr >> 16) & 0o170000 == 0o120000:
                        raise FetchError(f"{archive.name}: unsafe member '{m.filename}'; nothing extracted")
                bad = zf.testzip()
                if bad:
                    raise FetchError(f"{archive.name}: corrupt member {bad}; delete it and fetch again")
                for m in zf.infolist():
                    target = dest / m.filename
                    if m.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(m) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
        else:
            raise FetchError(f"unknown archive type: {archive.name}")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
        raise FetchError(f"{archive.name} is not a valid archive ({e}); delete it and fetch again") from None
