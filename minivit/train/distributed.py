"""Several processes, one run (DDP): joining the process group, and the few collective calls the loop makes.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; each process trains on its own
shard of every epoch, DistributedDataParallel averages the gradients, and rank 0 alone validates,
logs and writes files while the others wait at a barrier; after every step they agree whether to stop
or save (LaggedMax). With one process every helper here is a no-op, so the loop reads the same either way.
"""

from __future__ import annotations

import gc
import os
from contextlib import nullcontext
from datetime import timedelta

import torch
import torch.distributed as dist

from ..common.device import pick_device
from ..common.errors import DataError


def world_from_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment (0, 1, 0 without torchrun)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))


def local_world_size() -> int:
    """How many of the run's processes share this machine (torchrun's LOCAL_WORLD_SIZE; 1 without torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def machine_prefix() -> str | None:
    """How this process starts the lines it says for its whole machine (a decoded cache built, images
    skipped): "" without torchrun or on one machine, "node N: " (torchrun's node rank) on several; None for
    every process but its machine's first, whose copies of those lines are dropped."""
    rank, _, local_rank = world_from_env()
    if local_rank != 0:
        return None
    return f"node {os.environ.get('GROUP_RANK', '?')}: " if rank != local_rank else ""


def setup_distributed(device_choice: str) -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Under torchrun, joins the process group from its env vars.

    Too few GPUs for the processes raises ConfigError (from pick_device) on every rank before any
    rank waits for another, so each exits with one line instead of hanging.
    """
    rank, world, local_rank = world_from_env()
    device = pick_device(device_choice, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        # Imported before the group exists, on purpose: torch.distributed.nn's functions take
        # ``group=group.WORLD`` as a default argument, evaluated at import. DistributedDataParallel
        # imports it (through torch._dynamo); imported after init, those defaults would hold the
        # group for the life of the process, so see cleanup_distributed for what that breaks.
        import torch.distributed.nn  # noqa: F401

        # NCCL between GPUs, gloo on CPU; MASTER_ADDR/PORT, RANK and WORLD_SIZE come from the env.
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def cleanup_distributed() -> None:
    """Leave the process group and stop its threads (once, at the end, after the DDP module is gone).

    destroy_process_group only unregisters the group; its worker threads stop when the last
    reference to it goes. They must stop here, while the interpreter is alive: a gloo worker takes
    the GIL when it drops a finished collective that still holds a Python object (a tensor, the
    caller's context), and a thread that asks for the GIL once Python has begun shutting down is
    ended by pthread_exit, whose unwinding through a C++ destructor aborts the process
    ("terminate called without an active exception", SIGABRT) after a run that succeeded. Under
    CPU load the worker that finished the last barrier can be that late. Freed here, the group's
    destructor joins its workers with the GIL released, so they finish first.
    """
    if dist.is_initialized():
        gc.collect()  # the DDP module may only be reachable from a reference cycle: free it now
        dist.destroy_process_group()


def wrap_ddp(model: torch.nn.Module, device: torch.device, world: int) -> torch.nn.Module:
    """The module the loop runs forward/backward through: DDP averages gradients across processes."""
    if world == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def no_sync(net: torch.nn.Module, skip: bool):
    """DDP's no_sync() while accumulating (skip the gradient all-reduce), else a null context.

    torch.compile wraps the DDP module in an OptimizedModule (the DDP one is its ``_orig_mod``),
    which has no no_sync of its own: look through it, or every micro-step would all-reduce.
    """
    inner = getattr(net, "_orig_mod", net)
    return inner.no_sync() if skip and isinstance(inner, torch.nn.parallel.DistributedDataParallel) else nullcontext()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


class LaggedMax:
    """The largest of the ints the processes give at each call, answered one call late.

    Each call starts the all-reduce (max) of its value without waiting for it, and returns the result of the
    previous call (0 at the first), which arrived meanwhile: a flag the processes agree on at the same
    call, at no wait per call. It runs on a gloo group of its own, on the CPU, so it never waits for the
    GPU or queues behind the gradients' NCCL all-reduce. Every process must call it equally often, then
    ``close`` it.
    """

    def __init__(self):
        self.group = dist.new_group(backend="gloo")
        self.pending = None  # (the all-reduce under way, its tensor)

    def __call__(self, value: int) -> int:
        previous = self.result()
        flag = torch.tensor([value], dtype=torch.int32)
        self.pending = (dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group, async_op=True), flag)
        return previous

    def result(self) -> int:
        """The max of the last call's values (waiting for it if it has not arrived); 0 if none is pending."""
        if self.pending is None:
            return 0
        work, flag = self.pending
        work.wait()
        self.pending = None
        return int(flag.item())

    def close(self) -> None:
        self.result()
        dist.destroy_process_group(self.group)


def broadcast_string(text: str, device: torch.device, max_bytes: int = 4096) -> str:
    """Rank 0's ``text`` on every rank (as a uint8 tensor: no pickled objects cross processes)."""
    if not dist.is_initialized():
        return text
    buf = torch.zeros(max_bytes + 1, dtype=torch.uint8, device=device)  # NUL-terminated
    data = text.encode()[:max_bytes]
    buf[: len(data)] = torch.tensor(list(data), dtype=torch.uint8, device=device)
    dist.broadcast(buf, src=0)
    raw = bytes(buf.cpu().tolist())
    return raw[: raw.index(0)].decode()


# How long the other processes wait for each machine's first process to prepare the data (build a decoded
# cache): longer than any build, since a slow disk and a million images take hours. Nothing else uses the
# group this applies to, so a hang elsewhere is still caught by the default group's timeout.
DATA_WAIT = timedelta(hours=24)


def local_leader_first(load):
    """load() on each machine's first process (LOCAL_RANK 0) while the others wait, then on the others.

    The decoded cache (minivit.data.cache) is built once per machine (or once on a shared folder: its
    lock makes one node build while the others wait), with its progress bar, by that process; the
    others then map the same file, so the page cache holds the data once. They wait in an all-reduce on
    a gloo group of their own with a long timeout (DATA_WAIT), not at the default group's barrier, whose
    timeout (10 to 30 minutes) a large build outlasts. The all-reduce also carries whether every first
    process succeeded: when one failed (its own message says why), every process stops with one line
    instead of waiting for data that never comes.
    """
    rank, world, local_rank = world_from_env()
    if world == 1 or not dist.is_initialized():
        return load()
    group = dist.new_group(backend="gloo", timeout=DATA_WAIT)
    try:
        result, failed = None, torch.zeros(1)
        if local_rank == 0:
            try:
                result = load()
            except Exception:
                failed += 1
                dist.all_reduce(failed, group=group)
                raise
        dist.all_reduce(failed, group=group)
    finally:
        dist.destroy_process_group(group)
    if failed.item():
        raise DataError(f"rank {rank}: stopped: the first process of a machine could not prepare the data "
                        f"(its message says why)")
    return result if local_rank == 0 else load()
