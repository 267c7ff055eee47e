"""``python -m minivit.serve``: a web demo of a trained model; upload a photo or turn on the webcam.

    pip install "minivit[serve,faces]"
    python -m minivit.serve --checkpoint runs/fer                # then open http://127.0.0.1:8000

The app -- its endpoints, its limits, how it stays up under bad uploads -- is minivit/inference/web.py;
this module reads the command line, loads the model and runs uvicorn.
"""

import sys

from ..common.cli import ArgumentParser, command_prog, integer, number
from ..common.errors import ConfigError
from ..inference.predictor import (DETECTED, Predictor, add_checkpoint_option, add_image_options, checkpoint_or_shipped,
                                   predictor_options)
from ..inference.web import INSTALL_HINT, MAX_UPLOAD_BYTES, SERVE_MAX_PIXELS, create_app


def build_parser(prog: str | None = None) -> ArgumentParser:
    p = ArgumentParser(prog=command_prog("serve", prog), description=(
        "Serve a web page where a person uploads a photo or turns on the webcam and sees each face's "
        "expression, and a JSON API: POST /predict (multipart field 'file'), GET /health."))
    add_checkpoint_option(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                   "only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=integer(at_least=0, at_most=65535), default=8000,
                   help="TCP port (0 to 65535, 0: any free one; default 8000)")
    p.add_argument("--tta", action="store_true", help="average each face's logits with its mirror image's")
    add_image_options(p, max_pixels=SERVE_MAX_PIXELS, refused="answered with 413")
    p.add_argument("--top-k", type=integer(at_least=1), default=3, help="expressions listed per face in "
                   "'top_k' (>= 1; default 3); 'probabilities' always holds every class")
    p.add_argument("--max-upload-mb", type=number(above=0, at_most=1024), default=MAX_UPLOAD_BYTES / 2**20,
                   help=f"largest upload accepted, in MiB (in (0, 1024]; default {MAX_UPLOAD_BYTES / 2**20:g}): "
                        f"larger ones get 413")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    try:  # both before the model loads: a missing extra is reported first, and at once
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise ConfigError(f"the web demo needs {e.name or 'fastapi and uvicorn'}: {INSTALL_HINT}") from None
    predictor = Predictor.from_checkpoint(checkpoint_or_shipped(args.checkpoint), tta=args.tta, **predictor_options(args))
    app = create_app(predictor, max_upload_bytes=round(args.max_upload_mb * 2**20), max_pixels=args.max_pixels,
                     top_k=args.top_k)
    detection = "on" if predictor.detection == DETECTED else predictor.detection
    where = (f"http://{args.host}:{args.port}/" if args.port else
             f"http://{args.host} on a free port that uvicorn picks (it prints it)")
    print(f"minivit demo: {where} (face detection: {detection})", file=sys.stderr)
    # port 0: the OS picks a free port when uvicorn binds, and uvicorn's info line says which
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if args.port else "info")
    return 0
