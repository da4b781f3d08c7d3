"""``fetch``: download the official dataset archives with resume, checksum and safe extraction.

torchvision's ``download_and_extract_archive`` neither resumes nor guards against path traversal
in zip files, so this small downloader is written here on urllib.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import FetchError
from ..progress import resolve


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


def fetch(name: str, dest: str | Path, mirror: str | None = None, progress=True) -> Path:
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
        archive = download(url, dest / ".downloads", md5=a.md5, size=a.size, progress=progress)
        try:
            extract(archive, dest)
        except FetchError as e:  # a refused archive must not block the next fetch
            archive.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                archive.parent.rmdir()
            raise FetchError(f"{e} (the archive was deleted)") from None
    root = dest / src.subdir if src.subdir else dest
    return root


def download(url: str, folder: Path, md5: str | None = None, size: int | None = None, progress=True) -> Path:
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
            with open(part, "ab" if have else "wb") as f, resolve(progress)(final.name, total) as advance:
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


# Unpacked size allowed: MAX_RATIO x the archive's size (JPEG archives unpack ~1:1, text ~5:1),
# at least MIN_ALLOWANCE (small archives of text), never more than MAX_UNPACKED (both official
# datasets unpack to under 1 GB). Anything beyond is refused as a possible zip bomb.
MAX_RATIO = 100
MIN_ALLOWANCE = 16 << 20
MAX_UNPACKED = 4 << 30
MAX_MEMBERS = 1_000_000


def unpack_limit(archive: Path) -> int:
    return min(MAX_UNPACKED, max(MAX_RATIO * archive.stat().st_size, MIN_ALLOWANCE))


def _too_large(archive: Path, size: int, limit: int) -> FetchError:
    return FetchError(f"{archive.name} unpacks to more than {limit:,} bytes ({size:,} so far; at most "
                      f"{MAX_RATIO}x the archive's size, {MAX_UNPACKED >> 30} GiB in all): too large, "
                      "refused as a possible zip bomb; nothing extracted")


def extract(archive: Path, dest: Path) -> None:
    """Extract tar.* or zip into ``dest``, refusing absolute paths, ``..``, links, devices and
    archives that unpack to far more than their size (counted while extracting, so a zip whose
    headers lie is caught too). Members are unpacked into a hidden folder inside ``dest`` and
    moved into place only when all of them made it: a refused archive leaves nothing behind."""
    name = archive.name.lower()
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        if name.endswith((".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")):
            _extract_tar(archive, staging)
        elif name.endswith(".zip"):
            _extract_zip(archive, staging)
        else:
            raise FetchError(f"unknown archive type: {archive.name}")
        _merge(staging, dest)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise FetchError(f"{archive.name} is not a valid archive ({e})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract_tar(archive: Path, root: Path) -> None:
    limit = unpack_limit(archive)
    with tarfile.open(archive) as tf:
        total, members = 0, tf.getmembers()  # reads (decompresses) the stream: sizes are real
        if len(members) > MAX_MEMBERS:
            raise FetchError(f"{archive.name} has {len(members):,} members: too large, refused")
        for m in members:
            if not _inside(root, m.name) or m.issym() or m.islnk() or m.isdev():
                raise FetchError(f"{archive.name}: unsafe member '{m.name}'; nothing extracted")
            total += m.size
            if total > limit:
                raise _too_large(archive, total, limit)
        tf.extractall(root, filter="data")


def _extract_zip(archive: Path, root: Path) -> None:
    limit = unpack_limit(archive)
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise FetchError(f"{archive.name} has {len(infos):,} members: too large, refused")
        for m in infos:
            if not _inside(root, m.filename) or (m.external_attr >> 16) & 0o170000 == 0o120000:
                raise FetchError(f"{archive.name}: unsafe member '{m.filename}'; nothing extracted")
        declared = sum(m.file_size for m in infos)
        if declared > limit:
            raise _too_large(archive, declared, limit)
        total = 0
        for m in infos:
            target = root / m.filename
            if m.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(target, "wb") as out:  # zipfile checks each CRC at the end
                while chunk := src.read(CHUNK):
                    total += len(chunk)
                    if total > limit:
                        raise _too_large(archive, total, limit)
                    out.write(chunk)


def _merge(src: Path, dst: Path) -> None:
    """Move the unpacked tree into ``dst``; files of an earlier fetch are replaced."""
    for entry in src.iterdir():
        target = dst / entry.name
        if entry.is_dir() and target.is_dir():
            _merge(entry, target)
        elif target.is_dir():
            raise FetchError(f"cannot unpack {entry.name}: {target} is a folder")
        else:
            os.replace(entry, target)
