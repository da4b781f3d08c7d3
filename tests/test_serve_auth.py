"""Accounts and roles of the catalog web app, through the real app (FastAPI's TestClient) on the
real bundled efficientnet_lite0 and real photos, and through the real CLI.

What could break and is checked here: anonymous writes once an account exists (on loopback too),
a wide bind without accounts, each role's 403s, a removed user's token and session, brute force
(429 + Retry-After, per account and per address, no password in the log), stored XSS through a
user name, the session cookie's flags and expiry, the audit log, the cross-site login form, the
permission table covering every route, and the schema migration from version 1.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("argon2")
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from tests._helpers import run_cli
from transferlab.apps.serve import ServeError, Settings, create_app
from transferlab.apps.serve.auth import POLICY, check_bind

CATS = {"tiger cat", "tabby", "Egyptian cat"}
PASSWORDS = {"ada": "admin-pass-1", "sam": "staff-pass-1", "vera": "volunteer-pass-1"}


@pytest.fixture(scope="module")
def predictor():
    from transferlab.export import load_predictor

    return load_predictor("efficientnet_lite0")


@pytest.fixture
def make_client(tmp_path, predictor):
    clients = []

    def make(base_url: str = "http://testserver", **kw):
        kw.setdefault("db", str(tmp_path / "catalog.sqlite"))
        c = TestClient(create_app(Settings(model="efficientnet_lite0", **kw), predictor=predictor), base_url=base_url)
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture(scope="module")
def photos(sample_images) -> dict[str, bytes]:
    return {k: Path(p).read_bytes() for k, p in sample_images.items()}


def add_users(client, *names: str) -> dict[str, str]:
    """Accounts ada (admin), sam (staff), vera (volunteer) as asked; returns their API tokens."""
    acc = client.app.state.accounts
    roles = {"ada": "admin", "sam": "staff", "vera": "volunteer"}
    for n in names:
        acc.add(n, roles[n], PASSWORDS[n], actor="test")
    return {n: acc.token(n, actor="test") for n in names}


def bearer(token: str) -> dict:
    return {"authorization": f"Bearer {token}"}


def save(client, data: bytes, name: str, headers: dict | None = None) -> dict:
    r = client.post("/api/predict", files={"file": ("p.jpg", data, "image/jpeg")}, params={"heatmap": "false"},
                    headers=headers)
    assert r.status_code == 200, r.text
    r = client.post("/api/pets", data={"name": name, "photo": r.json()["photo"]}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def login(client, name: str, password: str | None = None):
    return client.post("/login", data={"username": name, "password": password or PASSWORDS[name]},
                       follow_redirects=False)


def pet_count(client) -> int:
    return client.app.state.svc.catalog.count_pets()


# ---------------------------------------------------------------------------------------------
def test_anonymous_writes_refused_once_users_exist(client, photos):
    luna = save(client, photos["chelsea"], "Luna")  # no account yet: open on loopback, as before
    add_users(client, "ada")  # added while the app runs
    sha = luna["photo"]
    writes = [
        client.post("/api/predict", files={"file": ("c.jpg", photos["coffee"], "image/jpeg")}),
        client.post("/api/pets", data={"name": "Bean", "photo": sha, "breed": "tabby"}),
        client.patch(f"/api/pets/{luna['id']}", json={"name": "Pwned"}),
        client.delete(f"/api/pets/{luna['id']}"),
        client.post("/api/users", json={"name": "eve", "role": "admin", "password": "x" * 12}),
    ]
    assert [r.status_code for r in writes] == [401] * 5
    assert all(r.headers["www-authenticate"] == "Bearer" for r in writes)
    pages = [client.post("/pets", data={"name": "Bean", "photo": sha, "breed": "tabby"}, follow_redirects=False),
             client.post(f"/pets/{luna['id']}/delete", follow_redirects=False),
             client.post(f"/pets/{luna['id']}/edit", data={"name": "x", "breed": "tabby"}, follow_redirects=False)]
    assert [r.status_code for r in pages] == [303] * 3
    assert all(r.headers["location"].startswith("/login") for r in pages)
    # reads too, and the built-in docs, and a forged token or cookie
    for path in ("/api/pets", "/api/pets.csv", "/docs", "/openapi.json", "/api/audit"):
        assert client.get(path).status_code == 401, path
    assert client.get("/", follow_redirects=False).headers["location"] == "/login?next=%2F"
    assert client.get(luna["photo_url"], follow_redirects=False).status_code == 303
    assert client.get("/api/pets", headers=bearer("tl_forged")).status_code == 401
    assert client.get("/api/pets", headers={"cookie": "tl_session=forged"}).status_code == 401
    assert client.get("/login").status_code == 200 and client.get("/static/style.css").status_code == 200
    # nothing changed
    assert pet_count(client) == 1 and client.app.state.svc.catalog.get_pet(luna["id"]).name == "Luna"
    assert [u.name for u in client.app.state.accounts.list()] == ["ada"]


def test_wide_bind_without_users_is_refused(tmp_path, monkeypatch, capsys):
    db = tmp_path / "catalog.sqlite"
    code, out, err = run_cli(["serve", "efficientnet_lite0", "--db", db, "--host", "0.0.0.0"], monkeypatch, capsys)
    assert code == 2 and "no user account exists" in err and "transferlab users add NAME --role admin" in err
    assert "Traceback" not in err and "serving efficientnet_lite0" not in err
    assert not db.exists()  # refused before anything was created or loaded
    with pytest.raises(ServeError, match="--trusted-proxy"):  # a proxy brings the network to loopback
        check_bind(Settings(model="m", db=str(db), trusted_proxies=["10.0.0.2"]))
    check_bind(Settings(model="m", db=str(db)))  # loopback without accounts: open, as before

    monkeypatch.setattr("sys.stdin", _Stdin("a-long-password\n"))
    code, out, err = run_cli(["users", "add", "ada", "--role", "admin", "--db", db], monkeypatch, capsys)
    assert code == 0 and "added ada (admin)" in out
    check_bind(Settings(model="m", db=str(db), host="0.0.0.0"))  # now it may bind wide


class _Stdin:
    """A non-terminal stdin holding ``text`` (how scripts give the password)."""

    def __init__(self, text: str):
        import io

        self._f = io.StringIO(text)

    def isatty(self) -> bool:
        return False

    def readline(self) -> str:
        return self._f.readline()


def test_volunteer_gets_403_on_delete_and_staff_204(client, photos):
    tok = add_users(client, "ada", "sam", "vera")
    luna = save(client, photos["chelsea"], "Luna", headers=bearer(tok["vera"]))  # a volunteer may add
    assert luna["breed"] in CATS
    r = client.delete(f"/api/pets/{luna['id']}", headers=bearer(tok["vera"]))
    assert r.status_code == 403 and r.json()["detail"] == "a volunteer may not delete pets: ask an admin"
    assert client.patch(f"/api/pets/{luna['id']}", json={"name": "X"}, headers=bearer(tok["vera"])).status_code == 403
    assert client.get("/api/pets.csv", headers=bearer(tok["vera"])).status_code == 403
    assert client.get("/api/audit", headers=bearer(tok["sam"])).status_code == 403
    assert login(client, "vera").status_code == 303  # the pages say the same, as pages
    page = client.post(f"/pets/{luna['id']}/delete", follow_redirects=False)
    assert page.status_code == 403 and "may not delete pets" in page.text
    assert client.get("/admin").status_code == 403
    cat = client.get("/catalog").text
    assert "Luna" in cat and "/delete" not in cat and "Download CSV" not in cat  # no buttons a volunteer cannot use
    assert pet_count(client) == 1

    r = client.patch(f"/api/pets/{luna['id']}", json={"breed": "tabby"}, headers=bearer(tok["sam"]))
    assert r.status_code == 200
    assert client.delete(f"/api/pets/{luna['id']}", headers=bearer(tok["sam"])).status_code == 204
    assert pet_count(client) == 0
    log = client.get("/api/audit", headers=bearer(tok["ada"])).json()
    pets = [(e["actor"], e["action"], e["target"]) for e in log if e["action"].startswith("pet.")]
    pid = f"pet {luna['id']}"
    assert pets == [("sam", "pet.delete", pid), ("sam", "pet.edit", pid), ("vera", "pet.create", pid)]
    assert log[0]["detail"] == "Luna (tabby)"
    assert log[1]["detail"] == (f"breed: {luna['breed']} → tabby" if luna["breed"] != "tabby" else "no change")
    assert {e["action"] for e in log} >= {"user.add", "user.token"}


def test_removed_users_token_gets_401_in_a_running_server(client, tmp_path, monkeypatch, capsys):
    tok = add_users(client, "ada", "vera")
    browser = TestClient(client.app)  # a second client: vera's logged-in browser
    assert login(browser, "vera").status_code == 303
    assert client.get("/api/pets", headers=bearer(tok["vera"])).status_code == 200
    assert browser.get("/api/pets").status_code == 200
    # removed from the shell, through another engine, as another process would
    code, out, _ = run_cli(["users", "remove", "vera", "--db", tmp_path / "catalog.sqlite"], monkeypatch, capsys)
    assert code == 0 and "removed vera" in out
    assert client.get("/api/pets", headers=bearer(tok["vera"])).status_code == 401
    assert browser.get("/api/pets").status_code == 401
    assert browser.get("/catalog", follow_redirects=False).headers["location"].startswith("/login")
    assert client.get("/api/pets", headers=bearer(tok["ada"])).status_code == 200
    code, _, err = run_cli(["users", "remove", "vera", "--db", tmp_path / "catalog.sqlite"], monkeypatch, capsys)
    assert code == 2 and "no user named 'vera'" in err


def test_brute_force_gets_429_per_account_and_per_address(client, caplog):
    add_users(client, "ada", "vera")
    caplog.set_level(logging.WARNING, logger="transferlab.serve")
    tries = [login(client, "ada", f"guess-{i}").status_code for i in range(5)]
    assert tries == [401] * 5
    r = login(client, "ada", "guess-5")
    wait = int(r.headers["retry-after"])
    assert r.status_code == 429 and 890 <= wait <= 900 and "try again in 15 minutes" in r.text
    assert login(client, "ada").status_code == 429  # even the right password, while locked
    assert "guess-" not in caplog.text and PASSWORDS["ada"] not in caplog.text  # logged without the password
    assert "failed login for 'ada' from testclient" in caplog.text
    # the address is limited too: vera's account has no failures, but this client has
    assert login(client, "vera").status_code == 429
    other = TestClient(client.app, client=("10.0.0.7", 5000))  # another address, same accounts
    assert login(other, "vera").status_code == 303
    assert login(other, "ada").status_code == 429  # the account stays locked from anywhere


def test_stored_xss_through_a_user_name_is_escaped(client, photos):
    tok = add_users(client, "ada")
    evil = '<script>alert("pwned")</script>'
    r = client.post("/api/users", json={"name": evil, "role": "volunteer", "password": "evil-pass-1"},
                    headers=bearer(tok["ada"]))
    assert r.status_code == 201 and r.json()["name"] == evil
    mallory = TestClient(client.app)
    assert login(mallory, evil, "evil-pass-1").status_code == 303
    save(mallory, photos["chelsea"], '<img src=x onerror="alert(1)">')
    own = mallory.get("/").text
    assert evil not in own and "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in own  # the header names them
    assert login(client, "ada").status_code == 303
    admin = client.get("/admin").text
    assert evil not in admin and "<img src=x" not in admin
    assert admin.count("&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;") >= 2  # users table and audit log
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in admin


def test_session_cookie_flags_expiry_and_logout(make_client, tmp_path):
    client = make_client()
    add_users(client, "vera")
    r = login(client, "vera")
    cookie = r.headers["set-cookie"]
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie and "Max-Age=43200" in cookie
    assert client.get("/api/me").json() == {"name": "vera", "role": "volunteer", "created_at": None,
                                            "sessions": None, "tokens": None}
    https = make_client(base_url="https://testserver")
    assert "Secure" in login(https, "vera").headers["set-cookie"]
    # a bad password keeps the user on the form, with the name they typed; an open redirect is not followed
    assert login(client, "vera", "wrong-password").status_code == 401
    r = client.post("/login", data={"username": "vera", "password": PASSWORDS["vera"], "next": "//evil.example/x"},
                    follow_redirects=False)
    assert r.headers["location"] == "/"
    # expiry: the session's time is up (moved back in the database) -> back to the login page
    con = sqlite3.connect(tmp_path / "catalog.sqlite")
    con.execute("UPDATE credentials SET expires_at = '2000-01-01 00:00:00' WHERE kind = 'session'")
    con.commit()
    con.close()
    assert client.get("/api/pets").status_code == 401
    assert login(client, "vera").status_code == 303 and client.get("/api/pets").status_code == 200
    old = client.cookies.get("tl_session")
    assert client.post("/logout", follow_redirects=False).headers["location"] == "/login"
    assert client.get("/api/pets").status_code == 401
    assert client.get("/api/pets", headers={"cookie": f"tl_session={old}"}).status_code == 401  # ended server-side


def test_cross_site_login_form_is_refused(client):
    add_users(client, "vera")
    r = client.post("/login", data={"username": "vera", "password": PASSWORDS["vera"]},
                    headers={"origin": "http://evil.example"}, follow_redirects=False)
    assert r.status_code == 403 and "set-cookie" not in r.headers


def _api_routes(routes):
    """Every APIRoute, also inside included routers (FastAPI >= 0.16x keeps them nested)."""
    for r in routes:
        if isinstance(r, APIRoute):
            yield r
        elif hasattr(r, "original_router"):
            yield from _api_routes(r.original_router.routes)


def test_every_route_has_a_permission_rule(client):
    public = {"/login", "/logout"}
    routes = [r for r in _api_routes(client.app.routes) if r.path not in public]
    seen = {f"{m} {r.path}" for r in routes for m in r.methods - {"HEAD"}}
    assert len(seen) > 20 and seen == set(POLICY), seen ^ set(POLICY)


def test_cli_users_add_list_passwd_token(tmp_path, monkeypatch, capsys, make_client):
    db = tmp_path / "catalog.sqlite"
    monkeypatch.setattr("sys.stdin", _Stdin("short\n"))
    code, _, err = run_cli(["users", "add", "sam", "--role", "staff", "--db", db], monkeypatch, capsys)
    assert code == 2 and "at least 8 characters" in err
    monkeypatch.setattr("sys.stdin", _Stdin("staff-pass-1\n"))
    assert run_cli(["users", "add", "sam", "--role", "staff", "--db", db], monkeypatch, capsys)[0] == 0
    code, _, err = run_cli(["users", "add", "sam", "--role", "root", "--db", db], monkeypatch, capsys)
    assert code == 2 and "root" in err
    code, token, _ = run_cli(["users", "token", "sam", "--db", db], monkeypatch, capsys)
    token = token.strip()
    assert code == 0 and token.startswith("tl_") and len(token) > 40
    con = sqlite3.connect(db)
    stored = [r[0] for r in con.execute("SELECT token_hash FROM credentials")]
    con.close()
    assert token not in stored and len(stored) == 1 and len(stored[0]) == 64  # only the hash
    monkeypatch.setattr("sys.stdin", _Stdin("new-staff-pass\n"))
    assert run_cli(["users", "passwd", "sam", "--db", db], monkeypatch, capsys)[0] == 0
    code, out, _ = run_cli(["users", "list", "--db", db], monkeypatch, capsys)
    assert code == 0 and out.startswith("sam\tstaff\t") and "1 token(s)" in out
    client = make_client()
    assert login(client, "sam", "staff-pass-1").status_code == 401
    assert login(client, "sam", "new-staff-pass").status_code == 303
    assert client.get("/api/pets", headers=bearer(token)).status_code == 200  # tokens survive a new password
    actions = [e.action for e in client.app.state.accounts.audit.entries()]
    assert actions == ["user.passwd", "user.token", "user.add"]


def test_version_1_catalog_is_migrated(make_client, tmp_path, photos):
    first = make_client()
    save(first, photos["chelsea"], "Luna")
    first.__exit__(None, None, None)
    con = sqlite3.connect(tmp_path / "catalog.sqlite")  # back to what transferlab wrote before accounts
    for t in ("credentials", "login_failures", "audit", "users"):
        con.execute(f"DROP TABLE {t}")
    con.execute("UPDATE schema_version SET version = 1")
    con.commit()
    con.close()
    client = make_client()
    assert [p["name"] for p in client.get("/api/pets").json()] == ["Luna"]
    con = sqlite3.connect(tmp_path / "catalog.sqlite")
    assert con.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
    assert con.execute("SELECT count(*) FROM users").fetchone() == (0,)
    con.close()
