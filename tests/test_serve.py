"""The catalog web app (`transferlab serve`) through FastAPI's TestClient, on real photos and the
real bundled efficientnet_lite0 (ImageNet classes: chelsea is a tiger cat / tabby / Egyptian cat).

What could break and is checked here: predictions and "not sure", the heat map, save / list /
filter / edit / delete, the CSV that `transferlab train` reads, duplicate warnings (and the
default threshold they rest on), every kind of bad upload (4xx, nothing stored), concurrent
saves, schema versioning, restarts, and the pages themselves.
"""

from __future__ import annotations

import base64
import hashlib
import io
import sqlite3
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
from fastapi.testclient import TestClient

from transferlab.apps.serve import ServeError, Settings, create_app

CATS = {"tiger cat", "tabby", "Egyptian cat"}


@pytest.fixture(scope="module")
def predictor():
    from transferlab.export import load_predictor

    return load_predictor("efficientnet_lite0")


@pytest.fixture
def make_client(tmp_path, predictor):
    """``make_client(**settings)`` -> a started TestClient on a fresh catalog in ``tmp_path``
    (the same db file each call, so a second call is a restart)."""
    clients = []

    def make(**kw):
        kw.setdefault("db", str(tmp_path / "catalog.sqlite"))
        c = TestClient(create_app(Settings(model="efficientnet_lite0", **kw), predictor=predictor))
        c.__enter__()
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


def jpeg(path_or_image, quality: int = 95) -> bytes:
    im = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos(sample_images) -> dict[str, bytes]:
    return {k: Path(p).read_bytes() for k, p in sample_images.items()}


def predict(client, data: bytes, name: str = "photo.jpg", **kw):
    return client.post("/api/predict", files={"file": (name, data, "image/jpeg")}, **kw)


def save(client, data: bytes, name: str, breed: str | None = None):
    r = predict(client, data)
    assert r.status_code == 200, r.text
    form = {"name": name, "photo": r.json()["photo"], **({"breed": breed} if breed else {})}
    r = client.post("/api/pets", data=form)
    assert r.status_code == 201, r.text
    return r.json()


def media_files(client) -> list[Path]:
    root = client.app.state.svc.media.root
    return sorted(p for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------------
def test_predict_real_cat(client, photos):
    r = predict(client, photos["chelsea"])
    assert r.status_code == 200, r.text
    j = r.json()
    labels = [t["label"] for t in j["top"]]
    scores = [t["score"] for t in j["top"]]
    assert len(labels) == 3 and set(labels) <= CATS | {"lynx"} and labels[0] in CATS
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
    assert j["threshold"] == 0.5 and j["unsure"] == (scores[0] < 0.5)
    assert j["photo"] == hashlib.sha256(photos["chelsea"]).hexdigest()
    assert j["duplicates"] == []
    head, b64 = j["heatmap"].split(",", 1)
    assert head == "data:image/jpeg;base64"
    heat = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert heat.format == "JPEG" and heat.size == (448, 448)
    assert client.get("/api/pets").json() == []  # a prediction is not a catalog entry


def test_phone_sized_jpeg_is_accepted_and_stored_unchanged(client, sample_images):
    big = jpeg(Image.open(sample_images["chelsea"]).convert("RGB").resize((4000, 2667), Image.Resampling.BICUBIC), 90)
    j = predict(client, big).json()
    assert j["top"][0]["label"] in CATS  # decoded at reduced scale for the model
    assert client.get(j["photo_url"]).content == big  # the file itself is kept as uploaded


def test_espresso_is_sure_and_threshold_is_configurable(make_client, photos):
    j = predict(make_client(), photos["coffee"]).json()
    assert j["top"][0]["label"] == "espresso" and j["top"][0]["score"] > 0.9 and not j["unsure"]
    strict = make_client(threshold=0.999)
    j = predict(strict, photos["coffee"], params={"heatmap": "false"}).json()
    assert j["unsure"] and j["threshold"] == 0.999 and j["heatmap"] is None


def test_model_endpoint_and_docs(client):
    m = client.get("/api/model").json()
    assert len(m["classes"]) == 1000 and "tabby" in m["classes"] and m["threshold"] == 0.5
    assert m["info"]["backbone"] == "efficientnet_lite0"
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/predict", "/api/pets", "/api/pets/{pet_id}", "/api/pets.csv"} <= set(paths)


# ---------------------------------------------------------------------------------------------
# save, list, filter, edit, delete, CSV
# ---------------------------------------------------------------------------------------------
def test_save_list_filter_edit_delete(client, photos):
    luna = save(client, photos["chelsea"], "  Luna  ")  # breed defaults to the model's guess
    bean = save(client, photos["coffee"], "Bean", breed="espresso")
    assert luna["name"] == "Luna" and luna["breed"] in CATS and luna["breed"] == luna["predicted"]
    listed = client.get("/api/pets").json()
    assert [p["id"] for p in listed] == [bean["id"], luna["id"]]  # newest first
    assert [p["name"] for p in client.get("/api/pets", params={"breed": "espresso"}).json()] == ["Bean"]

    r = client.patch(f"/api/pets/{luna['id']}", json={"name": "Luna II", "breed": "tabby"})
    assert r.status_code == 200 and r.json()["name"] == "Luna II" and r.json()["breed"] == "tabby"
    assert client.get(f"/api/pets/{luna['id']}").json()["breed"] == "tabby"
    assert client.patch(f"/api/pets/{luna['id']}", json={"breed": "unicorn"}).status_code == 422
    assert client.patch(f"/api/pets/{luna['id']}", json={"name": "   "}).status_code == 422
    assert client.patch(f"/api/pets/{luna['id']}", json={"colour": "red"}).status_code == 422
    assert client.get(f"/api/pets/{luna['id']}").json()["name"] == "Luna II"  # refused edits changed nothing

    photo = client.get(luna["photo_url"])
    assert photo.status_code == 200 and photo.content == photos["chelsea"]
    assert client.get(luna["thumbnail_url"]).headers["content-type"] == "image/jpeg"
    assert client.delete(f"/api/pets/{luna['id']}").status_code == 204
    assert client.get(f"/api/pets/{luna['id']}").status_code == 404
    assert client.delete(f"/api/pets/{luna['id']}").status_code == 404
    assert client.get(luna["photo_url"]).status_code == 404
    assert [p["name"] for p in client.get("/api/pets").json()] == ["Bean"]
    names = {p.name for p in media_files(client)}
    assert not any(n.startswith(luna["photo"]) for n in names)  # its photo and thumbnail are gone
    assert any(n.startswith(bean["photo"]) for n in names)


def test_save_refuses_bad_fields(client, photos):
    sha = predict(client, photos["chelsea"]).json()["photo"]
    for form in ({"photo": sha, "name": "", "breed": "tabby"}, {"photo": sha, "name": "Luna", "breed": "unicorn"},
                 {"photo": "../../etc/passwd", "name": "Luna", "breed": "tabby"},
                 {"photo": sha, "name": "x" * 101, "breed": "tabby"}, {"name": "Luna", "breed": "tabby"}):
        assert client.post("/api/pets", data=form).status_code == 422, form
    assert client.post("/api/pets", data={"photo": "0" * 64, "name": "Luna", "breed": "tabby"}).status_code == 409
    assert client.get("/api/pets").json() == []


def test_shared_photo_is_kept_until_its_last_pet_goes(client, photos):
    a = save(client, photos["chelsea"], "A")
    b = save(client, photos["chelsea"], "B")
    client.delete(f"/api/pets/{a['id']}")
    assert client.get(b["photo_url"]).content == photos["chelsea"]
    client.delete(f"/api/pets/{b['id']}")
    assert media_files(client) == []


def test_csv_round_trips_into_the_training_loader(client, photos, tmp_path):
    from transferlab import load_dataset

    save(client, photos["chelsea"], "Luna", breed="tabby")
    save(client, photos["coffee"], "Bean, the cup", breed="espresso")
    save(client, photos["astronaut"], "Eileen", breed="tabby")
    r = client.get("/api/pets.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.text.splitlines()[0] == "path,label"
    f = tmp_path / "pets.csv"
    f.write_text(r.text)
    ds = load_dataset(f)
    assert ds.classes == ["espresso", "tabby"] and len(ds) == 3
    got = {Path(p).read_bytes(): ds.classes[y] for p, y in zip(ds.paths, ds.labels)}
    assert all(Path(p).is_absolute() for p in ds.paths)
    assert got == {photos["chelsea"]: "tabby", photos["coffee"]: "espresso", photos["astronaut"]: "tabby"}
    only = client.get("/api/pets.csv", params={"breed": "espresso"}).text.splitlines()
    assert len(only) == 2 and only[1].endswith(",espresso")


# ---------------------------------------------------------------------------------------------
# duplicates
# ---------------------------------------------------------------------------------------------
def _crop(im: Image.Image, frac: float) -> Image.Image:
    w, h = im.size
    return im.crop((int(w * frac), int(h * frac), w - int(w * frac), h - int(h * frac)))


def test_duplicates_same_photo_flagged_other_photo_not(client, oxford):
    first, other = sorted((oxford / "images").glob("Bengal_*.jpg"))[:2]
    luna = save(client, first.read_bytes(), "Luna", breed="tabby")

    again = predict(client, first.read_bytes()).json()["duplicates"]
    assert [d["pet"]["id"] for d in again] == [luna["id"]] and again[0]["similarity"] > 0.999
    assert again[0]["message"] == "this may be Luna, added just now"

    im = Image.open(first).convert("RGB")
    for variant in (jpeg(im, quality=70), jpeg(_crop(im, 0.03), quality=90)):
        dups = predict(client, variant).json()["duplicates"]
        assert [d["pet"]["name"] for d in dups] == ["Luna"], "re-encoded / slightly cropped copy not flagged"
    assert predict(client, other.read_bytes()).json()["duplicates"] == []


def test_default_duplicate_threshold_separates_copies_from_other_photos(predictor, oxford):
    """The default rests on this: copies of a photo score above it, different photos of one
    breed below it (on breeds without the dataset's few same-animal pairs)."""
    t = Settings(model="x").duplicate_threshold
    breeds = ("Abyssinian", "beagle", "Maine_Coon", "pug")
    for breed in breeds:
        files = sorted((oxford / "images").glob(f"{breed}_*.jpg"))[:8]
        ims = [Image.open(f).convert("RGB") for f in files]
        e = predictor.embed(ims)
        sims = e @ e.T
        np.fill_diagonal(sims, -1)
        assert sims.max() < t, f"two different {breed} photos look like duplicates ({sims.max():.3f})"
        copies = [Image.open(io.BytesIO(jpeg(ims[0], 70))), _crop(ims[1], 0.03)]
        c = predictor.embed(copies)
        assert (c @ e[0]) [0] >= t and (c @ e[1])[1] >= t


# ---------------------------------------------------------------------------------------------
# bad input: a clear 4xx, in the API and the page, and nothing stored
# ---------------------------------------------------------------------------------------------
def png_header_only(w: int, h: int) -> bytes:
    """A PNG that declares w x h pixels but holds almost nothing: the classic decompression bomb
    shape (the header is all a decoder needs to refuse it)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _ppm() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PPM")
    return buf.getvalue()


BAD = {
    "text file": (lambda p: b"name,breed\nLuna,Bengal\n", 415, "not an image"),
    "pdf": (lambda p: b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", 415, "not an image"),
    "ppm (not accepted)": (lambda p: _ppm(), 415, "not accepted"),
    "empty": (lambda p: b"", 400, "empty"),
    "truncated jpeg": (lambda p: p["chelsea"][: len(p["chelsea"]) // 2], 400, "damaged"),
    "corrupt jpeg": (lambda p: p["chelsea"][:600] + bytes(range(256)) * 40, 400, "damaged"),
    "decompression bomb": (lambda p: png_header_only(100_000, 100_000), 400, "too many pixels"),
    "huge dimensions": (lambda p: _png(Image.new("L", (25_000, 8))), 400, "too large"),
    "too many pixels under PIL's limit": (lambda p: png_header_only(8_000, 8_000), 400, "too large"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_upload_is_refused_and_nothing_is_stored(client, photos, case):
    make, status, words = BAD[case]
    data = make(photos)
    r = predict(client, data)
    assert r.status_code == status and words in r.json()["detail"], r.text
    page = client.post("/predict", files={"file": ("x", data, "application/octet-stream")})
    assert page.status_code == status and 'id="error"' in page.text and words in page.text
    r = client.post("/api/pets", data={"name": "Luna"}, files={"file": ("x", data, "image/jpeg")})
    assert r.status_code == status
    assert client.get("/api/pets").json() == [] and media_files(client) == []
    assert client.app.state.svc.catalog.stale_photos("no such key") == []  # no photo rows either


def test_oversized_upload_413_while_reading(make_client):
    client = make_client(max_upload_mb=1)
    big = np.random.default_rng(0).integers(0, 256, (900, 900, 3), np.uint8)
    data = _png(Image.fromarray(big))
    assert len(data) > 2**20
    r = predict(client, data)
    assert r.status_code == 413 and "larger than 1 MB" in r.json()["detail"]
    page = client.post("/predict", files={"file": ("x.png", data, "image/png")})
    assert page.status_code == 413 and "larger than 1 MB" in page.text

    status, chunks_read = _stream_to_app(client.app, "/api/predict", n_chunks=64, chunk=64 * 1024)
    assert status == 413 and chunks_read <= 1 + 2**20 // (64 * 1024) + 1  # stopped just past the limit
    assert client.get("/api/pets").json() == [] and media_files(client) == []


def _stream_to_app(app, path: str, n_chunks: int, chunk: int) -> tuple[int, int]:
    """POST a body of ``n_chunks`` chunks without Content-Length straight into the ASGI app;
    returns (status, chunks the app pulled before answering)."""
    import asyncio

    pulled, status = 0, []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", b"multipart/form-data; boundary=x"),
                         (b"transfer-encoding", b"chunked")], "client": ("127.0.0.1", 1), "server": ("testserver", 80)}

    head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'

    async def receive():
        nonlocal pulled
        pulled += 1
        body = (head if pulled == 1 else b"") + b"\0" * chunk
        return {"type": "http.request", "body": body, "more_body": pulled < n_chunks}

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])

    asyncio.run(app(scope, receive, send))
    return status[0], pulled


def test_missing_field_and_wrong_method(client):
    assert client.post("/api/predict").status_code == 422
    assert client.post("/api/predict", data={"photo": "x"}).status_code == 422
    page = client.post("/predict")
    assert page.status_code == 422 and "file: missing" in page.text
    assert client.get("/api/pets/abc").status_code == 422
    assert client.get("/pets/999/edit").status_code == 404


def test_client_file_name_never_reaches_the_filesystem(client, photos, tmp_path):
    r = predict(client, photos["chelsea"], name="../../../evil name.jpg")
    assert r.status_code == 200
    assert [p.name for p in media_files(client)] != [] and not list(tmp_path.rglob("*evil*"))
    assert all(p.stem.startswith(r.json()["photo"]) for p in media_files(client))


def test_cross_site_posts_and_foreign_hosts_are_refused(client, photos):
    r = predict(client, photos["chelsea"], headers={"origin": "http://evil.example"})
    assert r.status_code == 403
    assert predict(client, photos["chelsea"], headers={"origin": "http://testserver"}).status_code == 200
    assert client.get("/api/pets", headers={"host": "evil.example"}).status_code == 400
    assert client.get("/").headers["x-frame-options"] == "DENY"


# ---------------------------------------------------------------------------------------------
# concurrency, schema, restarts
# ---------------------------------------------------------------------------------------------
def test_sixteen_concurrent_saves_make_sixteen_rows(client, petimages, photos):
    files = [Path(petimages / "Cat" / f"{i}.jpg").read_bytes() for i in range(8)]
    shared = predict(client, photos["chelsea"]).json()["photo"]

    def work(i: int):
        if i < 8:  # a new upload each, analysed and saved in one request
            upload = {"file": (f"{i}.jpg", files[i], "image/jpeg")}
            return client.post("/api/pets", data={"name": f"cat{i}"}, files=upload)
        return client.post("/api/pets", data={"name": f"twin{i}", "photo": shared, "breed": "tabby"})

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(work, range(16)))
    assert [r.status_code for r in results] == [201] * 16, [r.text for r in results if r.status_code != 201]
    pets = client.get("/api/pets").json()
    assert len(pets) == 16 and len({p["id"] for p in pets}) == 16
    assert {p["name"] for p in pets} == {f"cat{i}" for i in range(8)} | {f"twin{i}" for i in range(8, 16)}
    for p in pets:
        assert client.get(p["photo_url"]).status_code == 200


def test_sqlite_catalog_is_wal_with_foreign_keys(client, tmp_path):
    con = sqlite3.connect(tmp_path / "catalog.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT version FROM schema_version").fetchall() == [(2,)]  # 2: accounts (issue 23)
    con.close()
    with client.app.state.svc.catalog.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_newer_schema_is_refused(make_client, tmp_path, predictor):
    make_client()
    con = sqlite3.connect(tmp_path / "catalog.sqlite")
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    con.close()
    with pytest.raises(ServeError, match="schema version 99"):
        create_app(Settings(model="efficientnet_lite0", db=str(tmp_path / "catalog.sqlite")), predictor=predictor)


def test_not_a_database_is_refused(tmp_path, predictor):
    bad = tmp_path / "photo.sqlite"
    bad.write_bytes(b"\xff\xd8\xff" + b"x" * 4096)
    with pytest.raises(ServeError, match="cannot open catalog"):
        create_app(Settings(model="efficientnet_lite0", db=str(bad)), predictor=predictor)


def test_settings_are_checked():
    with pytest.raises(ServeError, match="--media"):
        _ = Settings(model="m", db="postgresql://u:secret@localhost/db").media_dir
    assert Settings(model="m", db="postgres://u@h/d").db_url == "postgresql+psycopg://u@h/d"
    for bad in ({"threshold": 1.5}, {"max_upload_mb": 0}, {"duplicate_threshold": 0}):
        with pytest.raises(ServeError):
            Settings(model="m", **bad)
    assert "127.0.0.1" in Settings(model="m").trusted_hosts
    assert Settings(model="m", host="0.0.0.0").trusted_hosts == ["*"]


def test_restart_keeps_pets_and_finds_duplicates_from_stored_embeddings(make_client, photos):
    first = make_client()
    luna = save(first, photos["chelsea"], "Luna")
    first.__exit__(None, None, None)
    second = make_client()
    assert [p["name"] for p in second.get("/api/pets").json()] == ["Luna"]
    dups = predict(second, photos["chelsea"]).json()["duplicates"]
    assert [d["pet"]["id"] for d in dups] == [luna["id"]]


def test_photos_embedded_by_another_model_are_re_embedded_at_startup(make_client, photos, tmp_path):
    first = make_client()
    save(first, photos["chelsea"], "Luna")
    key = first.app.state.svc.model.embed_key
    first.__exit__(None, None, None)
    con = sqlite3.connect(tmp_path / "catalog.sqlite")
    con.execute("UPDATE photos SET embed_key = 'an-older-model', embedding = ?", (np.ones(1280, "<f4").tobytes(),))
    con.commit()
    con.close()
    second = make_client()
    assert second.app.state.svc.catalog.stale_photos(key) == []
    assert [d["pet"]["name"] for d in predict(second, photos["chelsea"]).json()["duplicates"]] == ["Luna"]


def test_unsaved_uploads_expire(make_client, photos):
    client = make_client(pending_hours=0)
    sha = predict(client, photos["chelsea"]).json()["photo"]
    assert media_files(client)
    client.app.state.svc.purge()
    assert media_files(client) == []
    r = client.post("/api/pets", data={"photo": sha, "name": "Luna", "breed": "tabby"})
    assert r.status_code == 409 and "upload the photo again" in r.json()["detail"]


# ---------------------------------------------------------------------------------------------
# pages
# ---------------------------------------------------------------------------------------------
def test_pages_upload_save_catalog_edit_delete(client, photos):
    assert "Drop a photo here" in client.get("/").text
    r = client.post("/predict", files={"file": ("chelsea.jpg", photos["chelsea"], "image/jpeg")})
    assert r.status_code == 200
    assert 'id="heatmap" src="data:image/jpeg;base64,' in r.text and "Not sure" in r.text
    sha = hashlib.sha256(photos["chelsea"]).hexdigest()
    assert f'name="photo" value="{sha}"' in r.text and "<option selected>tiger cat</option>" in r.text

    r = client.post("/pets", data={"photo": sha, "name": "<b>Luna</b>", "breed": "tabby"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/catalog?saved=")
    page = client.get(r.headers["location"]).text
    assert "&lt;b&gt;Luna&lt;/b&gt;" in page and "<b>Luna</b>" not in page  # names are escaped
    assert f"/thumbs/{sha}.jpg" in page and "added just now" in page
    pet_id = client.get("/api/pets").json()[0]["id"]
    assert "this may be &lt;b&gt;Luna&lt;/b&gt;" in client.post(
        "/predict", files={"file": ("again.jpg", photos["chelsea"], "image/jpeg")}).text

    assert client.get("/catalog", params={"breed": "espresso"}).text.count('class="pet card"') == 0
    assert client.get("/catalog", params={"breed": "tabby"}).text.count('class="pet card"') == 1
    assert client.post(f"/pets/{pet_id}/edit", data={"name": "", "breed": "tabby"}).status_code == 422
    r = client.post(f"/pets/{pet_id}/edit", data={"name": "Luna", "breed": "tiger cat"}, follow_redirects=False)
    assert r.status_code == 303
    assert client.get(f"/api/pets/{pet_id}").json()["breed"] == "tiger cat"
    r = client.post(f"/pets/{pet_id}/delete", follow_redirects=False)
    assert r.status_code == 303 and client.get("/api/pets").json() == []
