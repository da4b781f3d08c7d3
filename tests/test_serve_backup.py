"""Backups of the catalog (`transferlab catalog backup/restore`) and a full disk while saving.

- A backup taken while 8 clients save pets restores every pet whose save was acknowledged before
  the backup began, with its photo, and passes the integrity check.
- restore refuses to overwrite a catalog, and a damaged backup fails the check.
- A server whose file writes hit a size limit (RLIMIT_FSIZE, set by the test on a real uvicorn
  subprocess: the kernel refuses the write as it would on a full disk) answers 507, leaves no
  half-written file and no pet without its photo, and keeps serving.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
import httpx
from fastapi.testclient import TestClient

from tests._helpers import run_cli
from transferlab.apps.serve import ServeError, Settings, create_app
from transferlab.apps.serve.backup import backup, restore, verify
from transferlab.apps.serve.db import Catalog
from transferlab.apps.serve.storage import MediaStore


@pytest.fixture(scope="module")
def predictor():
    from transferlab.export import load_predictor

    return load_predictor("efficientnet_lite0")


@pytest.fixture
def client(tmp_path, predictor):
    with TestClient(create_app(Settings(model="efficientnet_lite0", db=str(tmp_path / "live" / "catalog.sqlite")),
                               predictor=predictor)) as c:
        yield c


def upload(client, data: bytes) -> str:
    r = client.post("/api/predict", files={"file": ("p.jpg", data, "image/jpeg")}, params={"heatmap": "false"})
    assert r.status_code == 200, r.text
    return r.json()["photo"]


def test_backup_under_load_restores_every_acknowledged_pet(client, tmp_path, petimages):
    shas = [upload(client, (petimages / "Cat" / f"{i}.jpg").read_bytes()) for i in range(4)]
    acked: list[tuple[float, int]] = []
    failed: list[str] = []
    lock, stop = threading.Lock(), threading.Event()

    def saver(t: int) -> None:
        k = 0
        while not stop.is_set():
            r = client.post("/api/pets", data={"name": f"c{t}-{k}", "photo": shas[(t + k) % 4], "breed": "tabby"})
            done = time.monotonic()
            with lock:
                if r.status_code == 201:
                    acked.append((done, r.json()["id"]))
                else:
                    failed.append(r.text)
            k += 1

    threads = [threading.Thread(target=saver, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    time.sleep(1.0)
    began = time.monotonic()
    result = backup(str(tmp_path / "live" / "catalog.sqlite"), tmp_path / "bk")
    ended = time.monotonic()
    time.sleep(0.3)
    stop.set()
    for th in threads:
        th.join()
    assert failed == []
    before = {i for t, i in acked if t < began}
    assert len(before) >= 8 and len(acked) > len(before)  # saves went on before, during and after

    r = restore(tmp_path / "bk", str(tmp_path / "new" / "catalog.sqlite"))
    restored = Catalog(Settings(model="", db=str(tmp_path / "new" / "catalog.sqlite")).db_url,
                       MediaStore(tmp_path / "new" / "media"))
    try:
        pets = restored.list_pets()
        ids = {p.id for p in pets}
        assert before <= ids, f"{len(before - ids)} acknowledged pet(s) missing"
        assert ids <= {i for _, i in acked}
        for p in pets:
            data = restored.media.photo_path(p.sha256, p.ext).read_bytes()
            assert hashlib.sha256(data).hexdigest() == p.sha256
    finally:
        restored.close()
    assert r.pets == result.pets == len(ids) and result.photos == 4
    print(f"\nbackup under load: {len(before)} acknowledged before the backup began, {len(acked)} in all, "
          f"{len(ids)} restored, backup took {ended - began:.2f} s, integrity check passed")


def test_restore_checks_integrity_and_never_overwrites(client, tmp_path, sample_images, monkeypatch, capsys):
    sha = upload(client, sample_images["chelsea"].read_bytes())
    assert client.post("/api/pets", data={"name": "Luna", "photo": sha}).status_code == 201
    db = tmp_path / "live" / "catalog.sqlite"
    code, out, err = run_cli(["catalog", "backup", "--db", db, "--out", tmp_path / "bk"], monkeypatch, capsys)
    assert code == 0 and "backed up 1 pet(s), 1 photo(s)" in out, err
    code, _, err = run_cli(["catalog", "backup", "--db", db, "--out", tmp_path / "bk"], monkeypatch, capsys)
    assert code == 2 and "already exists" in err
    code, _, err = run_cli(["catalog", "restore", tmp_path / "bk", "--db", db], monkeypatch, capsys)
    assert code == 2 and "never overwrites" in err
    assert client.get("/api/pets").json()[0]["name"] == "Luna"  # the live catalog untouched

    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    assert manifest["counts"] == {"pets": 1, "photos": 1, "users": 0} and manifest["schema_version"] == 2
    photo = next((tmp_path / "bk" / "media").glob("??/*.jpg"))
    good = photo.read_bytes()
    photo.write_bytes(good[:-10] + b"x" * 10)
    with pytest.raises(ServeError, match="missing from the backup or damaged"):
        verify(tmp_path / "bk")
    code, _, err = run_cli(["catalog", "restore", tmp_path / "bk", "--db", tmp_path / "n1" / "c.sqlite"],
                           monkeypatch, capsys)
    assert code == 2 and "damaged" in err and not (tmp_path / "n1" / "c.sqlite").exists()
    photo.write_bytes(good)
    dbf = tmp_path / "bk" / "catalog.sqlite"
    raw = dbf.read_bytes()
    dbf.write_bytes(raw[:4096] + b"\0" * 100 + raw[4196:])
    with pytest.raises(ServeError, match="damaged"):
        verify(tmp_path / "bk")
    dbf.write_bytes(raw)
    code, out, err = run_cli(["catalog", "restore", tmp_path / "bk", "--db", tmp_path / "n2" / "c.sqlite"],
                             monkeypatch, capsys)
    assert code == 0 and "restored 1 pet(s)" in out and "integrity check passed" in out, err


# ------------------------------------------------------------------------------------------------
# a full disk while saving a photo
# ------------------------------------------------------------------------------------------------
SERVER = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from transferlab.apps.serve import Settings, run_server
run_server(Settings(model="efficientnet_lite0", db=sys.argv[1], port=int(sys.argv[2]), log_level="warning"))
"""
LIMIT = 512 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def limited_server(tmp_path):
    """A real `serve` process whose files may not grow past 512 KiB (the kernel's RLIMIT_FSIZE)."""
    port = _free_port()
    db = tmp_path / "full" / "catalog.sqlite"
    db.parent.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(db), str(port), str(LIMIT)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"server exited: {proc.stdout.read().decode()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("server did not start")
        time.sleep(0.2)
    yield url, db.parent / "media"
    proc.terminate()
    proc.wait(timeout=30)


def test_full_disk_while_saving_a_photo_is_507_and_leaves_nothing_behind(limited_server, sample_images):
    url, media = limited_server
    noise = np.random.default_rng(0).integers(0, 256, (520, 520, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    big = buf.getvalue()
    assert LIMIT < len(big) < 1 << 20  # over the limit, under the multipart parser's in-memory size
    with httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/api/predict", files={"file": ("big.png", big, "image/png")})
        assert r.status_code == 507 and "disk is full" in r.json()["detail"], r.text
        r = c.post("/api/pets", data={"name": "Ghost"}, files={"file": ("big.png", big, "image/png")})
        assert r.status_code == 507
        page = c.post("/predict", files={"file": ("big.png", big, "image/png")})
        assert page.status_code == 507 and 'id="error"' in page.text and "disk is full" in page.text
        assert [p for p in media.rglob("*") if p.is_file()] == []  # no half-written photo, no temp file
        assert c.get("/api/pets").json() == []  # no pet without its photo

        small = sample_images["chelsea"].read_bytes()  # the server keeps serving
        r = c.post("/api/pets", data={"name": "Luna"}, files={"file": ("c.jpg", small, "image/jpeg")})
        assert r.status_code == 201, r.text
        assert c.get(r.json()["photo_url"]).content == small
        assert [p["name"] for p in c.get("/api/pets").json()] == ["Luna"]
    files = sorted(p.name for p in media.rglob("*") if p.is_file())
    sha = hashlib.sha256(small).hexdigest()
    assert files == [f"{sha}.jpg", f"{sha}.jpg"] and not any(n.startswith(".") for n in files)
    assert os.path.getsize(next(media.glob("??/*.jpg"))) == len(small)
