"""The decoded cache: an image dataset decoded once into an on-disk uint8 array that later runs, and every
process on the machine, memory-map instead of decoding again.

    source = CacheSource(split_dir, paths, targets)     # the listing: files and labels, nothing decoded
    train = open_cache(source, 224)                     # an ImageSet whose images map the cache file

The first call decodes every file in parallel (a tqdm bar; unreadable files follow ``on_error``) into
``<cache_dir>/<key>/``; a later call with the same files (names, sizes, modification times), labels, size and
channels checks the cache and maps it read-only, so it starts in about a second and holds no private copy of
the pixels: the pages belong to the page cache, shared by every process that maps the file.

The images are exactly what ``decode_images(paths, resize_mixed_to=size)`` gives in memory: images of one
size keep it, and where sizes differ every image is resized to ``size`` (Pillow's antialiased bicubic); one
colour file makes the set colour. A build reads every file's header first (mode, size, EXIF orientation:
about 1% of the decoding time) so that images stream to disk at their final shape, never all in memory.

Readers list a split without decoding it (minivit.data.formats.list_split: image folders, RAF-DB);
``load_dataset(..., cache=CachePlan(folder))`` then opens it through open_or_decode: open_cache, or where
the folder cannot be written, the same images decoded into memory when they fit (decode_source), else a
one-line refusal. The training command does this for every image folder unless ``--no-cache``.

Another file list, a changed file (size or mtime), other labels, size or channels give another key: a new
cache, and one line saying what changed since the most recent cache of the same name (``index/``). Caches
of files that changed are then removed; those at another size, channel count or labels stay valid. A whole
cache is also used from a folder this process cannot write (one shared read-only between nodes).

On disk, ``<cache_dir>/<key>/``, where key is the sha256 of the manifest (first 32 hex digits):

    images.u8      raw uint8 (N, C, H, W) in C order, no header: map_private maps it as is (so would np.memmap)
    targets.npy    int64 (N,) or float32 (N, K) targets of the kept images (numpy format, no pickles)
    kept.npy       int64 (N,): which listed files the rows are (under on_error="skip", unreadable ones are not)
    manifest.json  what it was built from: every file with size and mtime_ns, the labels' sha256, the size,
                   the resize rule, the channels, the minivit, Pillow and format versions
    header.json    the shape, sha256 of the other files, a crc32 per 4 MiB block of images.u8, and its own sha256

Safety. A build writes into ``.building-<key>-<host>-<pid>/`` beside the final folder, fsyncs, and renames
it into place: a killed build leaves only that temporary folder, which no reader opens and the next
builder removes. Builders of one key take an flock on ``locks/<key>.lock`` (the kernel releases it when a
process dies, so no lock goes stale; Linux NFS clients turn flock into NFS locks, so nodes sharing a
folder over NFS also take turns): a second process, or another node, waits and then maps what the first
built. Opening checks the header's own sha256, the manifest byte for byte, the sha256 of the small files,
the exact size of images.u8, and the crc32 of its first, last and 8 randomly chosen blocks: a truncated,
extended or overwritten file is rebuilt (one warning line says why), never read as garbage. Checking
every block at every start would read the whole file (about a minute for 43 GB), so that is
``verify="full"``; the random sample still visits every block over many starts.

Example (three PNGs of mixed sizes, cached at 32x32):

    >>> import tempfile
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> paths = [root / f"{i}.png" for i in range(3)]
    >>> for i, p in enumerate(paths):
    ...     Image.new("RGB", (40 + 8 * i, 40), (60 * i, 90, 120)).save(p)
    >>> source = CacheSource(root, paths, torch.tensor([3, 0, 6]))
    >>> s = open_cache(source, 32, cache_dir=root / "cache", progress=False)
    >>> s.images.shape, s.targets.tolist(), s.ids
    (torch.Size([3, 3, 32, 32]), [3, 0, 6], ('0.png', '1.png', '2.png'))
    >>> again = open_cache(source, 32, cache_dir=root / "cache", progress=False)   # mapped, not decoded
    >>> bool((again.images == s.images).all())
    True
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import socket
import tempfile
import time
import zlib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np
import PIL
import torch
from PIL import Image

from ..common.errors import ConfigError, DataError, OutputError
from ..common.files import atomic_write, fsync
from ..common.console import bar
from ..common.system import available_memory, exclusive, map_private, ordered_map
from ..common.text import counted
from .imageset import SKIP_HINT, ImageSet, Problems, decode_file, decode_images, probe_file, resize_array
from .labels import LABELS

log = logging.getLogger("minivit.data")

FORMAT = 1  # bump when the files' layout changes: every older cache then misses and is rebuilt
BLOCK_BYTES = 4 << 20  # images.u8 is checksummed in blocks of this many bytes
SAMPLED_BLOCKS = 8  # random blocks checked at each open, besides the first and the last
CACHE_ENV = "MINIVIT_CACHE_DIR"
RESIZE_RULE = ("decoded upright (EXIF), grayscale kept 1 channel unless a file is colour; one size for all "
               "keeps it, mixed sizes are each resized to the size with Pillow's antialiased bicubic filter")
CHUNK = 32  # files per task handed to a decoding thread (minivit.common.system.ordered_map)


class CacheDirError(OutputError):
    """The cache folder cannot be created or written: the caller may decode into memory instead
    (open_or_decode). ``folder`` is the folder, ``reason`` what the system said."""

    def __init__(self, folder: Path, reason: str):
        super().__init__(f"{folder}: cannot write the decoded-image cache there ({reason}); point --cache-dir "
                         f"(or {CACHE_ENV}) at a writable folder, or use --no-cache")
        self.folder, self.reason = folder, reason


@dataclass(frozen=True)
class CachePlan:
    """Where load_dataset keeps the image folders it decodes (None: decode into memory, as before the cache).

    folder:    the cache folder; None = default_cache_dir().
    processes: how many processes on this machine read the same data (torchrun's LOCAL_WORLD_SIZE): where
               the folder cannot be written, each would decode its own copy into memory, and that must fit.
    """

    folder: Path | None = None
    processes: int = 1


def default_cache_dir() -> Path:
    """``$MINIVIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/minivit``, else ``~/.cache/minivit``: one per user."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "minivit"


@dataclass
class CacheSource:
    """A dataset split as listed, before anything is decoded: image files in dataset order and their targets.

    root:    the folder the files are under; manifest names and default ids are relative to it.
    paths:   the image files, in dataset order. targets: int64 (N,) or float32 (N, K), one per path.
    ids:     a stable name per file (ImageSet.ids); default: its path relative to root.
    name:    what the set is called (ImageSet.source, messages); default: root. Part of the key, and which
             earlier cache a new one is compared with (and replaces, when only the files changed).
    label_files: files the targets were read from (a CSV, a label list): a change to one invalidates too.
    skipped: items the listing already left out (unknown class folders), added to ImageSet.skipped.
    """

    root: Path
    paths: Sequence[Path]
    targets: torch.Tensor
    classes: tuple[str, ...] = LABELS
    ids: tuple[str, ...] | None = None
    name: str | None = None
    label_files: tuple[Path, ...] = ()
    skipped: int = 0

    def __post_init__(self):
        self.root = Path(self.root)
        self.name = self.name or str(self.root)
        if len(self.targets) != len(self.paths):
            raise DataError(f"{self.name}: {len(self.paths)} image files but {len(self.targets)} targets")
        if not self.paths:
            raise DataError(f"{self.name}: no image files to cache")
        if self.ids is not None and len(self.ids) != len(self.paths):
            raise DataError(f"{self.name}: {len(self.paths)} image files but {len(self.ids)} ids")


def open_cache(source: CacheSource, size: int | tuple[int, int], *, channels: int | None = None,
               cache_dir: str | Path | None = None, on_error: str = "raise", progress: bool = True,
               verify: str = "sample") -> ImageSet:
    """The ImageSet of ``source`` decoded at ``size``, memory-mapped from the cache (built first if needed).

    size: S or (h, w), the training size (images all of one size keep theirs, as in memory).
    channels: None = as decoded (3 if any file is colour, else 1); 3 repeats grayscale, 1 converts colour
    to Pillow's luminance (rounded to uint8, so not bit-identical to the GPU's float conversion).
    cache_dir: default ``default_cache_dir()``; a folder that cannot be written is a CacheDirError.
    on_error: "raise" or "skip" unreadable files, as in decode_images; a cache built with skips reports
    them again on every open (and raises under "raise"). verify: "sample" or "full" block checks.
    """
    hw, channels = _check_options(size, channels, on_error, verify)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    names = _names(source)
    blob = _canonical(make_manifest(source, names, hw, channels))  # the dict's per-file lists are freed here
    folder = cache_dir / hashlib.sha256(blob).hexdigest()[:32]
    header, problem = _check(folder, blob, verify)  # a whole cache is used even from a read-only folder
    if header is None:
        _writable(cache_dir)
        with exclusive(cache_dir / "locks" / f"{folder.name}.lock",
                       lambda: log.info("waiting for another process building the decoded cache %s", folder)):
            header, problem = _check(folder, blob, verify)  # built while this process waited
            if header is None:
                manifest = json.loads(blob)
                _say_why(cache_dir, folder, manifest, problem)
                header = _build(source, manifest, blob, folder, on_error, progress)
                _remember(cache_dir, folder, manifest)
    return _mapped_set(source, names, folder, header, on_error)


def open_or_decode(source: CacheSource, size: int | tuple[int, int], plan: CachePlan, *, on_error: str = "raise",
                   progress: bool = True) -> ImageSet:
    """open_cache(source, size) in ``plan.folder``; where that folder cannot be written and no whole cache of
    the source is there, decode into memory instead when that fits, with a warning naming the folder, else
    a CacheDirError (one line, before anything is decoded) naming the folder and the sizes.

    Fits: ``plan.processes`` copies of N x 3 x H x W bytes (colour at the training size: the most a folder
    of mixed sizes can take) within half of the memory available now (available_memory), the other half
    left for the model, its optimiser state, the activations and the rest of the machine.
    """
    try:
        return open_cache(source, size, cache_dir=plan.folder, on_error=on_error, progress=progress)
    except CacheDirError as e:
        h, w = (size, size) if isinstance(size, int) else size
        need, available = len(source.paths) * 3 * h * w, available_memory()
        copies = f"{plan.processes} processes x " if plan.processes > 1 else ""
        sizes = (f"{len(source.paths):,} images at {h}x{w} take up to {copies}{_gb(need)} in memory, "
                 f"{_gb(available)} is available")
        if need * plan.processes > available // 2:
            raise CacheDirError(e.folder, f"{e.reason}; decoding {source.name} into memory instead is refused: "
                                f"{sizes}") from None
        log.warning("%s: cannot write the decoded-image cache there (%s); decoding %s into memory instead (%s; "
                    "--cache-dir picks another folder)", e.folder, e.reason, source.name, sizes)
        return decode_source(source, resize_mixed_to=size, on_error=on_error, progress=progress)


def decode_source(source: CacheSource, *, resize_mixed_to: int | tuple[int, int] | None = None,
                  on_error: str = "raise", progress: bool = True, desc: str | None = None) -> ImageSet:
    """The listed files decoded into this process's memory (decode_images): the ImageSet open_cache maps,
    bit for bit, without a cache."""
    problems = Problems(on_error, "unreadable image", f"in {source.name}")
    images, kept = decode_images(list(source.paths), resize_mixed_to=resize_mixed_to, problems=problems,
                                 desc=desc or f"decoding {Path(source.name).name}", progress=progress)
    ids = source.ids if source.ids is not None else _names(source)
    return ImageSet(images, source.targets[kept], tuple(source.classes), source=source.name,
                    skipped=source.skipped + problems.count, ids=tuple(ids[i] for i in kept))


def _check_options(size, channels, on_error, verify) -> tuple[tuple[int, int], int | None]:
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in hw):
        raise ConfigError(f"size={size!r}: expected a positive int or (h, w)")
    if channels not in (None, 1, 3):
        raise ConfigError(f"channels={channels!r}: expected None (as decoded), 1 or 3")
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error={on_error!r}: expected 'raise' or 'skip'")
    if verify not in ("sample", "full"):
        raise ConfigError(f"verify={verify!r}: expected 'sample' or 'full'")
    return hw, channels


def _writable(cache_dir: Path) -> None:
    """Create cache_dir if needed and write a file there; CacheDirError naming it if that fails."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=cache_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CacheDirError(cache_dir, e.strerror or str(e)) from None


def _names(source: CacheSource) -> list[str]:
    """Each file's name for the manifest: relative to root where it is under root, else absolute."""
    root = str(source.root)
    prefix = root + os.sep
    return [p[len(prefix):] if p.startswith(prefix) else os.path.abspath(p) for p in map(str, source.paths)]


def _stat(path) -> list[int]:
    """[size, mtime_ns] of a file; [-1, 0] for one that cannot be read (decoding then reports it)."""
    try:
        st = os.stat(path)
    except OSError:
        return [-1, 0]
    return [st.st_size, st.st_mtime_ns]


def make_manifest(source: CacheSource, names: list[str], hw: tuple[int, int], channels: int | None) -> dict:
    """Everything the cached bytes depend on; its canonical JSON's sha256 names the cache folder."""
    targets = source.targets.detach().cpu().contiguous()
    try:
        version = metadata.version("minivit")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        version = "unknown"
    return {
        "format": FORMAT, "minivit": version, "pillow": PIL.__version__,
        "name": source.name, "root": os.path.abspath(source.root),
        "size": list(hw), "channels": channels or "as decoded", "resize": RESIZE_RULE,
        "classes": list(source.classes),
        "targets": {"dtype": str(targets.dtype), "shape": list(targets.shape),
                    "sha256": hashlib.sha256(targets.numpy().tobytes()).hexdigest()},
        "label_files": [[os.path.abspath(p), *_stat(p)] for p in source.label_files],
        "files": [[name, *_stat(path)] for name, path in zip(names, source.paths)],
    }


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- checking an existing cache ----

def _check(folder: Path, blob: bytes, verify: str) -> tuple[dict | None, str]:
    """(header, "") for a whole cache built from exactly this manifest, else (None, what is wrong)."""
    if not folder.is_dir():
        return None, ""
    try:
        header = json.loads((folder / "header.json").read_bytes())
        body = {k: v for k, v in header.items() if k != "header_sha256"}
        if header.get("header_sha256") != _sha(_canonical(body)) or header.get("format") != FORMAT:
            return None, "header.json does not match its checksum"
        if not _holds(folder / "manifest.json", blob):
            return None, "manifest.json differs from the files it was built from"
        for name in ("targets.npy", "kept.npy"):
            if _sha((folder / name).read_bytes()) != header["sha256"][name]:
                return None, f"{name} does not match its checksum"
        expected = int(np.prod(header["shape"]))
        actual = (folder / "images.u8").stat().st_size
        if actual != expected:
            return None, f"images.u8 is {actual} bytes, {expected} expected"
        block = header["block_bytes"]  # as it was checksummed
        bad = _bad_block(folder / "images.u8", header["block_crc32"], block, verify)
        if bad is not None:
            return None, f"images.u8 bytes {bad * block}..{(bad + 1) * block} do not match their checksum"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, f"cannot read it ({type(e).__name__}: {e})"
    return header, ""


def _holds(path: Path, data: bytes, piece: int = 1 << 20) -> bool:
    """Whether the file holds exactly ``data``, read a piece at a time (a manifest of 290,000 files is ~20 MB)."""
    if path.stat().st_size != len(data):
        return False
    with open(path, "rb") as f:
        return all(f.read(piece) == data[i:i + piece] for i in range(0, len(data), piece))


def _bad_block(path: Path, sums: list[int], block: int, verify: str) -> int | None:
    """The first checked ``block``-byte block of ``path`` whose crc32 is not the recorded one, or None."""
    count = len(sums)
    if verify == "full" or count <= SAMPLED_BLOCKS + 2:
        blocks = range(count)
    else:  # first and last (where a torn write would show) and a fresh random sample each time
        blocks = sorted({0, count - 1, *random.Random().sample(range(1, count - 1), SAMPLED_BLOCKS)})
    fd = os.open(path, os.O_RDONLY)
    try:
        for b in blocks:
            if zlib.crc32(os.pread(fd, block, b * block)) != sums[b]:
                return b
    finally:
        os.close(fd)
    return None


# ---- telling why a new cache is built, and replacing superseded ones ----

def _index_path(cache_dir: Path, name: str) -> Path:
    return cache_dir / "index" / f"{_sha(name.encode())[:20]}.json"


def _say_why(cache_dir: Path, folder: Path, manifest: dict, problem: str) -> None:
    """One line: why this run decodes (damaged cache, changed source, other size or channels, first run)."""
    if problem:
        log.warning("decoded cache %s is damaged (%s): rebuilding it", folder, problem)
        return
    for key in _read_index(cache_dir, manifest["name"]):
        try:
            old = json.loads((cache_dir / key / "manifest.json").read_bytes())
        except (OSError, ValueError):
            continue
        log.warning("decoded cache for %s: %s since %s; building a new one in %s",
                    manifest["name"], _difference(old, manifest), cache_dir / key, folder)
        return
    # the first cache of this name: the build's own line (_build) says what and where


def _difference(old: dict, new: dict) -> str:
    """What differs between two manifests, in words: '2 files added (first: happy/x.jpg), size 224x224 -> 384x384'."""
    changes = []
    for field, what in (("format", "cache format"), ("minivit", "minivit"), ("pillow", "Pillow"),
                        ("size", "size"), ("channels", "channels"), ("resize", "resize rule")):
        if old.get(field) != new.get(field):
            show = (lambda v: "x".join(map(str, v))) if field == "size" else str
            changes.append(f"{what} {show(old.get(field))} -> {show(new.get(field))}")
    before = {f[0]: f[1:] for f in old.get("files", [])}
    after = {f[0]: f[1:] for f in new["files"]}
    for names, verb in (([n for n in after if n not in before], "added"),
                        ([n for n in before if n not in after], "removed"),
                        ([n for n in after if n in before and before[n] != after[n]], "modified")):
        if names:
            changes.append(f"{len(names)} file{'s' * (len(names) > 1)} {verb} (first: {names[0]})")
    if old.get("label_files") != new["label_files"]:
        changes.append("label files changed")
    if old.get("targets") != new["targets"] or old.get("classes") != new["classes"]:
        changes.append("labels changed")
    return ", ".join(changes) or "the file order changed"


def _read_index(cache_dir: Path, name: str) -> list[str]:
    """Keys of the caches built for ``name``, the most recent first."""
    try:
        return json.loads(_index_path(cache_dir, name).read_bytes())["keys"]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _remember(cache_dir: Path, folder: Path, manifest: dict) -> None:
    """Record the new cache first in the index for its name, and remove the ones it makes outdated: built
    from other files or by another version (only putting the old files back would make them valid again;
    a process that has one mapped keeps reading it, as an unlinked file stays readable)."""
    path = _index_path(cache_dir, manifest["name"])
    with exclusive(path.with_suffix(".lock"), lambda: log.info("waiting for the cache index")):
        kept = []
        for key in _read_index(cache_dir, manifest["name"]):
            if key == folder.name or not (cache_dir / key).is_dir():
                continue
            try:
                old = json.loads((cache_dir / key / "manifest.json").read_bytes())
            except (OSError, ValueError):
                old = {}
            if any(old.get(f) != manifest[f] for f in ("files", "label_files", "format", "minivit", "pillow")):
                _remove(cache_dir / key, f".stale-{key}-{os.getpid()}")
                log.info("removed the outdated decoded cache %s", cache_dir / key)
            else:  # the same files at another size, channel count or label mode: still valid
                kept.append(key)
        index = _canonical({"name": manifest["name"], "keys": [folder.name, *kept][:16]})
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(index))


def _remove(folder: Path, trash_name: str) -> None:
    """Delete a cache folder: renamed out of the way first (atomic), so no reader sees half of it."""
    trash = folder.parent / trash_name
    try:
        os.rename(folder, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


# ---- building ----

def _build(source: CacheSource, manifest: dict, blob: bytes, folder: Path, on_error: str, progress: bool) -> dict:
    """Decode the source into a temporary folder beside ``folder``, then rename it into place. Returns its header.
    Only called under the key's lock, so any other temporary folder for this key is a killed build's."""
    started = time.perf_counter()
    cache_dir = folder.parent
    for leftover in cache_dir.glob(f".building-{folder.name}-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if folder.exists():  # damaged: moved aside, never overwritten in place under a reader
        _remove(folder, f".stale-{folder.name}-{os.getpid()}")
    problems = Problems(on_error, "unreadable image", f"in {source.name}")
    paths, shapes = _read_headers(source, problems, progress)
    channels, hw = _decide(shapes, manifest)
    _check_space(cache_dir, len(paths) * channels * hw[0] * hw[1], source.name)
    log.info("building the decoded cache of %s (%d images at %dx%d, %d channel%s: %s) in %s", source.name,
             len(paths), *hw, channels, "s" * (channels > 1), _gb(len(paths) * channels * hw[0] * hw[1]), folder)
    tmp = cache_dir / f".building-{folder.name}-{socket.gethostname()}-{os.getpid()}"
    tmp.mkdir()
    try:
        kept, sums, decoded = _write_images(tmp / "images.u8", paths, channels, hw, problems, progress, source.name)
        if kept and _decide(decoded, manifest) != (channels, hw):
            # a file whose header reads but whose pixels do not swayed the plan (an odd size, or colour):
            # decode again by what the readable files decide, as decode_images would
            channels, hw = _decide(decoded, manifest)
            problems = Problems(on_error, "unreadable image", f"in {source.name}")
            kept, sums, _ = _write_images(tmp / "images.u8", paths, channels, hw, problems, progress, source.name)
        # the skips are said when the cache is opened (_mapped_set), at this start as at every later one: once
        if not kept:
            problems.report()
            raise DataError(f"{source.name}: no readable images among {len(source.paths)} files "
                            f"(first problem: {problems.first})")
        kept = np.array([paths[i][0] for i in kept], dtype=np.int64)
        header = _write_rest(tmp, source, blob, kept, [len(kept), channels, *hw], sums, problems)
        header["build_seconds"] = round(time.perf_counter() - started, 1)
        header["header_sha256"] = _sha(_canonical(header))
        _save_bytes(tmp / "header.json", _canonical(header))
        fsync(tmp)
        os.rename(tmp, folder)
        fsync(cache_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return header


def _write_rest(tmp: Path, source: CacheSource, blob: bytes, kept: np.ndarray, shape: list[int], sums: list[int],
                problems: Problems) -> dict:
    """targets.npy, kept.npy and manifest.json beside images.u8; returns the header (without its checksum)."""
    _save_npy(tmp / "targets.npy", source.targets.detach().cpu().numpy()[kept])
    _save_npy(tmp / "kept.npy", kept)
    _save_bytes(tmp / "manifest.json", blob)
    return {"format": FORMAT, "shape": shape, "block_bytes": BLOCK_BYTES, "block_crc32": sums,
            "skipped": problems.count, "first_problem": problems.first,
            "sha256": {n: _sha((tmp / n).read_bytes()) for n in ("targets.npy", "kept.npy")},
            "built_by": f"{socket.gethostname()}:{os.getpid()}"}


def _read_headers(source: CacheSource, problems: Problems, progress: bool) -> tuple[list, set]:
    """Every file's header, not its pixels: ([(index, path) of the readable files], {(channels, (h, w))}).

    Read before decoding so that images stream to disk at their final shape (see _decide).
    """
    readable, shapes = [], set()
    probes = ordered_map(probe_file, source.paths, chunk=CHUNK)
    checking = bar(probes, total=len(source.paths), desc=f"checking {Path(source.name).name}", unit="file",
                   show=progress, leave=False, mininterval=0.5)
    for i, result in enumerate(checking):
        if isinstance(result, str):
            problems(result)
            continue
        shapes.add(result)
        readable.append((i, source.paths[i]))
    if not readable:
        problems.report()
        raise DataError(f"{source.name}: no readable images among {len(source.paths)} files "
                        f"(first problem: {problems.first})")
    return readable, shapes


def _decide(shapes: set, manifest: dict) -> tuple[int, tuple[int, int]]:
    """(channels, (h, w)) of the cache from the files' own {(channels, (h, w))}, by decode_images' rule:
    colour if any file is colour (unless channels was given), their size if all agree, else the requested one."""
    channels = manifest["channels"] if manifest["channels"] in (1, 3) else max(c for c, _ in shapes)
    sizes = {hw for _, hw in shapes}
    return channels, sizes.pop() if len(sizes) == 1 else tuple(manifest["size"])


def _check_space(cache_dir: Path, need: int, name: str) -> None:
    free = shutil.disk_usage(cache_dir).free
    if need + (need >> 6) + (64 << 20) > free:  # keep ~1.5% + 64 MiB for the rest of the system
        raise OutputError(f"{cache_dir}: the decoded cache of {name} needs {_gb(need)} but that disk has "
                          f"{_gb(free)} free; free some space, point --cache-dir (or {CACHE_ENV}) at a larger "
                          f"disk, or use --no-cache")


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def _write_images(path: Path, paths: list, channels: int, hw: tuple[int, int], problems: Problems,
                  progress: bool, name: str) -> tuple[list[int], list[int], set]:
    """Decode ``paths`` ((index, path) pairs) in threads and write them to ``path`` in order, checksumming
    blocks as they pass. Memory stays bounded whatever N: only a few chunks are decoded ahead of the writer.
    Returns (positions in ``paths`` that decoded, block crc32s, {(channels, (h, w))} as decoded)."""
    sums, kept, shapes = _BlockSums(), [], set()
    results = ordered_map(lambda item: _decode_to(item[1], channels, hw), paths, chunk=CHUNK)
    try:
        with open(path, "wb") as f, bar(total=len(paths), desc=f"caching {Path(name).name}", unit="img",
                                        show=progress, leave=False, mininterval=0.5) as shown:
            for position, result in enumerate(results):
                shown.update()
                if isinstance(result, str):
                    problems(result)
                    continue
                image, native = result
                shapes.add(native)
                data = memoryview(image).cast("B")
                f.write(data)
                sums.update(data)
                kept.append(position)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:  # decoding errors come back as messages: this one is the disk's
        raise OutputError(f"{path.parent.parent}: cannot write the decoded cache ({e.strerror or e})") from None
    finally:
        results.close()
    return kept, sums.finish(), shapes


class _BlockSums:
    """crc32 of each BLOCK_BYTES block of a byte stream fed in pieces of any size."""

    def __init__(self):
        self.sums, self.crc, self.filled = [], 0, 0

    def update(self, data: memoryview) -> None:
        while len(data):
            take = min(len(data), BLOCK_BYTES - self.filled)
            self.crc = zlib.crc32(data[:take], self.crc)
            self.filled += take
            data = data[take:]
            if self.filled == BLOCK_BYTES:
                self.sums.append(self.crc)
                self.crc, self.filled = 0, 0

    def finish(self) -> list[int]:
        return self.sums + ([self.crc] if self.filled else [])


def _decode_to(path, channels: int, hw: tuple[int, int]) -> tuple[np.ndarray, tuple] | str:
    """(uint8 (C, H, W) at the cache's shape, (channels, (h, w)) as decoded) or a problem message.
    decode_images' rule: resized first, then grayscale repeated to colour."""
    a = decode_file(path)
    if isinstance(a, str):
        return a
    native = (3 if a.ndim == 3 else 1), a.shape[:2]
    a = resize_array(a, hw)  # a no-op at the size already
    if channels == 3 and a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif channels == 1 and a.ndim == 3:
        a = np.asarray(Image.fromarray(a).convert("L"))
    return (np.ascontiguousarray(a.transpose(2, 0, 1)) if a.ndim == 3 else a[None]), native  # (C, H, W)


def _save_npy(path: Path, array: np.ndarray) -> None:
    """One file of a build (in its temporary folder, renamed into place whole): written and fsynced."""
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
    fsync(path)


def _save_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    fsync(path)


# ---- mapping ----

def _mapped_set(source: CacheSource, names: list[str], folder: Path, header: dict, on_error: str) -> ImageSet:
    """The cache as an ImageSet whose images tensor maps images.u8 (map_private)."""
    n, c, h, w = header["shape"]
    images = map_private(folder / "images.u8", (n, c, h, w))  # (N, C, H, W), pages read on first touch
    targets = torch.from_numpy(np.load(folder / "targets.npy", allow_pickle=False))
    kept = np.load(folder / "kept.npy", allow_pickle=False).tolist()
    if header["skipped"]:
        if on_error == "raise":
            raise DataError(f"{header['first_problem']} ({counted(header['skipped'], 'unreadable file')} in "
                            f"{source.name}; {SKIP_HINT} leaves them out and counts them)")
        log.warning("skipped %s in %s; first: %s", counted(header["skipped"], "unreadable image"), source.name,
                    header["first_problem"])
    ids = source.ids if source.ids is not None else names
    return ImageSet(images, targets, tuple(source.classes), source=source.name,
                    skipped=source.skipped + header["skipped"], ids=tuple(ids[i] for i in kept), cache=str(folder))
