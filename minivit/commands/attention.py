"""``python -m minivit.attention``: where a trained model looks in one image, overlaid on it, in one PNG.

    python -m minivit.attention photo.jpg --checkpoint runs/fer -o maps.png

Two maps (minivit/inference/attention_maps.py): attention rollout, and the last layer's attention of
what the classifier reads, each scaled to [0, 1] and drawn over the image as the model saw it.

With the ``faces`` extra the largest face found is used (``--face N`` picks another, numbered
left to right as in minivit.predict); with ``--no-detect``, no face found, or an image that is a
face crop already (no larger than twice the model's input), the whole image.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..common.cli import ArgumentParser, command_prog, fail, integer, output_file_problem
from ..common.errors import ConfigError
from ..evaluate.plots import attention_overlay_png
from ..inference import faces
from ..inference.attention_maps import attention_maps
from ..inference.images import read_image, to_image_tensor
from ..inference.predictor import (FACE_SIZED, NO_FACE, OFF, UNAVAILABLE, Predictor, add_checkpoint_option,
                                   add_image_options, checkpoint_or_shipped, predictor_options)


def pick_region(face: int | None, detection: str, regions: list, image: str):
    """(box, crop) of face number ``face`` (from 1, left to right), or of the largest region when None;
    a one-line ConfigError when there is no such face, saying why (detection off, unavailable, ...)."""
    if face is None:
        return max(regions, key=lambda r: r[1].shape[-1] * r[1].shape[-2])  # the largest face
    why = {OFF: "face detection is off (--no-detect): the whole image is used",
           UNAVAILABLE: f"face detection is unavailable ({faces.unavailable_reason()})",
           FACE_SIZED: f"{image} is already face-sized (no larger than twice the model's input): it is used whole",
           NO_FACE: f"no face was found in {image}"}.get(detection)
    if why is None and face > len(regions):
        why = f"{image} has {len(regions)} detected face{'s' * (len(regions) != 1)}"
    if why:
        raise ConfigError(f"--face {face}: {why}")
    return regions[face - 1]


def build_parser(prog: str | None = None) -> ArgumentParser:
    p = ArgumentParser(prog=command_prog("attention", prog), description=(
        "Draw a model's attention on one image: attention rollout and the last layer's attention of the "
        "pooled token, overlaid on the (face-cropped, resized) input, in one PNG."))
    p.add_argument("image", help="the image file (JPEG, PNG, ...)")
    add_checkpoint_option(p)
    p.add_argument("-o", "--output", required=True, metavar="MAPS.png", help="the PNG to write")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.add_argument("--face", type=integer(at_least=1), default=None, help="which detected face to use, numbered "
                   "left to right from 1 (default: the largest)")
    add_image_options(p)  # --device, --no-detect (use the whole image), --grayscale, --max-pixels
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    out_path = Path(args.output)
    problem = output_file_problem("--output", args.output, suffix=".png", overwrite=args.overwrite)
    if problem:
        return fail(problem)
    image = to_image_tensor(read_image(args.image, max_pixels=args.max_pixels), args.image)  # (C, H, W)
    predictor = Predictor.from_checkpoint(checkpoint_or_shipped(args.checkpoint), **predictor_options(args))
    if predictor.detection == UNAVAILABLE:
        print(f"note: {faces.unavailable_reason()}; classifying whole images", file=sys.stderr)  # as predict says
    _, detection, regions = predictor.regions(image)
    box, crop = pick_region(args.face, detection, regions, args.image)
    view, maps, probs = attention_maps(predictor, crop)
    k = int(probs.argmax())
    where = f"face at {box}" if box else {NO_FACE: "whole image (no face found)",
                                          FACE_SIZED: "whole image (already face-sized)"}.get(detection, "whole image")
    title = f"{Path(args.image).name}, {where}: {predictor.classes[k]} {probs[k]:.2f}"
    print(attention_overlay_png(view, maps, out_path, title=title))
    return 0
