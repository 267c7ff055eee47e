"""Batches gathered ahead of the training loop by a background thread, from images that live in host memory
or in a memory-mapped cache file (minivit.data.cache).

While the GPU runs step k, the thread gathers the images of steps k+1..k+depth into fresh tensors (pinned
where CUDA is available, so the loop's ``.to(device, non_blocking=True)`` overlaps compute). Page faults of
a map that is not yet in the page cache are taken here, not in the loop. The tensors are exactly
``images[idx], targets[idx]``, in the order the index tensors come: prefetching changes when a batch is
read, never what it holds.

    >>> images, targets = torch.arange(12, dtype=torch.uint8).view(4, 1, 3, 1), torch.tensor([0, 1, 2, 3])
    >>> with Prefetcher(images, targets, [torch.tensor([3, 0]), torch.tensor([2])], depth=2) as batches:
    ...     [(x.flatten().tolist(), y.tolist()) for x, y in batches]
    [([9, 10, 11, 0, 1, 2], [3, 0]), ([6, 7, 8], [2])]
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable

import numpy as np
import torch

from ..common.errors import ConfigError
from .imageset import RowView

_DONE = object()  # the producer's last item


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def gather(tensor: torch.Tensor | RowView, idx: torch.Tensor, pin: bool) -> torch.Tensor:
    """tensor[idx] (rows along dim 0, CPU) written straight into a new tensor, pinned if ``pin``: one copy.
    A RowView (a carved split of a mapped set) is read through its index: base[rows[idx]].

    numpy's take does the copy, on this thread alone and without the GIL. torch.index_select would
    start an OpenMP team from this thread, whose spinning workers fight the thread that drives the
    GPU for cores (measured: 10x slower gathering on 2 cores beside a busy main thread).
    """
    n = len(tensor)
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise IndexError(f"batch index out of range for {n} images: {int(idx.min())}..{int(idx.max())}")
    if isinstance(tensor, RowView):  # its rows are in range of its base by construction
        tensor, idx = tensor.base, tensor.rows[idx]
    out = torch.empty((len(idx), *tensor.shape[1:]), dtype=tensor.dtype, pin_memory=pin)  # (B, ...)
    # mode="clip" never clips here (checked above) and, unlike "raise", writes into out without a buffer
    np.take(tensor.numpy(), idx.numpy(), axis=0, out=out.numpy(), mode="clip")
    return out


class Prefetcher:
    """Iterates (images[idx], targets[idx]) for each index tensor of ``batches``, gathered by a daemon
    thread up to ``depth`` batches ahead.

    pin: pinned host memory for the batches; default: when CUDA is available. An error in the thread
    (a bad index, an unreadable page) is raised in the consumer at the batch it belongs to. close() (or
    leaving the ``with`` block, or reaching the end) stops the thread and waits for it: none is left
    behind. Pinned tensors are not reused, so a batch stays valid while an asynchronous copy reads it.
    """

    def __init__(self, images: torch.Tensor | RowView, targets: torch.Tensor, batches: Iterable[torch.Tensor],
                 depth: int = 2, pin: bool | None = None):
        if not isinstance(depth, int) or depth < 1:
            raise ConfigError(f"prefetch depth={depth!r}: expected an int >= 1")
        self.images, self.targets = images, targets
        self.pin = torch.cuda.is_available() if pin is None else pin
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._produce, args=(iter(batches),), name="minivit-prefetch",
                                        daemon=True)
        self._thread.start()

    def _produce(self, batches) -> None:
        try:
            for idx in batches:
                if self._stop.is_set():
                    return
                batch = gather(self.images, idx, self.pin), gather(self.targets, idx, self.pin)
                if not self._put(batch):
                    return
        except BaseException as e:  # handed to the consumer, raised there
            self._put(_Failed(e))
            return
        self._put(_DONE)

    def _put(self, item) -> bool:
        """Queue item, waiting for room; False if close() was called meanwhile."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._finished:
            raise StopIteration
        while True:
            try:
                item = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():  # closed from elsewhere
                    self._finished = True
                    raise StopIteration from None
        if item is _DONE or isinstance(item, _Failed):
            self.close()
            if isinstance(item, _Failed):
                raise item.error
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the thread and wait for it; the batches not yet taken are dropped."""
        self._finished = True
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
