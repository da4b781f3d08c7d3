"""The catalog database: pets, their photos and the photos' embeddings, through SQLAlchemy 2.

SQLite by default (one file next to the photos) and PostgreSQL for several serve processes. The
rules that keep either one consistent:

- every write is one transaction; on SQLite it starts with ``BEGIN IMMEDIATE`` so concurrent
  writers queue on the lock (``busy_timeout``) instead of failing half-way with "database is
  locked"; on PostgreSQL the photo row is locked (``SELECT ... FOR UPDATE``) by whoever adds or
  removes a pet of that photo, and files are written or removed while that lock is held, so a
  photo file never disappears under a pet that was just saved;
- the schema is versioned (``schema_version``): a catalog written by a newer transferlab is
  refused rather than misread;
- every pet created, edited or deleted gets its audit line (:mod:`.schema`) in the same
  transaction;
- embeddings are stored (float32 bytes) with the key of the model that made them, so duplicate
  search needs no recomputation and never compares vectors from two different networks.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
from sqlalchemy import (
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    create_engine,
    event,
    exc,
    func,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Mapped, Session, defer, mapped_column

from .schema import SCHEMA_VERSION, Base, audit_row, init_schema  # noqa: F401 (SCHEMA_VERSION: re-exported)
from .settings import ServeError
from .storage import MediaStore, Photo


class PhotoRow(Base):
    """One stored photo (by content hash). A photo with no pet is a pending upload."""

    __tablename__ = "photos"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    ext: Mapped[str] = mapped_column(String(8))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    embed_key: Mapped[str] = mapped_column(String(300), index=True)
    predicted: Mapped[str] = mapped_column(String(300))
    score: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PetRow(Base):
    __tablename__ = "pets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    breed: Mapped[str] = mapped_column(String(300), index=True)
    photo_sha256: Mapped[str] = mapped_column(ForeignKey("photos.sha256", ondelete="RESTRICT"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass
class Pet:
    """A catalog entry as the app shows it (a plain value, safe outside the session)."""

    id: int
    name: str
    breed: str
    sha256: str
    ext: str
    predicted: str
    score: float
    created_at: datetime
    updated_at: datetime


@dataclass
class PhotoInfo:
    """What the model said about a photo, stored with it."""

    embedding: np.ndarray
    embed_key: str
    predicted: str
    score: float


@dataclass
class Duplicate:
    pet: Pet
    similarity: float


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _utc(t: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def public_url(url: str) -> str:
    """The URL for messages: never print a password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "<unparseable URL>"


def make_engine(url: str) -> Engine:
    """An engine whose SQLite connections run in WAL mode with foreign keys on, and whose
    ``write=True`` connections begin with BEGIN IMMEDIATE (see the module docstring)."""
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            _sqlite_events(engine)
        else:
            engine = create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)
    except (exc.ArgumentError, exc.NoSuchModuleError, ImportError) as e:
        raise ServeError(f"cannot use database {public_url(url)}: {e}") from None
    return engine


def _sqlite_events(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (pysqlite's is deferred)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")


def _pets_query():
    """Pets with their photo rows, without the embedding blobs (listing needs none of them)."""
    return select(PetRow, PhotoRow).join(PhotoRow).options(defer(PhotoRow.embedding))


def _pet(row: PetRow, photo: PhotoRow) -> Pet:
    return Pet(row.id, row.name, row.breed, photo.sha256, photo.ext, photo.predicted, photo.score,
               _utc(row.created_at), _utc(row.updated_at))


class Catalog:
    """The catalog's operations, each one transaction. Files in ``media`` are created and removed
    under the same locks as the rows that point at them."""

    def __init__(self, url: str, media: MediaStore):
        self.url = url
        self.media = media
        self.engine = make_engine(url)
        self._writer = self.engine.execution_options(write=True)
        self._emb_cache: dict[tuple[str, str], np.ndarray] = {}
        self._cache_lock = threading.Lock()
        try:
            init_schema(self.engine)
        except exc.SQLAlchemyError as e:
            self.engine.dispose()
            raise ServeError(f"cannot open catalog {public_url(url)}: {str(e.orig or e).splitlines()[0]}") from None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _write(self):
        with Session(self._writer, expire_on_commit=False) as s, s.begin():
            yield s

    @contextmanager
    def _read(self):
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            yield s

    def _lock_photo(self, s: Session, sha: str) -> PhotoRow | None:
        return s.scalars(select(PhotoRow).where(PhotoRow.sha256 == sha).with_for_update()).first()

    def register_photo(self, photo: Photo, info: PhotoInfo) -> None:
        """Store an analysed upload (pending until a pet uses it); refresh its pending clock.
        Two processes adding one new photo at once: the loser's insert fails, and its retry
        finds the row."""
        for attempt in range(3):
            try:
                return self._register(photo, info)
            except exc.IntegrityError:
                if attempt == 2:
                    raise

    def _register(self, photo: Photo, info: PhotoInfo) -> None:
        with self._write() as s:
            row = self._lock_photo(s, photo.sha256)
            if row is None:
                s.add(PhotoRow(sha256=photo.sha256, ext=photo.ext, width=photo.width, height=photo.height,
                               size_bytes=len(photo.data), embedding=_to_bytes(info.embedding),
                               embed_key=info.embed_key, predicted=info.predicted, score=float(info.score),
                               created_at=utcnow()))
                s.flush()  # a concurrent insert of the same photo fails here, before any file is written
            else:
                row.created_at = utcnow()
            self.media.ensure(photo)

    def add_pet(self, sha: str, name: str, breed: str) -> Pet | None:
        """A new pet for a stored photo; None when that photo is gone (pending too long, deleted)."""
        with self._write() as s:
            photo = self._lock_photo(s, sha)
            if photo is None or not self.media.exists(sha, photo.ext):
                return None
            now = utcnow()
            row = PetRow(name=name, breed=breed, photo_sha256=sha, created_at=now, updated_at=now)
            s.add(row)
            s.flush()
            s.add(audit_row("pet.create", f"pet {row.id}", f"{name} ({breed})"))
            return _pet(row, photo)

    def get_pet(self, pet_id: int) -> Pet | None:
        with self._read() as s:
            hit = s.execute(_pets_query().where(PetRow.id == pet_id)).first()
            return _pet(*hit) if hit else None

    def list_pets(self, breed: str | None = None, limit: int | None = None, offset: int = 0) -> list[Pet]:
        q = _pets_query().order_by(PetRow.created_at.desc(), PetRow.id.desc())
        if breed:
            q = q.where(PetRow.breed == breed)
        with self._read() as s:
            return [_pet(*r) for r in s.execute(q.offset(offset).limit(limit)).all()]

    def count_pets(self, breed: str | None = None) -> int:
        q = select(func.count(PetRow.id))
        with self._read() as s:
            return s.scalar(q.where(PetRow.breed == breed) if breed else q) or 0

    def breeds(self) -> list[tuple[str, int]]:
        """Breeds present in the catalog, with counts (for the filter)."""
        q = select(PetRow.breed, func.count(PetRow.id)).group_by(PetRow.breed).order_by(PetRow.breed)
        with self._read() as s:
            return [(b, n) for b, n in s.execute(q).all()]

    def update_pet(self, pet_id: int, name: str | None = None, breed: str | None = None) -> Pet | None:
        with self._write() as s:
            row = s.scalars(select(PetRow).where(PetRow.id == pet_id).with_for_update()).first()
            if row is None:
                return None
            changes = [f"{k}: {old} → {new}" for k, old, new in (("name", row.name, name), ("breed", row.breed, breed))
                       if new is not None and new != old]
            if name is not None:
                row.name = name
            if breed is not None:
                row.breed = breed
            row.updated_at = utcnow()
            s.add(audit_row("pet.edit", f"pet {row.id}", "; ".join(changes) or "no change"))
            s.flush()
            return _pet(row, s.get(PhotoRow, row.photo_sha256))

    def delete_pet(self, pet_id: int) -> bool:
        """Delete a pet; its photo goes too unless another pet uses it."""
        with self._write() as s:
            row = s.get(PetRow, pet_id, with_for_update=True)
            if row is None:
                return False
            sha = row.photo_sha256
            s.add(audit_row("pet.delete", f"pet {row.id}", f"{row.name} ({row.breed})"))
            s.delete(row)
            s.flush()
            photo = self._lock_photo(s, sha)
            if photo is not None and not s.scalar(select(func.count(PetRow.id)).where(PetRow.photo_sha256 == sha)):
                self._drop_photo(s, photo)
            return True

    def _drop_photo(self, s: Session, photo: PhotoRow) -> None:
        sha, ext = photo.sha256, photo.ext
        s.delete(photo)
        s.flush()
        self.media.remove(sha, ext)  # inside the transaction: nobody can re-add the photo meanwhile

    def purge_pending(self, older_than: timedelta) -> int:
        """Remove uploads nobody saved as a pet within ``older_than``."""
        cutoff = utcnow() - older_than
        unused = ~select(PetRow.id).where(PetRow.photo_sha256 == PhotoRow.sha256).exists()
        with self._write() as s:
            rows = s.scalars(select(PhotoRow).where(PhotoRow.created_at < cutoff, unused).with_for_update()).all()
            for photo in rows:
                self._drop_photo(s, photo)
            return len(rows)

    def photo_ext(self, sha: str) -> str | None:
        with self._read() as s:
            return s.scalar(select(PhotoRow.ext).where(PhotoRow.sha256 == sha))

    def predicted(self, sha: str) -> str | None:
        """The model's top guess stored with a photo (None if there is no such photo)."""
        with self._read() as s:
            return s.scalar(select(PhotoRow.predicted).where(PhotoRow.sha256 == sha))

    def stale_photos(self, embed_key: str) -> list[tuple[str, str]]:
        """Photos whose embeddings came from another model (a new model was served)."""
        with self._read() as s:
            return [tuple(r) for r in s.execute(select(PhotoRow.sha256, PhotoRow.ext)
                                                .where(PhotoRow.embed_key != embed_key)).all()]

    def set_embedding(self, sha: str, embedding: np.ndarray, embed_key: str) -> None:
        with self._write() as s:
            row = self._lock_photo(s, sha)
            if row is not None:
                row.embedding, row.embed_key = _to_bytes(embedding), embed_key

    def duplicates(self, embedding: np.ndarray, embed_key: str, threshold: float, limit: int = 5) -> list[Duplicate]:
        """Pets whose photo is at least ``threshold`` cosine-similar to ``embedding``, closest first."""
        with self._read() as s:
            rows = s.execute(_pets_query().where(PhotoRow.embed_key == embed_key)).all()
            if not rows:
                return []
            matrix = self._embeddings(s, [p.sha256 for _, p in rows], embed_key)
        sims = matrix @ np.asarray(embedding, np.float32)
        order = [i for i in np.argsort(-sims, kind="stable") if sims[i] >= threshold][:limit]
        return [Duplicate(_pet(*rows[i]), float(sims[i])) for i in order]

    def _embeddings(self, s: Session, shas: list[str], key: str) -> np.ndarray:
        """Stored embeddings as one matrix; each is read from the database once per process
        (a photo's embedding under one model key never changes)."""
        with self._cache_lock:
            missing = sorted({h for h in shas if (h, key) not in self._emb_cache})
        for i in range(0, len(missing), 500):
            chunk = missing[i:i + 500]
            got = s.execute(select(PhotoRow.sha256, PhotoRow.embedding).where(PhotoRow.sha256.in_(chunk))).all()
            with self._cache_lock:
                self._emb_cache.update({(h, key): _from_bytes(b) for h, b in got})
        with self._cache_lock:
            return np.stack([self._emb_cache[(h, key)] for h in shas])


def _to_bytes(v: np.ndarray) -> bytes:
    return np.asarray(v, dtype="<f4").ravel().tobytes()


def _from_bytes(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<f4")

