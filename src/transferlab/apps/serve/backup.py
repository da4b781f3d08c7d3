"""`transferlab catalog backup` and `catalog restore`: a consistent copy of a catalog (database and
photos) taken while `serve` runs, and its restoration into a new catalog after an integrity check.

Consistency: the database is copied as one snapshot (SQLite's online backup API in a single step,
which holds one read transaction while the server keeps writing, WAL readers do not block
writers; for PostgreSQL, ``pg_dump --snapshot`` of an exported snapshot in which the photo list is
read too). Then the photos that snapshot names are copied; they are stored by content hash and
never change, so a copy taken later is the same file. A photo whose file is gone by then was
being deleted while the backup ran: its pets are left out of the backup (SQLite) or of the
restore (PostgreSQL), and the manifest says so. Every pet whose save was acknowledged before the
backup began is in it.

A backup folder: ``manifest.json`` (counts, the database file's SHA-256), ``catalog.sqlite`` or
``catalog.pgdump``, ``media/`` laid out as the catalog's. It is built under a temporary name and
renamed when complete, so a folder with the final name is never half a backup.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ... import __version__
from ..._io import atomic_write, fsync_dir, fsync_file
from . import pgtools
from .schema import SCHEMA_VERSION
from .settings import ServeError, Settings
from .storage import SHA_RE, MediaStore

FORMAT = "transferlab-catalog-backup"
MANIFEST = "manifest.json"
SQLITE_FILE, PG_FILE = "catalog.sqlite", "catalog.pgdump"
EXT_RE = re.compile(r"^\.[a-z]{3,4}$")


@dataclass
class BackupResult:
    path: Path
    pets: int
    photos: int
    users: int
    notes: list[str] = field(default_factory=list)


def backup(db: str, out: str | os.PathLike, media: str | os.PathLike | None = None) -> BackupResult:
    """Back up the catalog at ``db`` (and its photo folder) into the new folder ``out``."""
    settings = Settings(model="", db=db, media=Path(media) if media else None)
    out = Path(out).expanduser().resolve()
    media_dir = settings.media_dir
    if out.exists():
        raise ServeError(f"{out} already exists: give a new folder (a backup never replaces anything)")
    if out.is_relative_to(media_dir):
        raise ServeError(f"{out} is inside the photo folder {media_dir}: put the backup elsewhere")
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        if settings.is_sqlite:
            photos = _sqlite_snapshot(_sqlite_path(settings), tmp / SQLITE_FILE)
        else:
            photos, counts = pgtools.dump(str(db), tmp / PG_FILE)
        missing = _copy_photos(media_dir, tmp / "media", photos)
        notes = [f"{len(missing)} photo(s) were deleted while the backup ran; their pets are left out"
                 ] if missing else []
        if settings.is_sqlite:
            if missing:
                _drop_photos(tmp / SQLITE_FILE, missing)
            counts = _counts_sqlite(tmp / SQLITE_FILE)
        manifest = _manifest(tmp, settings, counts, photos, missing)
        atomic_write(tmp / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=2) + "\n"))
        fsync_dir(tmp)
        os.rename(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    c = manifest["counts"]
    return BackupResult(out, c["pets"], c["photos"], c["users"], notes)


def _sqlite_path(settings: Settings) -> Path:
    path = Path(settings.db_url.removeprefix("sqlite:///"))
    if not path.is_file():
        raise ServeError(f"no catalog at {path}")
    return path


def _sqlite_snapshot(src_path: Path, dst_path: Path) -> list[tuple[str, str]]:
    """Copy the live database in one step of the online backup API; returns its photos."""
    src = sqlite3.connect(src_path, timeout=30)
    try:
        dst = sqlite3.connect(dst_path)
        try:
            src.backup(dst)  # pages=-1: everything in one step, i.e. one consistent snapshot
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            photos = dst.execute("SELECT sha256, ext FROM photos").fetchall()
        finally:
            dst.close()
    except sqlite3.DatabaseError as e:
        raise ServeError(f"cannot back up {src_path}: {e}") from None
    finally:
        src.close()
    fsync_file(dst_path)
    return photos


def _copy_photos(media_dir: Path, dest: Path, photos: list[tuple[str, str]]) -> list[str]:
    """Copy each photo and its thumbnail, checking the content against its hash name. Returns the
    hashes whose file is gone (deleted since the snapshot). Reads only: nothing is created in
    ``media_dir``."""
    missing = []
    for sha, ext in photos:
        rel = _photo_rel(sha, ext)
        try:
            data = (media_dir / rel).read_bytes()
        except FileNotFoundError:
            missing.append(sha)
            continue
        if hashlib.sha256(data).hexdigest() != sha:
            raise ServeError(f"photo {sha[:12]}… in {media_dir} is damaged (its content does not match its name)")
        atomic_write(dest / rel, lambda p, d=data: p.write_bytes(d))
        thumb = media_dir / "thumbs" / f"{sha}.jpg"
        if thumb.is_file():
            atomic_write(dest / "thumbs" / thumb.name, lambda p, t=thumb: shutil.copyfile(t, p))
    return missing


def _photo_rel(sha: str, ext: str) -> str:
    """Where MediaStore keeps a photo, relative to its root; refuses names that are not hashes."""
    if not SHA_RE.match(sha) or not EXT_RE.match(ext):
        raise ServeError(f"the catalog names a photo {sha[:20]!r}{ext[:8]!r} that is not a content hash")
    return f"{sha[:2]}/{sha}{ext}"


def _drop_photos(db_file: Path, shas: list[str]) -> None:
    con = sqlite3.connect(db_file)
    try:
        with con:
            for sha in shas:
                con.execute("DELETE FROM pets WHERE photo_sha256 = ?", (sha,))
                con.execute("DELETE FROM photos WHERE sha256 = ?", (sha,))
    finally:
        con.close()
    fsync_file(db_file)


def _counts_sqlite(db_file: Path, immutable: bool = False) -> dict:
    uri = f"file:{db_file}?mode=ro" + ("&immutable=1" if immutable else "")
    con = sqlite3.connect(uri, uri=True)
    try:
        q = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
        return {"pets": q("SELECT count(*) FROM pets"), "photos": q("SELECT count(*) FROM photos"),
                "users": q("SELECT count(*) FROM users") if _has_table(con, "users") else 0,
                "schema_version": q("SELECT max(version) FROM schema_version")}
    finally:
        con.close()


def _has_table(con: sqlite3.Connection, name: str) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def _manifest(folder: Path, settings: Settings, counts: dict, photos: list, missing: list[str]) -> dict:
    db_file = folder / (SQLITE_FILE if settings.is_sqlite else PG_FILE)
    counts = dict(counts)
    files = sum(1 for p in (folder / "media").rglob("*") if p.is_file())
    m = {"format": FORMAT, "version": 1, "created_at": datetime.now(timezone.utc).isoformat(),
         "transferlab": __version__, "dialect": "sqlite" if settings.is_sqlite else "postgresql",
         "schema_version": counts.pop("schema_version"), "counts": counts,
         "database": {"file": db_file.name, "sha256": _sha256_file(db_file)}, "files": files,
         "missing_photos": missing}
    if not settings.is_sqlite:  # a dump cannot be read without restoring it: list its photos here
        m["photo_list"] = [list(p) for p in photos]
    return m


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# restore
# ------------------------------------------------------------------------------------------------
def verify(folder: str | os.PathLike) -> dict:
    """Check a backup folder without changing anything: the manifest, the database file's hash and
    (SQLite) ``PRAGMA integrity_check``, every photo row's file and its content hash, the counts.
    Returns the manifest; raises :class:`ServeError` naming the first problem."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise ServeError(f"{folder} is not a catalog backup (no readable {MANIFEST}: {e})") from None
    if manifest.get("format") != FORMAT:
        raise ServeError(f"{folder} is not a transferlab catalog backup")
    if manifest.get("schema_version", 0) > SCHEMA_VERSION:
        raise ServeError(f"the backup has schema version {manifest['schema_version']}, newer than this "
                         f"transferlab understands ({SCHEMA_VERSION}): upgrade transferlab")
    db_file = folder / manifest["database"]["file"]
    if not db_file.is_file() or _sha256_file(db_file) != manifest["database"]["sha256"]:
        raise ServeError(f"{db_file} is missing or damaged (its SHA-256 differs from the manifest's)")
    if manifest["dialect"] == "sqlite":
        photos = _check_sqlite(db_file, manifest)
    else:
        pgtools.check_dump(db_file)
        photos = [tuple(p) for p in manifest.get("photo_list", [])]
    _check_photos(folder / "media", photos, set(manifest.get("missing_photos", [])))
    return manifest


def _check_sqlite(db_file: Path, manifest: dict) -> list[tuple[str, str]]:
    con = sqlite3.connect(f"file:{db_file}?mode=ro&immutable=1", uri=True)
    try:
        ok = con.execute("PRAGMA integrity_check").fetchall()
        fk = con.execute("PRAGMA foreign_key_check").fetchall()
        photos = con.execute("SELECT sha256, ext FROM photos").fetchall()
    except sqlite3.DatabaseError as e:
        raise ServeError(f"{db_file} is not a readable SQLite catalog: {e}") from None
    finally:
        con.close()
    if ok != [("ok",)] or fk:
        raise ServeError(f"{db_file} fails SQLite's integrity check: {(ok + fk)[:3]}")
    counts = _counts_sqlite(db_file, immutable=True)
    for k, v in manifest["counts"].items():
        if counts.get(k) != v:
            raise ServeError(f"{db_file} has {counts.get(k)} {k}, the manifest says {v}")
    return photos


def _check_photos(media: Path, photos: list[tuple[str, str]], missing: set[str]) -> None:
    for sha, ext in photos:
        if sha in missing:
            continue
        path = media / _photo_rel(sha, ext)
        if not path.is_file() or _sha256_file(path) != sha:
            raise ServeError(f"photo {path.name} is missing from the backup or damaged")


def restore(folder: str | os.PathLike, db: str, media: str | os.PathLike | None = None) -> BackupResult:
    """Restore the backup in ``folder`` as a new catalog at ``db`` (never over an existing one):
    check it, copy the photos, then the database, then open it as `serve` would."""
    folder = Path(folder).expanduser().resolve()
    manifest = verify(folder)
    settings = Settings(model="", db=db, media=Path(media) if media else None)
    media_dir = settings.media_dir
    if settings.is_sqlite != (manifest["dialect"] == "sqlite"):
        raise ServeError(f"this is a {manifest['dialect']} backup: restore it into a "
                         f"{'SQLite file' if manifest['dialect'] == 'sqlite' else 'postgresql:// database'}")
    target = Path(settings.db_url.removeprefix("sqlite:///")) if settings.is_sqlite else None
    if target is not None and any(Path(f"{target}{s}").exists() for s in ("", "-wal", "-shm", "-journal")):
        raise ServeError(f"{target} already exists: restore makes a new catalog and never overwrites one")
    if target is None:
        pgtools.check_empty(str(db))
    if media_dir.exists() and any(media_dir.iterdir()):
        raise ServeError(f"the photo folder {media_dir} is not empty: restore into a new place")
    try:  # photos first: the catalog never exists without them
        for src in sorted(p for p in (folder / "media").rglob("*") if p.is_file()):
            atomic_write(media_dir / src.relative_to(folder / "media"), lambda p, f=src: shutil.copyfile(f, p))
        if target is not None:
            _place_file(folder / SQLITE_FILE, target)
        else:
            pgtools.restore(folder / PG_FILE, str(db), manifest.get("missing_photos", []))
    except BaseException:
        shutil.rmtree(media_dir, ignore_errors=True)  # it was empty or absent: nothing of the user's goes
        raise
    _open_check(settings)
    c = manifest["counts"]
    return BackupResult(target or Path(settings.db), c["pets"], c["photos"], c["users"])


def _place_file(src: Path, target: Path) -> None:
    """Copy ``src`` to ``target`` durably, failing (not replacing) if ``target`` appeared meanwhile."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.restore-{uuid.uuid4().hex[:8]}"
    shutil.copyfile(src, tmp)
    fsync_file(tmp)
    try:
        os.link(tmp, target)  # unlike rename, never replaces an existing file
    except FileExistsError:
        raise ServeError(f"{target} appeared while restoring: left it alone") from None
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(target.parent)


def _open_check(settings: Settings) -> None:
    """Open the restored catalog as `serve` would (migrating an older schema) and check that every
    pet's photo is there."""
    from .db import Catalog

    cat = Catalog(settings.db_url, MediaStore(settings.media_dir))  # opening migrates an older schema
    try:
        for pet in cat.list_pets():
            if not cat.media.exists(pet.sha256, pet.ext):
                raise ServeError(f"restored pet {pet.id} has no photo: the restore is incomplete")
    finally:
        cat.close()
