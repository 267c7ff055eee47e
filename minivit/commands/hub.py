"""``python -m minivit.hub``: list the checkpoints of the manifest, or download one.

    python -m minivit.hub list                      # names, formats, what each was trained on
    python -m minivit.hub download ViT-B_16         # a manifest name: weights/<file>, checksummed
    python -m minivit.hub download google/vit-base-patch16-224   # a Hugging Face repo: its cache folder

The library half -- the manifest, resumable downloads, the Hugging Face cache -- is
minivit/checkpoints/hub.py.
"""

from __future__ import annotations

from ..checkpoints.hub import DEFAULT_WEIGHTS_DIR, WEIGHTS_DIR_ENV, load_manifest, resolve
from ..common.cli import ArgumentParser, command_prog


def build_parser(prog: str | None = None) -> ArgumentParser:
    parser = ArgumentParser(prog=command_prog("hub", prog), description="List or download ViT checkpoints.",
                            epilog="Exit status: 0 ok; 2 bad input (one line on stderr).")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the checkpoint names in the manifest")
    get = sub.add_parser("download", help="download a checkpoint (manifest name or org/name repo) and print its path")
    get.add_argument("name", help="a manifest name (see list, e.g. ViT-B_16) or a Hugging Face repo id (org/name)")
    get.add_argument("--weights-dir", default=None, help=f"default: ${WEIGHTS_DIR_ENV} or {DEFAULT_WEIGHTS_DIR}")
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    if args.command == "list":
        for e in load_manifest():
            print(f"{e['name']}  [{e['format']}; {e.get('trained_on', '?')}]")
    else:
        print(resolve(args.name, weights_dir=args.weights_dir))
    return 0
