"""PostgreSQL's side of backup and restore, through its own tools (``pg_dump``, ``pg_restore``) and
psycopg 3. ``pg_dump`` writes the dump from a snapshot this module exports, in which it also reads
the photo list and the counts, so the dump and the photos copied after it agree.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

from .settings import ServeError

TIMEOUT_S = 3600


def libpq_url(db: str) -> str:
    """The URL libpq tools take (``postgresql://``), from any spelling serve accepts."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if db.startswith(prefix):
            return "postgresql://" + db[len(prefix):]
    return db


def tool(name: str) -> str:
    """``pg_dump`` / ``pg_restore``: on PATH, else the newest Debian install."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                                                   key=lambda p: int(Path(p).parts[4]), reverse=True)), None)
    if found is None:
        raise ServeError(f"{name} is not installed: PostgreSQL catalogs are backed up with PostgreSQL's own tools "
                         "(apt-get install postgresql-client)")
    return found


def _connect(db: str):
    try:
        import psycopg
    except ImportError as e:
        raise ServeError(f"PostgreSQL needs psycopg: pip install 'transferlab[serve]' ({e})") from None
    try:
        return psycopg.connect(libpq_url(db), connect_timeout=30)
    except psycopg.Error as e:
        raise ServeError(f"cannot connect to the catalog database: {str(e).splitlines()[0]}") from None


def _run(cmd: list[str]) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    if r.returncode != 0:
        raise ServeError(f"{Path(cmd[0]).name} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")


def dump(db: str, out: Path) -> tuple[list[tuple[str, str]], dict]:
    """Dump the database into ``out`` (custom format); returns the photos and counts of the same
    snapshot."""
    import psycopg

    conn = _connect(db)
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
            photos = [tuple(r) for r in conn.execute("SELECT sha256, ext FROM photos").fetchall()]
            q = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
            counts = {"pets": q("SELECT count(*) FROM pets"), "photos": len(photos),
                      "users": q("SELECT count(*) FROM users"), "schema_version": q("SELECT max(version) FROM "
                                                                                    "schema_version")}
            _run([tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges", f"--snapshot={snapshot}",
                  "--file", str(out), "--dbname", libpq_url(db)])
    finally:
        conn.close()
    return photos, counts


def check_dump(path: Path) -> None:
    """``pg_restore --list`` reads the whole table of contents: a truncated dump fails it."""
    _run([tool("pg_restore"), "--list", str(path)])


def check_empty(db: str) -> None:
    conn = _connect(db)
    try:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    finally:
        conn.close()
    if tables & {"schema_version", "pets", "photos", "users"}:
        raise ServeError("that database already holds a catalog: restore makes a new one and never overwrites one")


def restore(path: Path, db: str, missing: list[str]) -> None:
    """Load the dump in one transaction, then leave out the pets of photos deleted during the backup."""
    _run([tool("pg_restore"), "--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error",
          "--dbname", libpq_url(db), str(path)])
    if missing:
        conn = _connect(db)
        try:
            with conn.transaction():
                for sha in missing:
                    conn.execute("DELETE FROM pets WHERE photo_sha256 = %s", (sha,))
                    conn.execute("DELETE FROM photos WHERE sha256 = %s", (sha,))
        finally:
            conn.close()
