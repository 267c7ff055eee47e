"""Training's side of the run folder: where a run writes, what it refuses to overwrite, what it leaves clean.

What a run folder is -- its files, the weights it means, its config.json -- is minivit.checkpoints.runs,
which evaluate and predict read by too. A folder that holds a run's results (runs.holds_run) is never
overwritten by a new run: ``--resume`` continues it, ``--overwrite`` replaces it. Default folder
names carry a timestamp and never collide. Stale temp files of interrupted atomic writes are
removed at the start and the end of a run.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..checkpoints.runs import CONFIG, RUN_FILES, TENSORBOARD, holds_run, read_config, resume_folder
from ..common.errors import ConfigError
from ..common.files import TEMP_GLOB, ensure_folder

__all__ = ["check_out_dir", "check_resume_options", "default_out", "prepare_out_dir", "clean_temp_files",
           "read_run_config"]


def check_out_dir(cfg) -> None:
    """Refuse, before anything is loaded or written, a new run into a folder that holds one, an
    --out that is a file, and a --resume folder with nothing to resume from."""
    if cfg.resume:
        from ..checkpoints.resume import find_resume

        find_resume(cfg.resume)  # its one-line error now, not after the dataset has been decoded
        check_resume_options(cfg)
    if cfg.out is None:
        return
    out = Path(cfg.out)
    if cfg.resume:
        folder = resume_folder(cfg.resume)
        if folder.resolve() != out.resolve():  # a resumed run writes where its checkpoints are, nowhere else
            raise ConfigError(f"--out {out}: a resumed run continues in its own folder {folder}; "
                              "--out and --overwrite do not apply with --resume")
        return  # continuing the run that is there
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder")
    if cfg.overwrite:
        return
    if holds_run(out):
        raise ConfigError(f"{out} already holds a run; use --resume {out} to continue it or --overwrite to replace it")


def check_resume_options(cfg) -> None:
    """Refuse optimiser options that differ from the resumed run's: the saved optimiser state was built
    for them (another optimiser or layer decay does not load; a new weight decay, momentum or betas
    would be silently replaced by the saved param groups), and the batch shapes the data order."""
    folder = resume_folder(cfg.resume)
    if not (folder / CONFIG).is_file():
        return  # a resume file outside its run folder: restore() still refuses a state that does not fit
    from .config import flag

    saved = read_run_config(folder)
    fixed = ["optimizer", "layer_decay", "weight_decay", "batch_size", "accum_steps"]
    fixed.append("momentum" if saved.get("optimizer") == "sgd" else "betas")  # the one the optimiser uses
    for name in fixed:
        if name not in saved:
            continue
        was, now = saved[name], getattr(cfg, name)
        if name == "betas":
            was, now = list(was), list(now)
        if was != now:
            raise ConfigError(f"{flag(name)} cannot change on --resume (the run used {was})")


def default_out(data: str, root: str = "runs") -> Path:
    """runs/<data name>-<YYYYmmdd-HHMMSS>, with -2, -3, ... appended if that folder exists already."""
    name = "synthetic" if data == "synthetic" else (Path(data).stem or "data")
    base = Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def prepare_out_dir(out: Path, *, replace: bool) -> None:
    """Create the run folder; with ``replace`` (--overwrite on a new run) remove the old run's files first."""
    ensure_folder(out)  # a file in the way is one line naming it, not a traceback
    if replace:
        # the old run's event files too: TensorBoard would draw both runs as one
        for path in [*(out / f for f in RUN_FILES), *out.glob("*.safetensors"),
                     *(out / TENSORBOARD).glob("events.out.tfevents.*")]:
            if path.is_file():
                path.unlink()
    clean_temp_files(out)


def clean_temp_files(folder: Path) -> int:
    """Remove temp files that interrupted atomic writes left in ``folder``; returns how many."""
    count = 0
    for path in Path(folder).glob(TEMP_GLOB):
        if path.is_file():
            path.unlink(missing_ok=True)
            count += 1
    return count


def read_run_config(folder) -> dict:
    """The TrainConfig fields saved in a run folder's config.json (runs.read_config), checked: one line
    naming the file otherwise."""
    from .config import TrainConfig

    path = Path(folder) / CONFIG
    if not path.is_file():
        raise ConfigError(f"--resume {folder}: no {CONFIG} there (not a minivit run folder)")
    fields = read_config(folder)["train"]
    missing = sorted(TrainConfig.field_names() - set(fields))
    if missing:
        raise ConfigError(f"{path}: missing TrainConfig fields: {', '.join(missing)}")
    try:
        TrainConfig.from_dict(fields, where=str(path)).validate()
    except (ConfigError, TypeError) as e:
        message = str(e).splitlines()[0]
        raise ConfigError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    return fields

