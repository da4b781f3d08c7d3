"""What one `transferlab serve` process is told: the model, where the catalog lives, the limits.

Kept apart from the app so the CLI, the tests and the benchmark build the same object, and so a
bad setting (a database URL we cannot use, a limit that makes no sense) fails before the server
binds its port.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ...errors import TransferlabError
from ...options import AT_LEAST_ONE, PORT, SIMILARITY, UPLOAD_MB, Interval, OptionError, Options, Rule

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ServeError(TransferlabError):
    """The catalog cannot be opened or served as asked (bad URL, newer schema, bad limit)."""


class SettingsError(ServeError, OptionError):
    """A setting out of range: names the keyword (the CLI says its flag)."""


@dataclass
class Settings(Options):
    """Everything `create_app` needs. ``threshold=None`` means: the model's own threshold, else 0.5.

    ``duplicate_threshold`` is a cosine similarity between L2-normalised embeddings. Measured with
    efficientnet_lite0 on the 1,470 Oxford-IIIT Pet photos: the same photo re-encoded (JPEG q70)
    or cropped by 3 % a side scores >= 0.913; of the 28,478 pairs of different photos of one
    breed, the 5 above 0.90 show the same animal (two are one photo twice). Hence 0.90.
    """

    model: str
    db: str = "catalog.sqlite"
    media: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_mb: float = 10.0
    threshold: float | None = None
    duplicate_threshold: float = 0.90
    max_pixels: int = 40_000_000
    max_side: int = 20_000
    top_k: int = 3
    pending_hours: float = 24.0
    allowed_hosts: list[str] | None = None
    log_level: str = "info"
    # accounts and transport (see auth.py and the README's "On the shelter's network")
    session_hours: float = 12.0
    certfile: Path | None = None
    keyfile: Path | None = None
    trusted_proxies: list[str] | None = None  # addresses whose X-Forwarded-For/-Proto are believed

    constraints: ClassVar[dict[str, Rule]] = {
        "max_upload_mb": UPLOAD_MB, "threshold": Interval(float, 0, 1, optional=True),
        "duplicate_threshold": SIMILARITY, "port": PORT, "top_k": AT_LEAST_ONE,
        "session_hours": Interval(float, 0, 24 * 90, closed="right", unit="hours")}
    error: ClassVar[type[OptionError]] = SettingsError

    def __post_init__(self) -> None:
        self.validate()
        if (self.certfile is None) != (self.keyfile is None):
            raise ServeError("give --certfile and --keyfile together (HTTPS needs both)")
        for f in (self.certfile, self.keyfile):
            if f is not None and not Path(f).is_file():
                raise ServeError(f"no such file: {f}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def db_url(self) -> str:
        """A SQLAlchemy URL: a plain path means SQLite; postgres URLs get the psycopg (v3) driver."""
        db = str(self.db)
        for prefix in ("postgresql://", "postgres://"):
            if db.startswith(prefix):
                return "postgresql+psycopg://" + db[len(prefix):]
        if "://" in db:
            return db
        return "sqlite:///" + str(Path(db).expanduser().resolve())

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")

    @property
    def media_dir(self) -> Path:
        """Photos live next to a SQLite file unless told otherwise. With a server database several
        processes must agree on one folder, so it has to be named."""
        if self.media is not None:
            return Path(self.media).expanduser().resolve()
        if not self.is_sqlite:
            raise ServeError("with a database URL, give --media DIR (a folder every serve process shares)")
        path = self.db_url.removeprefix("sqlite:///")
        if path in ("", ":memory:"):
            raise ServeError("an in-memory SQLite catalog needs --media DIR")
        return Path(path).parent / "media"

    @property
    def trusted_hosts(self) -> list[str]:
        """Host headers we answer. On loopback only loopback names, so a web page elsewhere cannot
        reach the catalog through DNS rebinding; bound wider, the operator decides."""
        if self.allowed_hosts is not None:
            return self.allowed_hosts
        if self.host in LOOPBACK and not self.trusted_proxies:
            return ["127.0.0.1", "localhost", "[::1]", "::1", "testserver"]
        return ["*"]
