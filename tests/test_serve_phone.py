"""The catalog on a phone: Playwright drives Debian's headless Chromium emulating a 390x844 touch
phone against uvicorn on 127.0.0.1, through the whole flow a volunteer at intake goes through:
log in, take a photo (the camera input), see the breed and the heat map, save, find the pet in
the catalog. Layouts are checked for sideways scrolling at 360, 390 and 430 px. Writes
docs/serve-phone.jpg, the screenshot the README shows.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")

from tests.test_serve_browser import CHROMIUM, LiveServer, _loaded  # noqa: E402
from transferlab.apps.serve import Settings, create_app  # noqa: E402

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "serve-phone.jpg"
CATS = {"tiger cat", "tabby", "Egyptian cat"}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True,
         "user_agent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
                       "Chrome/131.0 Mobile Safari/537.36"}
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason="no Chromium at /usr/bin/chromium (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def predictor():
    from transferlab.export import load_predictor

    return load_predictor("efficientnet_lite0")


@pytest.fixture
def server(tmp_path, predictor):
    app = create_app(Settings(model="efficientnet_lite0", db=str(tmp_path / "catalog.sqlite")), predictor=predictor)
    app.state.accounts.add("vera", "volunteer", "volunteer-pass-1", actor="test")
    s = LiveServer(app)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def phone():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        ctx = b.new_context(**PHONE)
        yield ctx
        ctx.close()
        b.close()


def _fits(page) -> bool:
    """No sideways scrolling: the page is no wider than the screen."""
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_phone_login_photo_breed_heatmap_save_and_find(server, phone, sample_images):
    page = phone.new_page()
    page.goto(server.url + "/")
    assert "/login" in page.url and _fits(page)
    page.fill("#username", "vera")
    page.fill("#password", "volunteer-pass-1")
    with page.expect_navigation():
        page.tap("#login-form button[type=submit]")
    assert page.url == server.url + "/" and page.inner_text("#who") == "vera"

    camera = page.locator("#camera")
    assert camera.get_attribute("capture") == "environment" and camera.get_attribute("accept") == "image/*"
    assert page.locator("#camera-label").is_visible()  # a touch screen gets the camera button
    assert _fits(page)
    with page.expect_navigation():
        camera.set_input_files(str(sample_images["chelsea"]))  # what the camera hands the page
    assert page.locator("#top li").count() == 3
    breed = page.locator("#top li .label").first.inner_text()
    assert breed in CATS
    assert _loaded(page, "#photo") and _loaded(page, "#heatmap") and _fits(page)
    heat = page.locator("#heatmap").bounding_box()
    assert heat["width"] >= 150 and heat["x"] + heat["width"] <= 390  # readable, on screen
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), type="jpeg", quality=80, full_page=True)

    page.fill("#name", "Luna")
    with page.expect_navigation():
        page.tap("#save-form button[type=submit]")
    assert "Saved Luna" in page.inner_text("#saved") and _fits(page)
    with page.expect_navigation():
        page.select_option("#filter", breed)  # find her by breed
    cards = page.locator(".pet.card")
    assert cards.count() == 1 and cards.first.locator(".name").inner_text() == "Luna"
    assert _loaded(page, ".pet.card img")
    assert page.locator(".pet.card a[href$='/edit']").count() == 0  # a volunteer does not edit

    for width in (360, 430):
        page.set_viewport_size({"width": width, "height": 800})
        for path in ("/", "/catalog"):
            page.goto(server.url + path)
            assert _fits(page), (width, path)
    page.close()
