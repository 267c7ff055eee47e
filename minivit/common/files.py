"""Writing files so that nothing is ever half-written, and naming what is in the way when it cannot be.

Every file minivit writes -- checkpoints, JSON reports, PNGs, ONNX graphs, videos, the decoded cache's
index -- goes through ``atomic_file`` (or ``atomic_write``, the same for a function that writes a path):
the bytes go to a temp file beside the target, are flushed to the disk (fsync), and the temp file then
replaces the target with ``os.replace``. A reader never sees a half-written file, and a crash -- of the
process or of the machine -- leaves the old one intact. An OSError (a file where a folder should be, no
permission, a full disk) becomes a one-line OutputError naming the file.

Example:
    >>> import json, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "reports", "metrics.json")
    >>> write_json({"accuracy": 0.5}, path)
    >>> json.load(open(path))
    {'accuracy': 0.5}
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError

# The name atomic_write gives its temp files: .<name>.<random>.tmp beside the target. A run removes
# the ones an interrupted write left behind (minivit.checkpoints.RunFolder.clean_temp_files).
TEMP_GLOB = ".*.tmp"


def hash_file(path, digest=None):
    """sha256 of a file's bytes, read in 1 MiB chunks; pass ``digest`` to continue one (a resumed download).

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x"); _ = open(path, "wb").write(b"abc")
    >>> hash_file(path).hexdigest()[:16]
    'ba7816bf8f01cfea'
    """
    digest = digest or hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest


def file_in_the_way(target) -> Path | None:
    """The file that sits where a folder of ``target``'s path should be (``notes.txt`` for
    ``notes.txt/sub/out.png``), else None: the deepest ancestor that exists, when it is not a folder."""
    existing = next((p for p in Path(target).parents if p.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None


def cannot_write(target, e: OSError) -> OutputError:
    """The one-line error for an OSError while writing ``target`` (a file in the way, no permission, disk full).

    >>> str(cannot_write("out.png", PermissionError(13, "Permission denied", "out.png")))
    'out.png: cannot write it (Permission denied: out.png)'
    """
    blocker = file_in_the_way(target)
    if blocker is not None:
        what = f"{blocker} is a file, not a folder"
    else:
        what = (e.strerror or type(e).__name__) + (f": {e.filename}" if e.filename else "")
    return OutputError(f"{target}: cannot write it ({what})")


def ensure_folder(folder, target=None) -> Path:
    """Create ``folder`` (and its parents) for writing ``target`` (default: the folder itself); one-line
    OutputError naming it when that is impossible."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise cannot_write(target or folder, e) from None
    return folder


@contextmanager
def atomic_file(path, *, keep_suffix: bool = False):
    """Yield a temp path beside ``path`` to write; when the block ends it is fsynced and replaces ``path``,
    when it raises it is removed (the old file, if any, intact). The temp file is ``.<name>.<random>.tmp``
    (TEMP_GLOB), or with ``keep_suffix`` ``.<stem>.<random><suffix>`` for writers that pick their format by
    the name (FFmpeg's .mp4). An OSError is a one-line OutputError naming ``path``.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "notes.txt")
    >>> with atomic_file(path) as tmp:
    ...     _ = open(tmp, "w").write("done")
    >>> open(path).read(), sorted(os.listdir(os.path.dirname(path)))
    ('done', ['notes.txt'])
    """
    path = Path(path)
    ensure_folder(path.parent, path)
    names = dict(prefix=f".{path.stem}.", suffix=path.suffix) if keep_suffix else dict(prefix=f".{path.name}.",
                                                                                        suffix=".tmp")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, **names)
    except OSError as e:
        raise cannot_write(path, e) from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        fsync(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
        fsync(path.parent)  # the rename itself reaches the disk
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise cannot_write(path, e) from None
        raise


def fsync(path) -> None:
    """Flush a file's (or a folder's: its entries) written bytes to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, write) -> None:
    """``write(tmp_path)`` inside ``atomic_file(path)``: a reader never sees a half-written file."""
    with atomic_file(path) as tmp:
        write(tmp)


def write_json(d, path) -> None:
    """Atomically write JSON (configs, metrics, histories); paths and other objects as strings."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(d, indent=2, default=str) + "\n"))


__all__ = ["atomic_file", "atomic_write", "fsync", "write_json", "ensure_folder", "file_in_the_way", "cannot_write", "hash_file", "TEMP_GLOB"]
