"""The decoded cache (minivit.data.cache) and the batch prefetcher (minivit.data.prefetch).

Every cache test builds a small folder of mixed-size, mixed-mode images (PNG and JPEG, one EXIF-rotated)
and compares against the in-memory path, load_image_folder(resize_mixed_to=...), bit for bit.
"""

import json
import logging
import mmap
import os
import signal
import subprocess
import sys
import threading
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from minivit.data import cache, load_image_folder
from minivit.data.cache import CacheDirError, CacheSource, default_cache_dir, open_cache
from minivit.data.folders import IMAGE_SUFFIXES
from minivit.data.labels import LABELS, label_index
from minivit.data.prefetch import Prefetcher
from minivit.common.errors import ConfigError, DataError, OutputError

REPO = Path(__file__).resolve().parents[1]
SIZE = 24


def write_image(path: Path, i: int, side: int | None = None) -> None:
    """A noise image whose size, mode and format vary with i; every 11th is grayscale, one carries an
    EXIF orientation that turns it by 90 degrees."""
    rng = np.random.default_rng(i)
    w, h = (side, side) if side else (16 + (i * 5) % 21, 18 + (i * 7) % 17)
    gray = i % 11 == 0
    pixels = rng.integers(0, 256, (h, w) if gray else (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(pixels)
    if path.suffix == ".jpg" and i == 3:
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 270 to be upright: (h, w) swap
        im.save(path, exif=exif, quality=90)
    else:
        im.save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))


def make_folder(root: Path, n: int = 35, side: int | None = None) -> Path:
    """<root>/train/<class>/img<i>.{png,jpg}: n images over the 7 classes."""
    for i in range(n):
        folder = root / "train" / LABELS[i % 7]
        folder.mkdir(parents=True, exist_ok=True)
        write_image(folder / f"img{i:03d}.{'jpg' if i % 2 else 'png'}", i, side)
    return root


def listing(root: Path) -> CacheSource:
    """The split as load_image_folder lists it (class folders sorted by name, files sorted)."""
    split = root / "train"
    paths, targets = [], []
    for class_dir in sorted(p for p in split.iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        targets += [label_index(class_dir.name)] * len(files)
    return CacheSource(split, paths, torch.tensor(targets))


class Decodes:
    """Counts the files the cache decodes (cache.decode_file wrapped)."""

    def __init__(self, monkeypatch):
        self.count = 0
        original = cache.decode_file

        def counted(path):
            self.count += 1  # += on an int attribute under the GIL: the test only needs 0 vs N
            return original(path)

        monkeypatch.setattr(cache, "decode_file", counted)


def cache_folders(cache_dir: Path) -> list[Path]:
    """Whole caches (not locks/, index/ or hidden temporary folders)."""
    return sorted(p for p in cache_dir.iterdir() if p.is_dir() and p.name not in ("locks", "index")
                  and not p.name.startswith("."))


def assert_same_as_memory(mapped, in_memory):
    assert mapped.images.shape == in_memory.images.shape
    assert torch.equal(mapped.images, in_memory.images)
    assert torch.equal(mapped.targets, in_memory.targets)
    assert mapped.ids == in_memory.ids
    assert mapped.skipped == in_memory.skipped and mapped.source == in_memory.source


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "data")


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


# ---- build, reuse, bit-exactness ----

def test_mixed_sizes_match_the_in_memory_decode(folder, cache_dir):
    mapped = open_cache(listing(folder), SIZE, cache_dir=cache_dir, progress=False)
    in_memory = load_image_folder(folder, "train", resize_mixed_to=SIZE, progress=False)
    assert mapped.images.shape[1:] == (3, SIZE, SIZE)  # a colour file makes the set colour, as in memory
    assert_same_as_memory(mapped, in_memory)
    assert mapped.class_counts().tolist() == in_memory.class_counts().tolist()


def test_uniform_sizes_keep_theirs_as_in_memory(tmp_path, cache_dir):
    root = make_folder(tmp_path / "uniform", n=14, side=30)
    mapped = open_cache(listing(root), SIZE, cache_dir=cache_dir, progress=False)
    in_memory = load_image_folder(root, "train", resize_mixed_to=SIZE, progress=False)
    assert mapped.images.shape[2:] == (30, 30)
    assert_same_as_memory(mapped, in_memory)


@pytest.mark.parametrize("stored, upright_uniform", [((20, 30), True), ((30, 20), False)])
def test_an_exif_rotated_file_counts_at_its_upright_size(tmp_path, cache_dir, stored, upright_uniform):
    root = tmp_path / "rotated"
    (root / "train" / "happy").mkdir(parents=True)
    for i in range(4):  # 30 wide, 20 high
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(
            root / "train" / "happy" / f"{i}.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned by 90 degrees: upright it is (stored h, stored w) swapped
    Image.new("RGB", stored, (10, 200, 30)).save(root / "train" / "happy" / "phone.jpg", exif=exif)
    mapped = open_cache(listing(root), SIZE, cache_dir=cache_dir, progress=False)
    assert mapped.images.shape[2:] == ((20, 30) if upright_uniform else (SIZE, SIZE))
    assert_same_as_memory(mapped, load_image_folder(root, "train", resize_mixed_to=SIZE, progress=False))


def test_grayscale_folder_stays_one_channel(tmp_path, cache_dir):
    root = tmp_path / "gray"
    for i in range(0, 77, 11):  # i % 11 == 0: the grayscale images
        (root / "train" / "sad").mkdir(parents=True, exist_ok=True)
        write_image(root / "train" / "sad" / f"{i}.png", i)
    mapped = open_cache(listing(root), SIZE, cache_dir=cache_dir, progress=False)
    assert mapped.images.shape[1] == 1
    assert_same_as_memory(mapped, load_image_folder(root, "train", resize_mixed_to=SIZE, progress=False))
    forced = open_cache(listing(root), SIZE, channels=3, cache_dir=cache_dir, progress=False)
    assert forced.images.shape[1] == 3 and torch.equal(forced.images, mapped.images.expand(-1, 3, -1, -1))


def test_second_open_maps_without_decoding(folder, cache_dir, monkeypatch):
    decodes = Decodes(monkeypatch)
    first = open_cache(listing(folder), SIZE, cache_dir=cache_dir, progress=False)
    assert decodes.count == len(first) == 35
    second = open_cache(listing(folder), SIZE, cache_dir=cache_dir, progress=False, verify="full")
    assert decodes.count == 35  # nothing decoded again
    assert torch.equal(first.images, second.images) and len(cache_folders(cache_dir)) == 1
    # the images tensor maps the file rather than holding a copy
    assert second.images.untyped_storage().nbytes() == (cache_folders(cache_dir)[0] / "images.u8").stat().st_size


def test_writes_to_the_mapped_tensor_never_reach_the_file(folder, cache_dir):
    s = open_cache(listing(folder), SIZE, cache_dir=cache_dir, progress=False)
    before = s.images[0].clone()
    s.images[0] += 1  # copy-on-write: this process's page only
    again = open_cache(listing(folder), SIZE, cache_dir=cache_dir, progress=False, verify="full")
    assert torch.equal(again.images[0], before)


def mapping_of(path: Path) -> tuple[str, set[str]]:
    """(permissions, VmFlags) of this process's mapping of ``path``, from /proc/self/smaps."""
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.endswith(str(path)):
            flags = next(l for l in lines[i + 1:] if l.startswith("VmFlags:"))
            return line.split()[1], set(flags.split()[1:])
    raise AssertionError(f"{path} is not mapped")


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads the mapping's flags from Linux's /proc")
def test_the_map_is_private_and_reserves_no_memory(folder, cache_dir):
    """Copy-on-write (a write stays in this process) and MAP_NORESERVE: a private writable mapping is otherwise
    charged in full against the commit limit, and Linux refuses to map a cache larger than RAM + swap."""
    s = open_cache(listing(folder), SIZE, cache_dir=cache_dir, progress=False)
    perms, flags = mapping_of(cache_folders(cache_dir)[0] / "images.u8")
    assert perms == "rw-p" and "nr" in flags, (perms, flags)
    assert s.images.shape == (35, 3, SIZE, SIZE)


def test_a_map_the_kernel_refuses_is_one_line(folder, cache_dir, monkeypatch):
    open_cache(listing(folder), SIZE, cache_dir=cache_dir, progress=False)

    def refused(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(mmap, "mmap", refused)
    with pytest.raises(DataError) as e:
        open_cache(listing(folder), SIZE, cache_dir=cache_dir, progress=False)
    message = str(e.value)
    assert "images.u8" in message and "Cannot allocate memory" in message and "--no-cache" in message
    assert "\n" not in message


def test_layout_on_disk(folder, cache_dir):
    s = open_cache(listing(folder), SIZE, cache_dir=cache_dir, progress=False)
    (built,) = cache_folders(cache_dir)
    assert sorted(p.name for p in built.iterdir()) == ["header.json", "images.u8", "kept.npy", "manifest.json",
                                                        "targets.npy"]
    raw = np.fromfile(built / "images.u8", dtype=np.uint8).reshape(tuple(s.images.shape))
    assert np.array_equal(raw, s.images.numpy())
    assert np.array_equal(np.load(built / "targets.npy", allow_pickle=False), s.targets.numpy())
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["size"] == [SIZE, SIZE] and manifest["channels"] == "as decoded"
    assert len(manifest["files"]) == 35 and manifest["files"][0][0] == "angry/img000.png"
    assert manifest["files"][0][1] == (folder / "train/angry/img000.png").stat().st_size
    assert built.name == cache.hashlib.sha256((built / "manifest.json").read_bytes()).hexdigest()[:32]
    assert {"minivit", "pillow", "format", "resize"} <= set(manifest)


# ---- invalidation ----

def change_added(folder, source):
    write_image(folder / "train" / "happy" / "new.png", 100)
    return dict(source=listing(folder)), "1 file added (first: happy/new.png)", False


def change_removed(folder, source):
    (folder / "train" / "sad" / "img004.png").unlink()
    return dict(source=listing(folder)), "1 file removed (first: sad/img004.png)", False


def change_modified(folder, source):
    path = folder / "train" / "fear" / "img002.png"
    mtime = path.stat().st_mtime_ns
    write_image(path, 200)
    os.utime(path, ns=(mtime + 2_000_000_000, mtime + 2_000_000_000))
    return dict(source=listing(folder)), "1 file modified (first: fear/img002.png)", False


def change_size(folder, source):
    return dict(source=source, size=32), "size 24x24 -> 32x32", True


def change_channels(folder, source):
    return dict(source=source, channels=1), "channels as decoded -> 1", True


def change_labels(folder, source):
    relabelled = CacheSource(source.root, source.paths, (source.targets + 1) % 7)
    return dict(source=relabelled), "labels changed", True


@pytest.mark.parametrize("change", [change_added, change_removed, change_modified, change_size, change_channels,
                                    change_labels], ids=lambda f: f.__name__[7:])
def test_a_change_builds_a_new_cache_and_says_why(folder, cache_dir, monkeypatch, caplog, change):
    source = listing(folder)
    old = open_cache(source, SIZE, cache_dir=cache_dir, progress=False)
    (old_folder,) = cache_folders(cache_dir)
    kwargs, reason, old_still_valid = change(folder, source)
    decodes = Decodes(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="minivit.data"):
        new = open_cache(kwargs.pop("source"), kwargs.pop("size", SIZE), cache_dir=cache_dir, progress=False, **kwargs)
    assert decodes.count == len(new)  # decoded afresh
    lines = [r.getMessage() for r in caplog.records if "decoded cache" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert reason in lines[0] and str(old_folder) in lines[0], lines[0]
    # a cache of outdated files is removed; one at another size, channel count or labels stays valid
    assert old_folder.is_dir() == old_still_valid
    assert len(cache_folders(cache_dir)) == 1 + old_still_valid
    if kwargs.get("channels") is None and "size" not in reason and "labels" not in reason:
        assert_same_as_memory(new, load_image_folder(folder, "train", resize_mixed_to=SIZE, progress=False))
    assert len(old) == 35


def test_label_file_change_invalidates(folder, cache_dir, monkeypatch, caplog):
    labels = folder / "labels.csv"
    labels.write_text("a,b\n")
    source = listing(folder)
    source.label_files = (labels,)
    open_cache(source, SIZE, cache_dir=cache_dir, progress=False)
    labels.write_text("a,b\n1,2\n")
    decodes = Decodes(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="minivit.data"):
        open_cache(source, SIZE, cache_dir=cache_dir, progress=False)
    assert decodes.count == 35 and "label files changed" in caplog.text


# ---- atomicity, locking ----

BUILDER = r"""
import json, sys, time, hashlib, os
import torch
from minivit.data import cache
spec = json.load(open(sys.argv[1]))
original, count = cache.decode_file, [0]
def slow(path):
    count[0] += 1
    time.sleep(spec["sleep"])
    return original(path)
cache.decode_file = slow
cache.CHUNK = 1  # one file per decoding task: images.u8 grows image by image, so a kill can land mid-write
source = cache.CacheSource(spec["root"], spec["paths"], torch.tensor(spec["targets"]))
s = cache.open_cache(source, spec["size"], cache_dir=spec["cache_dir"], progress=False)
print(json.dumps({"pid": os.getpid(), "decoded": count[0],
                  "sha": hashlib.sha256(s.images.numpy().tobytes()).hexdigest()}))
"""


def builder(tmp_path, folder, cache_dir, sleep):
    source = listing(folder)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"root": str(source.root), "paths": [str(p) for p in source.paths],
                                "targets": source.targets.tolist(), "size": SIZE, "cache_dir": str(cache_dir),
                                "sleep": sleep}))
    return subprocess.Popen([sys.executable, "-c", BUILDER, str(spec)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_killed_build_is_never_read_and_is_rebuilt(tmp_path, folder, cache_dir, monkeypatch):
    proc = builder(tmp_path, folder, cache_dir, sleep=0.1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill it once it has written part of images.u8
        partial = list(cache_dir.glob(".building-*/images.u8")) if cache_dir.is_dir() else []
        if partial and partial[0].stat().st_size > 0:
            break
        time.sleep(0.01)
    else:
        pytest.fail("the builder never started writing")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert cache_folders(cache_dir) == []  # only the temporary folder, which readers never open
    assert list(cache_dir.glob(".building-*"))
    decodes = Decodes(monkeypatch)
    s = open_cache(listing(folder), SIZE, cache_dir=cache_dir, progress=False)
    assert decodes.count == 35
    assert list(cache_dir.glob(".building-*")) == []  # the killed build's leftovers are gone
    assert_same_as_memory(s, load_image_folder(folder, "train", resize_mixed_to=SIZE, progress=False))


def test_two_builders_at_once_end_with_one_whole_cache(tmp_path, folder, cache_dir):
    procs = [builder(tmp_path, folder, cache_dir, sleep=0.02) for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(r["decoded"] for r in results) == [0, 35]  # one decoded, the other waited and mapped
    assert results[0]["sha"] == results[1]["sha"]
    (built,) = cache_folders(cache_dir)
    assert list(cache_dir.glob(".building-*")) == []
    header = json.loads((built / "header.json").read_text())
    builder_pid = next(r["pid"] for r in results if r["decoded"])
    assert header["built_by"].endswith(f":{builder_pid}")
    in_memory = load_image_folder(folder, "train", resize_mixed_to=SIZE, progress=False)
    assert results[0]["sha"] == cache.hashlib.sha256(in_memory.images.numpy().tobytes()).hexdigest()


# ---- corruption ----

def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def truncate_images(built):
    with open(built / "images.u8", "r+b") as f:
        f.truncate(f.seek(0, 2) - 1)
    return "images.u8 is"


def extend_images(built):
    with open(built / "images.u8", "ab") as f:
        f.write(b"\0")
    return "images.u8 is"


def flip_image_byte(built):
    flip(built / "images.u8", (built / "images.u8").stat().st_size // 2)
    return "do not match their checksum"


def edit_header_shape(built):
    header = json.loads((built / "header.json").read_text())
    header["shape"][0] -= 1  # a plausible header, but not the one its checksum covers
    (built / "header.json").write_text(json.dumps(header))
    return "header.json does not match its checksum"


def flip_manifest_byte(built):
    flip(built / "manifest.json", 40)
    return "manifest.json differs"


def flip_targets_byte(built):
    flip(built / "targets.npy", (built / "targets.npy").stat().st_size - 3)
    return "targets.npy does not match its checksum"


def delete_kept(built):
    (built / "kept.npy").unlink()
    return "cannot read it"


@pytest.mark.parametrize("damage", [truncate_images, extend_images, flip_image_byte, edit_header_shape,
                                    flip_manifest_byte, flip_targets_byte, delete_kept], ids=lambda f: f.__name__)
def test_a_damaged_cache_is_rebuilt_never_read(folder, cache_dir, monkeypatch, caplog, damage):
    open_cache(listing(folder), SIZE, cache_dir=cache_dir, progress=False)
    (built,) = cache_folders(cache_dir)
    reason = damage(built)
    decodes = Decodes(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="minivit.data"):
        s = open_cache(listing(folder), SIZE, cache_dir=cache_dir, progress=False)
    assert decodes.count == 35
    assert f"decoded cache {built} is damaged" in caplog.text and reason in caplog.text, caplog.text
    assert_same_as_memory(s, load_image_folder(folder, "train", resize_mixed_to=SIZE, progress=False))
    assert cache_folders(cache_dir) == [built] and not list(cache_dir.glob(".stale-*"))


def test_every_open_checks_the_end_blocks_and_a_full_check_every_block(folder, cache_dir, monkeypatch, caplog):
    """A cache checksummed in 1 KiB blocks (35 images x 1728 bytes: 60 blocks, 10 checked per open): a byte
    flipped in the first or the last block is found by every open, one in a middle block by verify="full";
    each time the cache is rebuilt from the files, never read as it is."""
    monkeypatch.setattr(cache, "BLOCK_BYTES", 1024)  # what the cache is built with; its header records it
    expected = load_image_folder(folder, "train", resize_mixed_to=SIZE, progress=False)
    open_cache(listing(folder), SIZE, cache_dir=cache_dir, progress=False)
    (built,) = cache_folders(cache_dir)
    header = json.loads((built / "header.json").read_text())
    size = (built / "images.u8").stat().st_size
    assert header["block_bytes"] == 1024 and len(header["block_crc32"]) == -(-size // 1024) == 60
    for offset, verify in ((0, "sample"), (size - 1, "sample"), (30 * 1024 + 5, "full")):
        flip(built / "images.u8", offset)
        decodes = Decodes(monkeypatch)
        with caplog.at_level(logging.WARNING, logger="minivit.data"):
            s = open_cache(listing(folder), SIZE, cache_dir=cache_dir, progress=False, verify=verify)
        block = offset // 1024
        assert f"images.u8 bytes {block * 1024}..{(block + 1) * 1024} do not match" in caplog.text, caplog.text
        assert decodes.count == 35
        assert_same_as_memory(s, expected)
        caplog.clear()


# ---- bad input ----

def test_unreadable_files_follow_on_error(folder, cache_dir, monkeypatch):
    bad = folder / "train" / "happy" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        open_cache(listing(folder), SIZE, cache_dir=cache_dir, progress=False)
    assert cache_folders(cache_dir) == [] and not list(cache_dir.glob(".building-*"))
    s = open_cache(listing(folder), SIZE, cache_dir=cache_dir, on_error="skip", progress=False)
    in_memory = load_image_folder(folder, "train", resize_mixed_to=SIZE, on_error="skip", progress=False)
    assert s.skipped == 1 and len(s) == 35
    assert_same_as_memory(s, in_memory)
    decodes = Decodes(monkeypatch)  # the recorded skip is reported again, without decoding
    with pytest.raises(DataError, match="broken.jpg"):
        open_cache(listing(folder), SIZE, cache_dir=cache_dir, progress=False)
    assert open_cache(listing(folder), SIZE, cache_dir=cache_dir, on_error="skip", progress=False).skipped == 1
    assert decodes.count == 0


def test_a_file_whose_header_reads_but_pixels_do_not_never_sways_size_or_channels(tmp_path, cache_dir):
    root = tmp_path / "uniform_gray"
    (root / "train" / "sad").mkdir(parents=True)
    for i in range(4):  # grayscale, all 30 wide and 20 high
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (20, 30), dtype=np.uint8)).save(
            root / "train" / "sad" / f"{i}.png")
    colour = root / "train" / "sad" / "cut.jpg"  # a colour 50x50 JPEG cut in half: its header reads, pixels fail
    Image.fromarray(np.random.default_rng(9).integers(0, 256, (50, 50, 3), dtype=np.uint8)).save(colour)
    colour.write_bytes(colour.read_bytes()[: colour.stat().st_size // 2])
    mapped = open_cache(listing(root), SIZE, cache_dir=cache_dir, on_error="skip", progress=False)
    in_memory = load_image_folder(root, "train", resize_mixed_to=SIZE, on_error="skip", progress=False)
    assert mapped.images.shape[1:] == (1, 20, 30) and mapped.skipped == 1
    assert_same_as_memory(mapped, in_memory)


def test_a_folder_that_cannot_be_created_is_one_line_naming_it(tmp_path, folder):
    (tmp_path / "a_file").write_text("")
    where = tmp_path / "a_file" / "cache"
    with pytest.raises(CacheDirError) as e:
        open_cache(listing(folder), SIZE, cache_dir=where, progress=False)
    assert str(where) in str(e.value) and "\n" not in str(e.value) and "--cache-dir" in str(e.value)
    assert isinstance(e.value, OutputError)


def test_a_whole_cache_in_a_read_only_folder_is_used(folder, cache_dir, monkeypatch):
    built = open_cache(listing(folder), SIZE, cache_dir=cache_dir, progress=False)

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(cache.tempfile, "mkstemp", read_only)  # what _writable tries first
    again = open_cache(listing(folder), SIZE, cache_dir=cache_dir, progress=False)
    assert torch.equal(again.images, built.images)
    with pytest.raises(CacheDirError, match="Read-only file system"):  # building there is another matter
        open_cache(listing(folder), 32, cache_dir=cache_dir, progress=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_line_naming_it(tmp_path, folder):
    where = tmp_path / "ro"
    where.mkdir(mode=0o555)
    with pytest.raises(CacheDirError, match=str(where)):
        open_cache(listing(folder), SIZE, cache_dir=where, progress=False)


def test_too_little_disk_is_refused_before_decoding_with_the_sizes(folder, cache_dir, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda path: usage(10**12, 10**12 - 5_000_000, 5_000_000))
    decodes = Decodes(monkeypatch)
    with pytest.raises(OutputError) as e:
        open_cache(listing(folder), 512, cache_dir=cache_dir, progress=False)
    need = 35 * 3 * 512 * 512
    assert f"{need / 1e6:.1f} MB" in str(e.value) and "5.0 MB free" in str(e.value) and str(cache_dir) in str(e.value)
    assert decodes.count == 0 and cache_folders(cache_dir) == [] and not list(cache_dir.glob(".building-*"))


@pytest.mark.parametrize("kwargs, message", [(dict(size=0), "size=0"), (dict(size=(24,)), "size="),
                                             (dict(channels=2), "channels=2"), (dict(on_error="x"), "on_error"),
                                             (dict(verify="deep"), "verify")])
def test_bad_options_are_config_errors(folder, cache_dir, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        open_cache(listing(folder), **{"size": SIZE, **kwargs}, cache_dir=cache_dir, progress=False)


def test_default_cache_dir_is_per_user_and_overridable(monkeypatch, tmp_path):
    monkeypatch.delenv("MINIVIT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "minivit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "minivit"
    monkeypatch.setenv("MINIVIT_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


# ---- the prefetcher ----

def prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "minivit-prefetch"]


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("where", ["mapped", "memory"])
def test_prefetched_batches_equal_direct_indexing(folder, cache_dir, depth, where):
    s = open_cache(listing(folder), SIZE, cache_dir=cache_dir, progress=False)
    images = s.images if where == "mapped" else s.images.clone()
    order = torch.randperm(len(s), generator=torch.Generator().manual_seed(depth))
    batches = list(order.split(8))  # the last one partial
    with Prefetcher(images, s.targets, batches, depth=depth) as prefetched:
        got = list(prefetched)
    assert len(got) == len(batches)
    for (x, y), idx in zip(got, batches):
        assert x.dtype == torch.uint8 and torch.equal(x, images[idx]) and torch.equal(y, s.targets[idx])
    assert prefetch_threads() == []


def test_close_mid_epoch_leaves_no_thread():
    images, targets = torch.zeros(64, 1, 4, 4, dtype=torch.uint8), torch.arange(64)
    p = Prefetcher(images, targets, (torch.tensor([i]) for i in range(10**6)), depth=2)
    next(p)
    p.close()
    assert not p._thread.is_alive() and prefetch_threads() == []
    with pytest.raises(StopIteration):
        next(p)


def test_leaving_the_with_block_early_leaves_no_thread():
    images, targets = torch.zeros(64, 1, 4, 4, dtype=torch.uint8), torch.arange(64)
    with Prefetcher(images, targets, [torch.tensor([i]) for i in range(64)], depth=4) as p:
        for i, (x, y) in enumerate(p):
            if i == 2:
                break
    assert prefetch_threads() == []


def test_an_error_in_the_thread_is_raised_at_its_batch():
    images, targets = torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1), torch.arange(4)
    p = Prefetcher(images, targets, [torch.tensor([0]), torch.tensor([1]), torch.tensor([9]), torch.tensor([2])])
    assert next(p)[1].tolist() == [0] and next(p)[1].tolist() == [1]
    with pytest.raises(IndexError, match="out of range"):
        next(p)
    assert prefetch_threads() == []

    def failing():
        yield torch.tensor([0])
        raise RuntimeError("the index source broke")

    with pytest.raises(RuntimeError, match="the index source broke"):
        list(Prefetcher(images, targets, failing()))
    assert prefetch_threads() == []


def test_prefetch_depth_must_be_positive():
    with pytest.raises(ConfigError, match="depth"):
        Prefetcher(torch.zeros(1, 1, 1, 1, dtype=torch.uint8), torch.zeros(1), [], depth=0)


# ---- the benchmark script runs (its numbers are not checked: CPU timings mean nothing here) ----

def test_data_scale_benchmark_measures_the_same_images_every_way(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import data_scale

    out = tmp_path / "scale.json"
    assert data_scale.main(["--n", "21", "--size", "16", "--data-dir", str(tmp_path / "data"), "--cache-dir",
                            str(tmp_path / "cache"), "--ram-max", "21", "--out", str(out), "--no-progress",
                            "--train-steps", "5", "--train-batch", "2", "--passes", "3"]) == 0
    rows = json.loads(out.read_text())["rows"]
    # each row measured a whole set at --size: every image (the cache's rows: build, map, RAM, gather), or the
    # 14 left to train on when a val image per class is carved out (minivit.train's rows)
    assert all(r["n"] == 21 and r["shape"] == [3, 16, 16] and r["images"] in (21, 14) for r in rows)
    data, trains = [r for r in rows if r["images"] == 21], [r for r in rows if r["images"] == 14]
    assert len(data) >= 4 and len(trains) >= 3 and all(r["private_mb"] > 0 for r in data)
    assert sum("cache_gb" in r for r in data) == 1 and data[0]["cache_gb"] == 21 * 3 * 16 * 16 / 1e9  # the build
    assert sum("gather_img_s" in r for r in data) == 1 and all(r["gather_img_s"] > 0 for r in data if "gather_img_s" in r)
    compared = [r for r in rows if "map_img_s" in r]  # map vs RAM in one process: --passes of each, every one timed
    assert len(compared) == 2 and all(len(r["map_img_s"]) == len(r["ram_img_s"]) == 3 and min(r["map_img_s"]) > 0
                                      for r in compared)
    # training: 5 steps of 2 in one process (2 DDP processes: the epoch's 14 / 2 / 2 = 3 steps)
    assert all(r["pss_mb"] > 0 for r in trains)
    single = [r for r in trains if "rank" not in r and "steps" in r]
    assert single and all(r["steps"] == 5 and r["loop_img_s"] > 0 for r in single)
    ranked = [r for r in trains if "rank" in r]
    assert [r["rank"] for r in ranked] == [0, 1, "both"] * (len(ranked) // 3) and ranked
    for i in range(0, len(ranked), 3):  # the "both" row is the machine's: the two ranks' memory added up
        (a, b), both = ranked[i:i + 2], ranked[i + 2]
        assert a["steps"] == b["steps"] == 3
        assert both["private_mb"] == a["private_mb"] + b["private_mb"] and both["pss_mb"] == a["pss_mb"] + b["pss_mb"]
    files = sorted((tmp_path / "data" / "faces-21-seed0" / "train").rglob("*.jpg"))
    sizes = {Image.open(f).size for f in files}
    assert len(files) == 21 and len(sizes) > 1 and all(64 <= min(s) and max(s) <= 400 for s in sizes)
    with pytest.raises(SystemExit) as e:  # an existing --out is kept without --overwrite
        data_scale.main(["--n", "21", "--out", str(out)])
    assert e.value.code == 2
