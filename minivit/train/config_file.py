"""Runs from a file: ``minivit train --config FILE``, checked key by key before any work.

FILE is JSON, or YAML when it ends in .yaml / .yml (read with pyyaml: ``pip install 'minivit[config]'``),
or a run folder (its config.json, read by minivit.checkpoints.RunFolder, as a run folder always is). It
holds either a run's config.json -- its "train" section is read -- or a flat mapping of TrainConfig
fields, the same keys:

    data: ../shared/data/fer2013
    model: S/4
    model_overrides: {stem: conv, in_chans: 1, depth: 8}
    epochs: 30
    lr: 1.0e-3

so ``minivit train --config runs/a/config.json --out runs/b`` repeats run a. The command builds its
TrainConfig from the profile of the run's data and weights (minivit/train/profiles.py), then the
file, then the options given on the command line: a flag always wins.

A run's config.json records the folder that run wrote to and how it was started, which say nothing
about a new run: its ``out``, ``resume`` and ``overwrite`` are not read (the copy goes to --out, or a
new timestamped folder). In a flat file ``out`` is read; ``resume`` and ``overwrite`` are decisions
of one command line and are refused there.

An unknown key, a value of the wrong type or out of its range (RANGES and CHOICES, the command line's
own tables), a file that is not a mapping, bad JSON / YAML or a missing file: one line naming the file
and the key, exit 2.
"""

from __future__ import annotations

import argparse
import difflib
import json
import numbers
import re
import types
import typing
from pathlib import Path

from ..checkpoints.run_folder import CONFIG, RunFolder
from ..common.errors import ConfigError
from .config import CHOICES, RANGES, TrainConfig

INSTALL_HINT = "pip install 'minivit[config]'"
YAML_SUFFIXES = (".yaml", ".yml")
# How a run was started, not what it trained: never read from a run's config.json (see the module docstring).
RUN_RECORD_KEYS = ("out", "resume", "overwrite")


def read_config_file(name) -> dict:
    """The TrainConfig fields a --config file sets, each checked; ConfigError naming the file and the key."""
    path = Path(name).expanduser()
    if path.is_dir() or (path.name == CONFIG and RunFolder(path.parent).is_run_folder):  # a run's: it reads it
        run = RunFolder(path if path.is_dir() else path.parent, named=f"--config {name}")
        fields, path = {k: v for k, v in run.train_fields.items() if k not in RUN_RECORD_KEYS}, run.config_file
    elif not path.is_file():
        raise ConfigError(f"--config {name}: no such file")
    else:
        fields = read_fields(path)
    for key, value in fields.items():
        check_field(path, key, value)
    return fields


def read_fields(path: Path) -> dict:
    """The TrainConfig fields of a config file that is not in a run folder: a flat mapping, or a copy of a
    run's config.json (its "train" section)."""
    saved = load_mapping(path)
    if "train" in saved:  # a run's config.json (TrainConfig has no field named "train")
        if not isinstance(saved["train"], dict):
            raise ConfigError(f"{path}: \"train\" must be a mapping of TrainConfig fields, not {saved['train']!r}")
        fields = {k: v for k, v in saved["train"].items() if k not in RUN_RECORD_KEYS}
    else:
        fields = dict(saved)
        for key in ("resume", "overwrite"):
            if fields.get(key):
                raise ConfigError(f"{path}: {key}: set on the command line only (--{key}), not in a config file")
            fields.pop(key, None)
    return fields


def load_mapping(path: Path) -> dict:
    """The file's top-level mapping: JSON, or YAML by its suffix."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror})") from None
    if path.suffix.lower() in YAML_SUFFIXES:
        saved = parse_yaml(path, text)
    else:
        try:
            saved = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"{path}: not valid JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(saved, dict):
        what = "empty" if saved is None else f"a {type(saved).__name__}"
        raise ConfigError(f"{path}: must be a mapping of training options (key: value), not {what}")
    return saved


def parse_yaml(path: Path, text: str):
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"{path}: reading YAML needs pyyaml: {INSTALL_HINT} (or write the file as JSON)") from None

    class Loader(yaml.SafeLoader):  # safe: plain data only, never a Python object
        pass

    # YAML 1.1 reads 1e-3 (no dot) as text; a learning rate written so is a number, as in YAML 1.2 and JSON
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
        r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML ({where}{problem})") from None


# a field's Python type -> (does a value have it, how to say what it must be)
KINDS = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool), "a number"),
    str: (lambda v: isinstance(v, str), "text"),
    dict: (lambda v: isinstance(v, dict), "a mapping"),
    tuple: (lambda v: isinstance(v, (list, tuple)), "a list"),
}


def field_kind(name: str) -> tuple[type, bool]:
    """(the Python type of TrainConfig field ``name``, whether None is allowed)."""
    hint = typing.get_type_hints(TrainConfig)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return typing.get_origin(args[0]) or args[0], True
    return typing.get_origin(hint) or hint, False


def check_field(path: Path, key: str, value) -> None:
    """One key of a config file: a TrainConfig field, of its type, in its range or among its choices."""
    if key not in TrainConfig.field_names():
        close = difflib.get_close_matches(key, sorted(TrainConfig.field_names()), n=1)
        hint = f"; did you mean {close[0]}?" if close else " (see minivit train --help)"
        raise ConfigError(f"{path}: unknown key {key!r}: not a training option{hint}")
    kind, optional = field_kind(key)
    if value is None and optional:
        return
    has_kind, wanted = KINDS.get(kind, (lambda v: True, ""))
    if not has_kind(value):
        raise ConfigError(f"{path}: {key} must be {wanted}{' or null' if optional else ''}, not {value!r}")
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{path}: {key} must be one of {', '.join(CHOICES[key])}, not {value!r}")
    if key in RANGES:
        try:
            RANGES[key](str(value))
        except argparse.ArgumentTypeError as e:
            raise ConfigError(f"{path}: {key} {e}") from None


__all__ = ["read_config_file", "check_field", "INSTALL_HINT"]
