"""The FastAPI application: `create_app(settings)` builds it, `run_server(settings)` serves it.

Pages are server-rendered (Jinja2, no front-end build); the JSON API under /api does the same
things for scripts, with OpenAPI docs at /docs. Both go through :mod:`.service`.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .guard import Guard
from .service import InputError, Services
from .settings import Settings
from .storage import UploadRejected

HERE = Path(__file__).parent
log = logging.getLogger("transferlab.serve")


def create_app(settings: Settings, predictor=None) -> FastAPI:
    """The app for ``settings``. ``predictor`` defaults to ``load_predictor(settings.model)``;
    tests pass one in to share a loaded model between apps."""
    svc = Services(settings, predictor)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc.startup()
        yield
        svc.close()

    app = FastAPI(title="transferlab shelter catalog", version="1", lifespan=lifespan,
                  description="Identify a pet's breed from a photo and keep the shelter's catalog.")
    app.state.svc = svc
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    from . import api, auth, faults, login, pages
    from .accounts import Accounts
    from .audit import AuditLog
    from .users import UserStore

    app.state.accounts = Accounts(UserStore(svc.catalog.engine), AuditLog(svc.catalog.engine))
    app.include_router(api.router, dependencies=[Depends(auth.authorize)])
    app.include_router(pages.router, dependencies=[Depends(auth.authorize)])
    app.include_router(login.public)
    app.include_router(login.admin)
    _error_handlers(app)
    faults.install(app)
    app.add_middleware(auth.AuthGate, users=app.state.accounts.users, settings=settings)
    app.add_middleware(Guard, max_body=settings.max_upload_bytes + 64 * 1024)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.trusted_hosts)
    return app


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api") or request.url.path in ("/docs", "/openapi.json")


def _error_handlers(app: FastAPI) -> None:
    """Every refusal is a 4xx with a sentence: JSON ``{"detail": ...}`` under /api, the upload
    page with the message everywhere else."""
    from .pages import error_page

    async def refused(request: Request, e: InputError | UploadRejected):
        if _wants_json(request):
            return JSONResponse({"detail": e.message}, status_code=e.status)
        return error_page(request, e.status, e.message)

    async def http_error(request: Request, e: HTTPException):
        if e.status_code == 413:
            e = HTTPException(413, _too_large(request))
        if _wants_json(request):
            return await http_exception_handler(request, e)
        return error_page(request, e.status_code, str(e.detail))

    async def invalid(request: Request, e: RequestValidationError):
        if _wants_json(request):
            return await request_validation_exception_handler(request, e)
        return error_page(request, 422, _validation_message(e))

    app.add_exception_handler(InputError, refused)
    app.add_exception_handler(UploadRejected, refused)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)


def _too_large(request: Request) -> str:
    mb = request.app.state.svc.settings.max_upload_mb
    return f"the file is larger than {mb:g} MB"


def _validation_message(e: RequestValidationError) -> str:
    parts = []
    for err in e.errors():
        field = ".".join(str(x) for x in err.get("loc", ())[1:]) or "request"
        parts.append(f"{field}: {'missing' if err.get('type') == 'missing' else err.get('msg')}")
    return "; ".join(parts)


def run_server(settings: Settings) -> None:
    """Serve until interrupted (blocking). Binds ``settings.host`` (127.0.0.1 by default); refuses
    (ServeError) to bind wider while the catalog has no user account. HTTPS with ``certfile`` and
    ``keyfile``; X-Forwarded-* headers are believed only from ``trusted_proxies``."""
    import uvicorn

    from .auth import check_bind

    check_bind(settings)
    uvicorn.run(create_app(settings), **server_options(settings))


def server_options(settings: Settings) -> dict:
    """uvicorn's options for ``settings``: bind, TLS, and which proxies' X-Forwarded-* to believe
    (none unless named: a client could otherwise forge its address and the HTTPS flag)."""
    proxies = settings.trusted_proxies or []
    return {"host": settings.host, "port": settings.port, "log_level": settings.log_level, "server_header": False,
            "proxy_headers": bool(proxies), "forwarded_allow_ips": ",".join(proxies) or None,
            "ssl_certfile": str(settings.certfile) if settings.certfile else None,
            "ssl_keyfile": str(settings.keyfile) if settings.keyfile else None}
