"""The web demo's API through FastAPI's TestClient: a good photo, every kind of bad upload (each a 4xx
JSON answer, and the server healthy afterwards), concurrent requests, and the page itself."""

import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

import minivit
from minivit.checkpoints import save_checkpoint
from minivit.inference.predictor import Predictor

pytest.importorskip("fastapi", reason="the web demo needs the 'serve' extra (fastapi, uvicorn, python-multipart)")
pytest.importorskip("multipart", reason="the web demo needs the 'serve' extra (python-multipart)")
from fastapi.testclient import TestClient  # noqa: E402

from minivit.inference.web import create_app  # noqa: E402
from minivit.commands.serve import build_parser  # noqa: E402

MAX_UPLOAD = 200_000


def png_header(width, height) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)))


def jpeg_bytes(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo() -> bytes:
    """A real photograph with a face when scikit-image is installed (its bundled astronaut), else noise."""
    try:
        from skimage.data import astronaut
        return jpeg_bytes(astronaut())
    except ImportError:
        return jpeg_bytes(np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = minivit.create_model("Ti/16", image_size=48, patch_size=8, dim=32, depth=2, heads=2, mlp_dim=64,
                                 num_classes=7)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(model, path)
    return path


@pytest.fixture(scope="module")
def client(checkpoint):
    app = create_app(Predictor.from_checkpoint(checkpoint, device="cpu"), max_upload_bytes=MAX_UPLOAD,
                     max_pixels=4_000_000)
    with TestClient(app) as c:
        yield c


def healthy(client) -> bool:
    r = client.get("/health")
    return r.status_code == 200 and r.json()["status"] == "ok"


def test_page_and_health(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "getUserMedia" in page.text and 'id="file"' in page.text and "<canvas" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from a CDN: works offline
    h = client.get("/health").json()
    assert h["classes"] == list(minivit.data.LABELS) and h["max_upload_bytes"] == MAX_UPLOAD


def test_predict_a_photo(client, photo):
    r = client.post("/predict", files={"file": ("me.jpg", photo, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["width"] > 0 and body["predictions"]
    for p in body["predictions"]:
        assert p["label"] in minivit.data.LABELS and abs(sum(p["probabilities"].values()) - 1) < 1e-4
        assert len(p["top_k"]) == 3
    try:
        import cv2  # noqa: F401
        import skimage  # noqa: F401
    except ImportError:
        return
    assert body["detection"] == "faces" and len(body["predictions"]) == 1 and len(body["predictions"][0]["box"]) == 4


def test_content_is_sniffed_not_the_name(client, photo):
    """A JPEG named .txt and sent as text/plain is an image; a text file named .jpg is not."""
    r = client.post("/predict", files={"file": ("notes.txt", photo, "text/plain")})
    assert r.status_code == 200
    r = client.post("/predict", files={"file": ("photo.jpg", b"just some text, renamed .jpg\n", "image/jpeg")})
    assert r.status_code == 415 and "not an image" in r.json()["detail"]
    assert healthy(client)


@pytest.mark.parametrize("name,payload,status,message", [
    ("cut.jpg", "truncated", 422, "truncated"),
    ("bomb.png", png_header(30000, 30000), 413, "900,000,000 pixels"),
    ("big.png", png_header(3000, 3000), 413, "9,000,000 pixels is more than the limit of 4,000,000"),
    ("huge.bin", b"\xff" * (MAX_UPLOAD + 1), 413, "larger than the limit"),
    ("empty.jpg", b"", 415, "not an image"),
])
def test_bad_uploads_get_4xx_json_and_the_server_keeps_serving(client, photo, name, payload, status, message):
    data = photo[: len(photo) // 2] if payload == "truncated" else payload
    r = client.post("/predict", files={"file": (name, data, "image/jpeg")})
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert healthy(client)
    assert client.post("/predict", files={"file": ("ok.jpg", photo, "image/jpeg")}).status_code == 200


def test_oversize_request_refused_before_reading(client):
    body = b"x" * (MAX_UPLOAD + 100_000)
    r = client.post("/predict", content=body, headers={"content-type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 413 and "larger than the limit" in r.json()["detail"]
    assert healthy(client)


def test_no_file_field_and_no_server_paths(client):
    r = client.post("/predict", data={"path": "/etc/passwd"})
    assert r.status_code == 422 and "'file'" in r.json()["detail"]
    r = client.post("/predict", content=b"/etc/passwd", headers={"content-type": "text/plain"})
    assert r.status_code == 422
    r = client.post("/predict", content=b"--zz\r\nbroken", headers={"content-type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 422
    assert healthy(client)


def test_concurrent_requests_get_the_same_answers(client, photo):
    noise = jpeg_bytes(np.random.default_rng(1).integers(0, 256, (90, 70, 3), dtype=np.uint8))
    uploads = [photo, noise] * 4

    def post(data):
        r = client.post("/predict", files={"file": ("x.jpg", data, "image/jpeg")})
        assert r.status_code == 200
        return [p["probabilities"] for p in r.json()["predictions"]]

    serial = [post(photo), post(noise)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(post, uploads))
    for i, answer in enumerate(answers):
        for got, want in zip(answer, serial[i % 2]):
            assert got == pytest.approx(want, abs=1e-5)
    assert healthy(client)


def test_cli_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--checkpoint", "--host", "--port", "--device", "--no-detect", "--tta", "--grayscale", "--top-k",
                 "--max-upload-mb", "--max-pixels"):
        assert flag in text
    assert build_parser().parse_args(["--checkpoint", "x"]).host == "127.0.0.1"



def test_concurrent_decodes_are_bounded(client, photo, monkeypatch):
    """At most MAX_CONCURRENT uploads are decoded and preprocessed at once, however many arrive."""
    import threading
    import time

    import minivit.inference.web as web

    active, peak, lock = [0], [0], threading.Lock()
    real_read = web.read_image

    def slow_read(*args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.3)  # long enough for every request to be in flight at once without the bound
        try:
            return real_read(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(web, "read_image", slow_read)
    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda _: client.post("/predict", files={"file": ("x.jpg", photo, "image/jpeg")})
                              .status_code, range(10)))
    assert codes == [200] * 10 and 2 <= peak[0] <= web.MAX_CONCURRENT


def test_a_big_photo_is_shrunk_before_detection_and_boxes_come_back_in_its_pixels(checkpoint, monkeypatch):
    from minivit.inference import faces, web

    skimage_data = pytest.importorskip("skimage.data", reason="needs a real face photo (scikit-image's astronaut)")
    if not faces.available():
        pytest.skip(f"face boxes need OpenCV: {faces.unavailable_reason()}")
    small = skimage_data.astronaut()  # (512, 512, 3)
    big = np.kron(small, np.ones((3, 3, 1), np.uint8))  # (1536, 1536, 3)
    seen = []
    real_predict = Predictor.predict
    monkeypatch.setattr(Predictor, "predict", lambda self, images, names=None:
                        seen.append(images[0].shape) or real_predict(self, images, names))
    app = create_app(Predictor.from_checkpoint(checkpoint, device="cpu"), max_upload_bytes=10_000_000,
                     max_pixels=10_000_000)
    with TestClient(app) as c:
        answers = [c.post("/predict", files={"file": ("a.png", png_bytes(a), "image/png")}).json() for a in (small, big)]
    assert seen == [(512, 512, 3), (web.MAX_SIDE, web.MAX_SIDE, 3)]  # never the full 1536 pixels
    assert (answers[1]["width"], answers[1]["height"]) == (1536, 1536)
    assert answers[0]["detection"] == answers[1]["detection"] == "faces"
    small_box, big_box = answers[0]["predictions"][0]["box"], answers[1]["predictions"][0]["box"]
    np.testing.assert_allclose(big_box, [3 * v for v in small_box], atol=0.1 * 3 * small_box[2])


def png_bytes(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_cli_reports_a_missing_extra_before_loading_the_model_and_never_prints_port_0(checkpoint, monkeypatch,
                                                                                     capsys):
    import sys
    import types

    import minivit.commands.serve as serve

    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if the extra were not installed
    assert minivit.common.cli.run(serve.main, ["--checkpoint", "no/such/model.safetensors"]) == 2
    err = capsys.readouterr().err
    assert "fastapi" in err and "minivit[serve]" in err and "model.safetensors" not in err
    monkeypatch.undo()

    calls = []
    monkeypatch.setitem(sys.modules, "uvicorn", types.SimpleNamespace(run=lambda app, **kw: calls.append(kw)))
    assert serve.main(["--checkpoint", str(checkpoint), "--port", "0", "--no-detect"]) == 0
    err = capsys.readouterr().err
    assert ":0" not in err and "free port" in err and calls[0]["port"] == 0 and calls[0]["log_level"] == "info"


def test_the_page_links_an_icon_that_is_served(client):
    """Browsers ask for an icon (/favicon.ico unless the page links one): both answer 200 with an SVG."""
    import xml.etree.ElementTree as ET

    page = client.get("/").text
    assert '<link rel="icon" href="/favicon.svg" type="image/svg+xml">' in page
    for path in ("/favicon.svg", "/favicon.ico"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml"), path
        root = ET.fromstring(r.content)
        assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.get("viewBox") == "0 0 64 64"
    assert client.get("/favicon.png").status_code == 404  # only the icon's two names, nothing else
