"""What a training run's folder is: the one rule by which train, evaluate, predict and --resume read one.

``python -m minivit.train`` writes each run into its own folder (runs/<data>-<timestamp> by default):

    config.json          written first: the run's settings ("train": TrainConfig, "model": ViTConfig,
                         "data": its splits and what the model is trained on)
    best.safetensors     the weights that scored best on the val split: what a run folder means to
                         evaluate, predict, attention, serve and export
    last.safetensors     the last epoch's weights
    resume.safetensors   everything needed to continue the run (--resume); the latest weights, but only
                         when named: a run folder never means them
    history.json, history.csv (one row per epoch), metrics.json, curves.png, confusion_matrix.png,
    test_confusion_matrix.png, attention_maps.png
    tensorboard/         with --tensorboard: TensorBoard event files (minivit/train/board.py)

A folder is a run folder when it holds a run's config.json, best.safetensors or resume.safetensors and
none of the weight files of a transformers / timm model folder (reading.WEIGHT_FILES), which has a
config.json too. A file inside a run folder belongs to that run.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> run = Path(tempfile.mkdtemp()); _ = (run / CONFIG).write_text("{}")
    >>> is_run_folder(run)
    True
    >>> locate_checkpoint(run)
    Traceback (most recent call last):
    minivit.common.errors.CheckpointError: ...: run folder without best.safetensors (no epoch finished yet)
    >>> _ = (run / BEST).write_bytes(b"weights")
    >>> locate_checkpoint(run) == (str(run / BEST), run), locate_checkpoint("ViT-B_16")
    (True, ('ViT-B_16', None))
"""

from __future__ import annotations

import json
from pathlib import Path

from ..common.errors import CheckpointError, ConfigError
from .reading import WEIGHT_FILES

CONFIG = "config.json"
BEST = "best.safetensors"
LAST = "last.safetensors"
RESUME = "resume.safetensors"
REPORT_FILES = ("history.json", "history.csv", "metrics.json", "curves.png", "confusion_matrix.png", "test_confusion_matrix.png",
                "attention_maps.png")
RUN_FILES = (CONFIG, *REPORT_FILES)  # plus *.safetensors: what a run writes, and what --overwrite removes
TENSORBOARD = "tensorboard"  # the folder of a run's event files (--tensorboard); --overwrite removes them too


def is_run_folder(folder) -> bool:
    """Whether ``folder`` is a training run's folder (the rule in the module docstring)."""
    folder = Path(folder)
    return (folder.is_dir() and any((folder / f).is_file() for f in (CONFIG, BEST, RESUME))
            and not any((folder / f).exists() for f in WEIGHT_FILES))


def holds_run(folder) -> bool:
    """Whether ``folder`` holds a run's results -- config.json, metrics.json or any .safetensors -- which a
    new run never overwrites (without --overwrite)."""
    folder = Path(folder)
    return folder.is_dir() and (any((folder / f).is_file() for f in (CONFIG, "metrics.json"))
                                or any(folder.glob("*.safetensors")))


def run_weights(folder, named=None) -> Path:
    """The weights a run folder means: its best.safetensors; a one-line CheckpointError naming ``named``
    (default: the folder) when no epoch has finished yet, with the resume file to pass instead, if any."""
    folder = Path(folder)
    if (folder / BEST).is_file():
        return folder / BEST
    hint = f"; pass {folder / RESUME} to use the latest weights" if (folder / RESUME).is_file() else ""
    raise CheckpointError(f"{named or folder}: run folder without {BEST} (no epoch finished yet){hint}")


def locate_checkpoint(checkpoint) -> tuple[str, Path | None]:
    """(what ViT.from_pretrained should read, the run folder or None) for a --checkpoint value.

    A run folder means its best.safetensors (run_weights); a file inside a run folder keeps that folder
    as its run. Anything else (a .npz, a transformers folder, a manifest name, a Hub id) has no run and
    is returned as given.
    """
    path = Path(str(checkpoint)).expanduser()
    if path.is_dir() and is_run_folder(path):
        return str(run_weights(path, named=checkpoint)), path
    if path.is_file() and is_run_folder(path.parent):
        return str(path), path.parent
    return str(checkpoint), None


def resume_folder(resume) -> Path:
    """The run folder of a --resume argument (the folder, or the folder of its resume file)."""
    p = Path(resume)
    return p if p.is_dir() or p.suffix != ".safetensors" else p.parent


def read_config(folder) -> dict:
    """A run folder's config.json; one line naming the file when it is missing, unreadable or not a run's."""
    path = Path(folder) / CONFIG
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ConfigError(f"{path}: not valid JSON ({str(e).splitlines()[0]})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("train"), dict):
        raise ConfigError(f"{path}: has no \"train\" section (not a minivit run's config.json)")
    return saved


def split_rule_of(saved: dict) -> dict | None:
    """The split rule a run's config.json recorded ("data" -> "split"), None if it has none."""
    section = saved.get("data") if isinstance(saved, dict) else None
    rule = section.get("split") if isinstance(section, dict) else None
    return rule if isinstance(rule, dict) else None


def saved_split_rule(folder) -> dict | None:
    """split_rule_of a run folder's config.json; None also when there is no readable one."""
    try:
        return split_rule_of(json.loads((Path(folder) / CONFIG).read_text(encoding="utf-8")))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


__all__ = ["CONFIG", "BEST", "LAST", "RESUME", "REPORT_FILES", "RUN_FILES", "TENSORBOARD", "is_run_folder", "holds_run",
           "run_weights", "locate_checkpoint", "resume_folder", "read_config",
           "split_rule_of", "saved_split_rule"]
