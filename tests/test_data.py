"""Tests for minivit.data: labels, every reader, the on_error policy, the synthetic set."""

import csv
import doctest
import logging
import time

import numpy as np
import pytest
import torch
from PIL import Image

import minivit.data as data
from minivit.data import (LABELS, ImageSet, MissingSplit, detect_format, label_index, load_dataset, read_ferplus_labels,
                          synthetic_faces)
from minivit.common.errors import ConfigError, DataError

# FER2013 PublicTest counts per class, from shared/README.md, in the LABELS order.
PUBLIC_TEST_COUNTS = {"angry": 467, "disgust": 56, "fear": 496, "happy": 895, "sad": 653, "surprise": 415,
                      "neutral": 607}


# ----------------------------------------------------------------------------- labels

def test_canonical_order_is_fer2013_codes():
    assert LABELS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@pytest.mark.parametrize("spelling,expected", [
    ("anger", "angry"), ("Angry", "angry"), ("happiness", "happy"), ("HAPPY", "happy"), ("sadness", "sad"),
    ("surprised", "surprise"), ("fearful", "fear"), ("disgusted", "disgust"), (" neutral ", "neutral"),
    ("Not-a-face", None), ("contempt", None), ("unknown", None), ("NF", None),
])
def test_alias_table(spelling, expected):
    assert label_index(spelling) == (None if expected is None else LABELS.index(expected))


def test_unknown_label_raises():
    with pytest.raises(DataError, match="unknown expression label 'smirk'"):
        label_index("smirk")


def test_dataset_code_orders():
    # RAF-DB codes 1..7 and AffectNet indices 0..7, as documented by each dataset.
    raf = data.code_table(data.RAFDB_CODES)
    assert [LABELS[i] for i in raf] == ["surprise", "fear", "disgust", "happy", "sad", "angry", "neutral"]
    aff = data.code_table(data.AFFECTNET_CODES)
    assert [LABELS[i] if i is not None else None for i in aff] == [
        "neutral", "happy", "sad", "surprise", "fear", "disgust", "angry", None]


def test_doctests_of_data_modules():
    for module in (data.labels, data.imageset, data.formats, data.synthetic):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


# ----------------------------------------------------------------------------- ImageSet

def test_imageset_checks_and_counts():
    with pytest.raises(DataError, match="uint8"):
        ImageSet(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(DataError, match="2 images but 3 targets"):
        ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.long))
    soft = ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([[0.5] * 2 + [0.0] * 5] * 2))
    assert soft.soft and soft.class_counts()[:2].tolist() == [1.0, 1.0]
    assert len(soft.subset(torch.tensor([True, False]))) == 1


# ----------------------------------------------------------------------------- FER2013 CSV

def _fer_rows(n=9, seed=0):
    rng = np.random.default_rng(seed)
    usages = ["Training", "PublicTest", "PrivateTest"]
    return [(int(rng.integers(0, 7)), rng.integers(0, 256, 2304), usages[i % 3]) for i in range(n)]


def _write_fer_csv(path, rows, bad_line=None):
    with open(path, "w", newline="") as f:
        f.write("emotion,pixels,Usage\n")
        for i, (label, pixels, usage) in enumerate(rows):
            line = f"{label},{' '.join(map(str, pixels))},{usage}"
            f.write((bad_line if bad_line and i == 3 else line) + "\n")
    return path


def test_fer2013_csv_splits(tmp_path):
    rows = _fer_rows()
    path = _write_fer_csv(tmp_path / "fer2013.csv", rows)
    assert detect_format(path) == "fer2013_csv" and detect_format(tmp_path) == "fer2013_csv"
    for split, usage in [("train", "Training"), ("val", "PublicTest"), ("test", "PrivateTest")]:
        s = load_dataset(path, split)
        want = [r for r in rows if r[2] == usage]
        assert s.images.shape == (len(want), 1, 48, 48) and s.images.dtype == torch.uint8
        assert s.targets.tolist() == [r[0] for r in want]
        assert torch.equal(s.images[0, 0], torch.tensor(want[0][1], dtype=torch.uint8).view(48, 48))
    # every row is 48x48: resize_mixed_to (for folders of mixed sizes) leaves uniform data at its size
    assert torch.equal(load_dataset(tmp_path, "val", resize_mixed_to=32).images, load_dataset(path, "val").images)


@pytest.mark.parametrize("bad_line,message", [
    ("3,1 2 3,Training", "expected 2304 pixel values, got 3"),
    ("3," + " ".join(["7"] * 2303) + ",Training", "expected 2304 pixel values, got 2303"),
    ("3," + " ".join(["7"] * 2303) + " x1,Training", "non-integer pixel value 'x1'"),
    ("3," + " ".join(["7"] * 2303) + " 256,Training", "pixel value 256 outside 0..255"),
    ("7," + " ".join(["7"] * 2304) + ",Training", "unknown emotion label '7'"),
    ("3," + " ".join(["7"] * 2304) + ",Training,extra", "expected 3 fields, got 4"),
    ("3," + " ".join(["7"] * 2304) + ",Holdout", "unknown Usage 'Holdout'"),
])
def test_fer2013_malformed_rows(tmp_path, caplog, bad_line, message):
    rows = _fer_rows()
    path = _write_fer_csv(tmp_path / "fer2013.csv", rows, bad_line=bad_line)
    with pytest.raises(DataError, match=f"fer2013.csv line 5: {message}"):  # header is line 1, row 3 is line 5
        load_dataset(path, "train")
    with caplog.at_level(logging.WARNING, logger="minivit.data"):
        s = load_dataset(path, "train", on_error="skip")
    assert len(s) == sum(r[2] == "Training" for i, r in enumerate(rows) if i != 3)
    assert "skipped 1 malformed row in" in caplog.text and "line 5" in caplog.text


# ----------------------------------------------------------------------------- image folders

def _save(path, value=128, size=(48, 48), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 0, 255 - value)).save(path)


def test_image_folders_aliases_fallback_and_blank(tmp_path, caplog):
    for split in ("train", "test"):
        for cls in ("Anger", "happiness", "surprised"):
            for i in range(2):
                _save(tmp_path / split / cls / f"{i}.jpg", value=0 if i == 0 else 200)  # value 0: blank image
    assert detect_format(tmp_path) == "folders"
    s = load_dataset(tmp_path, "train")
    assert s.images.shape == (6, 1, 48, 48)
    assert s.class_counts().tolist() == [2, 0, 0, 2, 0, 2, 0]
    assert (s.images[s.images.flatten(1).amax(1) == 0]).shape[0] == 3  # blank images are data
    # no val/ folder: "val" is missing, never test/ under another name (the test split would then pick the
    # model it is scored on); training carves a val split out of train/ instead (minivit.data.splits)
    with pytest.raises(MissingSplit, match="no folder for split 'val'"):
        load_dataset(tmp_path, "val")
    t = load_dataset(tmp_path, "test")
    assert len(t) == 6 and t.ids == tuple(f"{c}/{i}.jpg" for c in ("Anger", "happiness", "surprised") for i in (0, 1))


def test_image_folders_errors(tmp_path, caplog):
    _save(tmp_path / "train" / "happy" / "a.png")
    _save(tmp_path / "train" / "sad" / "b.png")
    (tmp_path / "train" / "sad" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(DataError, match="broken.jpg: cannot read image"):
        load_dataset(tmp_path, "train")
    with caplog.at_level(logging.WARNING, logger="minivit.data"):
        s = load_dataset(tmp_path, "train", on_error="skip")
    assert len(s) == 2 and "skipped 1 unreadable image in" in caplog.text
    _save(tmp_path / "train" / "bored" / "c.png")
    with pytest.raises(DataError, match="bored: unknown expression label 'bored'"):
        load_dataset(tmp_path, "train", on_error="raise")
    assert len(load_dataset(tmp_path, "train", on_error="skip")) == 2
    with pytest.raises(DataError, match="no folder for split 'test'"):
        load_dataset(tmp_path, "test")


def test_image_folders_sizes_and_colour(tmp_path):
    _save(tmp_path / "train" / "happy" / "a.png", size=(48, 48))
    _save(tmp_path / "train" / "sad" / "b.png", size=(64, 60), mode="RGB")
    with pytest.raises(DataError, match=r"images differ in size \(48x48 a.png, 64x60 b.png\); resize them on decode "
                                        r"with resize_mixed_to=S .*--image-size") as e:
        load_dataset(tmp_path, "train")
    assert "image_size=" not in str(e.value)  # no option the CLI lacks
    s = load_dataset(tmp_path, "train", resize_mixed_to=40)
    assert s.images.shape == (2, 3, 40, 40)  # one colour image makes the set colour
    gray = s.images[s.targets == LABELS.index("happy")][0]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[0], gray[2])


def test_affectnet_index_folders(tmp_path, caplog):
    for index in range(8):  # AffectNet: 0 neutral 1 happy 2 sad 3 surprise 4 fear 5 disgust 6 anger 7 contempt
        _save(tmp_path / "val_set" / str(index) / "x.png", size=(32, 32), mode="RGB")
    with caplog.at_level(logging.INFO, logger="minivit.data"):
        s = load_dataset(tmp_path, "val")
    assert s.images.shape == (7, 3, 32, 32)
    assert s.class_counts().tolist() == [1] * 7
    # folders are visited in name order 0..6: targets are AffectNet's order mapped to LABELS
    assert [LABELS[t] for t in s.targets] == ["neutral", "happy", "sad", "surprise", "fear", "disgust", "angry"]
    assert "contempt" not in caplog.text or "dropped" in caplog.text


# ----------------------------------------------------------------------------- RAF-DB

def _rafdb(root, lines, aligned=True):
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        name = line.split()[0]
        stem = name.rsplit(".", 1)[0]
        file = root / "Image" / ("aligned" if aligned else "original") / (f"{stem}_aligned.jpg" if aligned else name)
        _save(file, size=(100, 100), mode="RGB")


@pytest.mark.parametrize("aligned", [True, False])
def test_rafdb(tmp_path, aligned):
    lines = [f"train_{i:05d}.jpg {i}" for i in range(1, 8)] + ["test_0001.jpg 4", "test_0002.jpg 7"]
    _rafdb(tmp_path, lines, aligned)
    assert detect_format(tmp_path) == "rafdb"
    s = load_dataset(tmp_path, "train")
    assert s.images.shape == (7, 3, 100, 100)
    assert [LABELS[t] for t in s.targets] == ["surprise", "fear", "disgust", "happy", "sad", "angry", "neutral"]
    t = load_dataset(tmp_path / "EmoLabel" / "list_patition_label.txt", "test", resize_mixed_to=64)
    assert t.images.shape == (2, 3, 100, 100) and [LABELS[i] for i in t.targets] == ["happy", "neutral"]


def test_rafdb_errors(tmp_path, caplog):
    _rafdb(tmp_path, ["train_00001.jpg 1", "train_00002.jpg 9", "train_00003.jpg 2"])
    with pytest.raises(DataError, match="list_patition_label.txt line 2: unknown label '9'"):
        load_dataset(tmp_path, "train")
    with caplog.at_level(logging.WARNING, logger="minivit.data"):
        assert len(load_dataset(tmp_path, "train", on_error="skip")) == 2
    assert "skipped 1 malformed line in" in caplog.text
    (tmp_path / "Image" / "aligned" / "train_00003_aligned.jpg").unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="minivit.data"):
        assert len(load_dataset(tmp_path, "train", on_error="skip")) == 1
    assert "skipped 1 unreadable image in" in caplog.text and "train_00003_aligned.jpg" in caplog.text


def test_rafdb_missing_image(tmp_path):
    _rafdb(tmp_path, ["train_00001.jpg 1", "train_00002.jpg 3"])
    (tmp_path / "Image" / "aligned" / "train_00002_aligned.jpg").unlink()
    with pytest.raises(DataError, match="train_00002_aligned.jpg: cannot read image .FileNotFoundError"):
        load_dataset(tmp_path / "EmoLabel" / "list_patition_label.txt", "train")


# ----------------------------------------------------------------------------- FER+

FERPLUS_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
#                                   neu hap sur sad ang dis fea con unk NF
FERPLUS_ROWS = [("Training", "a.png", (6, 2, 0, 0, 0, 0, 0, 1, 1, 0)),   # neutral
                ("Training", "", (0, 0, 0, 0, 0, 0, 0, 0, 0, 10)),       # no image name: dropped
                ("Training", "c.png", (0, 0, 0, 0, 0, 0, 0, 0, 0, 10)),  # not a face: dropped
                ("Training", "d.png", (0, 4, 4, 0, 0, 0, 0, 0, 2, 0)),   # tie happy/surprise: majority drops
                ("PublicTest", "e.png", (0, 0, 0, 2, 8, 0, 0, 0, 0, 0)),  # angry
                ("Training", "f.png", (1, 0, 0, 0, 0, 0, 0, 6, 3, 0))]   # contempt top: dropped


def _write_ferplus(tmp_path):
    labels = tmp_path / "fer2013new.csv"
    labels.write_text(FERPLUS_HEADER + "\n" + "\n".join(
        f"{u},{n}," + ",".join(map(str, v)) for u, n, v in FERPLUS_ROWS) + "\n")
    rows = [(0, np.full(2304, i * 10), u) for i, (u, _, _) in enumerate(FERPLUS_ROWS)]
    pixels = _write_fer_csv(tmp_path / "fer2013.csv", rows)
    return labels, pixels


def test_ferplus_majority_and_soft(tmp_path):
    labels, pixels = _write_ferplus(tmp_path)
    assert detect_format(labels) == "ferplus"
    s = load_dataset(labels, "train", ferplus_images=pixels)
    assert s.targets.tolist() == [LABELS.index("neutral")]
    assert s.images[0].unique().tolist() == [0]  # joined to data row 0
    v = load_dataset(labels, "val", ferplus_images=pixels)
    assert v.targets.tolist() == [LABELS.index("angry")] and v.images[0].unique().tolist() == [40]
    soft = load_dataset(labels, "train", ferplus_images=pixels, label_mode="soft")
    assert soft.targets.shape == (2, 7) and soft.targets.dtype == torch.float32
    torch.testing.assert_close(soft.targets.sum(1), torch.ones(2))
    # the tie row keeps both emotions, contempt/unknown votes removed before normalising
    assert soft.targets[1, LABELS.index("happy")] == 0.5 and soft.targets[1, LABELS.index("surprise")] == 0.5
    assert soft.targets[0, LABELS.index("neutral")] == 0.75 and soft.images[1].unique().tolist() == [30]


def test_ferplus_with_image_folder(tmp_path, caplog):
    labels, _ = _write_ferplus(tmp_path)
    folder = tmp_path / "images"
    for i, (usage, name, _) in enumerate(FERPLUS_ROWS):
        if name:  # Microsoft's FERPlus scripts: one folder per split
            sub = {"Training": "FER2013Train", "PublicTest": "FER2013Valid"}[usage]
            _save(folder / sub / name, value=i * 10)
    s = load_dataset(labels, "train", ferplus_images=folder, label_mode="soft")
    assert s.images.shape == (2, 1, 48, 48) and [int(v) for v in s.images[:, 0, 0, 0]] == [0, 30]
    torch.testing.assert_close(s.targets.sum(1), torch.ones(2))
    (folder / "FER2013Valid" / "e.png").unlink()
    with pytest.raises(DataError, match="e.png: cannot read image"):
        load_dataset(labels, "val", ferplus_images=folder)


def test_ferplus_errors(tmp_path):
    labels, pixels = _write_ferplus(tmp_path)
    with pytest.raises(DataError, match="labels only; give its pixels with --ferplus-images"):
        load_dataset(labels, "train")
    with pytest.raises(ConfigError, match="label_mode"):
        load_dataset(labels, "train", ferplus_images=pixels, label_mode="vote")
    short = _write_fer_csv(tmp_path / "short.csv", _fer_rows(4))
    with pytest.raises(DataError, match="4 rows but .* has 6"):
        load_dataset(labels, "train", ferplus_images=short)


def _independent_ferplus_counts(path):
    """The documented rules, re-implemented plainly over csv rows."""
    names = ["neutral", "happy", "surprise", "sad", "angry", "disgust", "fear"]
    majority, soft_rows, no_name = {n: 0 for n in names}, 0, 0
    with open(path, newline="") as f:
        for row in list(csv.reader(f))[1:]:
            if not row[1].strip():
                no_name += 1
                continue
            votes = list(map(int, row[2:]))
            top = max(votes)
            if top == 0 or top in votes[7:]:
                continue
            soft_rows += 1
            winners = [n for n, v in zip(names, votes[:7]) if v == top]
            if len(winners) == 1:
                majority[winners[0]] += 1
    return majority, soft_rows, no_name


def test_ferplus_labels_on_real_file(shared_dir, caplog):
    path = shared_dir / "data" / "ferplus" / "fer2013new.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    majority, soft_rows, no_name = _independent_ferplus_counts(path)
    with caplog.at_level(logging.INFO, logger="minivit.data"):
        m = read_ferplus_labels(path, "majority")
    assert m["num_rows"] == 35887 and m["dropped"]["no image name"] == no_name == 173  # numbers from the README
    assert "no image name" in caplog.text
    counts = torch.bincount(m["targets"], minlength=7)
    assert {n: int(counts[LABELS.index(n)]) for n in majority} == majority
    s = read_ferplus_labels(path, "soft")
    assert s["targets"].shape == (soft_rows, 7)
    torch.testing.assert_close(s["targets"].sum(1), torch.ones(soft_rows))
    # majority rows are the soft rows without ties, and their label is the soft argmax
    index = {int(r): i for i, r in enumerate(s["row"])}
    soft_of_majority = s["targets"][[index[int(r)] for r in m["row"]]]
    assert torch.equal(soft_of_majority.argmax(1), m["targets"])
    usage_counts = {u: m["usage"].count(u) for u in ("Training", "PublicTest", "PrivateTest")}
    assert sum(usage_counts.values()) == len(m["targets"]) and min(usage_counts.values()) > 3000


# ----------------------------------------------------------------------------- real FER2013 folders

def test_fer2013_public_test_folder(shared_dir):
    root = shared_dir / "data" / "fer2013"
    if not (root / "test").is_dir():
        pytest.skip(f"{root}/test is absent")
    assert detect_format(root) == "folders"
    s = load_dataset(root, "test")  # Kaggle layout: test/ holds PublicTest
    assert s.images.shape == (3589, 1, 48, 48) and s.images.dtype == torch.uint8
    with pytest.raises(MissingSplit):  # and there is no val/: never test/ again under that name
        load_dataset(root, "val")
    assert s.class_counts().tolist() == [PUBLIC_TEST_COUNTS[c] for c in LABELS]
    # a real face has contrast; the whole set is not one constant
    assert s.images.float().std() > 20


# ----------------------------------------------------------------------------- load_dataset options

def test_load_dataset_option_errors(tmp_path):
    _save(tmp_path / "train" / "happy" / "a.png")
    with pytest.raises(ConfigError, match="split='validation'"):
        load_dataset(tmp_path, "validation")
    with pytest.raises(ConfigError, match="on_error='ignore'"):
        load_dataset(tmp_path, "train", on_error="ignore")
    with pytest.raises(ConfigError, match=r"--label-mode: for FER\+ label files \(fer2013new.csv\) only"):
        load_dataset(tmp_path, "train", label_mode="soft")
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="notes.csv: not a recognised dataset file"):
        load_dataset(tmp_path / "notes.csv")


# ----------------------------------------------------------------------------- synthetic faces

def test_synthetic_faces_shape_determinism_speed():
    synthetic_faces(8)  # warm-up (first torch ops allocate)
    start = time.process_time()  # CPU time of all threads: steady when other jobs share the machine
    s = synthetic_faces(3000, image_size=48, seed=0)
    elapsed = time.process_time() - start
    assert elapsed < 4.0, f"synthetic_faces(3000) took {elapsed:.2f} s CPU (budget: 2 s wall on 2 cores)"
    assert s.images.shape == (3000, 1, 48, 48) and s.images.dtype == torch.uint8 and s.source == "synthetic"
    counts = s.class_counts()
    assert counts.sum() == 3000 and counts.max() - counts.min() <= 1  # balanced
    again = synthetic_faces(3000, image_size=48, seed=0)
    assert torch.equal(s.images, again.images) and torch.equal(s.targets, again.targets)
    assert not torch.equal(s.images, synthetic_faces(3000, image_size=48, seed=1).images)
    assert synthetic_faces(5, image_size=24).images.shape == (5, 1, 24, 24)


def test_synthetic_faces_are_learnable():
    """A linear probe on pixels beats chance by far: the classes are drawn, not random."""
    torch.manual_seed(0)
    train, test = synthetic_faces(1400, image_size=24, seed=0), synthetic_faces(700, image_size=24, seed=1)
    x, xt = train.images.flatten(1).float() / 255, test.images.flatten(1).float() / 255
    probe = torch.nn.Linear(x.shape[1], 7)
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(probe(x), train.targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    accuracy = (probe(xt).argmax(1) == test.targets).float().mean().item()
    assert accuracy > 0.5, accuracy  # chance is 1/7 = 0.14 (measured: 0.70)


# ----------------------------------------------------------------------------- files that are not what they claim
# (one reader layer, minivit.data.imageset.open_csv / read_text_lines, for every CSV and label list: a bad file is
# one line naming it, whichever reader meets it)

def _fer_csv_bytes(rows):
    return b"emotion,pixels,Usage\n" + b"".join(
        f"{label},{' '.join(map(str, px))},{usage}\n".encode() for label, px, usage in rows)


def test_csv_that_is_not_utf8_names_file_offset_and_line(tmp_path):
    raw = bytearray(_fer_csv_bytes(_fer_rows()))
    lines = raw.split(b"\n")
    offset = len(b"\n".join(lines[:3])) + 1 + 5  # line 4 (data row 3), 5 bytes in: inside the pixels
    raw[offset] = 0xE9  # Latin-1 'é': not valid UTF-8 here
    path = tmp_path / "fer2013.csv"
    path.write_bytes(bytes(raw))
    for on_error in ("raise", "skip"):  # the whole file is unreadable: skipping rows cannot help
        with pytest.raises(DataError, match=rf"fer2013.csv: not UTF-8 text \(byte 0xe9 at offset {offset}, line 4\)"):
            load_dataset(path, "train", on_error=on_error)


def test_non_utf8_in_ferplus_and_rafdb_label_files(tmp_path):
    labels, pixels = _write_ferplus(tmp_path)
    labels.write_bytes(labels.read_bytes().replace(b"e.png", b"\xff.png"))
    with pytest.raises(DataError, match=r"fer2013new.csv: not UTF-8 text \(byte 0xff at offset \d+, line 6\)"):
        load_dataset(labels, "val", ferplus_images=pixels)
    raf = tmp_path / "raf"
    _rafdb(raf, ["train_00001.jpg 1", "train_00002.jpg 3"])
    label_file = raf / "EmoLabel" / "list_patition_label.txt"
    label_file.write_bytes(label_file.read_bytes() + b"train_00003.jpg \x81\n")
    with pytest.raises(DataError, match=r"list_patition_label.txt: not UTF-8 text \(byte 0x81 at offset 52, line 3\)"):
        load_dataset(raf, "train")


@pytest.mark.parametrize("row", [3, 9])  # a row in the middle, and the last one (the quote runs to the end)
def test_csv_with_an_unclosed_quote_names_file_and_line(tmp_path, row):
    rows = _fer_rows()
    lines = _fer_csv_bytes(rows).decode().splitlines()
    lines[row] = lines[row].replace(",", ',"', 1)  # emotion,"pixels... : the quote never closes
    path = tmp_path / "fer2013.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"fer2013.csv line {row + 1}: a quoted field is never closed"):
        load_dataset(path, "train", on_error="skip")


@pytest.mark.parametrize("content,message", [
    ("emotion,pixels,Usage\n", "fer2013.csv: no data rows \\(only a header\\)"),
    ("emotion,pixels,Usage\n\n\n", "fer2013.csv: no data rows \\(only a header\\)"),
    ("", "fer2013.csv: empty file \\(no header line\\)"),
])
def test_csv_without_data_rows(tmp_path, content, message):
    (tmp_path / "fer2013.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        load_dataset(tmp_path / "fer2013.csv", "train")
    labels = tmp_path / "fer2013new.csv"
    labels.write_text(FERPLUS_HEADER + "\n")
    with pytest.raises(DataError, match="fer2013new.csv: no data rows \\(only a header\\)"):
        read_ferplus_labels(labels)


@pytest.mark.parametrize("ending", ["\n", "\n\n", "\n\n\n", "\r\n\r\n", "\n \n"])
def test_fer2013_csv_with_trailing_blank_lines_is_accepted(tmp_path, ending):
    rows = _fer_rows()
    text = _fer_csv_bytes(rows).decode().rstrip("\n") + ending
    path = tmp_path / "fer2013.csv"
    path.write_bytes(text.replace("\n", "\r\n").encode() if "\r" in ending else text.encode())
    s = load_dataset(path, "train")
    want = [r for r in rows if r[2] == "Training"]
    assert s.targets.tolist() == [r[0] for r in want] and s.skipped == 0
    assert torch.equal(s.images[-1, 0], torch.tensor(want[-1][1], dtype=torch.uint8).view(48, 48))


def test_csv_with_no_rows_for_the_split(tmp_path):
    rows = [r for r in _fer_rows() if r[2] == "Training"]
    path = _write_fer_csv(tmp_path / "fer2013.csv", rows)
    with pytest.raises(DataError, match="fer2013.csv: no rows for split 'val' \\(Usage PublicTest\\)"):
        load_dataset(path, "val")


# ----------------------------------------------------------------------------- real-world folders

def test_mixed_sizes_are_resized_on_decode_uniform_keep_theirs(tmp_path):
    # the first images share a size, a later one differs: those decoded before must be resized too
    for i in range(3):
        _save(tmp_path / "train" / "angry" / f"{i}.png", value=40 * i, size=(60, 60))
    _save(tmp_path / "train" / "sad" / "big.png", value=200, size=(100, 80))
    _save(tmp_path / "train" / "sad" / "small.png", value=90, size=(32, 32))
    s = load_dataset(tmp_path, "train", resize_mixed_to=48)
    assert s.images.shape == (5, 1, 48, 48)
    # a constant image stays that constant when resized: the right pixels went to the right targets
    means = {int(t): [] for t in s.targets}
    for img, t in zip(s.images, s.targets):
        means[int(t)].append(int(img.float().mean().round()))
    assert sorted(means[LABELS.index("angry")]) == [0, 40, 80] and sorted(means[LABELS.index("sad")]) == [90, 200]
    for p in (tmp_path / "train" / "sad").iterdir():
        p.unlink()
    _save(tmp_path / "train" / "sad" / "x.png", size=(60, 60))
    assert load_dataset(tmp_path, "train", resize_mixed_to=48).images.shape == (4, 1, 60, 60)  # uniform: native


def test_on_error_skip_reports_the_count(tmp_path, caplog):
    _save(tmp_path / "train" / "happy" / "a.png")
    for name in ("x.jpg", "y.png"):
        (tmp_path / "train" / "happy" / name).write_bytes(b"not an image")
    with caplog.at_level(logging.WARNING, logger="minivit.data"):
        s = load_dataset(tmp_path, "train", on_error="skip")
    assert len(s) == 1 and s.skipped == 2 and "skipped 2 unreadable images" in caplog.text
    rows = _fer_rows()
    path = _write_fer_csv(tmp_path / "fer2013.csv", rows, bad_line="3,1 2 3,Training")
    fer = load_dataset(path, "train", on_error="skip")
    assert fer.skipped == 1 and len(fer) == sum(r[2] == "Training" for r in rows) - 1
    assert fer.subset(torch.tensor([0])).skipped == 1


class Bars:
    """Stands in for minivit.common.console.bar: records whether each bar was asked not to show."""

    def __init__(self):
        self.disabled = []

    def __call__(self, iterable=None, *args, show=True, **kwargs):
        self.disabled.append(not show)
        from tqdm import tqdm as real
        return real(iterable, *args, disable=True, **kwargs)


@pytest.mark.parametrize("progress", [False, True])
def test_progress_reaches_every_reader(tmp_path, monkeypatch, progress):
    import minivit.data.fer2013
    import minivit.data.imageset

    bars = Bars()
    monkeypatch.setattr(minivit.data.fer2013, "bar", bars)
    monkeypatch.setattr(minivit.data.imageset, "bar", bars)
    labels, pixels = _write_ferplus(tmp_path)
    _save(tmp_path / "faces" / "train" / "happy" / "a.png")
    _rafdb(tmp_path / "raf", ["train_00001.jpg 1"])
    load_dataset(pixels, "train", progress=progress)  # FER2013 CSV
    load_dataset(labels, "train", ferplus_images=pixels, progress=progress)  # FER+ joined with the CSV
    load_dataset(tmp_path / "faces", "train", progress=progress)  # image folders
    load_dataset(tmp_path / "raf", "train", progress=progress)  # RAF-DB
    assert len(bars.disabled) == 4  # one bar per CSV read or folder decoded
    if progress:  # the CSV bars show; decoding bars only from 2000 files on
        assert bars.disabled == [False, False, True, True]
    else:
        assert all(bars.disabled)


def test_decode_progress_bar_is_silenced(tmp_path, capsys, monkeypatch):
    from minivit.common.console import PROGRESS_ENV
    from minivit.data import decode_images

    monkeypatch.setenv(PROGRESS_ENV, "always")  # capsys is no terminal: ask for bars, as a user can

    _save(tmp_path / "a.png", size=(4, 4))
    paths = [tmp_path / "a.png"] * 2000  # enough files for a bar
    decode_images(paths, progress=False)
    assert capsys.readouterr().err == ""
    decode_images(paths, progress=True, desc="decoding test")
    assert "decoding test" in capsys.readouterr().err


# ----------------------------------------------------------------------------- decoding pixels

def _ramp16():
    return (np.arange(48 * 48, dtype=np.uint32).reshape(48, 48) * 65535 // (48 * 48 - 1)).astype(np.uint16)


def test_high_bit_depth_and_float_images_decode_to_their_8_bit_values(tmp_path, caplog):
    """16-bit grayscale keeps its top 8 bits (not clipped at 255), big-endian TIFFs stay gray, float
    images in [0, 1] are scaled, and pixels no image has are refused naming the file."""
    from minivit.data.imageset import to_uint8_array

    ramp = _ramp16()  # 0..65535
    cls = tmp_path / "train" / "happy"
    cls.mkdir(parents=True)
    Image.fromarray(ramp).save(cls / "a_ramp16.png")
    Image.frombytes("I;16B", (48, 48), ramp.astype(">u2").tobytes()).save(cls / "b_ramp16be.tif")
    Image.fromarray(ramp.astype(np.float32) / 65535).save(cls / "c_float.tif")
    s = load_dataset(tmp_path, "train")
    assert s.images.shape == (3, 1, 48, 48)  # all three stay 1 channel
    want = torch.from_numpy((ramp >> 8).astype(np.uint8))
    assert torch.equal(s.images[0, 0], want) and torch.equal(s.images[1, 0], want)
    assert (s.images[2, 0].int() - want.int()).abs().max() <= 1  # float: rounded rather than truncated
    assert s.images[0, 0].max() == 255 and len(s.images[0, 0].unique()) == 256  # the whole range, not clipped

    assert to_uint8_array(Image.fromarray(np.array([[0, 200]], np.int32))).tolist() == [[0, 200]]  # 8-bit in 'I'
    assert to_uint8_array(Image.fromarray(np.array([[0, 512]], np.int32))).tolist() == [[0, 2]]  # 16-bit in 'I'
    Image.fromarray(np.full((48, 48), 1000.0, np.float32)).save(cls / "d_bad.tif")
    with pytest.raises(DataError, match=r"d_bad.tif: 32-bit float pixels up to 1000 are beyond 0..255"):
        load_dataset(tmp_path, "train")
    with caplog.at_level(logging.WARNING, logger="minivit.data"):
        assert load_dataset(tmp_path, "train", on_error="skip").skipped == 1


def test_exif_orientation_is_applied_when_a_dataset_is_decoded(tmp_path):
    cls = tmp_path / "train" / "sad"
    cls.mkdir(parents=True)
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :20] = 255  # a white left third: where it ends up shows the rotation
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display" (a phone held upright)
    im.save(cls / "phone.jpg", exif=exif, quality=95)
    (img,) = load_dataset(tmp_path, "train").images  # (3, H, W)
    assert tuple(img.shape) == (3, 60, 40)  # upright: the sides swapped
    assert img[:, :20].float().mean() > 200 and img[:, -20:].float().mean() < 50  # white on top after rotation


def test_decimal_digits_only_in_label_codes(tmp_path):
    """'²'.isdigit() is True and int('²') raises: such codes are one-line DataErrors, never tracebacks."""
    from minivit.data.folders import folder_class
    from minivit.data.imageset import is_ascii_integer

    assert [is_ascii_integer(t) for t in ("0", "17", "²", "٣", "-1", " 1", "")] == [True, True] + [False] * 5
    with pytest.raises(DataError, match="unknown expression label '²'"):
        folder_class("²")
    rows = _fer_rows()
    path = _write_fer_csv(tmp_path / "fer2013.csv", rows, bad_line="²," + " ".join(["7"] * 2304) + ",Training")
    with pytest.raises(DataError, match="fer2013.csv line 5: unknown emotion label '²'"):
        load_dataset(path, "train")
    _rafdb(tmp_path / "raf", ["train_00001.jpg 1", "train_00002.jpg ²"])
    with pytest.raises(DataError, match="line 2: unknown label '²'"):
        load_dataset(tmp_path / "raf", "train")


def test_when_every_row_was_skipped_the_error_says_so(tmp_path):
    path = tmp_path / "fer2013.csv"
    path.write_text("emotion,pixels,Usage\n3,1 2 3,Training\n9,1 2,PublicTest\n")
    with pytest.raises(DataError, match=r"all 2 rows were skipped as malformed, none is left for split 'train'; "
                                        r"first: fer2013.csv line 2: expected 2304 pixel values, got 3"):
        load_dataset(path, "train", on_error="skip")


def test_one_list_of_image_suffixes_and_one_of_splits():
    import minivit.data.fer2013 as fer2013
    import minivit.data.formats as formats
    import minivit.inference.images as images
    from minivit.data.folders import IMAGE_SUFFIXES
    from minivit.data.labels import SPLITS

    assert images.IMAGE_SUFFIXES is IMAGE_SUFFIXES and ".pgm" in IMAGE_SUFFIXES and ".webp" in IMAGE_SUFFIXES
    assert fer2013.SPLITS is SPLITS and formats.SPLITS is SPLITS
