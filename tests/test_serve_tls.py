"""The catalog over HTTPS (`serve --certfile/--keyfile`) and behind a reverse proxy
(`--trusted-proxy`): real uvicorn servers on 127.0.0.1 with the options `serve` gives uvicorn, a
self-signed certificate made by openssl, the real app and model.

- over TLS the session cookie is Secure, and the login works end to end;
- X-Forwarded-For/-Proto are believed from the trusted proxy's address only: elsewhere a client
  cannot forge the HTTPS flag or dodge the per-address login limit.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

pytest.importorskip("fastapi")
import httpx
import uvicorn

from transferlab.apps.serve import Settings, create_app
from transferlab.apps.serve.app import server_options

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")


@pytest.fixture(scope="module")
def predictor():
    from transferlab.export import load_predictor

    return load_predictor("efficientnet_lite0")


class Served:
    """``settings``' app under uvicorn with ``server_options(settings)``, in a thread, on a port
    the OS picked."""

    def __init__(self, settings: Settings, predictor):
        self.app = create_app(settings, predictor=predictor)
        self.app.state.accounts.add("vera", "volunteer", "volunteer-pass-1", actor="test")
        opts = {k: v for k, v in server_options(settings).items() if k not in ("host", "port")}
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, **{**opts, "log_level": "warning"}))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def _login(c: httpx.Client, password: str = "volunteer-pass-1", **headers) -> httpx.Response:
    return c.post("/login", data={"username": "vera", "password": password}, headers=headers)


def test_https_with_certfile_and_keyfile(tmp_path, predictor):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    s = Served(Settings(model="efficientnet_lite0", db=str(tmp_path / "c.sqlite"), certfile=cert, keyfile=key),
               predictor)
    try:
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{s.port}", verify=trust) as c:
            r = _login(c)
            cookie = r.headers["set-cookie"]
            assert r.status_code == 303 and "Secure" in cookie and "HttpOnly" in cookie
            assert c.get("/api/me").json()["name"] == "vera"  # the Secure cookie goes back over TLS
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets nowhere
            httpx.get(f"http://127.0.0.1:{s.port}/api/pets", timeout=5).raise_for_status()
    finally:
        s.stop()


@pytest.mark.parametrize("trusted", [True, False])
def test_forwarded_headers_are_believed_only_from_the_trusted_proxy(tmp_path, predictor, trusted):
    proxy = "127.0.0.1" if trusted else "10.9.9.9"  # the test client connects from 127.0.0.1
    s = Served(Settings(model="efficientnet_lite0", db=str(tmp_path / "c.sqlite"), trusted_proxies=[proxy]),
               predictor)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{s.port}") as c:
            forwarded = {"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.9"}
            r = _login(c, **forwarded)
            assert r.status_code == 303 and ("Secure" in r.headers["set-cookie"]) == trusted
            for _ in range(5):
                assert _login(c, "wrong-password", **{"x-forwarded-for": "203.0.113.50"}).status_code == 401
            fresh = _login(c, **{"x-forwarded-for": "198.51.100.2"})
    finally:
        s.stop()
    # the limits counted the forwarded address when the proxy is trusted, else the real one
    clients = {row[0] for row in _failures(tmp_path / "c.sqlite")}
    assert clients == ({"203.0.113.50"} if trusted else {"127.0.0.1"})
    assert fresh.status_code == 429  # vera's account is locked after 5 failures either way


def _failures(db):
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT client FROM login_failures").fetchall()
    finally:
        con.close()
