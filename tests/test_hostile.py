"""Hostile inputs (issue 13): what a careless or unlucky user hands the tool.

Per case: the exit code, one ``error:`` line and no traceback on stderr, the data folder
byte-identical (listing, contents and modes), and nothing half-written. The corpus is made here
from a few real photos of ../shared/data plus files built to be broken.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ._helpers import run_cli

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# corpus
# --------------------------------------------------------------------------------------------
def _snapshot(root: Path) -> dict[str, tuple]:
    """Listing, contents and modes of a tree (links listed by their target, not followed)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = ("dir", stat.S_IMODE(p.stat().st_mode))
        else:
            out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), stat.S_IMODE(p.stat().st_mode),
                        p.stat().st_mtime_ns)
    return out


def _png_with_size(path: Path, w: int, h: int) -> None:
    """A tiny PNG whose header claims w x h pixels: a decompression bomb costs nothing to make."""
    raw = zlib.compress(b"\x00\x00")
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


BAD = {  # file name -> what must be said about it (substring of the skip reason)
    "zero.jpg": "",
    "truncated.jpg": "truncated",
    "text.jpg": "not an image",
    "bomb.png": "decompression bomb",
    "loop.jpg": "loop",
}


def _make_corpus(root: Path, petimages: Path) -> dict[str, int]:
    """Cat/Dog photos plus every awkward kind of file; returns how many readable images per class."""
    cat, dog = root / "Cat", root / "Dog"
    (cat / "nested" / "deeper").mkdir(parents=True)
    dog.mkdir()
    for i in range(8):
        shutil.copy(petimages / "Cat" / f"{i}.jpg", cat / f"{i}.jpg")
        shutil.copy(petimages / "Dog" / f"{i}.jpg", dog / f"{i}.jpg")
    photo = Image.open(petimages / "Cat" / "10.jpg").convert("RGB")
    photo.save(cat / "png-named.jpg", format="PNG")                      # PNG bytes behind .jpg
    photo.convert("CMYK").save(cat / "cmyk.jpg")
    Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257).save(cat / "grey16.png")
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(cat / "rgba.png")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(cat / "palette.gif")
    frames = [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frames[0].save(cat / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    photo.save(cat / "photo.webp")
    photo.save(cat / "photo.tiff")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    photo.save(cat / "exif-rotated.jpg", exif=exif)
    photo.resize((1, 1)).save(cat / "one-pixel.png")
    photo.resize((4000, 10)).save(cat / "panorama.jpg")
    photo.save(cat / "nested" / "deeper" / "chat-été-猫.jpg")
    (cat / "zero.jpg").write_bytes(b"")
    good = (petimages / "Dog" / "20.jpg").read_bytes()
    (dog / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (dog / "text.jpg").write_text("this is not a picture")
    _png_with_size(dog / "bomb.png", 30000, 30000)
    os.symlink("loop.jpg", dog / "loop.jpg")                              # a link to itself
    (dog / "notes.txt").write_text("not an image by name: ignored")
    return {"Cat": 8 + 12, "Dog": 8}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, petimages) -> Path:
    root = tmp_path_factory.mktemp("hostile") / "data"
    _make_corpus(root, petimages)
    return root


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory, corpus) -> Path:
    from transferlab import train

    before = _snapshot(corpus)
    out = tmp_path_factory.mktemp("hostile-runs") / "run"
    train(corpus, out=out, progress=False)
    assert _snapshot(corpus) == before
    return out


def _cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    code, out, err = run_cli(list(args), monkeypatch, capsys)
    assert "Traceback" not in err, err
    return code, out, err


def _one_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


# --------------------------------------------------------------------------------------------
# every image case: trained around, reported, never touched
# --------------------------------------------------------------------------------------------
def test_hostile_images_are_skipped_reported_and_untouched(corpus, corpus_run):
    metrics = json.loads((corpus_run / "metrics.json").read_text())
    reasons = {Path(s["path"]).name: s["reason"] for s in metrics["skipped_files"]}
    assert set(reasons) == set(BAD), reasons
    for name, needle in BAD.items():
        assert needle in reasons[name], (name, reasons[name])
    cfg = json.loads((corpus_run / "config.json").read_text())
    per_class = cfg["data"]["per_class"]
    # files listed (12 readable extras + zero.jpg in Cat); bad ones skipped later
    assert per_class["Cat"] == 8 + 13 and per_class["Dog"] == 8 + 4
    assert cfg["data"]["ignored_files"] and all(f.endswith("notes.txt") for f in cfg["data"]["ignored_files"])


# --------------------------------------------------------------------------------------------
# 1. outputs inside the data folder
# --------------------------------------------------------------------------------------------
def test_out_inside_data_is_refused_before_any_work(corpus, corpus_run, monkeypatch, capsys):
    before = _snapshot(corpus)
    code, _, err = _cli(monkeypatch, capsys, "train", corpus, "--out", corpus / "myrun", "-q")
    assert code == 2 and "inside" in _one_error(err)
    code, _, err = _cli(monkeypatch, capsys, "evaluate", corpus_run, corpus, "--out", corpus / "Cat" / "eval", "-q")
    assert code == 2 and "inside" in _one_error(err)
    assert _snapshot(corpus) == before


# --------------------------------------------------------------------------------------------
# 2. an existing run is never replaced silently, and is replaced as a whole
# --------------------------------------------------------------------------------------------
def _two_class_folder(root: Path, petimages: Path, classes=("Cat", "Dog"), n: int = 6) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True)
        src = petimages / ("Dog" if c not in ("Cat", "Dog") else c)
        for i in range(100, 100 + n):
            shutil.copy(src / f"{i}.jpg", root / c / f"{i}.jpg")
    return root


def test_existing_run_needs_overwrite_and_is_replaced_whole(tmp_path, petimages, monkeypatch, capsys):
    a = _two_class_folder(tmp_path / "a", petimages)
    b = _two_class_folder(tmp_path / "b", petimages, classes=("Cat", "Horse"))
    run = tmp_path / "runs" / "pets"
    assert _cli(monkeypatch, capsys, "train", a, "--out", run, "-q")[0] == 0
    assert _cli(monkeypatch, capsys, "evaluate", run, a, "-q")[0] == 0
    assert any(p.name.startswith("eval-") for p in run.iterdir())
    old = _snapshot(run)

    code, _, err = _cli(monkeypatch, capsys, "train", b, "--out", run, "-q")
    assert code == 2 and "--overwrite" in _one_error(err)
    assert _snapshot(run) == old

    assert _cli(monkeypatch, capsys, "train", b, "--out", run, "--overwrite", "-q")[0] == 0
    assert json.loads((run / "config.json").read_text())["classes"] == ["Cat", "Horse"]
    assert not any(p.name.startswith("eval-") for p in run.iterdir()), "old evaluations describe the old model"
    assert sorted(p.name for p in run.parent.iterdir()) == ["pets"], "no temporary or backup dirs left"


@pytest.mark.slow
def test_killed_overwrite_leaves_old_or_new_run(tmp_path, petimages):
    """kill -9 at several moments of `train --overwrite`: the run dir is always one complete run."""
    from transferlab import load

    a = _two_class_folder(tmp_path / "a", petimages)
    b = _two_class_folder(tmp_path / "b", petimages, classes=("Cat", "Horse"))
    run = tmp_path / "runs" / "x"
    env = {**os.environ, "TRANSFERLAB_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "transferlab", "train", "--out", str(run), "--overwrite", "-q"]
    subprocess.run([*cmd[:4], str(a), *cmd[4:]], env=env, check=True, capture_output=True)
    seen = set()
    for delay in (0.5, 3.0, 6.0, 9.0, 12.0):
        p = subprocess.Popen([*cmd[:4], str(b), *cmd[4:]], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        classes = load(run).classes  # loads: config and weights agree
        assert classes in (["Cat", "Dog"], ["Cat", "Horse"])
        seen.add(tuple(classes))
    assert seen, "the run directory was always loadable"


# --------------------------------------------------------------------------------------------
# 3. the feature cache notices a replaced file even with the same size and mtime
# --------------------------------------------------------------------------------------------
def test_cache_notices_replaced_file_with_same_size_and_mtime(tmp_path, petimages):
    import transferlab as tl

    cat_bytes = (petimages / "Cat" / "30.jpg").read_bytes()
    dog_bytes = (petimages / "Dog" / "30.jpg").read_bytes()
    size = max(len(cat_bytes), len(dog_bytes))
    cat_bytes, dog_bytes = (b.ljust(size, b"\0") for b in (cat_bytes, dog_bytes))  # JPEG ignores the tail
    p = tmp_path / "pet.jpg"
    p.write_bytes(cat_bytes)
    st = p.stat()
    bb = tl.create_backbone("efficientnet_lite0")
    first = tl.extract(bb, [p], progress=False)
    assert first.extracted == 1
    again = tl.extract(bb, [p], progress=False)
    assert again.extracted == 0  # the cache works at all

    p.write_bytes(dog_bytes)  # same path, same size; then `touch -r` back to the old times
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert p.stat().st_size == st.st_size and p.stat().st_mtime_ns == st.st_mtime_ns
    replaced = tl.extract(bb, [p], progress=False)
    fresh = tl.extract(bb, [p], progress=False, cache=False)
    assert replaced.extracted == 1
    np.testing.assert_allclose(replaced.features, fresh.features, atol=1e-5)
    assert not np.allclose(replaced.features, first.features, atol=1e-2)


# --------------------------------------------------------------------------------------------
# 4 and 11. CSV and Oxford list files
# --------------------------------------------------------------------------------------------
def test_csv_with_bom_and_crlf(tmp_path, petimages):
    from transferlab import load_dataset

    f = tmp_path / "list.csv"
    rows = [f"{petimages / c / f'{i}.jpg'},{c}" for c in ("Cat", "Dog") for i in range(3)]
    f.write_bytes(("\ufeffpath,label\r\n" + "\r\n".join(rows) + "\r\n").encode("utf-8"))
    ds = load_dataset(f)
    assert ds.classes == ["Cat", "Dog"] and len(ds) == 6


def test_csv_error_names_the_right_line(tmp_path, petimages, monkeypatch, capsys):
    f = tmp_path / "list.csv"
    f.write_text(f"path,label\n\n{petimages / 'Cat' / '1.jpg'},Cat\n{petimages / 'Dog' / '1.jpg'}\n")
    before = f.read_bytes()
    code, _, err = _cli(monkeypatch, capsys, "train", f, "--out", tmp_path / "run", "-q")
    line = _one_error(err)
    assert code == 2 and "line 4" in line and "list.csv" in line, line
    assert f.read_bytes() == before


def _oxford_copy(tmp_path: Path, oxford: Path, mutate) -> Path:
    root = tmp_path / "ox"
    (root / "annotations").mkdir(parents=True)
    lines = (oxford / "annotations" / "list.txt").read_text().splitlines()
    body = [ln for ln in lines if ln and not ln.startswith("#")][:40]
    (root / "images").mkdir()
    for ln in body:
        name = ln.split()[0]
        shutil.copy(oxford / "images" / f"{name}.jpg", root / "images" / f"{name}.jpg")
    body = mutate(body)
    (root / "annotations" / "list.txt").write_text("\n".join(["#Image CLASS-ID SPECIES BREED ID", *body]) + "\n")
    return root


@pytest.mark.parametrize("mutate,needle", [
    (lambda b: [*b[:5], " ".join([b[5].split()[0], "x1", *b[5].split()[2:]]), *b[6:]], "line 7"),
    (lambda b: [*b[:9], " ".join([*b[9].split()[:2], "3", *b[9].split()[3:]]), *b[10:]], "species"),
])
def test_malformed_oxford_list_is_a_user_error(tmp_path, oxford, monkeypatch, capsys, mutate, needle):
    root = _oxford_copy(tmp_path, oxford, mutate)
    before = _snapshot(root)
    code, _, err = _cli(monkeypatch, capsys, "train", root, "--label", "species", "--out", tmp_path / "run", "-q")
    line = _one_error(err)
    assert code == 2 and needle in line and "list.txt" in line, line
    assert _snapshot(root) == before


def test_empty_class_folder_is_reported(tmp_path, petimages, monkeypatch, capsys):
    root = _two_class_folder(tmp_path / "d", petimages)
    (root / "Rabbit").mkdir()
    code, _, err = _cli(monkeypatch, capsys, "train", root, "--out", tmp_path / "run", "-q")
    assert code == 0
    assert "Rabbit" in err and "empty" in err.lower()


# --------------------------------------------------------------------------------------------
# 5. written files get normal permissions
# --------------------------------------------------------------------------------------------
def test_outputs_respect_the_umask(tmp_path, petimages, monkeypatch, capsys):
    root = _two_class_folder(tmp_path / "d", petimages)
    old = os.umask(0o022)
    try:
        run = tmp_path / "run"
        assert _cli(monkeypatch, capsys, "train", root, "--out", run, "-q")[0] == 0
        assert _cli(monkeypatch, capsys, "evaluate", run, root, "--out", tmp_path / "ev", "-q")[0] == 0
    finally:
        os.umask(old)
    files = [p for d in (run, tmp_path / "ev") for p in d.rglob("*")]
    assert files
    for p in files:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o755 if p.is_dir() else 0o644), (p, oct(mode))


# --------------------------------------------------------------------------------------------
# 6. decode threads lower their priority relative to the process, never above it
# --------------------------------------------------------------------------------------------
_NICE_PROBE = r"""
import os, sys, glob
os.nice(int(sys.argv[2]))
import transferlab as tl
bb = tl.create_backbone("efficientnet_lite0")
paths = sys.argv[3:]
seen = set()
def probe():
    for task in glob.glob(f"/proc/{os.getpid()}/task/*"):
        try:
            if open(f"{task}/comm").read().startswith("decode"):
                seen.add(int(open(f"{task}/stat").read().rsplit(")", 1)[1].split()[16]))
        except OSError:
            pass
import threading
stop = threading.Event()
def watch():
    while not stop.is_set():
        probe()
t = threading.Thread(target=watch, daemon=True); t.start()
tl.extract(bb, paths * 8, progress=False, cache=False)
stop.set(); t.join()
print(sorted(seen))
"""


def test_decode_threads_nice_is_an_increment(tmp_path, petimages):
    paths = [str(petimages / "Cat" / f"{i}.jpg") for i in range(8)]
    env = {**os.environ, "TRANSFERLAB_CACHE": str(tmp_path / "cache"), "TRANSFERLAB_ENGINE": "torch"}
    env.pop("TRANSFERLAB_DECODE_NICE", None)
    out = subprocess.run([sys.executable, "-c", _NICE_PROBE, "x", "5", *paths], env=env, capture_output=True,
                         text=True, check=True).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen and all(n >= 5 for n in seen), seen  # never above the process's own nice (5)
    assert max(seen) == 15, seen  # own 5 + default increment 10


@pytest.mark.parametrize("value", ["abc", "-20", "1.5"])
def test_bad_decode_nice_is_a_user_error(value, tmp_path, petimages, monkeypatch, capsys):
    root = _two_class_folder(tmp_path / "d", petimages, n=3)
    monkeypatch.setenv("TRANSFERLAB_DECODE_NICE", value)
    code, _, err = _cli(monkeypatch, capsys, "train", root, "--out", tmp_path / "run", "-q")
    assert code == 2 and "TRANSFERLAB_DECODE_NICE" in _one_error(err)


# --------------------------------------------------------------------------------------------
# 7. unwritable --out is refused before training
# --------------------------------------------------------------------------------------------
def test_unwritable_out_refused_before_training(tmp_path, petimages, monkeypatch, capsys):
    root = _two_class_folder(tmp_path / "d", petimages, n=3)
    cache = tmp_path / "fresh-cache"
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(cache))
    code, _, err = _cli(monkeypatch, capsys, "train", root, "--out", "/proc/transferlab-run", "-q")
    assert code == 2 and "/proc/transferlab-run" in _one_error(err)
    assert not list(cache.rglob("*.safetensors")), "features were extracted before the refusal"


# --------------------------------------------------------------------------------------------
# 8. fetch refuses a zip bomb and cleans up after itself
# --------------------------------------------------------------------------------------------
def _fetch_module():
    from importlib import import_module

    try:
        return import_module("transferlab.data.fetch")
    except ImportError:  # the layout before issue 12
        return import_module("transferlab.fetch")


def test_fetch_refuses_zip_bomb_and_removes_it(tmp_path, monkeypatch):
    import io
    import zipfile
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    from transferlab.errors import FetchError

    fetch_mod = _fetch_module()
    www = tmp_path / "www"
    www.mkdir()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("PetImages/Cat/0.jpg", b"\0" * (64 << 20))  # 64 MB of zeros in ~64 KB
    (www / "bomb.zip").write_bytes(buf.getvalue())
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(www)))
    Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        src = fetch_mod.Source("bomb", (fetch_mod.Archive("https://example.invalid/bomb.zip"),), "PetImages", "")
        monkeypatch.setitem(fetch_mod.SOURCES, "bomb", src)
        dest = tmp_path / "dest"
        with pytest.raises(FetchError, match=r"(?i)unpack|ratio|too large"):
            fetch_mod.fetch("bomb", dest, mirror=f"http://127.0.0.1:{httpd.server_address[1]}")
    finally:
        httpd.shutdown()
    left = [p for p in dest.rglob("*") if p.is_file()]
    assert left == [], left


# --------------------------------------------------------------------------------------------
# 9. a run whose config and weights disagree is refused
# --------------------------------------------------------------------------------------------
def test_run_with_mismatched_classes_is_refused(corpus_run, tmp_path, monkeypatch, capsys, petimages):
    bad = tmp_path / "bad-run"
    shutil.copytree(corpus_run, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["classes"] = ["Cat"]
    (bad / "config.json").write_text(json.dumps(cfg))
    code, _, err = _cli(monkeypatch, capsys, "predict", bad, petimages / "Cat" / "1.jpg", "-q")
    assert code == 2 and "class" in _one_error(err).lower()


# --------------------------------------------------------------------------------------------
# 10. a killed extraction keeps what it had done (flushes by time, not only per 1,024 images)
# --------------------------------------------------------------------------------------------
_EXTRACT = r"""
import sys, transferlab as tl
paths = [l for l in open(sys.argv[1]).read().splitlines() if l]
f = tl.extract(tl.create_backbone("efficientnet_lite0"), paths, progress=False)
print(f.extracted)
"""


@pytest.mark.slow
def test_killed_extraction_resumes(tmp_path, petimages):
    paths = [str(petimages / c / f"{i}.jpg") for c in ("Cat", "Dog") for i in range(300, 600)]
    lst = tmp_path / "paths.txt"
    lst.write_text("\n".join(paths))
    cache = tmp_path / "cache"
    env = {**os.environ, "TRANSFERLAB_CACHE": str(cache), "TRANSFERLAB_FLUSH_SECONDS": "1",
           "TRANSFERLAB_ENGINE": "torch"}
    p = subprocess.Popen([sys.executable, "-c", _EXTRACT, str(lst)], env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(cache.rglob("shard-*.safetensors")):
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert list(cache.rglob("shard-*.safetensors")), "nothing flushed before the kill"
    again = subprocess.run([sys.executable, "-c", _EXTRACT, str(lst)], env=env, capture_output=True, text=True,
                           check=True)
    extracted = int(again.stdout.strip().splitlines()[-1])
    assert 0 < extracted < len(paths)


# --------------------------------------------------------------------------------------------
# 11. legacy-pickle weights: refused in one line, without torch's advice to unpickle
# --------------------------------------------------------------------------------------------
def test_legacy_pickle_weights_refused_quietly(tmp_path, sample_images, monkeypatch, capsys):
    from fractions import Fraction

    import torch

    w = tmp_path / "legacy.pth"  # a pickle that weights_only must refuse (a local class cannot be pickled)
    torch.save({"model": Fraction(1, 3)}, w, _use_new_zipfile_serialization=False)
    code, _, err = _cli(monkeypatch, capsys, "classify", sample_images["chelsea"], "--weights", w, "-q")
    assert code == 2
    _one_error(err)
    assert "weights_only=False" not in err and "weights_only" not in err.replace("weights_only=True", "")
