"""What a run tells its user: the header, progress, the whole-run estimate, per-epoch lines and files,
warnings, the final report.

Only rank 0 reports. Everything printed goes through ``log`` (skipped with ``log=False``) or
``warn`` (always printed), above any progress bar (minivit.common.console.write): a line never tears one.

Progress. Within an epoch a bar shows on a terminal (minivit.common.console: never in a redirected log,
nor with --no-progress), else a line every ``--log-every`` seconds. After the first few seconds of steady
steps (the first TIMING_SKIP_STEPS of an epoch are start-up, compilation and warm-up, never counted) the
run prints one line: its speed, an epoch's time and the whole run's, evaluation included (``Forecast``);
from then on the bar and the lines show the run's time left, not only the epoch's. On a CPU, an estimate
over LONG_ON_CPU_S comes with a warning that names a faster choice. Reading the running loss is a host
sync, so it happens every READ_EVERY_STEPS steps (bar, TensorBoard) or every few seconds (lines), never
every step; the clock reads the GPU's time (after a synchronize) only where a measurement starts or ends.
"""

from __future__ import annotations

import csv
import sys
import time
from signal import SIGINT

import torch

from ..checkpoints.run_folder import BEST
from ..common.errors import Interrupted
from ..common.files import atomic_write, write_json
from ..common.console import bar, write
from ..common.text import counted, duration
from ..data.augment import AugmentConfig, eval_transform
from ..data.provenance import class_count_list
from ..data.splits import OPTIMISTIC, absent_classes, selection_role, source_name, split_label, split_title
from ..evaluate.plots import curves_png
from ..evaluate.reports import attention_report, confusion_report_png, evaluate, write_report
from ..model.vit import ViT
from .board import READ_EVERY_STEPS, Board

TIMING_SKIP_STEPS = 3  # steps of each epoch left out of the throughput (warm-up, compilation, caches)
ESTIMATE_AFTER_S = 5.0  # seconds of steady steps measured before the whole-run estimate is printed
EVAL_SPEEDUP = 3.0  # an image scored (forward) costs about a third of one trained (forward, backward, update)
LONG_ON_CPU_S = 2 * 3600.0  # a run estimated longer than this on a CPU is warned about
CURVES_EVERY_S = 60  # curves.png is redrawn at most this often during a run (and after the last epoch)
REPORT_PNGS = ("curves.png", "confusion_matrix.png", "test_confusion_matrix.png", "attention_maps.png")
# history.csv's columns, in this order (those no row has are left out: the EMA ones without --ema). One row
# per epoch, like timm's summary.csv; history.json holds the same rows.
HISTORY_COLUMNS = ("epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1",
                   "val_ema_loss", "val_ema_acc", "val_ema_macro_f1", "epoch_seconds", "img_per_s")


def log(run, message: str) -> None:
    if run.main and run.cfg.log:
        write(message)


def warn(run, message: str) -> None:
    if run.main:
        write(f"warning: {message}", file=sys.stderr)


def describe_model(run) -> str:
    """The architecture in one line: what was asked for and what it became (patch, grid, tokens, params)."""
    model_config, cfg, params = run.model.config, run.cfg, run.model.num_params()
    if cfg.resume:
        name = f"resumed from {cfg.resume}"
    elif cfg.weights and cfg.weights != "none":
        name = f"{cfg.weights} (pretrained)"
    else:
        # the values follow in the description below; here only which fields differ from the named model
        changed = ", ".join(cfg.model_overrides)
        name = cfg.model + (f" (changed: {changed})" if changed else "")
    size = f"{params / 1e6:.2f}M" if params >= 1e6 else f"{params:,}"
    gh, gw = model_config.grid
    prefix = model_config.num_prefix_tokens
    tokens = f"{gh}x{gw} grid = {gh * gw} patches" + (f" + {prefix} CLS" if prefix else "")
    return (f"model {name}: {model_config.stem} stem, patch {model_config.patch_size}, {tokens} = "
            f"{model_config.num_tokens} tokens, dim {model_config.dim}, depth {model_config.depth}, heads "
            f"{model_config.heads}, mlp {model_config.mlp_dim}, in_chans {model_config.in_chans}, {size} params")


def data_section(run) -> dict:
    """config.json's "data": the sets (source, size, images per class), the split rule that chose them
    (minivit.data.splits) and what the model is trained on (minivit.data.provenance)."""
    sets = {"train": run.train_set, "val": run.val_set, "test": run.test_set}
    section = {name: s.source if s is not None else None for name, s in sets.items()}
    section.update({f"{name}_size": len(s) if s is not None else None for name, s in sets.items()})
    section.update(classes=list(run.train_set.classes), split=run.split_rule, trained_on=run.trained_on,
                   class_counts={name: class_count_list(s) for name, s in sets.items() if s is not None})
    return section


def split_lines(run) -> list[str]:
    """What each split is, one line each: "test: fer2013/test, 3,589 images, never used for selection"."""
    lines = [f"train: {source_name(run.train_set)}, {counted(len(run.train_set), 'image')}",
             split_label("val", run.val_set, run.split_rule)]
    if run.test_set is not None:
        lines.append(split_label("test", run.test_set, run.split_rule))
    elif run.split_rule["val"] != "test":
        lines.append("test: none (the dataset has no test split): the val figure is the only one")
    return lines


def storage_lines(run) -> list[str]:
    """Where the images live, a line per place: "data: train, val memory-mapped from the decoded cache <folder>
    (1.51 GB on disk, ...)", "data: train, val, test in memory (pixels in the CSV; 83 MB in each process)"."""
    sets = {"train": run.train_set, "val": run.val_set, "test": run.test_set}
    mapped, in_memory = {}, []
    for name, s in sets.items():
        if s is not None:
            (mapped.setdefault(s.cache, []) if s.cache else in_memory).append((name, s))
    lines = []
    for folder, held in mapped.items():
        images = held[0][1].images
        size = getattr(images, "base", images).numel()  # the whole file, whichever rows a split reads
        lines.append(f"data: {', '.join(n for n, _ in held)} memory-mapped from the decoded cache {folder} "
                     f"({_bytes(size)} on disk; every process on this machine shares its pages)")
    if in_memory:
        size = sum(s.images.numel() for _, s in in_memory)
        lines.append(f"data: {', '.join(n for n, _ in in_memory)} in memory ({memory_reason(run)}; "
                     f"{_bytes(size)} in each process)")
    return lines


def memory_reason(run) -> str:
    """Why a run's images were decoded into memory rather than mapped from the decoded cache."""
    from ..data.formats import FORMATS, detect_format

    if run.split_rule["val"] == "given":
        return "given in Python"
    source = FORMATS[detect_format(run.cfg.data)]
    if source.in_memory:  # a source the cache never holds
        return source.in_memory
    return "the cache folder could not be written" if run.cfg.cache else "--no-cache"


def _bytes(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def start_report(run) -> None:
    """Rank 0 starts the run folder (RunFolder.start: --overwrite's old files removed, config.json written) and
    prints the header lines and the warnings about the data and the settings."""
    if not run.main:
        return
    cfg, data = run.cfg, run.data
    run.folder.start({"train": cfg.to_dict(), "model": run.model.config.to_dict(), "precision": run.precision,
                      "world_size": run.world, "device": str(run.device), "data": data_section(run)},
                     replace=cfg.overwrite and not cfg.resume)
    if cfg.tensorboard:  # resumed: what the interrupted process logged after the resume point is purged
        run.board = Board(run.out, purge_step=run.step + 1 if cfg.resume else None)
    log(run, f"run {run.out}: {run.precision} on {run.device} x{run.world}, {len(run.train_set):,} train / "
             f"{counted(len(run.val_set), 'val image')}, {data.steps_per_epoch} steps/epoch x "
             f"{counted(cfg.epochs, 'epoch')}, global batch {data.images_per_step * run.world}")
    if cfg.resume:
        epoch = run.state["epoch"]  # the epoch it continues (at its end: its validation is still ahead)
        log(run, f"resumed after {counted(run.step - epoch * data.steps_per_epoch, 'step')} of epoch {epoch + 1} "
                 f"({counted(run.step, 'step')} done in all)")
    for line in split_lines(run) + storage_lines(run):
        log(run, line)
    log(run, describe_model(run))
    for message in absent_classes({"train": run.train_set, "val": run.val_set}):
        warn(run, message)
    if run.split_rule["val"] == "test":
        warn(run, f"--val-split test: best.safetensors is {OPTIMISTIC}; no figure of this run is an unbiased "
                  f"estimate of accuracy on new images")
    if cfg.warmup_epochs >= cfg.epochs:
        warn(run, f"--warmup-epochs {cfg.warmup_epochs:g} >= --epochs {cfg.epochs}: the learning rate never "
                  f"reaches its peak and the model may not learn (lower --warmup-epochs)")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """A run's training time, kept in one place: this epoch's (history.csv's epoch_seconds and img_per_s), the
    steady state of every epoch (the result's train_img_per_s and the estimate's speed: each epoch's first
    TIMING_SKIP_STEPS steps, and all validation, left out) and the last validation's. Times are the GPU's,
    not its queue's: read after a synchronize."""

    def __init__(self):
        self.steady_steps, self.steady_images, self.steady_seconds = 0, 0, 0.0  # every epoch's steady state
        self.epoch_start, self.epoch_seconds, self.epoch_images = 0.0, 0.0, 0  # this epoch's training
        self.val_seconds: float | None = None  # the last epoch's validation (None before one)
        self._steady_from: tuple[float, int] | None = None  # (when, after how many steps) the steady state began

    def start_epoch(self) -> None:
        self.epoch_start, self.epoch_seconds, self.epoch_images = time.perf_counter(), 0.0, 0
        self._steady_from = None

    def step(self, done: int, device: torch.device) -> None:
        """After the epoch's ``done``-th step: after TIMING_SKIP_STEPS of them, the steady state begins."""
        if done == TIMING_SKIP_STEPS:
            synchronize(device)
            self._steady_from = (time.perf_counter(), done)

    def steady(self, done: int) -> tuple[int, float]:
        """(steps, seconds) of the steady state so far, this epoch's first ``done`` steps included (read without
        a sync: the host runs at most a step or two ahead of the GPU)."""
        if self._steady_from is None:
            return self.steady_steps, self.steady_seconds
        since, first = self._steady_from
        return self.steady_steps + done - first, self.steady_seconds + time.perf_counter() - since

    def end_epoch(self, done: int, images_per_step: int, device: torch.device) -> None:
        """The epoch's training is over: ``done`` steps of ``images_per_step`` images (all processes)."""
        synchronize(device)  # the epoch's all-reduce waits for the GPU anyway
        steps, self.steady_seconds = self.steady(done)
        self.steady_images += (steps - self.steady_steps) * images_per_step
        self.steady_steps, self._steady_from = steps, None
        self.epoch_seconds, self.epoch_images = time.perf_counter() - self.epoch_start, done * images_per_step

    def epoch_row(self) -> dict:
        """history.csv's last columns: epoch_seconds, the epoch's wall-clock time until now (training and
        validation), and img_per_s, training images a second over its steps (the first, slower ones
        included). What came after the training is the validation's time."""
        wall = time.perf_counter() - self.epoch_start
        self.val_seconds = wall - self.epoch_seconds
        return dict(epoch_seconds=round(wall, 2),
                    img_per_s=round(self.epoch_images / self.epoch_seconds, 1) if self.epoch_seconds else None)

    @property
    def train_img_per_s(self) -> float | None:
        return round(self.steady_images / self.steady_seconds, 1) if self.steady_seconds else None


class Forecast:
    """The time a run has left: its steps at the measured steady speed, then a validation per epoch left and the
    final report (the val and test splits, twice with --tta). An image scored costs what it cost in the last
    validation, and before one was timed a third of a trained image (EVAL_SPEEDUP)."""

    def __init__(self, run):
        self.run, self.announced = run, False
        self.val_images = len(run.val_set) * (2 if run.ema is not None else 1)  # the EMA is validated too
        test = len(run.test_set) if run.test_set is not None else 0
        self.final_images = (len(run.val_set) + test) * (2 if run.cfg.tta else 1)

    def per_image(self, step_seconds: float) -> float:
        """Seconds to score one image (forward only)."""
        run = self.run
        if run.clock.val_seconds is not None:
            return run.clock.val_seconds / self.val_images
        return step_seconds / (run.data.images_per_step * run.world) / EVAL_SPEEDUP

    def seconds_left(self, step_seconds: float, epoch: int) -> float:
        """From now, in epoch ``epoch`` (0-based, its validation still ahead), at ``step_seconds`` a step."""
        run = self.run
        scored = (run.cfg.epochs - epoch) * self.val_images + self.final_images
        return (run.total_steps - run.step) * step_seconds + scored * self.per_image(step_seconds)

    def line(self, step_seconds: float, epoch: int) -> str:
        """The estimate: speed, an epoch's time with its validation, and the whole run's (or the rest's)."""
        run = self.run
        left = self.seconds_left(step_seconds, epoch)
        speed = f"{step_seconds:.1f} s a step" if step_seconds >= 1 else f"{1 / step_seconds:.1f} steps/s"
        epoch_s = run.data.steps_per_epoch * step_seconds + self.val_images * self.per_image(step_seconds)
        what = (f"the whole run ({counted(run.cfg.epochs, 'epoch')} and the final report)" if not run.cfg.resume
                else f"the rest of the run (to epoch {run.cfg.epochs} and the final report)")
        done = time.strftime("%a %H:%M" if left > 20 * 3600 else "%H:%M", time.localtime(time.time() + left))
        return (f"speed: {speed}, {run.data.images_per_step * run.world / step_seconds:,.0f} img/s; estimated: an "
                f"epoch {duration(epoch_s)} with its validation, {what} {duration(left)}, done around {done}")

    def warning(self, step_seconds: float, epoch: int) -> str | None:
        """On a CPU, a run that takes longer than LONG_ON_CPU_S: how long, and what is faster."""
        run = self.run
        left = self.seconds_left(step_seconds, epoch)
        if run.device.type != "cpu" or left <= LONG_ON_CPU_S:
            return None
        faster = ["--profile cpu (the recipe for a CPU)"] if run.cfg.profile != "cpu" and not run.cfg.resume else []
        per_epoch = left / max(run.cfg.epochs - epoch, 1)
        if per_epoch < LONG_ON_CPU_S:
            faster.append(f"fewer --epochs (--epochs {int(LONG_ON_CPU_S // per_epoch)} takes about "
                          f"{duration(LONG_ON_CPU_S)})")
        return f"this run takes about {duration(left)} on this CPU" + (f"; faster: {' or '.join(faster)}" if faster else "")

    def left_text(self, epoch: int, done: int) -> str:
        """"1 h 32 min left", for the bar and the lines once the estimate is out (else "")."""
        steps, seconds = self.run.clock.steady(done)
        if not self.announced or not steps:
            return ""
        return f"{duration(self.seconds_left(seconds / steps, epoch))} left"


class EpochProgress:
    """Progress within an epoch: a bar on a terminal, else a line every ``cfg.log_every`` seconds; the whole-run
    estimate (Forecast), once; the TensorBoard step scalars (--tensorboard); the epoch's time, kept by
    ``run.clock``."""

    def __init__(self, run, epoch: int, first: int, carried=(0.0, 0.0)):
        self.run, self.epoch, self.done = run, epoch, 0
        cfg = run.cfg
        self.bar = bar(total=run.data.steps_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       leave=False, show=run.main and cfg.progress, dynamic_ncols=True)
        self.lines = run.main and cfg.log and self.bar.disable  # a line every log_every seconds instead
        self.shown_at, self.images_since = time.perf_counter(), 0  # the img/s shown: since the last one shown
        self.stats_text = ""  # the last loss, accuracy, LR and img/s shown
        # TensorBoard's train loss is the mean over the steps since its last read: from which step, and the loss
        # sum then (a resumed epoch starts from the sums it carried)
        self.board_from, self.board_loss = first, carried[0]
        run.clock.start_epoch()

    def step(self, i: int, sums: torch.Tensor) -> None:
        """After step ``i`` of the epoch, whose running [loss sum, correct] are ``sums`` (on the device)."""
        run, self.done = self.run, self.done + 1
        run.clock.step(self.done, run.device)
        self.images_since += run.data.images_per_step * run.world
        due = self.due(i)
        if due:
            self.show(i, *sums.tolist(), due)  # a host sync: rare by design, shared by all that are due
        if not run.forecast.announced:
            self.announce(at_least=ESTIMATE_AFTER_S)
        self.bar.update(1)

    def due(self, i: int) -> set[str]:
        """Which of "bar", "board" and "line" read the running loss after step ``i``: the bar and TensorBoard
        every READ_EVERY_STEPS steps and at the epoch's end, a line every log_every seconds (never the last
        step's: the epoch's own line follows)."""
        last = i == self.run.data.steps_per_epoch - 1
        read = i % READ_EVERY_STEPS == READ_EVERY_STEPS - 1 or last
        due = {name for name, on in (("bar", not self.bar.disable), ("board", self.run.board is not None)) if on and read}
        if self.lines and not last and time.perf_counter() - self.shown_at >= self.run.cfg.log_every:
            due.add("line")
        return due

    def show(self, i: int, loss_sum: float, correct: float, due: set[str]) -> None:
        run = self.run
        if "board" in due:
            images = (i + 1 - self.board_from) * run.data.images_per_step
            run.board.step(run.step, (loss_sum - self.board_loss) / images, run.lr)
            self.board_from, self.board_loss = i + 1, loss_sum
        if "bar" in due or "line" in due:
            self.stats_text = self.stats(i, loss_sum, correct)
        if "bar" in due:  # the stats and the run's time left, drawn at the bar's next update
            self.bar.set_postfix_str(self.postfix(), refresh=False)
        if "line" in due:
            write(f"epoch {self.epoch + 1}/{run.cfg.epochs} step {i + 1}/{run.data.steps_per_epoch}  {self.postfix()}")

    def stats(self, i: int, loss_sum: float, correct: float) -> str:
        n, now = (i + 1) * self.run.data.images_per_step, time.perf_counter()
        text = (f"loss {loss_sum / n:.3f} acc {correct / n:.3f} lr {self.run.lr:.2e} "
                f"img/s {self.images_since / max(now - self.shown_at, 1e-9):.0f}")
        self.shown_at, self.images_since = now, 0
        return text

    def postfix(self) -> str:
        """The last stats read and the run's time left (the epoch's is the bar's own)."""
        left = self.run.forecast.left_text(self.epoch, self.done)
        return ", ".join(part for part in (self.stats_text, left and f"run {left}") if part)

    def announce(self, at_least: float) -> None:
        """The whole-run estimate (and the CPU warning), once ``at_least`` seconds of steady steps were measured
        (and at least two of them), by rank 0."""
        run = self.run
        steps, seconds = run.clock.steady(self.done)
        if steps < 2 or seconds < at_least:
            return
        synchronize(run.device)  # once: the estimate is the GPU's time, not its queue's
        steps, seconds = run.clock.steady(self.done)
        run.forecast.announced = True
        log(run, run.forecast.line(seconds / steps, self.epoch))
        warning = run.forecast.warning(seconds / steps, self.epoch)
        if warning:
            warn(run, warning)

    def close(self) -> None:
        self.bar.close()
        self.run.clock.end_epoch(self.done, self.run.data.images_per_step * self.run.world, self.run.device)
        if not self.run.forecast.announced:  # an epoch shorter than ESTIMATE_AFTER_S: what it measured
            self.announce(at_least=0.0)


def validation_transform(model: ViT):
    """The one preprocessing of evaluation: resize + normalise to what ``model`` takes."""
    aug = AugmentConfig(image_size=model.config.image_size, channels=model.config.in_chans)
    return lambda x: eval_transform(x, aug)


def validate(run, model: ViT, tta: bool = False) -> dict:
    return evaluate(model, run.val_set, validation_transform(model), batch_size=run.cfg.eval_batch_size,
                    autocast_dtype=run.amp_dtype, tta=tta)


def write_history_csv(history: list[dict], path) -> None:
    """history.csv: one row per epoch, HISTORY_COLUMNS (those any row has), values as history.json holds them;
    written whole and atomically, so a resumed run rewrites it from its history and repeats no epoch."""
    columns = [c for c in HISTORY_COLUMNS if any(c in row for row in history)]

    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(columns)
            out.writerows([["" if row.get(c) is None else row[c] for c in columns] for row in history])

    atomic_write(path, write)


def record_epoch(run, row: dict) -> None:
    """history.json, history.csv, the TensorBoard epoch scalars, curves.png (at most once a minute) and the
    epoch's line (rank 0)."""
    run.state["history"].append(row)
    write_json(run.state["history"], run.folder / "history.json")
    write_history_csv(run.state["history"], run.folder / "history.csv")
    if run.board is not None:
        run.board.epoch(row, HISTORY_COLUMNS)
    # a matplotlib figure costs ~0.3 s, a tenth of a FER epoch on a GPU: redraw once a minute, and at the end
    if row["epoch"] == run.cfg.epochs or time.time() - run.curves_drawn_at >= CURVES_EVERY_S:
        curves_png(run.state["history"], run.folder / "curves.png", subtitle=f"train: {source_name(run.train_set)}, "
                   f"{len(run.train_set):,} images; {split_label('val', run.val_set, run.split_rule)}")
        run.curves_drawn_at = time.time()
    ema_part = f" ema {row['val_ema_acc']:.3f}" if "val_ema_acc" in row else ""
    left = run.forecast.left_text(row["epoch"], 0) if row["epoch"] < run.cfg.epochs else ""
    log(run, f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}  "
             f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}{ema_part} F1 {row['val_macro_f1']:.3f}  "
             f"({row['seconds']:.0f}s{', run ' + left if left else ''})")


def final_report(run) -> dict:
    """The result of the run; on rank 0 after a finished run, the report of best.safetensors: on the val
    split (metrics.json, confusion_matrix.png, attention_maps.png) and, where there is a test split that
    selected nothing, on it, once (metrics.json "test", test_confusion_matrix.png)."""
    result = run_result(run)
    if run.main and not run.interrupted and run.folder.best.exists():
        try:
            best = ViT.from_pretrained(str(run.folder.best)).to(run.device)
            val = score_best(run, best, "val", run.val_set)
            test = score_best(run, best, "test", run.test_set) if run.test_set is not None else None
            write_final_report(run, best, val, test, result["train_img_per_s"])
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (Interrupted): each report file is whole or absent
            raise Interrupted(f"interrupted during the final report: the training is finished and saved; "
                              f"--resume {run.out} writes the report", getattr(e, "signum", SIGINT)) from None
        result.update(best_figures(run, val, test))
        say_final(run, val, test, result["warnings"])
    if run.main:
        close_board(run)
        run.folder.clean_temp_files()
    return result


def run_result(run) -> dict:
    """What train() returns of every run, finished or not: where, how far, how fast; for a run stopped early,
    why (``stopped``: "SIGINT", "SIGTERM" or "--stop-after") and where: in epoch ``epoch`` (from 1) after
    ``epoch_step`` of its steps."""
    state, per_epoch = run.state, run.data.steps_per_epoch
    epoch = max(run.step - 1, 0) // per_epoch  # the epoch the last step was in (0-based)
    return dict(run_dir=str(run.out), step=run.step, epochs_done=len(state["history"]), interrupted=run.interrupted,
                stopped=run.stopped, epoch=epoch + 1, epoch_step=run.step - epoch * per_epoch,
                best_epoch=state["best_epoch"], seconds=round(time.time() - run.t_start, 1), precision=run.precision,
                train_img_per_s=run.clock.train_img_per_s, warnings=[])


def score_best(run, best: ViT, split: str, image_set) -> dict:
    """The metrics of best.safetensors on one split (with the run's --tta), labelled with what it is."""
    metrics = evaluate(best, image_set, validation_transform(best), batch_size=run.cfg.eval_batch_size,
                       autocast_dtype=run.amp_dtype, tta=run.cfg.tta)
    metrics.update(split=split, data=image_set.source, split_label=split_label(split, image_set, run.split_rule),
                   selection=selection_role(split, run.split_rule))
    return metrics


def write_final_report(run, best: ViT, val: dict, test: dict | None, train_img_per_s) -> None:
    """metrics.json (val, with the test figures under "test"), the confusion matrices, attention_maps.png,
    and the PNGs into TensorBoard."""
    state = run.state
    if test is not None:
        confusion_report_png(test, run.folder / "test_confusion_matrix.png", test["split_label"])
    write_report(val, run.out, label=val["split_label"], extra=dict(
        checkpoint=BEST, best_epoch=state["best_epoch"], split_rule=run.split_rule, trained_on=run.trained_on,
        test=test, history=state["history"], train_img_per_s=train_img_per_s))
    attention_report(best, run.val_set, validation_transform(best), run.folder / "attention_maps.png",
                     autocast_dtype=run.amp_dtype, title=f"Attention maps: best.safetensors (epoch "
                     f"{state['best_epoch']}) on {split_title('val', run.val_set, run.split_rule)}")
    if run.board is not None:
        run.board.images([run.folder / name for name in REPORT_PNGS], run.step)


def best_figures(run, val: dict, test: dict | None) -> dict:
    """The result's figures of best.safetensors: val_* and test_* (accuracy, macro and weighted F1, loss,
    what the split is), the last epoch's train_loss and train_acc, and the warnings of both splits."""
    figures = {"warnings": [w for w in (val["warning"], test and test["warning"] and f"test split: {test['warning']}")
                            if w]}
    for prefix, m in (("val", val), ("test", test)):
        if m is not None:
            figures.update({f"{prefix}_{k}": m[k] for k in ("accuracy", "macro_f1", "weighted_f1", "loss")})
            figures[f"{prefix}_split_label"] = m["split_label"]
    if run.state["history"]:
        last = run.state["history"][-1]
        figures.update(train_loss=last["train_loss"], train_acc=last["train_acc"])
    return figures


def say_final(run, val: dict, test: dict | None, warnings: list[str]) -> None:
    """The report's lines: each split's figures of best.safetensors, then the warnings."""
    log(run, f"best.safetensors (epoch {run.state['best_epoch']}){' with flip TTA' if run.cfg.tta else ''}:")
    for m in (val, test):
        if m is not None:
            log(run, f"  {m['split_label']}: accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f}")
    for w in warnings:
        warn(run, w)


def close_board(run) -> None:
    """Flush and close the TensorBoard writer, if there is one (once)."""
    if run.board is not None:
        run.board.close()
        run.board = None
