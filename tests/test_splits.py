"""The split rule (minivit.data.splits) and provenance (minivit.data.provenance): what selects a model,
what scores it, what a run records, and the one line that says when data differs in kind."""

import numpy as np
import pytest
import torch
from PIL import Image

from minivit.data import (LABELS, ImageSet, MissingSplit, carve_validation, kind_note, load_dataset, load_run_split,
                          load_splits)
from minivit.data.provenance import data_kind, from_checkpoint_extra, trained_on
from minivit.data.splits import (OPTIMISTIC, absent_classes, carve_count, ids_hash, split_label,
                                 split_title)
from minivit.common.errors import ConfigError, DataError


def face_folder(root, splits=(("train", 20), ("test", 6)), classes=("happy", "sad"), size=8):
    """<root>/<split>/<class>/<i>.png: gray images whose pixels differ from file to file."""
    value = 0
    for split, n in splits:
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                value += 1
                Image.fromarray(np.full((size, size), value % 256, np.uint8), "L").save(root / split / cls / f"{i}.png")
    return root


def labelled(counts: dict, **kw) -> ImageSet:
    """An ImageSet with ``counts`` images per class name, ids img0.png, img1.png, ..."""
    targets = torch.tensor([LABELS.index(c) for c, n in counts.items() for _ in range(n)])
    n = len(targets)
    return ImageSet(torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous(), targets,
                    ids=[f"img{i}.png" for i in range(n)], **kw)


# ----------------------------------------------------------------------------- carving

def test_carve_is_stratified_disjoint_and_reproducible():
    s = labelled({"happy": 50, "sad": 30, "fear": 20})
    train, val, digest = carve_validation(s, 0.1, seed=0)
    assert val.class_counts().tolist() == [0, 0, 2, 5, 3, 0, 0]  # 10% of each class
    assert train.class_counts().tolist() == [0, 0, 18, 45, 27, 0, 0]
    assert not set(train.ids) & set(val.ids) and sorted(train.ids + val.ids) == sorted(s.ids)
    # the images travel with their ids and targets
    for part in (train, val):
        for image, target, name in zip(part.images, part.targets, part.ids):
            i = int(name[3:-4])
            assert torch.equal(image, s.images[i]) and int(target) == int(s.targets[i])
    assert digest == ids_hash(val.ids) and "10% carved out as val" in val.source
    again = carve_validation(s, 0.1, seed=0)
    assert again[2] == digest and again[1].ids == val.ids  # the same images every time
    shuffled = carve_validation(s.subset(torch.randperm(len(s), generator=torch.Generator().manual_seed(1))), 0.1)
    assert shuffled[2] == digest and sorted(shuffled[1].ids) == sorted(val.ids)  # whatever the listing order
    other_seed = carve_validation(s, 0.1, seed=1)
    assert other_seed[2] != digest and other_seed[1].class_counts().tolist() == val.class_counts().tolist()
    assert len(carve_validation(s, 0.3)[1]) == 15 + 9 + 6


def test_carve_of_tiny_classes():
    """Every class with 2+ images keeps one in train and gives one to val; a lone image stays in train."""
    assert [carve_count(n, 0.1) for n in (0, 1, 2, 3, 9, 10, 14, 15, 436)] == [0, 0, 1, 1, 1, 1, 1, 2, 44]
    assert [carve_count(n, 0.9) for n in (2, 5, 10)] == [1, 4, 9]  # never the whole class
    train, val, _ = carve_validation(labelled({"happy": 40, "disgust": 2, "angry": 1}), 0.1)
    assert val.class_counts().tolist() == [0, 1, 0, 4, 0, 0, 0]
    assert train.class_counts().tolist() == [1, 1, 0, 36, 0, 0, 0]
    warnings = absent_classes({"train": train, "val": val})
    assert len(warnings) == 2
    assert warnings[0].startswith("no images of fear, sad, surprise, neutral in train")
    assert warnings[1].startswith("no images of angry, fear, sad, surprise, neutral in val")


def test_carve_stratifies_soft_labels_by_their_top_class():
    targets = torch.nn.functional.one_hot(torch.tensor([3] * 20 + [4] * 10), 7).float() * 0.8 + 0.2 / 7
    s = ImageSet(torch.zeros(30, 1, 2, 2, dtype=torch.uint8), targets, ids=[f"row {i}" for i in range(30)])
    train, val, _ = carve_validation(s, 0.1)
    assert val.hard_targets().bincount(minlength=7).tolist() == [0, 0, 0, 2, 1, 0, 0] and train.soft


@pytest.mark.parametrize("fraction", [0, 1, -0.5, 1.5])
def test_carve_fraction_out_of_range(fraction):
    with pytest.raises(ConfigError, match="--val-fraction"):
        carve_validation(labelled({"happy": 10}), fraction)


# ----------------------------------------------------------------------------- the rule per dataset

def test_folder_without_val_gets_a_carved_val_and_keeps_its_test_split(tmp_path):
    root = face_folder(tmp_path / "faces")
    with pytest.raises(MissingSplit, match="no folder for split 'val'"):
        load_dataset(root, "val")  # never test/ in its place
    s = load_splits(root, progress=False)
    assert s.rule["val"] == "carved" and s.rule["val_fraction"] == 0.1 and s.rule["seed"] == 0
    assert len(s.val) == 4 and len(s.train) == 36 and len(s.test) == 12  # 2 of each class's 20 held out
    assert s.val.class_counts().tolist() == [0, 0, 0, 2, 2, 0, 0]
    assert s.rule["val_hash"] == ids_hash(s.val.ids) and s.rule["val_size"] == 4 and s.rule["test_size"] == 12
    everything = load_dataset(root, "train")
    assert sorted(s.train.ids + s.val.ids) == sorted(everything.ids)  # train = all of train/ but the val
    assert not set(s.train.ids) & set(s.val.ids)
    assert s.test.source == str(root / "test") and s.rule["test"] == str(root / "test")
    assert all("/" in i for i in s.val.ids)  # ids are the files relative to train/: happy/3.png
    assert len(load_splits(root, val_fraction=0.25).val) == 10


def test_own_val_split_is_kept_and_carve_and_test_are_chosen_on_request(tmp_path):
    root = face_folder(tmp_path / "faces", splits=(("train", 20), ("val", 5), ("test", 6)))
    auto = load_splits(root)
    assert auto.rule["val"] == "dataset" and auto.val.source == str(root / "val") and len(auto.train) == 40
    assert len(auto.test) == 12
    carve = load_splits(root, "carve")
    assert carve.rule["val"] == "carved" and len(carve.val) == 4 and len(carve.test) == 12
    on_test = load_splits(root, "test")
    assert on_test.rule["val"] == "test" and on_test.val.source == str(root / "test") and on_test.test is None
    assert split_label("val", on_test.val, on_test.rule).endswith(OPTIMISTIC)
    with pytest.raises(ConfigError, match="--val-split"):
        load_splits(root, "sometimes")
    no_test = face_folder(tmp_path / "no_test", splits=(("train", 20), ("val", 5)))
    assert load_splits(no_test).test is None
    with pytest.raises(DataError, match="--val-split test: .* has no test split"):
        load_splits(no_test, "test")


def fer_csv(path, usages):
    pixels = " ".join(["100"] * 2304)
    rows = ["emotion,pixels,Usage"] + [f"{i % 7},{pixels},{u}" for i, u in enumerate(usages)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_fer2013_csv_selects_on_public_test_and_scores_private_test(tmp_path):
    path = fer_csv(tmp_path / "fer2013.csv", ["Training"] * 14 + ["PublicTest"] * 7 + ["PrivateTest"] * 8)
    s = load_splits(path, progress=False)
    assert s.rule["val"] == "dataset" and (len(s.train), len(s.val), len(s.test)) == (14, 7, 8)
    assert s.val.ids == tuple(f"row {i}" for i in range(14, 21)) and s.test.ids[0] == "row 21"
    assert s.test.source.endswith("[test]") and s.val.source.endswith("[val]")


def test_csv_without_usage_is_all_train_and_gets_a_carved_val(tmp_path):
    path = tmp_path / "train.csv"  # Kaggle's competition file: emotion,pixels
    pixels = " ".join(["7"] * 2304)
    path.write_text("emotion,pixels\n" + "".join(f"{i % 7},{pixels}\n" for i in range(28)))
    assert len(load_dataset(path, "train")) == 28
    with pytest.raises(MissingSplit, match="no Usage column"):
        load_dataset(path, "val")  # the same rows under another name would select on the training images
    s = load_splits(path)
    assert s.rule["val"] == "carved" and len(s.val) == 7 and len(s.train) == 21 and s.test is None


def test_rafdb_has_no_val_split_and_is_carved(tmp_path):
    lines = [f"train_{i:05d}.jpg {i % 7 + 1}" for i in range(28)] + ["test_0001.jpg 4", "test_0002.jpg 7"]
    (tmp_path / "EmoLabel").mkdir()
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "Image" / "aligned").mkdir(parents=True)
    for i, line in enumerate(lines):
        stem = line.split()[0].rsplit(".", 1)[0]
        Image.new("RGB", (12, 12), (i, 2 * i, 3 * i)).save(tmp_path / "Image" / "aligned" / f"{stem}_aligned.jpg")
    with pytest.raises(MissingSplit, match="RAF-DB has no validation split"):
        load_dataset(tmp_path, "val")
    s = load_splits(tmp_path)
    assert s.rule["val"] == "carved" and len(s.val) == 7 and len(s.train) == 21 and len(s.test) == 2
    assert s.val.ids[0].startswith("train_")


def test_synthetic_run_has_three_disjoint_draws():
    s = load_splits("synthetic", synthetic=dict(samples=64, image_size=16, seed=0))
    assert s.rule["val"] == "dataset" and len(s.val) == len(s.test) == 64
    assert not torch.equal(s.val.images, s.test.images) and not torch.equal(s.train.images, s.test.images)
    assert split_label("test", s.test, s.rule) == "test: synthetic faces, 64 images, never used for selection"
    assert split_title("val", s.val, s.rule) == "the val split (64 synthetic faces, used for selection)"


# ----------------------------------------------------------------------------- a run's own split, again

def test_load_run_split_rebuilds_the_carved_val_and_notices_a_changed_folder(tmp_path):
    root = face_folder(tmp_path / "faces")
    run = load_splits(root)
    val = load_run_split(str(root), "val", run.rule)
    assert val.ids == run.val.ids and torch.equal(val.images, run.val.images)
    train = load_run_split(str(root), "train", run.rule)
    assert train.ids == run.train.ids
    assert load_run_split(str(root), "test", run.rule).ids == run.test.ids
    (root / "train" / run.val.ids[0]).unlink()  # the folder changes: a held-out image is gone
    with pytest.raises(DataError, match="cannot be rebuilt.*the run recorded " + run.rule["val_hash"]):
        load_run_split(str(root), "val", run.rule)
    on_test = load_splits(root, "test")
    assert load_run_split(str(root), "val", on_test.rule).source == str(root / "test")


# ----------------------------------------------------------------------------- provenance

def test_trained_on_and_kind_note(tmp_path):
    root = face_folder(tmp_path / "faces")
    s = load_splits(root)
    record = trained_on(s.train, str(root), s.rule)
    assert record["data"] == str(root) and record["synthetic"] is False and record["channels"] == 1
    assert record["image_size"] == [8, 8] and record["classes"] == list(LABELS)
    assert record["class_counts"] == [0, 0, 0, 18, 18, 0, 0] and record["split"] == s.rule
    assert kind_note(record, data_kind(s.test)) is None  # the same kind of data
    synthetic = load_splits("synthetic", synthetic=dict(samples=64, image_size=8, seed=0))
    synthetic_record = trained_on(synthetic.train, "synthetic", synthetic.rule)
    assert kind_note(synthetic_record, data_kind(s.test)) == (
        "the model was trained on synthetic faces (never a real one); this data: real faces")
    assert kind_note(record, data_kind(synthetic.test)) == (
        "the model was trained on real faces; this data: synthetic faces")
    colour = ImageSet(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]), classes=("a", "b"))
    assert kind_note(record, data_kind(colour)) == (
        "the model was trained on grayscale images, classes angry, disgust, fear, happy, sad, surprise, neutral; "
        "this data: colour images, classes a, b")
    # older minivit checkpoints: what their extra says; foreign checkpoints: nothing to compare
    assert from_checkpoint_extra({"classes": list(LABELS), "grayscale_data": True}) == {"classes": list(LABELS),
                                                                                      "channels": 1}
    assert from_checkpoint_extra({"epoch": 3}) is None and kind_note(None, data_kind(colour)) is None
