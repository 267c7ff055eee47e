"""Facial-expression datasets decoded once -- into memory, or into an on-disk cache every process maps --
with one label order for all of them.

    from minivit.data import load_dataset, synthetic_faces, LABELS
    train = load_dataset("../shared/data/fer2013", "train")   # ImageSet: uint8 (N, 1, 48, 48) + int64 (N,)
    splits = load_splits("../shared/data/fer2013")            # train, val (carved out of train/), test

See docs/data.md for the formats, the label mappings, the on_error policy and the split rule (splits.py).

    labels.py              the one label order (LABELS) and every dataset's codes mapped onto it
    imageset.py            ImageSet (uint8 images + targets) and the one decoder of image files
    fer2013.py, ferplus.py, rafdb.py, folders.py, formats.py   the readers, and which one a path needs
    splits.py              train / val / test: the dataset's own, or val carved out of train (one rule)
    provenance.py          what a model was trained on, and the note when other data differs in kind
    synthetic.py           procedurally drawn faces (never real ones): the demo and the tests
    augment.py             batched augmentation on the device, CutMix/MixUp, the one preprocessing
    cache.py               the decoded cache: an image folder decoded once into a uint8 file that later runs,
                           and every process on the machine, memory-map (sets bigger than memory, DDP)
    prefetch.py            batches gathered ahead by a thread from memory or a map, into pinned memory
"""

from .fer2013 import load_fer2013_csv, read_fer2013_rows
from .ferplus import load_ferplus, read_ferplus_labels
from .folders import list_image_folder, load_image_folder
from .imageset import ImageSet, RowView, decode_images
from .labels import (AFFECTNET_CODES, ALIASES, DROPPED, FERPLUS_COLUMNS, LABELS, NUM_CLASSES, RAFDB_CODES,
                     MissingSplit, code_table, label_index)
from .formats import detect_format, list_split, load_dataset
from .rafdb import list_rafdb, load_rafdb
from .synthetic import synthetic_faces, synthetic_split, synthetic_test_set
from .splits import DataSplits, carve_validation, load_run_split, load_splits, split_label
from .provenance import data_kind, kind_note, trained_on

__all__ = [
    "LABELS", "NUM_CLASSES", "ALIASES", "DROPPED", "RAFDB_CODES", "AFFECTNET_CODES", "FERPLUS_COLUMNS",
    "label_index", "code_table", "ImageSet", "RowView", "decode_images", "load_dataset", "detect_format", "list_split",
    "list_image_folder", "list_rafdb",
    "load_fer2013_csv", "read_fer2013_rows", "load_ferplus", "read_ferplus_labels", "load_image_folder",
    "load_rafdb", "synthetic_faces", "synthetic_split", "synthetic_test_set", "MissingSplit", "DataSplits",
    "carve_validation", "load_splits", "load_run_split", "split_label", "trained_on", "data_kind", "kind_note",
]
