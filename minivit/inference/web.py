"""The web demo's app: upload a photo or turn on the webcam, see each face's expression.

``create_app(predictor)`` is the FastAPI app; ``python -m minivit.serve`` (minivit/commands/serve.py) runs it:

    pip install "minivit[serve,faces]"
    python -m minivit.serve --checkpoint runs/fer                # then open http://127.0.0.1:8000

Endpoints:
    GET  /          the page (minivit/inference/static/index.html: plain JavaScript and a canvas, no CDN)
    GET  /favicon.svg, /favicon.ico   the page's icon (a small SVG; .ico for clients that ask for it unprompted)
    GET  /health    {"status": "ok", "classes": [...], "face_detection": ..., limits}
    POST /predict   multipart form with the image in field ``file`` -> JSON, as the predict command's
                    ``--json`` record of one image: {"width", "height", "detection", "note",
                    "faces_detected", "predictions": [{"label", "probabilities", "box", "top_k"}]}

The server reads only what a client uploads, never a path a client names. Every bad request gets
a 4xx JSON answer ``{"detail": "..."}`` and the server goes on serving:

    413  the request is larger than --max-upload-mb, or the image header claims more pixels than
         --max-pixels (a decompression bomb is refused before it is decoded)
    415  the bytes are not an image (the format is sniffed from the content, not the file name or
         the Content-Type the client claims)
    411  no Content-Length (the size is checked before the body is read)
    422  no ``file`` field, or an image that cannot be decoded (truncated, corrupt)

The model runs under the Predictor's lock, in FastAPI's thread pool: concurrent requests decode
in parallel and take turns on the model. Memory stays bounded however many requests arrive: at
most MAX_CONCURRENT (4) uploads are decoded and preprocessed at a time, and a decoded photo is
shrunk at once to MAX_SIDE (1024) pixels on its longest side -- as face detection does anyway --
so a 40 MP upload never becomes a full-resolution float tensor. Boxes, width and height in the
answer are in the uploaded image's own pixels.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations (Request)
# at runtime, and Request is imported inside create_app.
import threading
from contextlib import nullcontext
from importlib import resources

import numpy as np
from PIL import Image

from ..common.errors import ConfigError
from .faces import DETECT_MAX_SIDE
from .images import ImageTooLarge, NotAnImage, UnreadableImage, read_image
from .predictor import DETECTED, Predictor

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
SERVE_MAX_PIXELS = 40_000_000  # a 7300x5500 photo; decoding one takes ~120 MB of memory
MULTIPART_SLACK = 16 * 1024  # form boundaries and part headers around the file's bytes
MAX_CONCURRENT = 4  # uploads decoded and preprocessed at once (each up to ~120 MB while decoding)
MAX_SIDE = DETECT_MAX_SIDE  # decoded uploads shrink to this longest side: detection's own working size
INSTALL_HINT = "pip install 'minivit[serve]' (fastapi, uvicorn, python-multipart)"
# The tab icon: a smiling face, 300 bytes of SVG. Browsers ask for /favicon.ico unless the page links
# an icon; the page links this one, and /favicon.ico answers with it too, so no request gets a 404.
FAVICON_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">'
               '<rect width="64" height="64" rx="14" fill="#4363d8"/>'
               '<circle cx="22" cy="26" r="5" fill="#fff"/><circle cx="42" cy="26" r="5" fill="#fff"/>'
               '<path d="M18 40 Q32 54 46 40" stroke="#fff" stroke-width="5" fill="none" stroke-linecap="round"/>'
               '</svg>')


def page() -> str:
    """The demo page shipped inside the package."""
    return resources.files("minivit.inference").joinpath("static/index.html").read_text(encoding="utf-8")


def _error(status: int, message: str):
    from fastapi.responses import JSONResponse

    return JSONResponse({"detail": message}, status_code=status)


def create_app(predictor: Predictor, *, max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = SERVE_MAX_PIXELS,
               top_k: int = 3, max_concurrent: int = MAX_CONCURRENT):
    """The FastAPI app serving ``predictor`` (see the module docstring for the endpoints and limits)."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.concurrency import run_in_threadpool
        from fastapi.responses import HTMLResponse, Response
    except ImportError:
        raise ConfigError(f"the web demo needs FastAPI: {INSTALL_HINT}") from None

    slots = threading.BoundedSemaphore(max_concurrent)  # bounds the memory of concurrent decodes
    app = FastAPI(title="minivit", description="facial expression recognition demo", docs_url=None, redoc_url=None)
    html = page()

    @app.get("/", response_class=HTMLResponse)
    def index():
        return html

    @app.get("/favicon.svg")
    @app.get("/favicon.ico")
    def favicon():
        return Response(FAVICON_SVG, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    @app.get("/health")
    def health():
        detection = "on" if predictor.detection == DETECTED else predictor.detection  # or "off", "unavailable"
        return {"status": "ok", "classes": list(predictor.classes), "face_detection": detection,
                "image_size": list(predictor.model.config.image_hw), "max_upload_bytes": max_upload_bytes,
                "max_pixels": max_pixels}

    @app.post("/predict")
    async def predict(request: Request):
        length = request.headers.get("content-length")
        if length is None or not (length.isascii() and length.isdecimal()):  # "²".isdigit() is True
            return _error(411, "send the upload with a Content-Length header")
        if int(length) > max_upload_bytes + MULTIPART_SLACK:
            return _error(413, f"upload of {int(length):,} bytes is larger than the limit of {max_upload_bytes:,}")
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return _error(422, "send the image as multipart/form-data in a field named 'file'")
        try:
            form = await request.form(max_files=1, max_fields=8)
        except Exception as e:  # starlette's MultiPartException and parser errors: a malformed body
            return _error(422, f"malformed multipart form ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return _error(422, "no file: send the image in a multipart field named 'file'")
        data = await upload.read(max_upload_bytes + 1)
        name = upload.filename or "upload"
        if len(data) > max_upload_bytes:
            return _error(413, f"{name}: larger than the limit of {max_upload_bytes:,} bytes")
        return await run_in_threadpool(_answer, predictor, data, name, max_pixels, top_k, slots)

    return app


def shrink(image: np.ndarray, max_side: int = MAX_SIDE) -> tuple[np.ndarray, float]:
    """(the uint8 (H, W[, 3]) image with its longest side at most ``max_side``, original / new size).

    >>> small, scale = shrink(np.zeros((3000, 2000, 3), np.uint8))
    >>> small.shape, round(scale, 3)
    ((1024, 683, 3), 2.93)
    """
    H, W = image.shape[:2]
    scale = max(H, W) / max_side
    if scale <= 1:
        return image, 1.0
    size = (max(1, round(W / scale)), max(1, round(H / scale)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0))  # (h, w[, 3])
    return small, max(H / small.shape[0], W / small.shape[1])


def _answer(predictor: Predictor, data: bytes, name: str, max_pixels: int, top_k: int, slots=None):
    """Decode (format sniffed from the bytes), shrink, detect and classify one upload, holding one of
    ``slots`` throughout; 4xx JSON on bad input. Boxes are scaled back to the upload's pixels."""
    with slots if slots is not None else nullcontext():
        try:
            image = read_image(data, max_pixels=max_pixels, name=name)
        except NotAnImage as e:
            return _error(415, str(e))
        except ImageTooLarge as e:
            return _error(413, str(e))
        except UnreadableImage as e:
            return _error(422, str(e))
        H, W = image.shape[:2]
        image, scale = shrink(image)  # the full-size decode is freed here
        result = predictor.predict([image], names=[name])[0]
    result.width, result.height = W, H
    for p in result.predictions:
        if p.box:
            x, y, w, h = (round(v * scale) for v in p.box)
            p.box = (x, y, min(w, W - x), min(h, H - y))
    return result.to_dict(top_k)


__all__ = ["create_app", "shrink", "page", "MAX_UPLOAD_BYTES", "SERVE_MAX_PIXELS", "MAX_CONCURRENT", "MAX_SIDE",
           "INSTALL_HINT", "FAVICON_SVG"]
