"""When the machine, not the request, fails: a full disk (or a file-size or quota limit) while a
photo or a row is written gets 507 with a sentence, in JSON under /api and as the upload page
elsewhere, instead of a bare 500.

Nothing half-written is left behind by then: photos and thumbnails are written to a temporary
file and renamed (:func:`transferlab._io.atomic_write` removes the temporary file when a write
fails), the photo row is added in the transaction that fails with the write, and a pet is only
ever saved for a photo whose file exists. The server keeps serving.
"""

from __future__ import annotations

import errno
import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import exc

log = logging.getLogger("transferlab.serve")
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
MESSAGE = "the server's disk is full: nothing was saved. Tell whoever runs the catalog, then try again"


def is_disk_full(e: BaseException) -> bool:
    if isinstance(e, OSError):
        return e.errno in DISK_FULL
    if isinstance(e, exc.OperationalError):  # SQLite: "database or disk is full"; PostgreSQL: "No space left"
        text = str(e.orig or e).lower()
        return "disk is full" in text or "no space left" in text or "could not extend file" in text
    return False


def install(app: FastAPI) -> None:
    from .pages import error_page

    async def failed(request: Request, e: Exception):
        if not is_disk_full(e):
            raise e  # anything else stays a 500 with its traceback in the log
        log.error("disk full while serving %s %s: %s", request.method, request.url.path, e)
        if request.url.path.startswith("/api"):
            return JSONResponse({"detail": MESSAGE}, status_code=507)
        return error_page(request, 507, MESSAGE)

    app.add_exception_handler(OSError, failed)
    app.add_exception_handler(exc.OperationalError, failed)
