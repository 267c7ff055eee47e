"""Old module paths, served from their new homes: the one table of what moved where.

minivit's modules were regrouped into chapters (common, model, checkpoints, data, evaluate, train,
inference). Code written against the old paths keeps working and is told where things are now:

    import minivit.augment                      # the module minivit.data.augment itself, and a
                                                # MovedWarning (a DeprecationWarning) naming it
    from minivit.checkpoints.io import write_json   # io.py was split: each name from its new module
    from minivit.predict import read_image      # the command stays; its library half moved: served too

No file sits at an old path: the finder below answers for the paths no module holds any more, and a
module that remains (a command whose library half moved) serves the names it no longer holds with
``__getattr__ = serve_moved_names(__name__)``. Nothing here imports another chapter by name in its
source: the new modules are imported by their dotted path, only when old code asks for them.

Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     from minivit.predict import to_image_tensor
    >>> to_image_tensor.__module__, str(caught[0].message)
    ('minivit.inference.images', 'minivit.predict.to_image_tensor moved to minivit.inference.images.to_image_tensor')
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

# old module path -> its new path (a module that moved whole), or the new modules among which its
# names now live, looked up in order (a module that was split, or a command whose library half moved).
MOVED: dict[str, str | tuple[str, ...]] = {
    "minivit.errors": "minivit.common.errors",
    "minivit.cli": "minivit.common.cli",
    "minivit.device": "minivit.common.device",
    "minivit.config": "minivit.model.config",
    "minivit.pos_embed": "minivit.model.pos_embed",
    "minivit.speed": "minivit.model.speed",
    "minivit.augment": "minivit.data.augment",
    "minivit.plots": "minivit.evaluate.plots",
    "minivit.rollout": "minivit.evaluate.rollout",
    "minivit.faces": "minivit.inference.faces",
    "minivit.video": "minivit.inference.video",
    "minivit.checkpoints.io": ("minivit.checkpoints.reading", "minivit.checkpoints.writing", "minivit.common.files"),
    "minivit.checkpoints.loader": ("minivit.checkpoints.loading", "minivit.checkpoints.writing"),
    # commands that remain (python -m minivit.<command>), whose library half moved
    "minivit.predict": ("minivit.inference.images", "minivit.inference.predictor"),
    "minivit.attention": ("minivit.inference.attention_maps",),
    "minivit.serve": ("minivit.inference.web",),
    "minivit.export": ("minivit.inference.onnx_export",),
    "minivit.hub": ("minivit.checkpoints.hub",),
    "minivit.train.cli": ("minivit.train.profiles",),
    # what a run folder is moved out of training (checkpoints/runs.py), so that evaluate and predict share it
    "minivit.train.rundir": ("minivit.checkpoints.runs", "minivit.common.files"),
}
# Names a package cannot serve: minivit/model.py became the package minivit.model, whose __init__
# imports nothing (minivit.checkpoints imports minivit.model.config, and ViT.from_pretrained imports
# minivit.checkpoints: serving ViT there would load the model whenever the config is imported). Asking
# for one is an error that says where it is now. package -> {name: its module now}.
NOT_SERVED: dict[str, dict[str, str]] = {
    "minivit.model": {**dict.fromkeys(("ViT", "create_model", "PatchEmbed", "ConvBNGELU", "ConvStem", "Attention",
                                       "MLP", "MAPHead", "DropPath", "Block"), "minivit.model.vit"),
                      **dict.fromkeys(("ViTConfig", "config_from_name"), "minivit.model.config")},
}
# old name -> new name, for the names that changed as they moved (two functions called find_checkpoint
# meant two different things).
RENAMED: dict[str, str] = {
    "minivit.hub.find_checkpoint": "minivit.checkpoints.hub.manifest_entry",
    "minivit.evaluate.find_checkpoint": "minivit.checkpoints.runs.locate_checkpoint",
    "minivit.evaluate.HF_WEIGHT_FILES": "minivit.checkpoints.reading.WEIGHT_FILES",
    "minivit.evaluate.run_config": "minivit.checkpoints.runs.read_config",
    "minivit.train.cli.SIZE_FLAGS": "minivit.train.profiles.SIZE_FIELDS",
}


class MovedWarning(DeprecationWarning):
    """Code used a module path or a name from before minivit's chapters; the message says where it is now."""


def _warn(message: str) -> None:
    # point at the code that asked: past this module's frames and the import machinery's (which
    # warnings.warn skips by itself, so they are not counted)
    frame, level = sys._getframe(1), 2  # stacklevel 2: _warn's caller
    while frame is not None and (frame.f_code.co_filename == __file__ or "importlib" in frame.f_code.co_filename):
        if "_bootstrap" not in frame.f_code.co_filename:
            level += 1
        frame = frame.f_back
    warnings.warn(message, MovedWarning, stacklevel=level)


def _resolve(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def serve_moved_names(module_name: str):
    """A module ``__getattr__`` serving the names that left ``module_name`` (MOVED, RENAMED), with a MovedWarning."""

    def __getattr__(name: str):
        if name.startswith("__"):  # inspect, doctest and pickle probe for these: never import anything for them
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        old = f"{module_name}.{name}"
        if old in RENAMED:
            _warn(f"{old} moved to {RENAMED[old]}")
            return _resolve(RENAMED[old])
        homes = MOVED.get(module_name, ())
        for home in (homes,) if isinstance(homes, str) else homes:
            module = importlib.import_module(home)
            if hasattr(module, name):
                _warn(f"{old} moved to {home}.{name}")
                return getattr(module, name)
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    return __getattr__


def not_served_message(package: str, name: str) -> str:
    home = NOT_SERVED[package][name]
    public = f" or `minivit.{name}`" if name in ("ViT", "create_model", "ViTConfig", "config_from_name") else ""
    return (f"{package} is a package now and {name} is in {home}: use `from {home} import {name}`{public} "
            f"({package}'s __init__ imports nothing, so that importing {package}.config never loads the model)")


def refuse_moved_names(package: str):
    """A package ``__getattr__`` that answers a name of NOT_SERVED with an AttributeError saying where it is."""

    def __getattr__(name: str):
        if name in NOT_SERVED.get(package, {}):
            raise AttributeError(not_served_message(package, name))
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old module paths no file holds any more (last on sys.meta_path: a real module always wins)."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if name in NOT_SERVED.get(package, {}):  # `from minivit.model import ViT` looks for a submodule last
            raise ImportError(not_served_message(package, name), name=fullname)
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        if isinstance(new, str):  # the new module itself, under the old name too: the same objects
            _warn(f"{spec.name} moved to {new}")
            return importlib.import_module(new)
        _warn(f"{spec.name} was split: its names are now in {', '.join(new)}")
        module = types.ModuleType(spec.name, f"Moved: the names of {spec.name} are now in {', '.join(new)}.")
        module.__getattr__ = _split_module_getattr(spec.name, new)
        return module

    def exec_module(self, module):
        pass  # nothing to run: the new module ran when it was imported


def _split_module_getattr(module_name: str, homes: tuple[str, ...]):
    def __getattr__(name: str):
        if not name.startswith("__"):
            for home in homes:
                module = importlib.import_module(home)
                if hasattr(module, name):
                    return getattr(module, name)
        raise AttributeError(f"module {module_name!r} has no attribute {name!r} (its names are now in "
                             f"{', '.join(homes)})")

    return __getattr__


def install() -> None:
    """Put the finder last on sys.meta_path, once (minivit/__init__.py calls this)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())


__all__ = ["MOVED", "RENAMED", "NOT_SERVED", "MovedWarning", "serve_moved_names", "refuse_moved_names", "install"]
