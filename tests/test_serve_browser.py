"""The catalog in a real browser: Playwright drives Debian's headless Chromium against uvicorn on
127.0.0.1, through the pages a shelter volunteer uses (upload, result, save, catalog), across a
server restart. Writes docs/serve.png, the screenshot the README shows.
"""

from __future__ import annotations

import base64
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")

from transferlab.apps.serve import Settings, create_app  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "serve.png"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="no Chromium at /usr/bin/chromium (apt-get install -y chromium)")


class LiveServer:
    """uvicorn serving ``app`` in a thread, on a loopback port the OS picked (the socket is bound
    before the server starts, so there is no race for the port)."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture(scope="module")
def predictor():
    from transferlab.export import load_predictor

    return load_predictor("efficientnet_lite0")


@pytest.fixture
def serve(tmp_path, predictor):
    """``serve()`` -> a started LiveServer on the catalog in tmp_path; stopped at the end."""
    servers = []

    def start():
        app = create_app(Settings(model="efficientnet_lite0", db=str(tmp_path / "catalog.sqlite")), predictor=predictor)
        servers.append(LiveServer(app))
        return servers[-1]

    yield start
    for s in servers:
        if s.thread.is_alive():
            s.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def _loaded(page, selector: str) -> bool:
    """True once the image under ``selector`` has decoded. Waits (up to 10 s) because catalog
    thumbnails are ``loading="lazy"``: the page's load event does not wait for them."""
    try:
        page.wait_for_function(
            "sel => { const i = document.querySelector(sel); return !!i && i.complete && i.naturalWidth > 0; }",
            arg=selector, timeout=10_000)
    except sync_api.TimeoutError:
        return False
    return True


def _upload(page, path: Path) -> None:
    """Choose a file in the picker; the page submits it by itself."""
    with page.expect_navigation():
        page.set_input_files("#file", str(path))


def test_upload_save_restart_duplicate_and_error(serve, browser, sample_images, tmp_path):
    server = serve()
    page = browser.new_page(viewport={"width": 1200, "height": 720})
    page.goto(server.url + "/")
    _upload(page, sample_images["chelsea"])
    assert page.locator("#top li").count() == 3
    assert page.locator("#top li .label").first.inner_text() in {"tiger cat", "tabby", "Egyptian cat"}
    assert _loaded(page, "#photo") and _loaded(page, "#heatmap")
    page.fill("#name", "Luna")
    page.select_option("#breed", "tabby")
    with page.expect_navigation():
        page.click("#save-form button[type=submit]")
    assert "/catalog" in page.url and "Saved Luna (tabby)" in page.inner_text("#saved")
    assert _loaded(page, ".pet.card img")

    server.stop()
    server = serve()  # a new process would see the same: the catalog is on disk
    page.goto(server.url + "/catalog")
    assert page.locator(".pet.card").count() == 1 and "Luna" in page.inner_text(".pet.card .name")

    page.goto(server.url + "/")
    _drop(page, sample_images["chelsea"])
    warning = page.inner_text(".duplicate")
    assert "this may be Luna, added just now" in warning
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    text = tmp_path / "notes.txt"
    text.write_text("Luna likes tuna.\n")
    page.goto(server.url + "/")
    _upload(page, text)
    assert "not an image" in page.inner_text("#error")
    page.set_input_files("#file", {"name": "huge.jpg", "mimeType": "image/jpeg", "buffer": b"\0" * (11 << 20)})
    assert "larger than 10 MB" in page.inner_text("#client-error")  # said before uploading anything
    page.goto(server.url + "/catalog")
    assert page.locator(".pet.card").count() == 1
    page.close()


def _drop(page, path: Path) -> None:
    """Drag-and-drop ``path`` onto the upload zone, as a file dragged from the desktop arrives."""
    b64 = base64.b64encode(path.read_bytes()).decode()
    dt = page.evaluate_handle(
        """([b64, name]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, {type: "image/jpeg"}));
            return dt;
        }""", [b64, path.name])
    with page.expect_navigation():
        page.dispatch_event("#drop", "drop", {"dataTransfer": dt})
