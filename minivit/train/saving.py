"""What a run writes as it goes: best/last weights each epoch, and the resume point.

``best.safetensors`` and ``last.safetensors`` are minivit checkpoints (``ViT.from_pretrained``
reads them) with the epoch and score as extra metadata; ``resume.safetensors`` holds everything
needed to continue bit-exactly (minivit.checkpoints.resume). All writes are atomic; rank 0 writes.
"""

from __future__ import annotations

from ..checkpoints.resume import save_resume
from ..checkpoints.run_folder import RESUME
from ..checkpoints.writing import save_checkpoint
from .distributed import all_reduce_sum


def save_resume_point(run, epoch_next: int, sums=None) -> None:
    """resume.safetensors for continuing at ``epoch_next`` (mid-epoch: with the epoch's running sums).

    Mid-epoch every rank calls this: the sums are summed over the ranks (a collective, on a copy:
    each rank keeps adding to its own) and rank 0 saves the total.
    """
    total = all_reduce_sum(sums.clone()) if sums is not None else None
    if not run.main:
        return
    state = dict(run.state, epoch=epoch_next, steps_per_epoch=run.data.steps_per_epoch)
    if total is not None:
        state["sums"] = total.tolist()
    save_resume(run.folder / RESUME, run.model, run.optimizer, run.scaler, run.ema, state)


def save_epoch_weights(run, epoch: int, score: float, scored_model, metric: str) -> None:
    """last.safetensors every epoch; best.safetensors when ``score`` beats the best so far."""
    state = run.state
    # what a user of the file needs besides the weights: the class names in head order, whether the
    # training images were grayscale (minivit.inference.predictor then turns colour photos gray, as the training saw),
    # and what the model was trained on (minivit.data.provenance: evaluate and predict compare it with their data)
    about = {"classes": list(run.train_set.classes), "grayscale_data": run.train_set.images.shape[1] == 1,
             "trained_on": run.trained_on}
    if state["best"] is None or score > state["best"]:
        state["best"], state["best_epoch"] = score, epoch
        save_checkpoint(scored_model, run.folder.best, extra={"epoch": epoch, f"val_{metric}": score, **about})
    save_checkpoint(run.ema.module if run.ema else run.model, run.folder.last, extra={"epoch": epoch, **about})
