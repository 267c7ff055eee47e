"""Exporting a trained model to ONNX, and verifying the file against PyTorch (``python -m minivit.export``).

    pip install "minivit[export]"
    python -m minivit.export --checkpoint runs/fer --onnx fer.onnx                   # opset 18
    python -m minivit.export --checkpoint runs/fer --onnx fer.onnx --image face.jpg  # verify on a real face

The graph: input ``images`` float32 (batch, in_chans, H, W) at the model's input size, already
preprocessed as minivit.data.augment.eval_transform does (resized, pixels / 255, then (x - 0.5) / 0.5);
output ``logits`` float32 (batch, num_classes) (the pooled features for a headless model). The
batch axis is dynamic unless ``--static-batch``. The model's config, class names and that
preprocessing are stored in the file's metadata (``metadata_props``).

Opset: ``DEFAULT_OPSET`` = 18 unless ``--opset`` says otherwise; the command prints the opset used.

Exporter: torch's TorchScript-based one (``torch.onnx.export(..., dynamo=False)``) by default: it
needs only the ``onnx`` package, runs offline in a fraction of a second for small models, and
handles every minivit architecture (token / gap / map pooling, the representation layer, the
conv stem with BatchNorm, 1 or 3 input channels, non-square inputs). ``--dynamo`` uses the newer
torch.export-based exporter instead (it needs ``onnxscript``, and takes seconds).

Verification, in the same command: onnxruntime (CPU) against PyTorch (CPU, float32) on a random
batch of 3 (a batch size other than the export's, which checks the dynamic axis) and on a real
input -- the ``--image`` file, preprocessed as the predict command does, or else a synthetic face
from minivit.data.synthetic_faces. The maximum absolute difference of the logits is printed; above
``--tolerance`` (default 1e-4) the command exits with status 1 and writes no file (the export goes
to a temporary file that only replaces ``--onnx`` once it has passed).
"""

from __future__ import annotations

import json
import logging
import warnings
from contextlib import contextmanager

import numpy as np
import torch

from ..common.errors import ConfigError
from ..data.augment import AugmentConfig, eval_transform
from .images import read_image, to_image_tensor

DEFAULT_OPSET = 18
TOLERANCE = 1e-4  # float32 ONNX Runtime vs PyTorch: kernels differ in summation order, ~1e-6 for small ViTs
INSTALL_HINT = "pip install 'minivit[export]' (onnx, onnxruntime)"
# Where torch's dynamo exporter logs "torchvision is not installed. Skipping torchvision::nms" (and
# roi_align, roi_pool, deform_conv2d) as it builds its table of operators, on every export.
ONNX_REGISTRY_LOGGER = "torch.onnx._internal.exporter._registration"
TORCHVISION_NOTICE = "torchvision is not installed. Skipping"


class VerificationFailed(Exception):
    """ONNX Runtime's output differs from PyTorch's by more than the tolerance (exit status 1)."""


class LogitsOnly(torch.nn.Module):
    """The model as a graph of one input and one output: ``images -> logits``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)  # (B, K)


class _DropTorchvisionNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TORCHVISION_NOTICE)


@contextmanager
def without_torchvision_notices():
    """Drop exactly the dynamo exporter's "torchvision is not installed. Skipping torchvision::..."
    warnings while inside: minivit has no torchvision operator (and does not depend on torchvision),
    so the four lines say nothing about this export. Every other message of that logger still shows."""
    logger, drop = logging.getLogger(ONNX_REGISTRY_LOGGER), _DropTorchvisionNotices()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def export_onnx(model, path, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = True, dynamo: bool = False) -> None:
    """Write ``model`` (eval mode, CPU, float32) as an ONNX graph images -> logits to ``path``."""
    config = model.config
    wrapper = LogitsOnly(model).eval()
    example = torch.zeros(1, config.in_chans, *config.image_hw)  # (1, C, H, W)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice; tracer warnings
        if dynamo:
            try:
                import onnxscript  # noqa: F401 - the torch.export-based exporter builds graphs with it
            except ImportError:
                raise ConfigError("--dynamo needs onnxscript: pip install onnxscript") from None
            shapes = {"images": {0: torch.export.Dim("batch")}} if dynamic_batch else None
            with without_torchvision_notices():
                torch.onnx.export(wrapper, (example,), str(path), dynamo=True, input_names=["images"],
                                  output_names=["logits"], dynamic_shapes=shapes, opset_version=opset,
                                  external_data=False, verbose=False)
        else:
            axes = {"images": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
            torch.onnx.export(wrapper, (example,), str(path), dynamo=False, input_names=["images"],
                              output_names=["logits"], dynamic_axes=axes, opset_version=opset)
    model.eval()  # the exporter restores the wrapper's mode onto the model: keep BatchNorm in eval


def add_metadata(path, model, classes) -> None:
    """Store the config, class names and preprocessing in the ONNX file's metadata_props."""
    import onnx

    proto = onnx.load(str(path))
    config = model.config
    props = {"minivit_config": json.dumps(config.to_dict()), "classes": json.dumps(list(classes)),
             "preprocessing": f"uint8 image -> resize to {config.image_hw[0]}x{config.image_hw[1]} (bilinear, "
                              f"antialiased when shrinking) -> {config.in_chans} channel(s) (gray repeated / ITU-R 601 "
                              f"luminance) -> x / 255 -> (x - 0.5) / 0.5"}
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def real_input(model, image: str | None) -> tuple[torch.Tensor, str]:
    """A preprocessed real input (1, C, H, W) and where it came from: the image file, or a synthetic face."""
    config = model.config
    aug = AugmentConfig(image_size=config.image_size, channels=config.in_chans)
    if image:
        return eval_transform(to_image_tensor(read_image(image), image)[None], aug), image  # (1, C, H, W)
    from ..data import synthetic_faces

    face = synthetic_faces(1, image_size=max(config.image_hw), seed=0).images  # (1, 1, S, S) uint8
    return eval_transform(face, aug), "a synthetic face (minivit.data.synthetic_faces)"


def verify(path, model, inputs: dict[str, torch.Tensor], tolerance: float) -> dict[str, float]:
    """Max |ONNX Runtime - PyTorch| of the logits for each named input batch; VerificationFailed above
    ``tolerance``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    diffs = {}
    for name, x in inputs.items():
        with torch.no_grad():
            expected = model(x).float().numpy()  # (B, K)
        got = session.run(["logits"], {"images": x.numpy()})[0]  # (B, K)
        if got.shape != expected.shape:
            raise VerificationFailed(f"{name}: ONNX output shape {got.shape}, PyTorch {expected.shape}")
        diffs[name] = float(np.abs(got - expected).max()) if got.size else 0.0
        print(f"verify ({name}, batch {x.shape[0]}): max abs difference {diffs[name]:.3g}")
    worst = max(diffs, key=diffs.get)
    if not diffs[worst] <= tolerance:  # NaN fails too
        raise VerificationFailed(f"ONNX Runtime and PyTorch differ by {diffs[worst]:.3g} on {worst}, "
                                 f"more than the tolerance {tolerance:g}")
    return diffs


__all__ = ["export_onnx", "add_metadata", "real_input", "verify", "VerificationFailed", "LogitsOnly",
           "without_torchvision_notices", "DEFAULT_OPSET", "TOLERANCE", "INSTALL_HINT"]
