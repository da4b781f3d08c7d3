"""Who may do what: authentication for every request, and each route's permission.

- :class:`AuthGate` (ASGI, in front of every route, mount and built-in page such as /docs)
  finds the user from ``Authorization: Bearer TOKEN`` or the session cookie. Once any account
  exists, a request without a valid one gets 401 (API) or a redirect to the login page (pages);
  only the login page and the static files are open. With no account at all the catalog stays
  open as before, but only when bound to loopback with no proxy in front (:func:`open_mode_allowed`;
  ``serve`` refuses to start otherwise).
- :func:`authorize` (a dependency of the routers) looks the route up in :data:`POLICY`; a role
  without that permission gets 403. A route missing from the table is refused to everyone, so a
  new route cannot be reachable by mistake (``tests/test_serve_auth.py`` checks the table is
  complete).
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .schema import current_actor
from .settings import LOOPBACK, ServeError, Settings
from .users import OPEN_USER, User, UserStore

log = logging.getLogger("transferlab.serve")
COOKIE = "tl_session"
OPEN_PATHS = ("/login", "/static/")  # reachable without an account (and /logout, which only ends one)

# "METHOD /route/path" -> the permission it needs (see users.PERMISSIONS for the roles).
POLICY: dict[str, str] = {
    "GET /": "browse", "GET /catalog": "browse", "GET /media/{name}": "browse", "GET /thumbs/{name}": "browse",
    "GET /healthz": "browse", "GET /api/pets": "browse", "GET /api/pets/{pet_id}": "browse",
    "GET /api/model": "browse", "GET /api/me": "browse",
    "POST /predict": "identify", "POST /api/predict": "identify",
    "POST /pets": "add", "POST /api/pets": "add",
    "GET /pets/{pet_id}/edit": "edit", "POST /pets/{pet_id}/edit": "edit", "PATCH /api/pets/{pet_id}": "edit",
    "POST /pets/{pet_id}/delete": "delete", "DELETE /api/pets/{pet_id}": "delete",
    "GET /api/pets.csv": "export",
    "GET /admin": "admin", "POST /admin/users": "admin", "POST /admin/users/remove": "admin",
    "GET /api/audit": "admin", "GET /api/users": "admin", "POST /api/users": "admin",
    "DELETE /api/users/{name}": "admin",
}
ACTIONS = {"identify": "identify photos", "add": "add pets", "edit": "edit pets", "delete": "delete pets",
           "export": "download the catalog", "admin": "manage users or read the audit log", "browse": "browse"}


def open_mode_allowed(settings: Settings) -> bool:
    """Whether a catalog without accounts may be served as it is: only on loopback, and not
    behind a proxy (which would bring the network to it)."""
    return settings.host in LOOPBACK and not settings.trusted_proxies


def check_bind(settings: Settings) -> None:
    """Refuse, before anything loads, to serve a catalog without accounts beyond loopback."""
    if open_mode_allowed(settings) or count_users(settings) > 0:
        return
    where = f"--host {settings.host}" if settings.host not in LOOPBACK else "--trusted-proxy"
    raise ServeError(f"no user account exists, so serving with {where} would let anyone on the network in: "
                     f"add one first with `transferlab users add NAME --role admin --db {settings.db}`, "
                     "or serve on 127.0.0.1")


def count_users(settings: Settings) -> int:
    """Users in the catalog, read without creating or migrating anything (0 if there is none)."""
    from sqlalchemy import inspect, text

    from .db import make_engine

    url = settings.db_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return 0
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if "users" not in inspect(conn).get_table_names():
                return 0
            return int(conn.execute(text("SELECT count(*) FROM users")).scalar() or 0)
    except Exception as e:  # an unreachable or unreadable database: say so, as serve would
        raise ServeError(f"cannot open catalog {settings.db}: {str(e).splitlines()[0]}") from None
    finally:
        engine.dispose()


def bearer(headers: Headers) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def session_cookie(headers: Headers) -> str | None:
    from http.cookies import SimpleCookie

    jar = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header is no session
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel else None


class AuthGate:
    """Sets ``request.state.user`` (and the audit actor) for every request, or answers 401 /
    redirects to the login page. Reads the database on every request: a removed user or ended
    session is refused at once."""

    def __init__(self, app: ASGIApp, users: UserStore, settings: Settings):
        self.app = app
        self.users = users
        self.open_ok = open_mode_allowed(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        user = await run_in_threadpool(self._identify, headers)
        path = scope["path"]
        if user is None and not (path.startswith(OPEN_PATHS) or path == "/logout"):
            return await _refuse(scope, headers)(scope, receive, send)
        scope.setdefault("state", {})["user"] = user
        token = current_actor.set(user.name if user else "")
        try:
            await self.app(scope, receive, send)
        finally:
            current_actor.reset(token)

    def _identify(self, headers: Headers) -> User | None:
        secret = bearer(headers) or session_cookie(headers)
        if secret:
            user = self.users.resolve(secret)
            if user is not None:
                return user
        if self.open_ok and self.users.count() == 0:
            return OPEN_USER
        return None


def _refuse(scope: Scope, headers: Headers):
    path = scope["path"]
    if path.startswith("/api") or path in ("/docs", "/redoc", "/openapi.json") or bearer(headers):
        return JSONResponse({"detail": "log in first: send 'Authorization: Bearer TOKEN' "
                                       "(transferlab users token NAME) or use the login page"},
                            status_code=401, headers={"www-authenticate": "Bearer"})
    if scope["method"] not in ("GET", "HEAD"):  # a form post cannot be replayed after the login
        return RedirectResponse("/login", status_code=303)
    target = path + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
    return RedirectResponse("/login?next=" + quote(target, safe=""), status_code=303)


def current_user(request: Request) -> User | None:
    return getattr(request.state, "user", None)


def authorize(request: Request) -> User:
    """Router dependency: the route's permission from POLICY, or 403."""
    user = current_user(request)
    route = request.scope.get("route")
    method = "GET" if request.method == "HEAD" else request.method
    need = POLICY.get(f"{method} {getattr(route, 'path', '?')}")
    if user is None:  # only the open paths get here without a user, and they are not policed routes
        raise HTTPException(401, "log in first")
    if need is None:
        raise HTTPException(403, "this route has no permission rule: refused to everyone")
    if not user.can(need):
        raise HTTPException(403, f"a {user.role} may not {ACTIONS[need]}: ask an admin")
    return user
