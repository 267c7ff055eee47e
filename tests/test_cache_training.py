"""Training from the decoded cache (minivit.data.cache): the same weights as from memory, exact resume, one
build per machine under DDP, two torchrun "nodes" over 127.0.0.1, and the command line's cache options.

Every run here trains a tiny ViT at 16x16 on a small folder of mixed-size images (tests/test_cache.py's
make_folder), on the CPU: a few seconds each, the torchrun ones a few tens of seconds.
"""

import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minivit.data import load_splits
from minivit.data.cache import CachePlan
from minivit.data.imageset import RowView
from minivit.train import TrainConfig, train
from minivit.train.data import SAMPLE_LOG_ENV
from processes import run_python
from test_cache import cache_folders, make_folder

REPO = Path(__file__).resolve().parents[1]
TINY = dict(patch_size=4, dim=32, depth=1, heads=2, mlp_dim=64)
TINY_CLI = ["--model", "Ti/16", "--image-size", "16", "--patch-size", "4", "--dim", "16", "--depth", "1", "--heads",
            "2", "--mlp-dim", "32", "--device", "cpu", "--no-progress", "--warmup-epochs", "0"]


def cfg_for(data, out, **kw) -> TrainConfig:
    base = dict(data=str(data), image_size=16, epochs=2, batch_size=16, model_overrides=TINY, out=str(out),
                progress=False, log=False, ema=0.9, mixup=0.2, cutmix=1.0, accum_steps=2, drop_path=0.1)
    return TrainConfig(**{**base, **kw})


def same_tensors(a_path, b_path, ema: bool = True) -> None:
    a, b = load_file(str(a_path)), load_file(str(b_path))
    assert a.keys() == b.keys() and any(k.startswith("optim.") for k in a)
    assert any(k.startswith("ema.") for k in a) == ema
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """224 images of mixed sizes and modes under train/ (carved: 21 val, 203 train)."""
    return make_folder(tmp_path_factory.mktemp("faces"), n=224)


def test_the_carved_split_of_a_mapped_set_copies_no_images(data, tmp_path):
    """A carved validation split of a mapped set is a row index over the map, never a copy of the rows."""
    splits = load_splits(str(data), resize_mixed_to=16, progress=False, cache=CachePlan(tmp_path / "cache"))
    (folder,) = cache_folders(tmp_path / "cache")
    for s in (splits.train, splits.val):
        assert isinstance(s.images, RowView) and s.cache == str(folder)
        assert s.images.base.untyped_storage().data_ptr() == splits.train.images.base.untyped_storage().data_ptr()
    in_memory = load_splits(str(data), resize_mixed_to=16, progress=False)
    assert in_memory.train.cache is None and isinstance(in_memory.train.images, torch.Tensor)
    for mapped, decoded in ((splits.train, in_memory.train), (splits.val, in_memory.val)):
        assert mapped.ids == decoded.ids and torch.equal(mapped.targets, decoded.targets)
        assert torch.equal(mapped.images[:], decoded.images)  # the rows the view reads are the decoded ones
    assert splits.rule == in_memory.rule


def test_training_from_the_cache_equals_training_from_memory(data, tmp_path):
    """The same run from the map (prefetched batches) and from memory (--no-cache) ends with the same
    model, EMA and optimiser tensors, bit for bit; and the second run from the cache decodes nothing."""
    cache_dir = tmp_path / "cache"
    mapped = train(cfg_for(data, tmp_path / "mapped", cache_dir=str(cache_dir), prefetch=2))
    in_memory = train(cfg_for(data, tmp_path / "memory", cache=False))
    assert mapped["step"] == in_memory["step"] == 12  # 203 // (16 x 2) = 6 steps x 2 epochs
    same_tensors(tmp_path / "mapped" / "resume.safetensors", tmp_path / "memory" / "resume.safetensors")
    assert mapped["val_accuracy"] == in_memory["val_accuracy"]
    built = sorted(p.name for p in cache_folders(cache_dir))
    assert len(built) == 1
    # on the device path too (the whole set resident, copied from the map a chunk at a time): same tensors
    train(cfg_for(data, tmp_path / "resident", cache_dir=str(cache_dir), data_on_device="yes"))
    same_tensors(tmp_path / "resident" / "resume.safetensors", tmp_path / "memory" / "resume.safetensors")
    assert sorted(p.name for p in cache_folders(cache_dir)) == built  # mapped again, not rebuilt


def test_a_killed_run_resumed_from_the_cache_is_exact(data, tmp_path):
    """Stopped mid-epoch (--stop-after) and resumed, the cache path ends bit for bit where an uninterrupted
    run ends: the prefetcher starts at the resumed micro-batch."""
    kw = dict(cache_dir=str(tmp_path / "cache"), ckpt_every=4, prefetch=3)
    train(cfg_for(data, tmp_path / "full", **kw))
    part = train(cfg_for(data, tmp_path / "part", stop_after=9, **kw))  # mid epoch 2; last save: step 8
    assert part["interrupted"] and part["step"] == 9
    resumed = train(cfg_for(data, tmp_path / "part", resume=str(tmp_path / "part"), **kw))
    assert resumed["step"] == 12
    same_tensors(tmp_path / "full" / "resume.safetensors", tmp_path / "part" / "resume.safetensors")


def command(args, env=None, timeout=240) -> subprocess.CompletedProcess:
    return run_python(args, env, timeout)


def test_the_cli_says_it_builds_then_maps(data, tmp_path):
    """The command's output names the cache it builds (size, folder); the next start maps it and says so."""
    args = ["examples/finetune_fer.py", "--data", str(data), *TINY_CLI, "--epochs", "1", "--batch-size", "16",
            "--cache-dir", str(tmp_path / "cache")]
    first = command([*args, "--out", str(tmp_path / "a")])
    assert first.returncode == 0, first.stderr[-3000:]
    (folder,) = cache_folders(tmp_path / "cache")
    assert f"building the decoded cache of {data / 'train'} (224 images at 16x16, 3 channels: 0.2 MB) in {folder}" \
        in first.stdout, first.stdout
    assert f"data: train, val memory-mapped from the decoded cache {folder}" in first.stdout
    second = command([*args, "--out", str(tmp_path / "b")])
    assert second.returncode == 0 and "building" not in second.stdout + second.stderr, second.stdout
    assert f"memory-mapped from the decoded cache {folder}" in second.stdout
    # a file added to the folder: a new cache, and one line saying why
    (data / "train" / "happy" / "img300.png").write_bytes((data / "train" / "happy" / "img010.png").read_bytes())
    try:
        third = command([*args, "--out", str(tmp_path / "c")])
    finally:
        (data / "train" / "happy" / "img300.png").unlink()
    assert third.returncode == 0, third.stderr[-3000:]
    why = [line for line in third.stderr.splitlines() if "decoded cache for" in line]
    assert len(why) == 1 and "1 file added (first: happy/img300.png)" in why[0] and str(folder) in why[0], third.stderr


def test_an_unwritable_cache_folder_falls_back_to_memory_or_refuses(data, tmp_path):
    """--cache-dir that cannot be written: one warning naming it and a run in memory when the set fits;
    when it cannot fit (--image-size 100000: petabytes), one line naming the folder and the sizes, exit 2,
    before anything is decoded or any run folder is made."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = ["examples/finetune_fer.py", "--data", str(data), *TINY_CLI, "--epochs", "1", "--batch-size", "16",
            "--cache-dir", str(blocker / "cache")]
    fell_back = command([*args, "--out", str(tmp_path / "run")])
    assert fell_back.returncode == 0, fell_back.stderr[-3000:]
    warnings = [line for line in fell_back.stderr.splitlines() if "cache" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {blocker / 'cache'}: cannot write"), warnings
    assert "decoding" in warnings[0] and "into memory instead" in warnings[0]
    assert "in memory (the cache folder could not be written" in fell_back.stdout
    refused = command([*args[:-2], "--image-size", "100000", "--cache-dir", str(blocker / "cache"),
                       "--out", str(tmp_path / "refused")])
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr[-3000:]
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and str(blocker / "cache") in lines[0] and "is refused" in lines[0], lines
    assert "224 images at 100000x100000" in lines[0] and "available" in lines[0]
    assert not (tmp_path / "refused").exists()


# Runs the training command in a torchrun worker and writes, per rank (reports/rank<r>.txt): its pid, how
# many image files it decoded, and the decoded-cache files it has mapped once the run is set up.
WORKER = """
import os, sys, threading
sys.path.insert(0, {repo!r})
from minivit.data import cache
from minivit.train import loop

decoded, lock = [0], threading.Lock()
original_decode, original_setup = cache.decode_file, loop.setup_run


def counted(path):  # called from the decoding threads
    with lock:
        decoded[0] += 1
    return original_decode(path)


def setup_and_report(*args, **kwargs):
    run = original_setup(*args, **kwargs)
    maps = sorted({{line.split()[-1] for line in open("/proc/self/maps") if line.rstrip().endswith("images.u8")}})
    with open(os.path.join({reports!r}, f"rank{{os.environ['RANK']}}.txt"), "w") as f:
        f.write(f"pid {{os.getpid()}} decoded {{decoded[0]}} maps {{','.join(maps)}}")
    return run


cache.decode_file, loop.setup_run = counted, setup_and_report
from minivit.commands.train import main
sys.exit(main(sys.argv[1:]))
"""


def test_ddp_builds_once_and_every_process_maps_the_same_file(data, tmp_path):
    """torchrun, 2 CPU processes: local rank 0 decodes every image once while rank 1 waits; then both map
    the same file (the page cache holds it once)."""
    script = tmp_path / "worker.py"
    reports = tmp_path / "reports"
    reports.mkdir()
    script.write_text(WORKER.format(repo=str(REPO), reports=str(reports)))
    cache_dir = tmp_path / "cache"
    r = command(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), "--data",
                 str(data), *TINY_CLI, "--epochs", "1", "--batch-size", "16", "--cache-dir", str(cache_dir),
                 "--out", str(tmp_path / "run")])
    assert r.returncode == 0, r.stderr[-3000:]
    texts = {path.stem[4:]: path.read_text().split() for path in reports.glob("rank*.txt")}
    assert sorted(texts) == ["0", "1"], r.stdout
    (folder,) = cache_folders(cache_dir)
    fields = {rank: dict(zip(words[::2], words[1::2])) for rank, words in texts.items()}
    assert fields["0"]["decoded"] == "224" and fields["1"]["decoded"] == "0", fields
    assert fields["0"]["maps"] == fields["1"]["maps"] == str(folder / "images.u8"), fields
    header = json.loads((folder / "header.json").read_text())
    assert header["built_by"].endswith(f":{fields['0']['pid']}")
    assert r.stdout.count("building the decoded cache") == 1, r.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(args: list, logs: Path, timeout: int = 300) -> list[subprocess.CompletedProcess]:
    """The training command as two torchrun "nodes" on this machine (--nnodes 2, 2 CPU processes each,
    gloo over 127.0.0.1), started together; each rank logs the ids of the images it trains on."""
    port = free_port()
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
               "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(port),
               "examples/finetune_fer.py", *args]
        env = dict(os.environ, OMP_NUM_THREADS="1", **{SAMPLE_LOG_ENV: str(logs)})
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, start_new_session=True))
    done = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    except subprocess.TimeoutExpired:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"two-node run timed out after {timeout}s")
    for r in done:
        assert r.returncode == 0, r.stderr[-3000:]
    return done


def samples(logs: Path) -> dict:
    """{(epoch, micro-batch): [ids]} per rank, from the sample log: {rank: {...}}."""
    out = {}
    for path in sorted(logs.glob("rank*.txt")):
        rank = int(path.stem[4:])
        for line in path.read_text().splitlines():
            epoch, micro, *ids = line.split()
            out.setdefault(rank, {})[int(epoch), int(micro)] = ids
    return out


def test_two_nodes_see_every_image_once_per_epoch_and_resume_exactly(tmp_path):
    """torchrun --nnodes 2 over 127.0.0.1 (gloo, 2 CPU processes per node) on a folder with its own val/:
    across the 4 ranks every training image is trained on exactly once per epoch; the cache, in a folder
    both nodes share, is built once; a run stopped mid-epoch and resumed ends with the uninterrupted run's
    tensors (to float rounding: see below), and the two runs' epochs hold the same images."""
    data = make_folder(tmp_path / "faces", n=112)  # 112 = 4 ranks x 2 steps x batch 14
    make_folder(tmp_path / "val-faces", n=14)
    (tmp_path / "val-faces" / "train").rename(data / "val")
    ids = sorted(f"{c.name}/{f.name}" for c in (data / "train").iterdir() for f in c.iterdir())
    cache_dir = tmp_path / "shared-cache"
    # --drop-path 0: the stochastic-depth streams of ranks other than 0 are reseeded on resume (docs/reference/run_folder.md)
    args = [*TINY_CLI, "--data", str(data), "--epochs", "2", "--batch-size", "14", "--cache-dir", str(cache_dir),
            "--drop-path", "0"]
    full = two_nodes([*args, "--out", str(tmp_path / "full")], tmp_path / "log-full")
    seen = samples(tmp_path / "log-full")
    assert sorted(seen) == [0, 1, 2, 3]
    for epoch in (0, 1):
        trained = [i for rank in seen.values() for (e, _), batch in rank.items() if e == epoch for i in batch]
        assert sorted(trained) == ids, Counter(trained).most_common(3)  # each training image once
    assert len(cache_folders(cache_dir)) == 2  # train and val, each built once for both nodes
    output = "".join(r.stdout for r in full)
    assert output.count("building the decoded cache of") == 2, output  # one node built, the other waited

    # stopped after step 3 (mid epoch 2; the last save: step 2, the end of epoch 1), then resumed: the same
    # tensors as the full run
    two_nodes([*args, "--stop-after", "3", "--out", str(tmp_path / "part")], tmp_path / "log-part")
    two_nodes(["--resume", str(tmp_path / "part"), "--stop-after", "0", "--no-progress"], tmp_path / "log-resumed")
    # Not bit for bit with 4 processes, cache or not (measured the same with --no-cache on one machine): DDP
    # all-reduces a run's first step in its initial gradient buckets and later steps in buckets rebuilt in
    # gradient-ready order, and a sum of more than two ranks' floats depends on that layout, so the resumed
    # run's first step rounds differently. Everything the data decides is exact (the sample logs below).
    a, b = load_file(str(tmp_path / "full" / "resume.safetensors")), load_file(str(tmp_path / "part" / "resume.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), rtol=1e-4, atol=1e-6), k
    history = [json.loads((tmp_path / run / "history.json").read_text()) for run in ("full", "part")]
    assert [h["train_acc"] for h in history[0]] == [h["train_acc"] for h in history[1]]
    killed, resumed = samples(tmp_path / "log-part"), samples(tmp_path / "log-resumed")
    for rank in range(4):
        assert sorted(killed[rank]) == [(0, 0), (0, 1), (1, 0)]
        assert sorted(resumed[rank]) == [(1, 0), (1, 1)]  # resumed at step 2: epoch 2, micro-batch 0
        assert {k: v for k, v in killed[rank].items() if k[0] == 0} == {k: v for k, v in seen[rank].items() if k[0] == 0}
        assert resumed[rank] == {k: v for k, v in seen[rank].items() if k[0] == 1}
