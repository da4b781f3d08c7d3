"""Login, logout, the admin page (users and the audit log) and their JSON twins.

The login form posts ``username`` and ``password`` and gets a 303 with the session cookie
(HttpOnly, SameSite=Lax, Secure under HTTPS, expiring after ``--session-hours``). Failures are
limited per account and per client address (see :mod:`.users`) and logged without the password.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict

from .accounts import Accounts
from .auth import COOKIE, authorize, current_user, session_cookie
from .pages import render
from .users import AccountError, Role

log = logging.getLogger("transferlab.serve")
public = APIRouter(include_in_schema=False)  # the login page itself: reachable without an account
admin = APIRouter(dependencies=[Depends(authorize)])


def accounts(request: Request) -> Accounts:
    return request.app.state.accounts


def safe_next(target: str | None) -> str:
    """Only a path on this site (no //host or scheme): the login page is no open redirect."""
    t = target or "/"
    return t if t.startswith("/") and not t.startswith("//") and "\\" not in t and "\n" not in t else "/"


def login_page(request: Request, status: int = 200, error: str | None = None, headers: dict | None = None,
               next: str | None = None, username: str = ""):
    target = safe_next(next if next is not None else request.query_params.get("next"))
    r = render(request, "login.html", status=status, error=error, next=target, username=username)
    r.headers.update(headers or {})
    return r


@public.get("/login")
def login_form(request: Request):
    user = current_user(request)
    if user is not None and not user.open:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return login_page(request)


@public.post("/login")
def login(request: Request, username: str = Form(""), password: str = Form(""), next: str = Form("/")):
    acc = accounts(request)
    client = request.client.host if request.client else "unknown"
    name = " ".join(username.split())[:64]
    wait = acc.users.failure_wait(name, client)
    if wait:
        log.warning("login for %r from %s refused: too many failures", name, client)
        return login_page(request, 429, f"Too many failed logins: try again in {_minutes(wait)}.",
                          headers={"retry-after": str(wait)}, username=name, next=safe_next(next))
    user = acc.users.verify(name, password)
    if user is None:
        acc.users.record_failure(name, client)
        log.warning("failed login for %r from %s", name, client)  # never the password
        return login_page(request, 401, "Wrong user name or password.", username=name, next=safe_next(next))
    acc.users.clear_failures(name)
    hours = request.app.state.svc.settings.session_hours
    secret = acc.users.new_session(user.name, timedelta(hours=hours))
    r = RedirectResponse(safe_next(next), status_code=303)
    r.set_cookie(COOKIE, secret, max_age=int(hours * 3600), httponly=True, samesite="lax",
                 secure=request.url.scheme == "https", path="/")
    log.info("%r logged in from %s", user.name, client)
    return r


def _minutes(seconds: int) -> str:
    m = -(-seconds // 60)
    return f"{m} minute{'s' if m > 1 else ''}"


@public.post("/logout")
def logout(request: Request):
    secret = session_cookie(request.headers)
    if secret:
        accounts(request).users.end_session(secret)
    r = RedirectResponse("/login", status_code=303)
    r.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax", secure=request.url.scheme == "https")
    return r


# -- admin page ---------------------------------------------------------------------------------
@admin.get("/admin")
def admin_page(request: Request):
    return _admin_view(request)


def _admin_view(request: Request, error: str | None = None, status: int = 200):
    acc = accounts(request)
    return render(request, "admin.html", status=status, users=acc.list(), entries=acc.audit.entries(limit=200),
                  roles=[r.value for r in Role], error=error)


@admin.post("/admin/users")
def admin_add(request: Request, name: str = Form(""), role: str = Form(""), password: str = Form("")):
    try:
        accounts(request).add(name, role, password)
    except AccountError as e:
        return _admin_view(request, e.message, e.status)
    return RedirectResponse("/admin", status_code=303)


@admin.post("/admin/users/remove")
def admin_remove(request: Request, name: str = Form("")):
    try:
        accounts(request).remove(name)
    except AccountError as e:
        return _admin_view(request, e.message, e.status)
    return RedirectResponse("/admin", status_code=303)


# -- JSON API -----------------------------------------------------------------------------------
class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: str


class UserOut(BaseModel):
    name: str
    role: str
    created_at: datetime | None = None
    sessions: int | None = None
    tokens: int | None = None


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    role: Role
    password: str


@admin.get("/api/me", response_model=UserOut, tags=["api"])
def me(request: Request):
    user = current_user(request)
    return UserOut(name=user.name, role=user.role)


@admin.get("/api/audit", response_model=list[AuditOut], tags=["api"])
def audit(request: Request, limit: int = Query(200, ge=1, le=10000), offset: int = Query(0, ge=0)):
    """Who created, edited or deleted which pet, and every account change; newest first (admin)."""
    return [AuditOut(**vars(e)) for e in accounts(request).audit.entries(limit, offset)]


@admin.get("/api/users", response_model=list[UserOut], tags=["api"])
def list_users(request: Request):
    return [UserOut(**vars(u)) for u in accounts(request).list()]


@admin.post("/api/users", response_model=UserOut, status_code=201, tags=["api"])
def add_user(request: Request, body: UserIn):
    name = _account(lambda: accounts(request).add(body.name, body.role.value, body.password))
    return UserOut(name=name, role=body.role.value)


@admin.delete("/api/users/{name}", status_code=204, tags=["api"])
def remove_user(request: Request, name: str):
    _account(lambda: accounts(request).remove(name))
    return Response(status_code=204)


def _account(fn):
    from .service import InputError

    try:
        return fn()
    except AccountError as e:
        raise InputError(e.status, e.message) from None
