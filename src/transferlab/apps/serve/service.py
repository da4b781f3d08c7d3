"""What the pages and the JSON API both do: analyse an upload, save, edit, delete, export.

One place for the rules (name and breed checks, duplicate search, when pending uploads expire),
so the HTML forms and the API cannot drift apart.
"""

from __future__ import annotations

import csv
import io
import logging
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

from ...errors import TransferlabError
from .db import Catalog, Duplicate, Pet, PhotoInfo, utcnow
from .model import Analysis, ModelService
from .settings import Settings
from .storage import SHA_RE, Limits, MediaStore, Photo, UploadRejected, decode_upload

log = logging.getLogger("transferlab.serve")
MAX_NAME = 100
PURGE_EVERY_S = 600.0


class InputError(Exception):
    """A request we refuse; ``status`` is the HTTP code (the message is shown as is)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class UploadResult:
    photo: Photo
    analysis: Analysis
    duplicates: list[Duplicate]


class Services:
    """The catalog, its media folder and the model, as one object the routes share."""

    def __init__(self, settings: Settings, predictor=None):
        """Opens the catalog before loading the model (``predictor=None``), so a bad --db or
        --media fails in a moment rather than after the network has loaded."""
        from .model import load_model

        self.settings = settings
        self.media = MediaStore(settings.media_dir)
        self.catalog = Catalog(settings.db_url, self.media)
        try:
            self.model = ModelService(predictor if predictor is not None else load_model(settings.model),
                                      settings.threshold, settings.top_k)
        except BaseException:
            self.catalog.close()
            raise
        self.limits = Limits(settings.max_upload_bytes, settings.max_pixels, settings.max_side)
        self._last_purge = 0.0

    def startup(self) -> None:
        """Expire old pending uploads and re-embed photos a previous model embedded."""
        self.purge()
        refresh_embeddings(self)

    def close(self) -> None:
        self.catalog.close()

    def purge(self) -> None:
        self._last_purge = time.monotonic()
        n = self.catalog.purge_pending(timedelta(hours=self.settings.pending_hours))
        if n:
            log.info("removed %d upload(s) never saved within %g h", n, self.settings.pending_hours)

    def analyze_upload(self, data: bytes, heatmap: bool = True) -> UploadResult:
        """Check, analyse, and keep the photo as a pending upload (nothing is stored when the
        photo is refused or the model cannot read it)."""
        photo = decode_upload(data, self.limits)
        try:
            analysis = self.model.analyze(photo.image, heatmap=heatmap)
        except TransferlabError as e:
            raise InputError(400, f"the model cannot read this image: {e}") from None
        dups = self.catalog.duplicates(analysis.embedding, self.model.embed_key, self.settings.duplicate_threshold)
        label, score = analysis.top[0]
        self.catalog.register_photo(photo, PhotoInfo(analysis.embedding, self.model.embed_key, label, score))
        if time.monotonic() - self._last_purge > PURGE_EVERY_S:
            self.purge()
        return UploadResult(photo, analysis, dups)

    def save(self, sha: str, name: str, breed: str) -> Pet:
        pet = self.catalog.add_pet(_check_sha(sha), clean_name(name), self.check_breed(breed))
        if pet is None:
            raise InputError(409, "that upload has expired or was deleted: upload the photo again")
        return pet

    def update(self, pet_id: int, name: str | None, breed: str | None) -> Pet:
        current = self.get(pet_id)
        name = clean_name(name) if name is not None else None
        if breed is not None and breed != current.breed:
            breed = self.check_breed(breed)
        pet = self.catalog.update_pet(pet_id, name, breed)
        if pet is None:
            raise InputError(404, f"no pet with id {pet_id}")
        return pet

    def get(self, pet_id: int) -> Pet:
        pet = self.catalog.get_pet(pet_id)
        if pet is None:
            raise InputError(404, f"no pet with id {pet_id}")
        return pet

    def delete(self, pet_id: int) -> None:
        if not self.catalog.delete_pet(pet_id):
            raise InputError(404, f"no pet with id {pet_id}")

    def check_breed(self, breed: str) -> str:
        breed = (breed or "").strip()
        if breed not in self.model.classes_set:
            raise InputError(422, f"unknown breed '{breed[:80]}': choose one of the model's classes")
        return breed

    def csv_text(self, breed: str | None = None) -> str:
        """``path,label`` rows with absolute photo paths: what `transferlab train` reads."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "label"])
        for pet in self.catalog.list_pets(breed or None):
            w.writerow([str(self.media.photo_path(pet.sha256, pet.ext)), pet.breed])
        return buf.getvalue()


def clean_name(name: str | None) -> str:
    """A pet's name: trimmed, inner whitespace collapsed, no control characters, 1-100 chars."""
    name = " ".join((name or "").split())
    if not name:
        raise InputError(422, "give the pet a name")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise InputError(422, "the name contains control characters")
    if len(name) > MAX_NAME:
        raise InputError(422, f"the name is longer than {MAX_NAME} characters")
    return name


def _check_sha(sha: str) -> str:
    if not SHA_RE.match(sha or ""):
        raise InputError(422, "photo must be the sha256 of an upload (from the prediction)")
    return sha


def refresh_embeddings(svc: Services, batch: int = 16) -> int:
    """Photos embedded by another model get this model's embeddings, from the stored files, so
    duplicate search keeps working after the served model changes."""
    stale = svc.catalog.stale_photos(svc.model.embed_key)
    done = 0
    for i in range(0, len(stale), batch):
        loaded = [(sha, im) for sha, ext in stale[i:i + batch] if (im := _stored_image(svc, sha, ext)) is not None]
        if loaded:
            for (sha, _), vec in zip(loaded, svc.model.embed([im for _, im in loaded])):
                svc.catalog.set_embedding(sha, vec, svc.model.embed_key)
            done += len(loaded)
    if stale:
        log.info("re-embedded %d of %d photo(s) for the served model", done, len(stale))
    return done


def _stored_image(svc: Services, sha: str, ext: str):
    """A stored photo decoded as at upload, or None (with a warning) if it went missing."""
    try:
        return decode_upload(svc.media.photo_path(sha, ext).read_bytes(), svc.limits).image
    except (OSError, UploadRejected) as e:
        log.warning("cannot re-embed photo %s: %s", sha[:12], e)
        return None


def ago(t: datetime, now: datetime | None = None) -> str:
    """'3 days ago': how a person says when a pet was added."""
    secs = max(0, int(((now or utcnow()) - t).total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if secs >= size:
            n = secs // size
            return "yesterday" if (unit == "day" and n == 1) else f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"
