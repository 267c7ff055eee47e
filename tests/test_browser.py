"""The demo page in a real headless Chromium: it loads, an uploaded photo shows a result, a failed
upload clears the previous photo and result and shows the error, no request gets a 404 (the icon
included), and screenshots are saved in the test's folder. Uses Debian's system browser (/usr/bin/chromium, `apt-get install chromium`) driven by the
playwright package; never a downloaded browser build (`playwright install` is not needed)."""

import os
import socket
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import minivit
from minivit.checkpoints import save_checkpoint
from minivit.inference.predictor import Predictor

CHROMIUM = os.environ.get("MINIVIT_CHROMIUM", "/usr/bin/chromium")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test drives Chromium with playwright")
uvicorn = pytest.importorskip("uvicorn", reason="the web demo needs the 'serve' extra")
pytest.importorskip("fastapi", reason="the web demo needs the 'serve' extra")

from minivit.inference.web import create_app  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    """(the demo's URL, the (path, status) of every request it answered)."""
    torch.manual_seed(0)
    model = minivit.create_model("Ti/16", image_size=48, patch_size=8, dim=32, depth=2, heads=2, mlp_dim=64,
                                 num_classes=7)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    save_checkpoint(model, tmp_path / "tiny.safetensors")
    app = create_app(Predictor.from_checkpoint(tmp_path / "tiny.safetensors", device="cpu"))
    answered = []

    @app.middleware("http")
    async def record(request, call_next):  # the server's side: requests the browser makes but Playwright
        response = await call_next(request)  # does not report (Chromium's favicon fetch) are seen here too
        answered.append((request.url.path, response.status_code))
        return response

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the demo server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", answered
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def server(served):
    return served[0]


def watch(page) -> dict:
    """Collect the page's script errors and every response with status 404."""
    seen = {"errors": [], "not_found": []}
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on("response", lambda r: r.status == 404 and seen["not_found"].append(r.url))
    return seen


def photo(tmp_path) -> str:
    try:
        from skimage.data import astronaut
        array = astronaut()  # a real photograph with a face, bundled with scikit-image
    except ImportError:
        array = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(array).save(path, quality=90)
    return str(path)


def test_page_loads_and_an_upload_shows_a_result(server, tmp_path):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            not_found = []
            page.on("response", lambda r: r.status == 404 and not_found.append(r.url))
            page.goto(server + "/")
            page.wait_for_selector("body[data-state=ready]", timeout=15_000)
            assert "Ready: 7 expressions" in page.inner_text("#status")

            page.set_input_files("#file", photo(tmp_path))
            page.wait_for_selector("body[data-state=done]", timeout=30_000)
            titles = page.locator("#results .face h2").all_inner_texts()
            assert titles and any(label in titles[0] for label in minivit.data.LABELS)
            assert page.locator("#results canvas.bars").count() == len(titles)  # a bar chart per face
            assert page.inner_text("#note")  # says what was classified ("1 face found", "no face found: ...")
            assert page.evaluate("document.getElementById('view').width") > 300  # the photo is drawn
            shot = tmp_path / "demo.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            assert not errors, errors
            assert not not_found, not_found
        finally:
            browser.close()


def test_a_failed_upload_clears_the_previous_photo_and_result_and_no_request_is_a_404(served, tmp_path):
    url, answered = served
    notes = tmp_path / "notes.jpg"
    notes.write_text("this is a text file renamed .jpg\n")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            seen = watch(page)
            page.goto(url + "/")
            page.wait_for_selector("body[data-state=ready]", timeout=15_000)
            page.set_input_files("#file", photo(tmp_path))
            page.wait_for_selector("body[data-state=done]", timeout=30_000)
            assert page.locator("#results .face").count() >= 1
            painted = "(() => { const c = document.getElementById('view'); " \
                      "return c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some(v => v !== 0); })()"
            assert page.evaluate(painted)  # the photo is on the canvas

            page.set_input_files("#file", str(notes))
            page.wait_for_selector("body[data-state=error]", timeout=30_000)
            status = page.locator("#status")
            assert status.is_visible() and status.get_attribute("class") == "error"
            assert "415" in status.inner_text() and "notes.jpg: not an image" in status.inner_text()
            assert page.locator("#results").evaluate("r => r.children.length") == 0  # no stale result
            assert not page.evaluate(painted)  # no stale photo: the canvas is blank
            assert page.evaluate("document.getElementById('view').width") == 640
            shot = tmp_path / "failed-upload.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 5_000

            # the page's icon is served (Chromium fetches it outside what Playwright reports: ask for it)
            icon = page.evaluate("fetch(document.querySelector('link[rel=icon]').href).then(r => [r.status, "
                                 "r.headers.get('content-type')])")
            assert icon == [200, "image/svg+xml"]
            assert not seen["errors"], seen["errors"]
            assert not seen["not_found"], seen["not_found"]
        finally:
            browser.close()
    statuses = dict(answered)
    assert statuses["/predict"] == 415 and statuses["/"] == 200
    assert [a for a in answered if a[1] == 404] == [], answered
