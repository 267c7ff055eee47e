"""Convert checkpoints between layouts, and check that the result computes the same function.

    python -m minivit.convert ViT-B_16.npz                            # -> ViT-B_16.safetensors (minivit)
    python -m minivit.convert hf_model/ --to timm -o timm_model/      # transformers folder -> timm folder
    python -m minivit.convert checkpoints/ -o converted/              # every checkpoint in a folder
    python -m minivit.convert ViT-B_16.npz --num-classes 7 --image-size 112

A model the target layout cannot hold (exact GELU or a LayerNorm eps other than 1e-6 in an
.npz, a representation layer in timm, a conv stem outside minivit, ...: the table in
minivit/checkpoints/holds.py) is refused before anything is written, with one line naming the
setting and the target. ``--allow-lossy`` writes the nearest model the target holds instead
and says so, loudly.

For each source it prints the inferred config, the parameter count and the sha256 of the
written weights, then verifies the file it wrote: reloads it with ``ViT.from_pretrained(out)``
exactly as a user would (no overrides), runs source and result in float32 on a fixed input
(``--seed``) and prints the largest absolute difference of the logits and the features the head
reads (0 for an exact conversion). Exit status: 0 ok, or written lossy as --allow-lossy asked;
1 a conversion that nothing made lossy differs by more than --tolerance; 2 bad input or a
refused target (one-line message). An output that exists already is refused (exit 2) unless
--overwrite is given.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from ..checkpoints import LAYOUTS, Refusal, export, export_refusals, layout_names
from ..checkpoints.holds import refusal_message
from ..checkpoints.loading import resolve_source
from ..common import cli
from ..common.errors import CheckpointError, ConfigError, MinivitError
from ..common.files import hash_file
from ..model.vit import ViT

CHECKPOINT_SUFFIXES = (".npz", ".safetensors", ".bin")
LOSSY_HINT = "pass --allow-lossy to write it anyway and measure the difference"


def targets() -> list[str]:
    """The layouts a model can be written in: every writable entry of the registry."""
    return layout_names(writable=True)


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
    """<name>.safetensors for minivit, <name>-<layout>.npz for Google layouts, <name>-<layout>/ for folders."""
    stem = src.name if src.is_dir() else src.stem
    kind = {"minivit": ".safetensors", "npz": ".npz"}.get(LAYOUTS[to].kind, "")
    out = out_dir / (f"{stem}{kind}" if to == "minivit" else f"{stem}-{to}{kind}")
    if out.exists() and out.resolve() == src.resolve():
        return out_dir / f"{stem}.{to}{kind}"
    return out


def parse_image_size(text: str) -> int | tuple[int, int]:
    """``S`` or ``HxW``, each >= 1: the argparse type of --image-size."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected S or HxW with sizes >= 1, e.g. 224 or 160x224, not {text!r}")
    return sizes[0] if len(sizes) == 1 else (sizes[0], sizes[1])


def refuse_unless_allowed(model: ViT, src: Path, to: str, allow_lossy: bool) -> list[Refusal]:
    """What the target cannot hold of the model, allowed by --allow-lossy; else one line, before writing."""
    lost = export_refusals(model, to)
    if lost and not (allow_lossy and all(r.lossy for r in lost)):
        raise CheckpointError(f"{src}: {refusal_message(to, lost, LOSSY_HINT)}")
    return lost


def verify(model: ViT, out: Path, seed: int) -> float:
    """Max abs difference between the source model and the written file reloaded as any user would
    (``ViT.from_pretrained(out)``, no overrides), in float32 on a fixed input in [-1, 1]: the
    logits and the features the head reads (a new zero head alone would hide the body)."""
    result = ViT.from_pretrained(out).float()
    model = model.float().eval()
    config = model.config
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, config.in_chans, *config.image_hw, generator=g) * 2 - 1  # [-1, 1]: Google's input range
    with torch.no_grad():
        (a, a_out), (b, b_out) = model(x, return_out=True), result(x, return_out=True)
    pairs = [(a, b), (a_out["pre_logits"], b_out["pre_logits"])]
    if any(p.shape != q.shape for p, q in pairs):
        return math.inf
    return max((p - q).abs().max().item() for p, q in pairs)


def convert_one(src: Path, out: Path, to: str, num_classes, image_size, tolerance: float, seed: int,
                allow_lossy: bool = False) -> bool:
    """Convert, write, reload as a user would, compare. True if the result is within tolerance, or
    written lossy as allow_lossy asked (and still a finite difference)."""
    model = ViT.from_pretrained(src, num_classes=num_classes, image_size=image_size)
    config = model.config
    lost = refuse_unless_allowed(model, src, to, allow_lossy)
    try:
        weights = export(model, out, to, allow_lossy=allow_lossy)
    except CheckpointError as e:
        raise CheckpointError(f"{src}: {e}") from None
    print(f"{src} -> {out}  [{model.load_report.layout} -> {to}]")
    print("  config: " + ", ".join(f"{k}={v}" for k, v in config.to_dict().items()))
    for line in str(model.load_report).splitlines()[1:]:
        print("  " + line.strip())
    print(f"  parameters: {model.num_params():,}")
    print(f"  sha256: {hash_file(weights).hexdigest()}  {weights.name}")
    if lost:
        print(f"  LOSSY (--allow-lossy): the {to} layout cannot hold {', '.join(r.setting for r in lost)}; "
              "the file holds the nearest model that layout can")
    diff = verify(model, out, seed)
    ok = diff <= tolerance
    status = "ok" if ok else f"ABOVE tolerance {tolerance:g}"
    if lost:
        status = f"LOSSY, {status}, written as --allow-lossy asked"
    print(f"  verify: max abs diff {diff:g} between the source and {out.name} reloaded by ViT.from_pretrained "
          f"(float32, fixed input, seed {seed}) ({status})")
    return ok or (bool(lost) and math.isfinite(diff))


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = cli.ArgumentParser(
        prog=cli.command_prog("convert", prog),
        description="Convert ViT checkpoints (Google .npz from vit_jax/AugReg/big_vision, transformers or timm folders, "
                    "minivit .safetensors, manifest names, Hugging Face repo ids) to any writable layout, "
                    "and verify that the result computes the same outputs.",
        epilog="Exit status: 0 ok (or written lossy as --allow-lossy asked); 1 a result differs by more than "
               "--tolerance; 2 bad input or option, or a model the target layout cannot hold. "
               "See docs/checkpoints.md for the layout tables and what each layout can hold.",
    )
    p.add_argument("src", help="checkpoint file, model folder, manifest name, HF repo id, "
                               "or a folder of checkpoints (each one is converted)")
    p.add_argument("-o", "--output", metavar="OUT", type=Path,
                   help="output file (minivit, npz) or folder (transformers/timm); for several sources, or an "
                        "existing folder, the folder to write into. Default: beside the source, named "
                        "<name>.safetensors, <name>-<target>.npz or <name>-<target>/")
    p.add_argument("--to", choices=targets(), default="minivit",
                   help="target layout: minivit = one .safetensors with the config in its metadata (the only one "
                        "that holds a conv stem); vit_jax / big_vision = a Google .npz; transformers / timm = a "
                        "folder with config.json + model.safetensors that the library loads (default: minivit)")
    p.add_argument("--num-classes", type=cli.integer(at_least=0), metavar="N",
                   help="replace the head by a zero-initialised one with N classes; 0 = no head (the model "
                        "returns its pooled features); drops the representation layer as in the ViT paper's "
                        "fine-tuning. Integer >= 0")
    p.add_argument("--image-size", type=parse_image_size, metavar="S",
                   help="input size S or HxW (each >= 1 and a multiple of the patch size): resample the position "
                        "embeddings once")
    p.add_argument("--tolerance", type=cli.number(above=0), default=5e-5,
                   help="largest allowed max abs difference, > 0 (default: 5e-5)")
    p.add_argument("--seed", type=cli.integer(at_least=0, at_most=2**31 - 1), default=0,
                   help="seed of the random verification input, integer in [0, 2**31 - 1] (default: 0)")
    p.add_argument("--allow-lossy", action="store_true",
                   help="write even a model the target layout cannot hold exactly (e.g. exact GELU or LayerNorm "
                        "eps 1e-12 into a Google .npz, which is read back with tanh GELU and eps 1e-6): the nearest "
                        "model the layout holds is written, the lost settings and the measured difference are "
                        "printed, exit status 0. Without it such a conversion is refused (exit 2)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an output file or folder that exists already (otherwise that is refused)")
    return p


def check_outputs(outputs: list[Path], overwrite: bool) -> None:
    """Never replace a file (or a non-empty folder) without --overwrite: refuse before anything is written."""
    if overwrite:
        return
    for out in outputs:
        if out.is_file() or (out.is_dir() and any(out.iterdir())):
            raise ConfigError(f"{out}: exists already; pass --overwrite to replace it, or -o to write elsewhere")


def plan(args) -> tuple[list[Path], list[Path]]:
    """(sources, outputs) for the command line, before anything is read or written."""
    src = Path(args.src).expanduser()
    if not src.exists():
        src = resolve_source(args.src)
    sources = sources_in(src)
    if len(sources) > 1 or (args.output is not None and args.output.is_dir() and not is_model_folder(args.output)):
        out_dir = args.output or src
        outputs = [default_output(s, args.to, out_dir) for s in sources]
    else:
        outputs = [args.output or default_output(sources[0], args.to, sources[0].parent)]
    check_outputs(outputs, args.overwrite)
    return sources, outputs


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    sources, outputs = plan(args)  # a MinivitError here: cli.run prints one line, exit 2
    status = 0
    for s, out in zip(sources, outputs):
        try:
            if not convert_one(s, Path(out), args.to, args.num_classes, args.image_size, args.tolerance, args.seed,
                               args.allow_lossy):
                status = max(status, 1)
        except MinivitError as e:  # one bad checkpoint in a folder: report it, convert the others
            cli.fail(str(e))
            status = 2
    return status


def console_main() -> int:
    """The ``minivit-convert`` console script: ``main`` with one-line errors and exit code 2."""
    return cli.run(main)
