"""The training loop, in the style of nanoGPT's train.py: set up the run, then for each epoch train
one pass over the data and finish the epoch (validate, checkpoint, report).

What a run writes as it goes (rank 0, atomically, through its RunFolder): last.safetensors every epoch,
best.safetensors when the val score beats the best so far (both minivit checkpoints with the epoch, the
score and what the model was trained on as metadata), and resume.safetensors at the end of every epoch,
every --ckpt-every steps, when --save-every-minutes have passed, and when Ctrl-C or SIGTERM stops the run
after the step it is in (minivit/train/interrupt.py): everything needed to continue bit-exactly
(minivit/checkpoints/run_folder.py).

One step (``train_step``): for each micro-batch, take the next of the epoch's batches (minivit/train/data.py:
on the device already, or prefetched from the host), augment it on the device, mix it (CutMix/MixUp) and
smooth its labels, forward under autocast, backward; then
clip the gradient norm, step the optimiser at the scheduled LR, and update the EMA. Nothing in a step
waits for the GPU: loss and accuracy add up on the device and are read every few seconds at most.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext

import torch

from ..checkpoints.run_folder import BEST, LAST
from ..data.augment import mix_batch, one_hot, train_transform
from .config import TrainConfig
from .distributed import all_reduce_sum, barrier, no_sync
from .interrupt import SAVE, Interrupt, stop_signal
from .report import EpochProgress, close_board, final_report, record_epoch, start_report, validate
from .setup import Run, setup_run


def train(cfg: TrainConfig, train_set=None, val_set=None, test_set=None) -> dict:
    """Train (or resume) a run and write its report into its folder; returns the final metrics.

    The data is cfg.data, split by minivit.data.splits (a validation split carved out of train where the
    dataset has none); ``train_set``/``val_set``/``test_set`` (minivit.data.ImageSet) replace it, used as
    given. The result holds the metrics of best.safetensors on the val split (``val_*``) and, where there is
    a test split, on it (``test_*``), the run folder, and ``train_img_per_s``: the loop's steady-state
    training throughput (first steps of each epoch and validation excluded).
    """
    cfg.validate()  # every option, before anything is set up
    run = setup_run(cfg, train_set, val_set, test_set)
    try:
        # from here Ctrl-C and SIGTERM stop the run after the step it is in, its resume point saved
        with Interrupt(run.main, run.world, cfg.save_every_minutes) as run.interrupt:
            start_report(run)
            for epoch in range(run.state["epoch"], cfg.epochs):
                sums = train_one_epoch(run, epoch)
                if run.interrupted:
                    break
                end_of_epoch(run, epoch, sums)
        result = final_report(run)
    finally:
        close_board(run)  # TensorBoard's buffered events reach the disk even when the run fails
    barrier()
    return result


def train_one_epoch(run: Run, epoch: int) -> torch.Tensor:
    """The epoch's optimiser steps (from mid-epoch when resuming); returns [loss sum, correct] on the device."""
    cfg, steps = run.cfg, run.data.steps_per_epoch
    first = run.step - epoch * steps  # > 0 only when resuming mid-epoch
    # the saved sums are every rank's total (see save_resume_point): rank 0 carries them, the others
    # start from zero, so end_of_epoch's all-reduce counts each image once
    carried = run.state["sums"] if first and run.main else [0.0, 0.0]
    sums = torch.tensor(carried, dtype=torch.float64, device=run.device)
    progress = EpochProgress(run, epoch, first, carried)
    run.net.train()
    with run.data.epoch(epoch, cfg.seed, run.rank, run.world, start=first * cfg.accum_steps) as batches:
        for i in range(first, steps):
            train_step(run, batches, sums)
            progress.step(i, sums)
            if not keep_going(run, epoch, i, sums):
                break
    progress.close()
    return sums


def keep_going(run: Run, epoch: int, i: int, sums: torch.Tensor) -> bool:
    """After step ``i`` of the epoch: write the resume point where one is due (--ckpt-every, the save timer,
    a signal), then say whether the run goes on. Every process decides alike, at the same step."""
    cfg, vote = run.cfg, run.interrupt.after_step()  # 0, SAVE, or the signal that stops the run
    stop = stop_signal(vote)  # "SIGINT", "SIGTERM" or None
    if stop or ((vote == SAVE or cfg.ckpt_every and run.step % cfg.ckpt_every == 0)
                and i < run.data.steps_per_epoch - 1):  # (at the epoch's last step end_of_epoch saves)
        save_resume_point(run, epoch, sums)
    # --stop-after: a simulated crash, unsaved: no end-of-epoch work, no final report
    run.stopped = stop or ("--stop-after" if cfg.stop_after and run.step >= cfg.stop_after else None)
    return run.stopped is None


def train_step(run: Run, batches, sums: torch.Tensor) -> None:
    """One optimiser step: the next accum_steps micro-batches of the epoch forward and backward, then update."""
    cfg, accum = run.cfg, run.cfg.accum_steps
    for micro in range(accum):
        xb, yb = next(batches)  # uint8 (B, C, h, w), (B,) or (B, K), on the device
        gen, cpu_gen = step_generators(cfg.seed, run.step, micro, run.rank, run.device)
        x = train_transform(xb, run.aug, generator=gen)  # (B, in_chans, S, S) float, normalised
        y = one_hot(yb, run.model.config.num_classes, smoothing=cfg.label_smoothing)  # (B, K)
        x, y = mix_batch(x, y, mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, mix_prob=cfg.mix_prob,
                         generator=cpu_gen)  # (B, in_chans, S, S), (B, K)
        # DDP: all-reduce the gradients only on the last micro-step of an accumulation.
        with no_sync(run.net, skip=micro < accum - 1):
            # bf16/fp16 autocast for the forward pass (weights and optimiser state stay fp32)
            with torch.autocast(run.device.type, dtype=run.amp_dtype) if run.amp_dtype else nullcontext():
                logits = run.net(x)  # (B, K)
                loss = soft_cross_entropy(logits, y, run.data.class_weights)
            run.scaler.scale(loss / accum).backward()
        accumulate(sums, loss, logits, yb)
    run.lr = lr_at(run.step, run.total_steps, run.warmup_steps, cfg.lr, cfg.min_lr)
    set_lr(run.optimizer, run.lr)
    if cfg.clip_grad > 0:
        run.scaler.unscale_(run.optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.clip_grad)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    if run.ema is not None:
        run.ema.update(run.model)
    run.state["step"] += 1


def step_generators(seed: int, step: int, micro: int, rank: int, device: torch.device):
    """(device generator, CPU generator) for one micro-batch's augmentation: a pure function of its position,
    so a resumed run (and either data path) augments exactly as an uninterrupted one.

    Seeding a generator is host-side work: no kernel, no sync.
    """
    s = (seed * 1_000_003 + step * 1009 + micro * 31 + rank) % (2**63)
    return torch.Generator(device=device).manual_seed(s), torch.Generator().manual_seed(s)


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float) -> float:
    """Linear warmup to base_lr over warmup_steps, then cosine decay to min_lr at total_steps.

    >>> [round(lr_at(s, total_steps=10, warmup_steps=2, base_lr=1.0, min_lr=0.0), 3) for s in (0, 1, 2, 6, 10)]
    [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's LR into every group, times the group's layer-decay scale (Python floats: no kernels)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None):
    """Cross-entropy against soft targets (B, K) (smoothed, mixed or FER+ vote distributions)."""
    loss = -targets * logits.float().log_softmax(-1)  # (B, K)
    if class_weights is not None:
        loss = loss * class_weights  # (B, K): rare classes count more
    return loss.sum(-1).mean()


@torch.no_grad()
def accumulate(sums: torch.Tensor, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
    """Add a micro-batch's loss sum and correct count to ``sums`` on the device: no host sync, few kernels."""
    truth = targets.argmax(1) if targets.ndim == 2 else targets  # (B,)
    sums[0] += loss.detach() * len(truth)
    sums[1] += (logits.argmax(1) == truth).sum()


def end_of_epoch(run: Run, epoch: int, sums: torch.Tensor) -> None:
    """Train stats summed over processes; on rank 0: validate, keep best/last, save the resume point, report."""
    loss_sum, correct = all_reduce_sum(sums).tolist()
    n = run.data.steps_per_epoch * run.data.images_per_step * run.world
    row = dict(epoch=epoch + 1, step=run.step, lr=run.lr, train_loss=loss_sum / n, train_acc=correct / n,
               seconds=round(time.time() - run.t_start, 1))
    if run.main:
        metric = run.cfg.best_metric
        val = validate(run, run.model)
        row.update(val_loss=val["loss"], val_acc=val["accuracy"], val_macro_f1=val["macro_f1"])
        score, scored_model = val[metric], run.model
        if run.ema is not None:  # the EMA is what gets kept, so it is what gets scored
            val_ema = validate(run, run.ema.module)
            row.update(val_ema_loss=val_ema["loss"], val_ema_acc=val_ema["accuracy"],
                       val_ema_macro_f1=val_ema["macro_f1"])
            score, scored_model = val_ema[metric], run.ema.module
        row.update(run.clock.epoch_row())  # epoch_seconds, img_per_s
        record_epoch(run, row)
        save_epoch_weights(run, epoch + 1, score, scored_model, metric)
        run.state["sums"] = [0.0, 0.0]
        save_resume_point(run, epoch + 1)
    barrier()  # other ranks wait for rank 0's validation and checkpoint


def save_resume_point(run: Run, epoch_next: int, sums: torch.Tensor | None = None) -> None:
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
    run.folder.save_resume(run.model, run.optimizer, run.scaler, run.ema, state)
    run.interrupt.saved()


def save_epoch_weights(run: Run, epoch: int, score: float, scored_model, metric: str) -> None:
    """last.safetensors every epoch; best.safetensors when ``score`` beats the best so far."""
    state = run.state
    # what a user of the file needs besides the weights: the class names in head order, whether the
    # training images were grayscale (minivit.inference.predictor then turns colour photos gray, as the training saw),
    # and what the model was trained on (minivit.data.provenance: evaluate and predict compare it with their data)
    about = {"classes": list(run.train_set.classes), "grayscale_data": run.train_set.images.shape[1] == 1,
             "trained_on": run.trained_on}
    if state["best"] is None or score > state["best"]:
        state["best"], state["best_epoch"] = score, epoch
        run.folder.save_weights(BEST, scored_model, {"epoch": epoch, f"val_{metric}": score, **about})
    run.folder.save_weights(LAST, run.ema.module if run.ema else run.model, {"epoch": epoch, **about})


__all__ = ["train", "train_one_epoch", "keep_going", "train_step", "step_generators", "lr_at", "set_lr",
           "end_of_epoch", "soft_cross_entropy", "accumulate", "save_resume_point", "save_epoch_weights"]
