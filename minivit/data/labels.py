"""The one label order minivit uses, and how every dataset's labels map into it.

Canonical order = FER2013's integer codes 0..6. Every reader turns its own label
(a folder name, a RAF-DB code 1..7, an AffectNet index 0..7, a FER+ vote column)
into an index of LABELS through the single alias table below, so a spelling is
taught to minivit in one place.
"""

from ..common.errors import DataError

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # FER2013 codes 0..6
NUM_CLASSES = len(LABELS)
# The split names every reader accepts (each maps its own: FER2013's Usage, folder names, RAF-DB's prefixes).
SPLITS = ("train", "val", "test")


class MissingSplit(DataError):
    """A dataset without the split asked for: Kaggle's FER2013 folders and RAF-DB have no validation split.

    Never answered with another split in its place (a test set standing in for validation would pick the
    model it is then scored on); minivit.data.splits carves a validation split out of train instead.
    """

# Labels that appear in some datasets but are not one of the 7: recognised, then dropped.
# (contempt: AffectNet and FER+; unknown / NF ("not a face"): FER+ vote columns.)
DROPPED = ("contempt", "unknown", "nf")

# Every spelling seen in the wild -> canonical name (or a DROPPED name). Keys are lower-case;
# lookups strip whitespace and treat '-', '_' and spaces alike. Two-letter keys are JAFFE's file codes.
ALIASES = {
    "angry": "angry", "anger": "angry", "ang": "angry", "an": "angry",
    "disgust": "disgust", "disgusted": "disgust", "disgusting": "disgust", "dis": "disgust", "di": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear", "fe": "fear",
    "happy": "happy", "happiness": "happy", "joy": "happy", "hap": "happy", "ha": "happy",
    "sad": "sad", "sadness": "sad", "sa": "sad",
    "surprise": "surprise", "surprised": "surprise", "surprising": "surprise", "sur": "surprise", "su": "surprise",
    "neutral": "neutral", "neutrality": "neutral", "calm": "neutral", "ne": "neutral",
    "contempt": "contempt", "contemptuous": "contempt",
    "unknown": "unknown",
    "nf": "nf", "not_a_face": "nf", "notaface": "nf", "non_face": "nf", "nonface": "nf",
}

# Dataset-specific integer codes, as data: position i holds the name of code (i + offset).
FER2013_CODES = LABELS  # 0..6, already canonical
RAFDB_CODES = ("surprise", "fear", "disgust", "happy", "sad", "angry", "neutral")  # RAF-DB basic codes 1..7
AFFECTNET_CODES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry", "contempt")  # 0..7
FERPLUS_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                   "contempt", "unknown", "NF")  # vote columns of fer2013new.csv, in file order


def label_index(name: str) -> int | None:
    """Canonical index (0..6) of an expression label in any known spelling.

    Returns None for a recognised label outside the 7 (contempt, unknown, not-a-face), which
    readers drop. Raises DataError for a label it does not know.

    >>> label_index("Happiness"), label_index("surprised"), label_index("contempt")
    (3, 5, None)
    """
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    canonical = ALIASES.get(key, ALIASES.get(key.replace("_", "")))
    if canonical is None:
        raise DataError(f"unknown expression label {name!r} (known: {', '.join(LABELS + DROPPED)})")
    return None if canonical in DROPPED else LABELS.index(canonical)


def code_table(codes: tuple[str, ...]) -> list[int | None]:
    """Map a dataset's code order (names by position) to canonical indices, None where dropped.

    >>> code_table(RAFDB_CODES)  # RAF-DB code 1 ('surprise') is canonical 5, ...
    [5, 2, 1, 3, 4, 0, 6]
    """
    return [label_index(c) for c in codes]
