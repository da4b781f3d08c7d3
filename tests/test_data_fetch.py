"""fetch: downloads from a local HTTP server (127.0.0.1), resumes, checks, extracts safely."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from transferlab.data import fetch as Fm
from transferlab.errors import FetchError


class RangeHandler(SimpleHTTPRequestHandler):
    """Static files with HTTP Range support (the stdlib handler has none), as real mirrors do."""

    def log_message(self, *a):
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if start >= len(data) and rng:
            self.send_response(416)
            self.end_headers()
            return
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _tar(path, files: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _md5(p):
    return hashlib.md5(p.read_bytes()).hexdigest()


def _oxford_archives(root, sample_images):
    jpg = sample_images["chelsea"].read_bytes()
    _tar(root / "images.tar.gz", {"images/Bengal_1.jpg": jpg, "images/beagle_1.jpg": jpg})
    listing = b"#Image CLASS-ID SPECIES BREED-ID\nBengal_1 6 1 6\nbeagle_1 11 2 4\n"
    _tar(root / "annotations.tar.gz", {"annotations/list.txt": listing, "annotations/trainval.txt": listing,
                                       "annotations/test.txt": listing})


def test_fetch_oxford_from_local_server(server, tmp_path, monkeypatch, sample_images):
    root, url = server
    _oxford_archives(root, sample_images)
    monkeypatch.setitem(Fm.SOURCES, "oxford-pets", Fm.Source("oxford-pets", (
        Fm.Archive("https://x/images.tar.gz", _md5(root / "images.tar.gz")),
        Fm.Archive("https://x/annotations.tar.gz", _md5(root / "annotations.tar.gz"))), "", ""))
    dest = tmp_path / "pets"
    got = Fm.fetch("oxford-pets", dest, mirror=url)
    from transferlab.data.datasets import load_dataset

    ds = load_dataset(got, label="species")
    assert ds.format == "oxford-pets" and ds.classes == ["cat", "dog"] and len(ds) == 2
    assert (got / "images" / "Bengal_1.jpg").read_bytes() == sample_images["chelsea"].read_bytes()


def test_resume_partial_download(server, tmp_path):
    root, url = server
    payload = bytes(range(256)) * 4000
    (root / "big.bin").write_bytes(payload)
    folder = tmp_path / "dl"
    folder.mkdir()
    (folder / "big.bin.part").write_bytes(payload[:300_000])  # an interrupted earlier run
    got = Fm.download(f"{url}/big.bin", folder, md5=hashlib.md5(payload).hexdigest())
    assert got.read_bytes() == payload and not (folder / "big.bin.part").exists()


def test_checksum_mismatch_is_an_error(server, tmp_path):
    root, url = server
    (root / "f.bin").write_bytes(b"abc" * 1000)
    with pytest.raises(FetchError, match="checksum mismatch"):
        Fm.download(f"{url}/f.bin", tmp_path / "dl", md5="0" * 32)
    assert not (tmp_path / "dl" / "f.bin").exists()


def test_path_traversal_refused(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("PetImages/Cat/1.jpg", b"x")
        zf.writestr("../../escaped.txt", b"gotcha")
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(FetchError, match="unsafe member"):
        Fm.extract(evil, dest)
    assert not (tmp_path / "escaped.txt").exists() and not list(dest.rglob("*.jpg"))
    tgz = tmp_path / "evil.tar.gz"
    _tar(tgz, {"/etc/passwd-copy": b"x"})
    with pytest.raises(FetchError, match="unsafe member"):
        Fm.extract(tgz, dest)


def test_petimages_zip_layout(server, tmp_path, monkeypatch, sample_images):
    root, url = server
    with zipfile.ZipFile(root / "kagglecatsanddogs_5340.zip", "w") as zf:
        zf.writestr("PetImages/Cat/0.jpg", sample_images["chelsea"].read_bytes())
        zf.writestr("PetImages/Dog/0.jpg", sample_images["coffee"].read_bytes())
        zf.writestr("readme[1].txt", b"readme")
    got = Fm.fetch("petimages", tmp_path / "d", mirror=url)
    assert got.name == "PetImages" and sorted(p.name for p in got.iterdir()) == ["Cat", "Dog"]


def test_offline_gives_clear_error_and_cli_exit_2(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: like being offline
    with pytest.raises(FetchError, match="offline"):
        Fm.fetch("petimages", tmp_path / "d", mirror=f"http://127.0.0.1:{port}")
    from tests.test_apps_cli import tl

    r = tl("fetch", "oxford-pets", tmp_path / "d2", "--mirror", f"http://127.0.0.1:{port}")
    assert r.returncode == 2 and "offline" in r.stderr and "Traceback" not in r.stderr
