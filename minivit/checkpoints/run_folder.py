"""A training run's folder: the one object that knows its files and answers every question about it.

``python -m minivit.train`` writes each run into its own folder (runs/<data>-<timestamp> by default):

    config.json          written first: the run's settings ("train": TrainConfig, "model": ViTConfig,
                         "data": its splits, the split rule, what the model is trained on)
    best.safetensors     the weights that scored best on the val split: what a run folder means to
                         evaluate, predict, attention, serve and export
    last.safetensors     the last epoch's weights
    resume.safetensors   everything needed to continue the run (--resume); the latest weights, but only
                         when named: a run folder never means them
    history.json, history.csv (one row per epoch), metrics.json (the final report), curves.png,
    confusion_matrix.png, test_confusion_matrix.png, attention_maps.png
    tensorboard/         with --tensorboard: TensorBoard event files (minivit/train/board.py)

The resume file's format (``save_resume``, ``load_resume``, ``restore``) is here too, at the end.

Train, evaluate, predict, export and --resume all ask a ``RunFolder``; no other module opens a run's
config.json, and this one reads it once (``config``). What a folder holds is one of four ``state``s:

    empty       nothing of a run: a new run may start here
    started     a run began (config.json, or weights) but left no resume point yet
    resumable   a resume point: --resume continues it
    finished    the final report (metrics.json) is there; --resume still runs what epochs remain

A folder is a run folder (``is_run_folder``) when it holds a run's config.json, best.safetensors or
resume.safetensors and none of the weight files of a transformers / timm model folder
(reading.WEIGHT_FILES), which has a config.json too. A file inside a run folder belongs to that run.

Example:
    >>> import tempfile
    >>> run = RunFolder(tempfile.mkdtemp())
    >>> run.state
    'empty'
    >>> run.write_config({"train": {"data": "synthetic"}, "data": {"split": {"val": "dataset"}}})
    >>> run.state, run.is_run_folder, run.data, run.split_rule
    ('started', True, 'synthetic', {'val': 'dataset'})
    >>> run.weights()
    Traceback (most recent call last):
    minivit.common.errors.CheckpointError: ...: run folder without best.safetensors (no epoch finished yet)
    >>> _ = run.best.write_bytes(b"weights")
    >>> RunFolder.of_checkpoint(run.path)[0] == str(run.best), RunFolder.of_checkpoint("ViT-B_16")
    (True, ('ViT-B_16', None))
"""

from __future__ import annotations

import base64
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from ..common.errors import CheckpointError, ConfigError
from ..common.files import TEMP_GLOB, write_json
from ..model.config import ViTConfig
from .configs import CONFIG_KEY
from .reading import WEIGHT_FILES
from .writing import write_safetensors

CONFIG = "config.json"
BEST = "best.safetensors"
LAST = "last.safetensors"
RESUME = "resume.safetensors"
METRICS = "metrics.json"
REPORT_FILES = ("history.json", "history.csv", METRICS, "curves.png", "confusion_matrix.png",
                "test_confusion_matrix.png", "attention_maps.png")
TENSORBOARD = "tensorboard"  # the folder of a run's event files (--tensorboard); --overwrite removes them too
EMPTY, STARTED, RESUMABLE, FINISHED = "empty", "started", "resumable", "finished"


class RunFolder:
    """A training run's folder (the files in the module docstring). ``named`` is how the user named it
    (a --resume or --checkpoint value), for messages; ``resume_file`` a resume file given by its path."""

    def __init__(self, path, *, named=None, resume_file=None):
        self.path = Path(path)
        self.named = str(named if named is not None else path)
        self.resume_file = Path(resume_file) if resume_file is not None else self.path / RESUME
        self._config: dict | None = None

    # -- finding one ----------------------------------------------------------------------------

    @classmethod
    def of_resume(cls, resume) -> "RunFolder":
        """The run a --resume value names: a run folder, or a resume .safetensors (its folder is the run)."""
        p = Path(resume)
        if p.suffix == ".safetensors" and not p.is_dir():
            return cls(p.parent, named=f"--resume {resume}", resume_file=p)
        return cls(p, named=f"--resume {resume}")

    @classmethod
    def of_checkpoint(cls, checkpoint) -> tuple[str, "RunFolder | None"]:
        """(what ViT.from_pretrained should read, the run or None) for a --checkpoint value.

        A run folder means its best.safetensors (``weights``); a file inside a run folder keeps that
        folder as its run. Anything else (a .npz, a transformers folder, a manifest name, a Hub id) has no
        run and is returned as given.
        """
        path = Path(str(checkpoint)).expanduser()
        if path.is_dir() and cls(path).is_run_folder:
            run = cls(path, named=checkpoint)
            return str(run.weights()), run
        if path.is_file() and cls(path.parent).is_run_folder:
            return str(path), cls(path.parent)
        return str(checkpoint), None

    @classmethod
    def new(cls, data: str, root: str = "runs") -> "RunFolder":
        """runs/<data name>-<YYYYmmdd-HHMMSS>, with -2, -3, ... appended if that folder exists already."""
        base = Path(root) / f"{Path(str(data)).stem or 'data'}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, n = base, 1
        while path.exists():
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        return cls(path)

    # -- its files ------------------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    def __truediv__(self, name: str) -> Path:
        """Another file of the run (its report's PNGs, history.csv): ``run / "curves.png"``."""
        return self.path / name

    # -- what it holds --------------------------------------------------------------------------

    def is_at(self, path) -> bool:
        """Whether ``path`` names this folder (a --out given with --resume must)."""
        return Path(path).resolve() == self.path.resolve()

    @property
    def is_run_folder(self) -> bool:
        """Whether this is a training run's folder (the rule in the module docstring)."""
        p = self.path
        return (p.is_dir() and any((p / f).is_file() for f in (CONFIG, BEST, RESUME))
                and not any((p / f).exists() for f in WEIGHT_FILES))

    @property
    def state(self) -> str:
        """EMPTY, STARTED, RESUMABLE or FINISHED (the module docstring)."""
        if self.metrics.is_file():
            return FINISHED
        if self.resume_file.is_file():
            return RESUMABLE
        held = self.path.is_dir() and (self.config_file.is_file() or any(self.path.glob("*.safetensors")))
        return STARTED if held else EMPTY

    # -- config.json, read once -----------------------------------------------------------------

    @property
    def config(self) -> dict:
        """The run's config.json, read on first use; one line naming the file when it is missing,
        unreadable or not a run's."""
        if self._config is None:
            self._config = self._read_config()
        return self._config

    def _read_config(self) -> dict:
        path = self.config_file
        if not path.is_file():
            raise ConfigError(f"{self.named}: no {CONFIG} there (not a minivit run folder)")
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            raise ConfigError(f"{path}: not valid JSON ({str(e).splitlines()[0]})") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
        if not isinstance(saved, dict) or not isinstance(saved.get("train"), dict):
            raise ConfigError(f"{path}: has no \"train\" section (not a minivit run's config.json)")
        return saved

    def write_config(self, record: dict) -> None:
        """Write config.json (atomically); what ``config`` answers from now on."""
        write_json(record, self.config_file)
        self._config = json.loads(json.dumps(record, default=str))  # as a reader of the file sees it

    @property
    def train_fields(self) -> dict:
        """config.json's "train": the TrainConfig fields the run was started with (a copy)."""
        return dict(self.config["train"])

    @property
    def data(self) -> str:
        """The dataset the run trained on, as its command line named it (cfg.data)."""
        return str(self.config["train"].get("data"))

    @property
    def split_rule(self) -> dict | None:
        """How the run chose its train / val / test images (minivit.data.splits.split_rule), as config.json
        recorded it; None where it records none."""
        section = self.config.get("data")
        rule = section.get("split") if isinstance(section, dict) else None
        return rule if isinstance(rule, dict) else None

    @property
    def trained_on_given_sets(self) -> bool:
        """Whether the run trained on ImageSets passed to train() in Python: no dataset to read again."""
        return (self.split_rule or {}).get("val") == "given"

    def trained_on(self, data: str) -> bool:
        """Whether ``data`` (a dataset path or "synthetic") is the dataset this run trained on."""
        return not self.trained_on_given_sets and Path(data).expanduser().resolve() == Path(
            self.data).expanduser().resolve()

    # -- answers --------------------------------------------------------------------------------

    def weights(self) -> Path:
        """The weights the run means: best.safetensors; a one-line CheckpointError naming the run when no
        epoch has finished yet, with the resume file to pass instead, if any."""
        if self.best.is_file():
            return self.best
        hint = f"; pass {self.resume_file} to use the latest weights" if self.resume_file.is_file() else ""
        raise CheckpointError(f"{self.named}: run folder without {BEST} (no epoch finished yet){hint}")

    def load_resume(self):
        """(model config, tensors, run state) of the resume point (``load_resume``, below)."""
        if not self.resume_file.is_file():
            started = self.state == STARTED and self.resume_file == self.path / RESUME
            raise CheckpointError(f"{self.named}: no {RESUME} there" + (f": {self.ways_out()}" if started else ""))
        return load_resume(self.resume_file)

    def ways_out(self) -> str:
        """What to do with a folder whose run started but saved no resume point: the two ways out."""
        return (f"the run in {self.path} stopped before its first resume point, so there is nothing to continue; "
                f"start it again there with the same command and --overwrite, or give another --out")

    def check_new_run(self, *, overwrite: bool) -> None:
        """Refuse, before anything is written, a new run here when this is a file, or holds a run (unless
        ``overwrite``): its results are never replaced without being asked."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.named}: is a file, not a folder")
        if not overwrite and self.state == STARTED:
            raise ConfigError(f"{self.named} already holds a run: {self.ways_out()}")
        if not overwrite and self.state != EMPTY:
            raise ConfigError(f"{self.named} already holds a run; use --resume {self.named} to continue it or "
                              f"--overwrite to replace it")

    # -- writing it -----------------------------------------------------------------------------

    def save_weights(self, name: str, model, extra: dict) -> None:
        """best.safetensors or last.safetensors (``name``): a minivit checkpoint ViT.from_pretrained reads,
        with ``extra`` (epoch, score, classes, what it was trained on) in its metadata; written atomically."""
        from .writing import save_checkpoint

        if name not in (BEST, LAST):
            raise ValueError(f"a run's weights are {BEST} or {LAST}, not {name!r}")
        save_checkpoint(model, self.path / name, extra=extra)

    def save_resume(self, model, optimizer, scaler, ema, state: dict) -> None:
        """resume.safetensors: everything the run needs to continue bit-exactly (``save_resume``, below),
        written atomically; always under its own name here, even when the run was resumed from another file."""
        save_resume(self.path / RESUME, model, optimizer, scaler, ema, state)

    def start(self, record: dict, *, replace: bool) -> None:
        """Make the folder ready for a run and write its config.json (``record``): with ``replace``
        (--overwrite on a new run) the old run's files removed first, stale temp files of interrupted
        writes removed either way; the folder is created with config.json (a file in its way is one
        line naming it, not a traceback)."""
        if replace:
            # the old run's event files too: TensorBoard would draw both runs as one
            for path in [self.config_file, *(self.path / f for f in REPORT_FILES), *self.path.glob("*.safetensors"),
                         *(self.path / TENSORBOARD).glob("events.out.tfevents.*")]:
                if path.is_file():
                    path.unlink()
        self.clean_temp_files()
        self.write_config(record)

    def clean_temp_files(self) -> int:
        """Remove the temp files that interrupted atomic writes left here; returns how many."""
        count = 0
        for path in self.path.glob(TEMP_GLOB):
            if path.is_file():
                path.unlink(missing_ok=True)
                count += 1
        return count

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"


# -- resume.safetensors: everything a training run needs to continue bit-exactly, in one file ----------------
#
# Every tensor of the run -- ``model.*``, ``ema.*`` (the averaged copy, buffers included) and
# ``optim.<i>.<name>`` (AdamW's moments and step counts, SGD's momentum) -- and, in its metadata, the
# model's config (``minivit_config``, so ``ViT.from_pretrained`` reads the model part) and ``train_state``:
# a JSON of everything else (epoch, step, history, the optimiser's param groups, the GradScaler, the RNG
# states). Nothing is pickled; the file is written atomically.


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def rng_state() -> dict:
    """Every RNG the run draws from (dropout, drop-path), as JSON-safe values."""
    np_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": _b64(torch.get_rng_state()),
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    if torch.cuda.is_initialized():
        # this process's GPU only: get_rng_state_all() would touch every visible GPU, and a resume
        # with fewer GPUs visible could not restore it
        state["cuda"] = _b64(torch.cuda.get_rng_state())
    return state


def set_rng_state(state: dict) -> None:
    """Restore what rng_state() saved."""
    torch.set_rng_state(_unb64(state["torch"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(_unb64(state["cuda"]))


def save_resume(path, model, optimizer, scaler, ema, state: dict) -> None:
    """One safetensors file with all tensors (model.*, ema.*, optim.<i>.<name>) and a JSON of the rest.

    ``scaler``: a torch.amp.GradScaler or None; ``ema``: an object with ``.module`` and ``.updates``
    (minivit.train.optim.EMA) or None; ``state``: JSON-safe run state (epoch, step, history, ...).

    Example:
        >>> import os, tempfile
        >>> from minivit import ViT, ViTConfig
        >>> m = ViT(ViTConfig(image_size=8, patch_size=4, dim=8, depth=1, heads=2, mlp_dim=16, num_classes=2))
        >>> opt = torch.optim.AdamW(m.parameters())
        >>> path = os.path.join(tempfile.mkdtemp(), RESUME)
        >>> save_resume(path, m, opt, None, None, {"epoch": 1, "step": 5})
        >>> config, tensors, state = load_resume(path)
        >>> config.dim, state["step"], sorted(tensors)[0]
        (8, 5, 'model.blocks.0.attn.proj.bias')
    """
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.module.state_dict().items()})
    osd = optimizer.state_dict()
    for idx, param_state in osd["state"].items():
        for name, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{name}"] = value
    state = dict(state, optimizer_groups=osd["param_groups"],
                 scaler=scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
                 ema_updates=ema.updates if ema is not None else 0, rng=rng_state())
    metadata = {CONFIG_KEY: json.dumps(model.config.to_dict()), "train_state": json.dumps(state)}
    write_safetensors(tensors, path, metadata)


def load_resume(path) -> tuple[ViTConfig, dict, dict]:
    """(model config, tensors, run state) of a resume.safetensors; CheckpointError naming the file otherwise."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # a missing, truncated or foreign file
        raise CheckpointError(f"{path}: cannot read resume checkpoint ({type(e).__name__}: {e})") from None
    if "train_state" not in meta or CONFIG_KEY not in meta:
        raise CheckpointError(f"{path}: not a minivit resume checkpoint (no train_state metadata)")
    try:
        return ViTConfig.from_dict(json.loads(meta[CONFIG_KEY])), tensors, json.loads(meta["train_state"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: bad resume metadata ({str(e).splitlines()[0]})") from None


def restore(tensors: dict, state: dict, model, optimizer, scaler, ema, where="resume checkpoint") -> None:
    """Put what load_resume read back into the model, optimiser, scaler, EMA and the RNGs.

    ``where`` (the file) names the error when the saved optimiser state does not fit ``optimizer``.
    """
    def part(prefix):
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    model.load_state_dict(part("model."))
    if ema is not None and any(k.startswith("ema.") for k in tensors):
        ema.module.load_state_dict(part("ema."))
        ema.updates = state["ema_updates"]
    optim_state: dict[int, dict] = {}
    for key, value in part("optim.").items():
        idx, name = key.split(".", 1)
        optim_state.setdefault(int(idx), {})[name] = value
    try:
        optimizer.load_state_dict({"state": optim_state, "param_groups": state["optimizer_groups"]})
    except (ValueError, KeyError, TypeError, RuntimeError) as e:  # another optimiser or param-group layout
        raise CheckpointError(f"{where}: the saved optimiser state does not fit this optimiser "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if state.get("scaler") and scaler is not None and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])


__all__ = ["RunFolder", "save_resume", "load_resume", "restore", "CONFIG", "BEST", "LAST", "RESUME", "METRICS",
           "REPORT_FILES", "TENSORBOARD", "EMPTY", "STARTED", "RESUMABLE", "FINISHED"]
