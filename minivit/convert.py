"""Convert checkpoints between layouts, and check that the result computes the same function.

    python -m minivit.convert ViT-B_16.npz                            # -> ViT-B_16.safetensors (minivit)
    python -m minivit.convert hf_model/ --to timm -o timm_model/      # transformers folder -> timm folder
    python -m minivit.convert checkpoints/ -o converted/              # every checkpoint in a folder
    python -m minivit.convert ViT-B_16.npz --num-classes 7 --image-size 112

For each source it prints the inferred config, the parameter count and the sha256 of the
written weights, then loads the written file back, runs source and result on the same
random input and prints the largest absolute difference (0 for an exact conversion). Exit
status: 0 ok, 1 a result differs by more than --tolerance, 2 bad input (one-line message).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch

from .errors import CheckpointError, MinivitError

TARGETS = ("minivit", "transformers", "timm")
CHECKPOINT_SUFFIXES = (".npz", ".safetensors", ".bin")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def sources_in(src: Path) -> list[Path]:
    """A checkpoint, or every checkpoint (files and model folders) directly inside a folder."""
    if not src.is_dir() or is_model_folder(src):
        return [src]
    found = sorted(p for p in src.iterdir() if (p.is_file() and p.suffix in CHECKPOINT_SUFFIXES) or
                   (p.is_dir() and is_model_folder(p)))
    if not found:
        raise CheckpointError(f"{src}: folder holds no checkpoints (.npz, .safetensors, .bin or model folders)")
    return found


def default_output(src: Path, to: str, out_dir: Path) -> Path:
    stem = src.name if src.is_dir() else src.stem
    if to != "minivit":
        return out_dir / f"{stem}-{to}"
    out = out_dir / f"{stem}.safetensors"
    return out if out.resolve() != src.resolve() else out_dir / f"{stem}.minivit.safetensors"


def parse_image_size(text: str) -> int | tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--image-size {text!r}: expected S or HxW, e.g. 224 or 160x224") from None
    if len(sizes) == 1:
        return sizes[0]
    if len(sizes) == 2:
        return (sizes[0], sizes[1])
    raise argparse.ArgumentTypeError(f"--image-size {text!r}: expected S or HxW")


def convert_one(src: Path, out: Path, to: str, num_classes, image_size, tolerance: float, seed: int) -> bool:
    """Convert, write, reload, compare. True if the result matches within tolerance."""
    from .checkpoints import from_pretrained, save_checkpoint, save_folder

    model = from_pretrained(src, num_classes=num_classes, image_size=image_size)
    cfg = model.config
    try:
        if to == "minivit":
            save_checkpoint(model, out)
            weights = out
        else:
            weights = save_folder(model, out, to)
    except CheckpointError as e:
        raise CheckpointError(f"{src}: {e}") from None
    print(f"{src} -> {out}  [{model.load_report.layout} -> {to}]")
    print("  config: " + ", ".join(f"{k}={v}" for k, v in cfg.to_dict().items()))
    for line in str(model.load_report).splitlines()[1:]:
        print("  " + line.strip())
    print(f"  parameters: {model.num_params():,}")
    print(f"  sha256: {sha256(weights)}  {weights.name}")

    result = from_pretrained(out)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, cfg.in_chans, *cfg.image_hw, generator=g) * 2 - 1  # [-1, 1]: Google's input range
    with torch.no_grad():
        diff = (model(x) - result(x)).abs().max().item()
    ok = diff <= tolerance
    print(f"  verify: max abs diff {diff:g} on a random input ({'ok' if ok else f'ABOVE tolerance {tolerance:g}'})")
    return ok


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m minivit.convert",
        description="Convert ViT checkpoints (Google .npz from vit_jax/AugReg/big_vision, transformers or timm folders, "
                    "minivit .safetensors, manifest names, Hugging Face repo ids) to minivit, transformers or timm, "
                    "and verify that the result computes the same outputs.",
        epilog="Exit status: 0 ok; 1 a result differs by more than --tolerance; 2 bad input or option. "
               "See docs/checkpoints.md for the layout tables.",
    )
    p.add_argument("src", help="checkpoint file, model folder, manifest name, HF repo id, "
                               "or a folder of checkpoints (each one is converted)")
    p.add_argument("-o", "--output", metavar="OUT", type=Path,
                   help="output file (minivit) or folder (transformers/timm); for several sources, or an existing "
                        "folder, the folder to write into. Default: beside the source, named "
                        "<name>.safetensors or <name>-<target>/")
    p.add_argument("--to", choices=TARGETS, default="minivit",
                   help="target layout: minivit = one .safetensors with the config in its metadata; transformers / "
                        "timm = a folder with config.json + model.safetensors that the library loads (default: minivit)")
    p.add_argument("--num-classes", type=int, metavar="N",
                   help="replace the head by a zero-initialised one with N classes (0: no head); drops the "
                        "representation layer as in the ViT paper's fine-tuning")
    p.add_argument("--image-size", type=parse_image_size, metavar="S",
                   help="input size S or HxW: resample the position embeddings once")
    p.add_argument("--tolerance", type=float, default=5e-5, help="largest allowed max abs difference (default: 5e-5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random verification input (default: 0)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        src = Path(args.src).expanduser()
        if not src.exists():
            from .checkpoints.loader import resolve_source

            src = resolve_source(args.src)
        sources = sources_in(src)
        if len(sources) > 1 or (args.output is not None and args.output.is_dir() and not is_model_folder(args.output)):
            out_dir = args.output or src
            outputs = [default_output(s, args.to, out_dir) for s in sources]
        else:
            outputs = [args.output or default_output(sources[0], args.to, sources[0].parent)]
    except MinivitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    status = 0
    for s, out in zip(sources, outputs):
        try:
            if not convert_one(s, Path(out), args.to, args.num_classes, args.image_size, args.tolerance, args.seed):
                status = max(status, 1)
        except MinivitError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
