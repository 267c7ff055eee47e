"""Code written against the module paths from before minivit's chapters still runs: one table
(minivit/common/moved.py) serves every old path with the very objects it held, and warns, naming
where each is now. Nothing in the package, the docs or the tests uses an old path itself
(pyproject.toml makes a MovedWarning an error in this suite).
"""

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import minivit
from minivit.common.moved import MOVED, RENAMED, MovedWarning

PACKAGE = Path(minivit.__file__).parent
# The names code imported from the modules that were split or lost their library half (the public
# names each held, and the ones docs, examples and tests imported).
OLD_NAMES = {
    "minivit.checkpoints.io": ["read_npz", "read_safetensors", "read_torch_bin", "read_json", "sniff", "looks_like_html",
                               "read_weights_in_folder", "WEIGHT_FILES", "hash_file", "file_in_the_way", "cannot_write",
                               "ensure_folder", "atomic_write", "write_safetensors", "write_json", "write_npz"],
    "minivit.checkpoints.loader": ["LoadReport", "Checkpoint", "resolve_source", "detect_layout", "read_checkpoint",
                                   "unstack_scan", "build_state", "load_state", "convert_transformers_state_dict",
                                   "save_checkpoint", "read_extra", "export_tensors", "export_refusals", "export",
                                   "save_folder", "save_npz", "EXTRA_KEY", "RESUME_PREFIX", "WEIGHT_SUFFIXES"],
    "minivit.predict": ["Predictor", "FacePrediction", "ImageResult", "read_image", "to_image_tensor", "UnreadableImage",
                        "NotAnImage", "ImageTooLarge", "load_model", "resolve_checkpoint", "default_classes",
                        "trained_on_grayscale", "DETECTED", "NO_FACE", "FACE_SIZED", "OFF", "UNAVAILABLE",
                        "FACE_SIZED_FACTOR", "IMAGE_FORMATS", "MAX_PIXELS", "PIL_MAX_PIXELS", "main", "build_parser",
                        "collect_inputs", "format_rows", "format_csv", "annotate", "add_image_options"],
    "minivit.attention": ["attention_maps", "model_view", "pooled_name", "pick_region", "main", "build_parser"],
    "minivit.serve": ["create_app", "shrink", "page", "MAX_UPLOAD_BYTES", "SERVE_MAX_PIXELS", "MAX_CONCURRENT",
                      "MAX_SIDE", "FAVICON_SVG", "main", "build_parser"],
    "minivit.export": ["export_onnx", "add_metadata", "real_input", "verify", "VerificationFailed", "LogitsOnly",
                       "without_torchvision_notices", "ONNX_REGISTRY_LOGGER", "DEFAULT_OPSET", "TOLERANCE", "main"],
    "minivit.hub": ["load_manifest", "list_checkpoints", "checkpoint_config", "resolve", "download", "hf_snapshot",
                    "looks_like_a_path", "could_be_repo_id", "get_weights_dir", "MANIFEST_PATH", "main"],
    "minivit.train.cli": ["PROFILES", "main", "parse_args", "build_config", "add_options"],
    "minivit.train.rundir": ["holds_run", "resume_folder", "saved_split_rule", "RUN_FILES", "TEMP_GLOB",
                             "check_out_dir", "default_out", "prepare_out_dir", "clean_temp_files", "read_run_config"],
    "minivit.evaluate": ["evaluate_checkpoint", "classification_metrics", "confusion_matrix", "dominant_class_warning",
                         "majority_baseline_macro_f1", "format_table", "hard_targets", "predict", "evaluate",
                         "write_report", "confusion_report_png", "select_examples", "attention_report", "main",
                         "build_parser", "RunData", "REPORT_FILES", "DOMINANT_SHARE", "BASELINE_MARGIN"],
}
WHOLE = {old: new for old, new in MOVED.items() if isinstance(new, str)}


def fresh_import(name: str):
    """Import ``name`` as code that never imported it would (the alias is dropped from sys.modules first)."""
    sys.modules.pop(name, None)
    return importlib.import_module(name)


def test_no_file_sits_at_an_old_path_that_moved_whole():
    for old in WHOLE:
        where = PACKAGE / Path(*old.split(".")[1:])
        assert not where.with_suffix(".py").exists() and not where.is_dir(), old


@pytest.mark.parametrize("old", sorted(WHOLE))
def test_a_module_that_moved_whole_is_the_new_module_itself(old):
    with pytest.warns(MovedWarning, match=f"{old} moved to {WHOLE[old]}"):
        module = fresh_import(old)
    assert module is importlib.import_module(WHOLE[old])


def homes_of(old: str) -> list:
    """Where the names of ``old`` live now: the old module itself where it remains (a command), then MOVED's."""
    homes = MOVED.get(old, ())
    homes = [homes] if isinstance(homes, str) else list(homes)
    where = PACKAGE / Path(*old.split(".")[1:])
    remains = where.with_suffix(".py").exists() or where.is_dir()
    return [importlib.import_module(h) for h in ([old] if remains else []) + homes]


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_every_old_name_is_the_same_object_where_it_is_now(old):
    homes = homes_of(old)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = fresh_import(old) if old not in sys.modules or old.startswith("minivit.checkpoints.") \
            else importlib.import_module(old)
        for name in OLD_NAMES[old]:
            expected = next((vars(h)[name] for h in homes if name in vars(h)), None)
            assert expected is not None and getattr(module, name) is expected, (old, name)
    moved = [str(w.message) for w in caught if issubclass(w.category, MovedWarning)]
    for name in OLD_NAMES[old]:
        if name not in vars(module):  # served from its new home: the warning says where
            assert any(m.startswith((f"{old}.{name} moved to ", f"{old} was split")) for m in moved), (name, moved)


def test_renamed_names_are_served_under_their_old_name():
    for old, new in RENAMED.items():
        module_name, _, name = old.rpartition(".")
        new_module, _, new_name = new.rpartition(".")
        with pytest.warns(MovedWarning, match=f"{old} moved to {new}"):
            found = getattr(importlib.import_module(module_name), name)
        assert found is getattr(importlib.import_module(new_module), new_name)


def test_an_unknown_name_is_still_an_attribute_error():
    import minivit.predict

    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        minivit.predict.no_such_name  # noqa: B018
    with pytest.warns(MovedWarning, match="was split"):
        split = fresh_import("minivit.checkpoints.io")
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        split.nothing  # noqa: B018


def test_the_model_package_says_where_the_model_is():
    """minivit.model is a package whose __init__ imports nothing (checkpoints imports minivit.model.config,
    and ViT.from_pretrained imports checkpoints): `from minivit.model import ViT` is the one old import that
    cannot keep working. It fails with a message naming the new place."""
    from minivit.common.moved import NOT_SERVED

    for name, home in NOT_SERVED["minivit.model"].items():
        with pytest.raises(ImportError, match=f"{name} is in {home}: use `from {home} import {name}`"):
            exec(f"from minivit.model import {name}", {})
        with pytest.raises(AttributeError, match=f"{name} is in {home}"):
            getattr(importlib.import_module("minivit.model"), name)
        assert hasattr(importlib.import_module(home), name)
    source = (PACKAGE / "model" / "__init__.py").read_text()
    assert [line for line in source.splitlines() if line.startswith(("import", "from"))] == \
        ["from ..common.moved import refuse_moved_names"]


def test_an_old_path_in_a_fresh_process_warns_at_the_line_that_imports_it():
    done = subprocess.run([sys.executable, "-W", "always::DeprecationWarning", "-c",
                           "import minivit.augment\nfrom minivit.checkpoints.io import write_json\n"],
                          capture_output=True, text=True, timeout=120, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr
    assert "<string>:1: MovedWarning: minivit.augment moved to minivit.data.augment" in done.stderr
    assert "<string>:2: MovedWarning: minivit.checkpoints.io was split" in done.stderr
