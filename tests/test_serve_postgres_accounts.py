"""Accounts and backups on PostgreSQL: the same schema version, roles and tokens as on SQLite, and
`catalog backup` (pg_dump from an exported snapshot) restored into a new database with its photos.
Skipped, with the reason, where Debian's PostgreSQL binaries are absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("psycopg", reason="psycopg (v3) is not installed (pip install -e '.[serve]')")
from fastapi.testclient import TestClient

from tests.test_serve_postgres import pg_url, pytestmark  # noqa: F401 (the throwaway cluster fixture)
from transferlab.apps.serve import ServeError, Settings, create_app
from transferlab.apps.serve.accounts import open_accounts
from transferlab.apps.serve.backup import backup, restore


@pytest.fixture(scope="module")
def predictor():
    from transferlab.export import load_predictor

    return load_predictor("efficientnet_lite0")


def test_accounts_backup_and_restore_on_postgres(pg_url, predictor, sample_images, tmp_path):  # noqa: F811
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("DROP DATABASE IF EXISTS acc")
        con.execute("CREATE DATABASE acc")
        con.execute("DROP DATABASE IF EXISTS restored")
        con.execute("CREATE DATABASE restored")
    db, new = pg_url.rsplit("/", 1)[0] + "/acc", pg_url.rsplit("/", 1)[0] + "/restored"
    acc = open_accounts(db)
    acc.add("sam", "staff", "staff-pass-1", actor="test")
    acc.add("vera", "volunteer", "volunteer-pass-1", actor="test")
    sam, vera = acc.token("sam", actor="test"), acc.token("vera", actor="test")
    acc.close()
    app = create_app(Settings(model="efficientnet_lite0", db=db, media=tmp_path / "media"), predictor=predictor)
    with TestClient(app) as c:
        assert c.get("/api/pets").status_code == 401
        upload = {"file": ("c.jpg", Path(sample_images["chelsea"]).read_bytes(), "image/jpeg")}
        luna = c.post("/api/pets", data={"name": "Luna"}, files=upload, headers={"authorization": f"Bearer {vera}"})
        assert luna.status_code == 201, luna.text
        pid = luna.json()["id"]
        assert c.delete(f"/api/pets/{pid}", headers={"authorization": f"Bearer {vera}"}).status_code == 403
        r = c.patch(f"/api/pets/{pid}", json={"breed": "tabby"}, headers={"authorization": f"Bearer {sam}"})
        assert r.status_code == 200

        result = backup(db, tmp_path / "bk", media=tmp_path / "media")  # while the app is running
    assert (result.pets, result.photos, result.users) == (1, 1, 2) and (tmp_path / "bk" / "catalog.pgdump").is_file()
    with pytest.raises(ServeError, match="never overwrites"):
        restore(tmp_path / "bk", db, media=tmp_path / "other")
    restore(tmp_path / "bk", new, media=tmp_path / "media2")
    app = create_app(Settings(model="efficientnet_lite0", db=new, media=tmp_path / "media2"), predictor=predictor)
    with TestClient(app) as c:
        pets = c.get("/api/pets", headers={"authorization": f"Bearer {sam}"}).json()  # the token came along
        assert [(p["name"], p["breed"]) for p in pets] == [("Luna", "tabby")]
        assert c.get(pets[0]["photo_url"], headers={"authorization": f"Bearer {sam}"}).status_code == 200
        log = c.get("/api/audit", headers={"authorization": f"Bearer {sam}"})
        assert log.status_code == 403  # staff do not read the audit log, restored or not
