"""The catalog on PostgreSQL: a throwaway cluster (initdb + pg_ctl in a temp dir, loopback port,
its own socket dir), two app instances on it as two serve processes would be, saves from both
at once, a restart, and the schema-version refusal.

Skipped, with the reason, where Debian's PostgreSQL binaries are absent.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("psycopg", reason="psycopg (v3) is not installed (pip install -e '.[serve]')")
from fastapi.testclient import TestClient

from transferlab.apps.serve import ServeError, Settings, create_app


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


PG_BIN = _pg_bin()
pytestmark = pytest.mark.skipif(PG_BIN is None, reason="PostgreSQL binaries not found "
                                "(/usr/lib/postgresql/*/bin; apt-get install -y postgresql)")


def _as_owner(user: str | None, *cmd) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its binaries as the `postgres` user."""
    return ["runuser", "-u", user, "--", *map(str, cmd)] if user else [str(c) for c in cmd]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pg_url():
    user = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="tl-pg-"))
    data, sock, port = root / "data", root / "sock", _free_port()
    sock.mkdir()
    if user:
        shutil.chown(root, user)
        shutil.chown(sock, user)
    run = lambda *cmd: subprocess.run(_as_owner(user, *cmd), check=True, capture_output=True, timeout=120)  # noqa: E731
    try:
        run(PG_BIN / "initdb", "-D", data, "-U", "tl", "--auth=trust", "--no-sync", "-E", "UTF8")
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={sock} -c fsync=off"
        run(PG_BIN / "pg_ctl", "-D", data, "-o", opts, "-l", root / "log", "-w", "start")
    except subprocess.CalledProcessError as e:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start a PostgreSQL cluster: {e.stderr.decode(errors='replace')[-500:]}")
    yield f"postgresql://tl@127.0.0.1:{port}/postgres"
    subprocess.run(_as_owner(user, PG_BIN / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"), capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def predictor():
    from transferlab.export import load_predictor

    return load_predictor("efficientnet_lite0")


@pytest.fixture
def make_client(pg_url, predictor, tmp_path):
    """Apps on the one database and one media folder, like serve processes behind a proxy."""
    clients = []

    def make():
        app = create_app(Settings(model="efficientnet_lite0", db=pg_url, media=tmp_path / "media"), predictor=predictor)
        clients.append(TestClient(app).__enter__())
        return clients[-1]

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def _save(client, data: bytes, name: str, breed: str | None = None):
    upload = {"file": (f"{name}.jpg", data, "image/jpeg")}
    r = client.post("/api/pets", data={"name": name, **({"breed": breed} if breed else {})}, files=upload)
    assert r.status_code == 201, r.text
    return r.json()


def test_catalog_on_postgres(make_client, sample_images, petimages, pg_url, predictor, tmp_path):
    a, b = make_client(), make_client()
    assert a.get("/healthz").json()["database"] == "postgresql"
    chelsea = Path(sample_images["chelsea"]).read_bytes()
    luna = _save(a, chelsea, "Luna", breed="tabby")
    assert [p["name"] for p in b.get("/api/pets").json()] == ["Luna"]  # the other process sees it

    cats = [(petimages / "Cat" / f"{i}.jpg").read_bytes() for i in range(8)]
    with ThreadPoolExecutor(8) as pool:  # both "processes" save at once, some the same photo
        done = list(pool.map(lambda i: _save((a, b)[i % 2], cats[i // 2], f"cat{i}"), range(8)))
    assert len({p["id"] for p in done}) == 8
    pets = a.get("/api/pets").json()
    assert len(pets) == 9 and {p["name"] for p in pets} == {"Luna"} | {f"cat{i}" for i in range(8)}
    assert [p["name"] for p in a.get("/api/pets", params={"breed": "tabby"}).json()][-1] == "Luna"

    assert b.patch(f"/api/pets/{luna['id']}", json={"name": "Luna II"}).status_code == 200
    assert b.delete(f"/api/pets/{done[0]['id']}").status_code == 204
    a.__exit__(None, None, None)
    b.__exit__(None, None, None)

    c = make_client()  # restart
    pets = c.get("/api/pets").json()
    assert len(pets) == 8 and "Luna II" in {p["name"] for p in pets}
    dups = c.post("/api/predict", files={"file": ("x.jpg", chelsea, "image/jpeg")}).json()["duplicates"]
    assert [d["pet"]["name"] for d in dups] == ["Luna II"]
    assert c.get("/api/pets.csv").text.count("\n") == 9


def test_newer_schema_on_postgres_is_refused(make_client, pg_url, predictor, tmp_path):
    import psycopg

    make_client()
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("UPDATE schema_version SET version = 42")
    try:
        with pytest.raises(ServeError, match="schema version 42"):
            create_app(Settings(model="efficientnet_lite0", db=pg_url, media=tmp_path / "m"), predictor=predictor)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as con:
            con.execute("UPDATE schema_version SET version = 1")


def test_unreachable_postgres_is_a_clear_error(predictor, tmp_path):
    url = f"postgresql://tl:secret@127.0.0.1:{_free_port()}/postgres"
    with pytest.raises(ServeError, match="cannot open catalog") as e:
        create_app(Settings(model="efficientnet_lite0", db=url, media=tmp_path / "m"), predictor=predictor)
    assert "secret" not in str(e.value)
