"""Plumbing the operating system gives: memory left, threads that keep order, file locks, private memory maps.

The decoded cache (minivit/data/cache.py) is built on these; none of them knows about images.

    available_memory   bytes this process could still allocate: /proc/meminfo, or less under a cgroup limit
    ordered_map        fn over items in a thread pool, results yielded in order, a bounded number in flight
    exclusive          an flock held for a block (released by the kernel when a process dies)
    map_private        a file as a uint8 tensor, mapped copy-on-write without reserving memory

Example:
    >>> list(ordered_map(lambda x: x * x, range(5), chunk=2))
    [0, 1, 4, 9, 16]
    >>> available_memory() > 0
    True
"""

from __future__ import annotations

import fcntl
import mmap
import os
import platform
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import DataError

# MAP_NORESERVE (Python's mmap names it from 3.13 on): its Linux value on the architectures torch ships for
NORESERVE = getattr(mmap, "MAP_NORESERVE", {"x86_64": 0x4000, "aarch64": 0x4000, "ppc64le": 0x40}.get(
    platform.machine(), 0) if sys.platform == "linux" else 0)


def available_memory() -> int:
    """Bytes this process could still allocate: the kernel's MemAvailable, or less where a cgroup (a
    container, a batch job's allocation) sets a lower limit."""
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return max(available, 0)


def ordered_map(fn: Callable, items: Sequence, *, chunk: int):
    """fn(item) for every item, computed by threads ``chunk`` items per task, yielded in order. At most two
    tasks per thread are in flight, so a slow consumer never lets results pile up in memory. Threads, not
    processes: what they run (Pillow decoding and resizing) releases the GIL."""
    workers = min(16, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    pool = ThreadPoolExecutor(workers)
    starts = iter(range(0, len(items), chunk))
    pending = deque()

    def submit():
        start = next(starts, None)
        if start is not None:
            pending.append(pool.submit(lambda part: [fn(x) for x in part], items[start:start + chunk]))

    try:
        for _ in range(2 * workers):
            submit()
        while pending:
            part = pending.popleft().result()
            submit()
            yield from part
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on an error, don't compute the rest first


@contextmanager
def exclusive(lock_path: Path, on_wait: Callable[[], None] = lambda: None):
    """Hold an flock on ``lock_path`` (created if missing, never deleted: deleting it would let a waiter and
    a newcomer lock different files); ``on_wait()`` is called first when another process holds it. The
    kernel releases the lock when its holder dies, so none goes stale; Linux NFS clients turn flock into
    NFS locks, so nodes sharing a folder over NFS take turns too."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def map_private(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """A uint8 tensor of ``shape`` mapping the raw file ``path`` copy-on-write: pages are read on first touch
    and belong to the page cache; a write changes this process's copy of a page, never the file.

    Mapped with MAP_NORESERVE: a private writable mapping is otherwise charged in full against the
    kernel's commit limit, so Linux (vm.overcommit_memory=0) refuses to map a file larger than RAM plus
    swap -- exactly the datasets the decoded cache is for (``torch.from_file`` fails there with "Cannot
    allocate memory"). Nothing here writes to the map, so nothing needs that reservation.
    """
    nbytes = int(np.prod(shape))
    if nbytes == 0:  # mmap cannot map an empty file
        return torch.empty(shape, dtype=torch.uint8)
    with open(path, "rb") as f:
        try:
            mapped = mmap.mmap(f.fileno(), nbytes, flags=mmap.MAP_PRIVATE | NORESERVE,
                               prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as e:
            raise DataError(f"{path}: cannot memory-map {nbytes / 1e9:.1f} GB ({e.strerror}); train with "
                            f"--no-cache or a smaller --image-size") from None
    # the tensor keeps the array alive, the array the map: unmapped when the last view is gone
    return torch.from_numpy(np.frombuffer(mapped, dtype=np.uint8)).view(shape)


__all__ = ["available_memory", "ordered_map", "exclusive", "map_private", "NORESERVE"]
