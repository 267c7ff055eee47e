"""TensorBoard event files for a run (``--tensorboard``): the numbers of history.csv, as TensorBoard plots them.

Off unless asked for: every tiny run would otherwise leave an event folder behind, and importing
TensorBoard costs about a second (and an optional package). With ``--tensorboard`` (the
``tensorboard`` extra: ``pip install 'minivit[tensorboard]'``) a run writes ``<run>/tensorboard/``:

    step/train_loss, step/lr   every READ_EVERY_STEPS optimiser steps: the mean training loss of those steps
                               and the learning rate, read when the progress code reads the running sums
                               anyway (one host sync per READ_EVERY_STEPS steps, none added)
    epoch/<column>             every column of history.csv, once per epoch, at the epoch's last step
    report/<name>              the report's PNGs (confusion matrices, curves, attention maps) at the end

Every value is logged at the global optimiser step, so all plots share one x-axis. ``--resume``
opens a new event file in the same folder whose first event purges what the interrupted process
logged after the resume point (SummaryWriter's purge_step): steps continue, none is counted twice.

    tensorboard --logdir runs/        # every run's curves side by side
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..checkpoints.run_folder import TENSORBOARD

INSTALL_HINT = "pip install 'minivit[tensorboard]'"
READ_EVERY_STEPS = 10  # how often the loop reads its running loss (progress bar and TensorBoard alike)


def tensorboard_missing() -> str | None:
    """Why --tensorboard cannot work here (the package is not installed), or None."""
    if importlib.util.find_spec("tensorboard") is None:
        return f"--tensorboard needs the tensorboard package: {INSTALL_HINT}"
    return None


class Board:
    """A run's TensorBoard writer (rank 0 only); ``purge_step`` when resuming: see the module docstring."""

    def __init__(self, run_dir, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(run_dir) / TENSORBOARD
        self.writer = SummaryWriter(log_dir=str(self.folder), purge_step=purge_step)

    def step(self, step: int, train_loss: float, lr: float) -> None:
        self.writer.add_scalar("step/train_loss", train_loss, step)
        self.writer.add_scalar("step/lr", lr, step)

    def epoch(self, row: dict, columns) -> None:
        """One history.csv row: each of ``columns`` (but the step, the x-axis) at the row's step; flushed,
        so that what a crash leaves behind reaches the resume point."""
        for name in columns:
            if name != "step" and row.get(name) is not None:
                self.writer.add_scalar(f"epoch/{name}", row[name], row["step"])
        self.writer.flush()

    def images(self, paths, step: int) -> None:
        """The report's PNGs as images (tag ``report/<file name>``), those that exist."""
        import numpy as np
        from PIL import Image

        for path in map(Path, paths):
            if path.is_file():
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
                self.writer.add_image(f"report/{path.stem}", pixels, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


__all__ = ["Board", "INSTALL_HINT", "READ_EVERY_STEPS", "tensorboard_missing"]
