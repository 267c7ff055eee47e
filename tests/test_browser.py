"""The demo page in a real headless Chromium: it loads, an uploaded photo shows a result, a screenshot
is saved. Uses Debian's system browser (/usr/bin/chromium, `apt-get install chromium`) driven by the
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
from minivit.predict import Predictor

CHROMIUM = os.environ.get("MINIVIT_CHROMIUM", "/usr/bin/chromium")
if not os.path.exists(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test drives Chromium with playwright")
uvicorn = pytest.importorskip("uvicorn", reason="the web demo needs the 'serve' extra")
pytest.importorskip("fastapi", reason="the web demo needs the 'serve' extra")

from minivit.serve import create_app  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    torch.manual_seed(0)
    model = minivit.create_model("Ti/16", image_size=48, patch_size=8, dim=32, depth=2, heads=2, mlp_dim=64,
                                 num_classes=7)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    save_checkpoint(model, tmp_path / "tiny.safetensors")
    app = create_app(Predictor.from_checkpoint(tmp_path / "tiny.safetensors", device="cpu"))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the demo server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


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
        finally:
            browser.close()
