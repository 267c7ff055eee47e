"""``python -m minivit.export``: a trained model to ONNX, verified against PyTorch by the same command.

    pip install "minivit[export]"
    python -m minivit.export --checkpoint runs/fer --onnx fer.onnx                   # opset 18
    python -m minivit.export --checkpoint runs/fer --onnx fer.onnx --image face.jpg  # verify on a real face

What the graph holds, which exporter and opset, and how it is verified: minivit/inference/onnx_export.py.
The export goes to a temporary file that replaces ``--onnx`` only once it has passed (exit status 1,
nothing written, when ONNX Runtime and PyTorch differ by more than ``--tolerance``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..common.cli import ArgumentParser, command_prog, fail, integer, number, output_file_problem
from ..common.files import atomic_write
from ..inference.onnx_export import (DEFAULT_OPSET, INSTALL_HINT, TOLERANCE, VerificationFailed, add_metadata,
                                    export_onnx, real_input, verify)
from ..inference.predictor import add_checkpoint_option, checkpoint_or_shipped, load_model


def build_parser(prog: str | None = None) -> ArgumentParser:
    p = ArgumentParser(prog=command_prog("export", prog), description=(
        "Export a trained model to ONNX (images -> logits, dynamic batch) and verify it with ONNX Runtime "
        "against PyTorch on random and real inputs; exit 1, writing nothing, when they differ by more than "
        "--tolerance."))
    add_checkpoint_option(p)
    p.add_argument("--onnx", required=True, metavar="MODEL.onnx", help="the ONNX file to write")
    p.add_argument("--overwrite", action="store_true", help="replace the ONNX file if it exists")
    p.add_argument("--opset", type=integer(at_least=14, at_most=20), default=DEFAULT_OPSET,
                   help=f"ONNX opset version (14 to 20; default {DEFAULT_OPSET}; --dynamo needs >= 18)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch axis at 1 (default: dynamic batch)")
    p.add_argument("--dynamo", action="store_true", help="use torch's torch.export-based exporter (needs "
                   "onnxscript) instead of the TorchScript-based one")
    p.add_argument("--image", help="a real image to verify on (read and preprocessed as minivit.predict does, "
                   "whole image); default: a synthetic face")
    p.add_argument("--tolerance", type=number(above=0), default=TOLERANCE,
                   help=f"largest max abs difference of the logits accepted (> 0; default {TOLERANCE:g})")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    out = Path(args.onnx)
    problem = output_file_problem("--onnx", args.onnx, suffix=".onnx", overwrite=args.overwrite)
    if problem:
        return fail(problem)
    if args.dynamo and args.opset < 18:
        return fail(f"--opset {args.opset}: the --dynamo exporter needs opset 18 or newer")
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return fail(f"exporting needs onnx and onnxruntime: {INSTALL_HINT}")
    model, classes, source = load_model(checkpoint_or_shipped(args.checkpoint))
    model = model.float().cpu().eval()
    config = model.config
    torch.manual_seed(0)
    real, real_name = real_input(model, args.image)
    batch = 1 if args.static_batch else 3
    # fixed keys: an image file named "random" must not replace the random batch (and its batch-size check)
    inputs = {f"random batch of {batch}": torch.randn(batch, config.in_chans, *config.image_hw), "real image": real}

    def export_and_verify(tmp):
        export_onnx(model, tmp, opset=args.opset, dynamic_batch=not args.static_batch, dynamo=args.dynamo)
        add_metadata(tmp, model, classes)
        verify(tmp, model, inputs, args.tolerance)

    exporter = "torch.export-based (dynamo)" if args.dynamo else "TorchScript-based"
    print(f"exporting {source} ({config.classifier} pooling, {config.in_chans}x{config.image_hw[0]}x{config.image_hw[1]} input, "
          f"{len(classes)} classes) with opset {args.opset}, {exporter} exporter, "
          f"{'static batch 1' if args.static_batch else 'dynamic batch'}")
    print(f"real image: {real_name}")
    try:
        atomic_write(out, export_and_verify)
    except VerificationFailed as e:
        print(f"error: {e}; {out} not written", file=sys.stderr)
        return 1
    print(f"wrote {out} (opset {args.opset}, verified with ONNX Runtime within {args.tolerance:g})")
    return 0
