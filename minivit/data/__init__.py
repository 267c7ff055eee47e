"""Facial-expression datasets decoded into memory, with one label order for all of them.

    from minivit.data import load_dataset, synthetic_faces, LABELS
    train = load_dataset("../shared/data/fer2013", "train")   # ImageSet: uint8 (N, 1, 48, 48) + int64 (N,)

See docs/data.md for the formats, the label mappings and the on_error policy.
"""

from .fer2013 import load_fer2013_csv, read_fer2013_rows
from .ferplus import load_ferplus, read_ferplus_labels
from .folders import load_image_folder
from .imageset import ImageSet, decode_images
from .labels import (AFFECTNET_CODES, ALIASES, DROPPED, FERPLUS_COLUMNS, LABELS, NUM_CLASSES, RAFDB_CODES,
                     code_table, label_index)
from .formats import detect_format, load_dataset
from .rafdb import load_rafdb
from .synthetic import synthetic_faces, synthetic_split

__all__ = [
    "LABELS", "NUM_CLASSES", "ALIASES", "DROPPED", "RAFDB_CODES", "AFFECTNET_CODES", "FERPLUS_COLUMNS",
    "label_index", "code_table", "ImageSet", "decode_images", "load_dataset", "detect_format",
    "load_fer2013_csv", "read_fer2013_rows", "load_ferplus", "read_ferplus_labels", "load_image_folder",
    "load_rafdb", "synthetic_faces", "synthetic_split",
]
