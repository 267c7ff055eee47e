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
from minivit.predict import Predictor

pytest.importorskip("fastapi", reason="the web demo needs the 'serve' extra (fastapi, uvicorn, python-multipart)")
pytest.importorskip("multipart", reason="the web demo needs the 'serve' extra (python-multipart)")
from fastapi.testclient import TestClient  # noqa: E402

from minivit.serve import build_parser, create_app  # noqa: E402

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
def client(tmp_path_factory):
    torch.manual_seed(0)
    model = minivit.create_model("Ti/16", image_size=48, patch_size=8, dim=32, depth=2, heads=2, mlp_dim=64,
                                 num_classes=7)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(model, path)
    app = create_app(Predictor.from_checkpoint(path, device="cpu"), max_upload_bytes=MAX_UPLOAD, max_pixels=4_000_000)
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
