"""Start time and memory of image datasets bigger than memory: the decoded cache against decoding into RAM.

    python benchmarks/data_scale.py --n 10000 50000 --data-dir /data/bench     # 224x224 RGB: ImageNet-sized faces, more than fit in memory
    python benchmarks/data_scale.py --n 500 --size 64 --ram-max 500            # a quick check

For each N it generates N JPEG faces of mixed sizes (sides 64-400 px, aspect 0.8-1.25, tinted to colour;
drawn by minivit.data.synthetic_faces, so their labels are the drawn expressions) as ``train/<class>/*.jpg``
under --data-dir, once: a later run reuses them. Then, each in a fresh process so memory figures are its own:

- first start: list the folder and build the cache (``open_cache`` into an emptied cache folder);
- second start: list the folder and map the cache, then gather every image twice (two random orders) in
  batches of --batch through the prefetcher (pages come in from the page cache: the file-mapped figure
  grows, the private one should not);
- RAM (N <= --ram-max): ``load_image_folder(resize_mixed_to=size)``: decoding into memory, as without a cache;
- gather map vs RAM (N <= --ram-max): map the cache, copy it into RAM, then alternate passes over the two
  (--passes each, the same random orders) and compare the medians: one process, one machine state;
- train from the map / from RAM (RAM: N <= --ram-max, ``--no-cache``): the training command's own code
  (minivit.train.train) for --train-steps steps of a small ViT at the --size, batch --train-batch, on the CPU
  with --train-threads torch threads: "start s" is then setting the run up (listing and mapping, or
  decoding, plus the model), "loop img/s" the loop's steady-state throughput (the first 3 steps left out).
  From the map, each process first reads every training image once (as over an epoch), so that its memory
  figures hold the whole set: the map's pages are then all in the page cache and in the process's RSS;
- loop map vs RAM (N <= --ram-max): in one process, the same run alternately on the mapped training split
  and on a copy of it in RAM (--passes each), the medians compared: the loop reading through the map;
- 2 DDP from the map / from RAM (RAM: N <= --ram-max): torchrun, 2 CPU processes training as above; a row
  per rank, then one summing them ("PSS" counts each shared page once, split between the processes that map
  it: the memory the machine really spends).

"start s" is listing + opening (or decoding) inside the process, not the interpreter's and torch's import.
Memory, sampled every 10 ms from /proc/self/status: "private" is RssAnon (the process's own pages: heap,
tensors), "file-mapped" is RssFile (pages of mapped files, the cache included: page-cache pages that every
process mapping the file shares), "peak RSS" is VmHWM, "PSS" the peak of /proc/self/smaps_rollup's Pss
(sampled every 0.5 s). "gather img/s" is a pass over all images through
minivit.data.prefetch on the CPU: the cache layer alone, not the training loop. The first pass over a map
also maps every page into the process (a minor fault per page); later passes show the steady state.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import median

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minivit.common.files import write_json  # noqa: E402
from minivit.common.cli import ArgumentParser, integer, run  # noqa: E402
from minivit.data import LABELS, load_image_folder, synthetic_faces  # noqa: E402
from minivit.data.cache import CacheSource, open_cache  # noqa: E402
from minivit.data.prefetch import Prefetcher  # noqa: E402

GENERATOR = 1  # bump when generate() draws different files: a folder made by another version is redrawn
DRAW_SIZE = 64  # faces are drawn at this size (drawing is the slow part), then resized to each file's own size


def generate(folder: Path, n: int, seed: int, progress: bool = True) -> None:
    """N colour JPEG faces of mixed sizes as <folder>/train/<class>/<i>.jpg; kept if already there."""
    marker = {"n": n, "seed": seed, "generator": GENERATOR}
    if (folder / "complete.json").is_file() and json.loads((folder / "complete.json").read_text()) == marker:
        return
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for label in LABELS:
        (partial / "train" / label).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    sides = rng.integers(64, 401, n)  # (N,) heights
    widths = np.clip(np.round(sides * rng.uniform(0.8, 1.25, n)), 64, 400).astype(int)  # (N,)
    tints = rng.uniform((0.85, 0.65, 0.5), (1.0, 0.85, 0.75), (n, 3))  # (N, 3) skin-like colour casts

    def save(i: int, face: np.ndarray, label: int) -> None:
        rgb = np.clip(face[:, :, None] * tints[i], 0, 255).astype(np.uint8)  # (S, S, 3)
        im = Image.fromarray(rgb).resize((int(widths[i]), int(sides[i])), Image.Resampling.BICUBIC)
        im.save(partial / "train" / LABELS[label] / f"{i:06d}.jpg", quality=90)

    chunk = 512
    with ThreadPoolExecutor(os.cpu_count()) as pool, tqdm(total=n, desc=f"drawing {n} faces", unit="img",
                                                          disable=not progress) as bar:
        for start in range(0, n, chunk):
            faces = synthetic_faces(min(chunk, n - start), image_size=DRAW_SIZE, seed=seed * 100_003 + start)
            pixels = faces.images[:, 0].numpy().astype(np.float32)  # (B, S, S)
            labels = faces.targets.tolist()
            list(pool.map(lambda j: save(start + j, pixels[j], labels[j]), range(len(labels))))
            bar.update(len(labels))
    (partial / "complete.json").write_text(json.dumps(marker))
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(partial, folder)


def list_split(split_dir: Path) -> CacheSource:
    """The folder as load_image_folder lists it: class folders sorted by name, their files sorted."""
    paths, targets = [], []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        files = sorted(class_dir.iterdir())
        paths += files
        targets += [LABELS.index(class_dir.name)] * len(files)
    return CacheSource(split_dir, paths, torch.tensor(targets))


class MemorySampler:
    """Peaks of RssAnon and RssFile (MB) of this process, sampled every 10 ms by a thread, VmHWM, and the
    peak of Pss every 0.5 s (smaps_rollup walks every mapping: too slow to read every 10 ms)."""

    def __init__(self):
        self.peaks = {"RssAnon": 0.0, "RssFile": 0.0, "Pss": 0.0}
        self.trace, self.started = [], time.perf_counter()  # [seconds, private MB, file-mapped MB] every second
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def read() -> dict:
        out = {}
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile", "VmHWM"):
                    out[key] = int(value.split()[0]) / 1024  # kB -> MB
        return out

    @staticmethod
    def pss() -> float:
        try:
            with open("/proc/self/smaps_rollup") as f:
                return next(int(line.split()[1]) / 1024 for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            return 0.0

    def _run(self):
        ticks = 0
        while not self._stop.wait(0.01):
            now = self.read()
            ticks += 1
            if ticks % 50 == 1:
                now["Pss"] = self.pss()
            if ticks % 100 == 1:
                self.trace.append([round(time.perf_counter() - self.started, 1), now["RssAnon"], now["RssFile"]])
            for key in self.peaks:
                self.peaks[key] = max(self.peaks[key], now.get(key, 0.0))

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        now = {**self.read(), "Pss": self.pss()}
        return {"private_mb": max(self.peaks["RssAnon"], now["RssAnon"]),
                "file_mapped_mb": max(self.peaks["RssFile"], now["RssFile"]), "peak_rss_mb": now["VmHWM"],
                "pss_mb": max(self.peaks["Pss"], now["Pss"]), "trace": self.trace}


def gather_pass(images: torch.Tensor, targets: torch.Tensor, batch: int, seed: int) -> float:
    """img/s of one pass over every image in a random order, through the prefetcher."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    start, seen = time.perf_counter(), 0
    with Prefetcher(images, targets, order.split(batch), depth=4) as batches:
        for xb, _ in batches:
            seen += len(xb)
    return seen / (time.perf_counter() - start)


def train_config(folder: Path, cache_dir: Path, size: int, args, out: Path, **kw):
    """The run every training row times: a small ViT (patch 16, width 64, 2 blocks) at ``size``, one epoch
    cut at --train-steps steps, on the CPU, no report. Memory and time are the data path's, not a model's."""
    from minivit.train import TrainConfig

    return TrainConfig(**{**dict(
        data=str(folder), image_size=size, model="Ti/16", model_overrides=dict(patch_size=16, dim=64, depth=2, heads=2,
                                                                               mlp_dim=128),
        batch_size=args.train_batch, epochs=1, stop_after=args.train_steps, warmup_epochs=0, device="cpu",
        compile="no", cache_dir=str(cache_dir), prefetch=4, out=str(out), overwrite=True, progress=False, log=False),
        **kw})


def read_all(images, targets) -> None:
    """Every image once, in order, through the prefetcher: each page of a map is then in the page cache and
    mapped into this process (its file-mapped and PSS figures then hold the whole set, as after an epoch)."""
    with Prefetcher(images, targets, torch.arange(len(images)).split(256), depth=2, pin=False) as batches:
        for _ in batches:
            pass


def train_worker(kind: str, folder: Path, cache_dir: Path, size: int, args) -> dict:
    """'train-map', 'train-ram' or 'loop' (map and RAM alternately, one process); under torchrun
    'ddp-map' / 'ddp-ram' (each rank writes its own numbers to --folder's sibling file, see measure_ddp)."""
    from minivit.train import loop, train
    from minivit.train.distributed import cleanup_distributed, world_from_env

    torch.set_num_threads(args.train_threads)
    memory = MemorySampler()
    started, timing = time.perf_counter(), {}
    setup = loop.setup_run

    def timed_setup(*a, **kw):  # "start s": the run set up (data listed and mapped, or decoded; the model)
        run = setup(*a, **kw)
        timing.setdefault("start_s", time.perf_counter() - started)
        timing.update(images=len(run.train_set), shape=list(run.train_set.images.shape[1:]))
        if kind in ("train-map", "ddp-map"):  # every page read once, as after an epoch: then measure memory
            read_all(run.train_set.images, run.train_set.targets)
        return run

    loop.setup_run = timed_setup
    rank = world_from_env()[0]
    out = Path(args.runs_dir) / f"{kind}-rank{rank}"
    cache = kind in ("train-map", "ddp-map", "loop")
    if kind == "loop":
        from minivit.data import ImageSet, load_splits
        from minivit.data.cache import CachePlan

        splits = load_splits(str(folder), resize_mixed_to=size, progress=False, cache=CachePlan(cache_dir))
        mapped = splits.train
        in_ram = ImageSet(mapped.images[:], mapped.targets, mapped.classes, mapped.source, ids=mapped.ids)  # a copy
        result = {"start_s": time.perf_counter() - started, "images": len(mapped), "map_img_s": [], "ram_img_s": []}
        cfg = train_config(folder, cache_dir, size, args, out)
        for _ in range(args.passes):
            for key, train_set in (("map_img_s", mapped), ("ram_img_s", in_ram)):
                result[key].append(train(cfg, train_set, splits.val)["train_img_per_s"])
        return {**result, "shape": list(mapped.images.shape[1:]), **memory.stop()}
    try:
        done = train(train_config(folder, cache_dir, size, args, out, cache=cache))
    finally:
        cleanup_distributed()
    return {**timing, "loop_img_s": done["train_img_per_s"], "steps": done["step"], **memory.stop()}


def worker(kind: str, folder: Path, cache_dir: Path, size: int, batch: int, passes: int) -> dict:
    """One measurement in this process: 'build', 'map', 'ram' or 'gather'. Returns its numbers."""
    memory = MemorySampler()
    start = time.perf_counter()
    if kind == "ram":
        data = load_image_folder(folder, "train", resize_mixed_to=size, progress=False)
    else:
        data = open_cache(list_split(folder / "train"), size, cache_dir=cache_dir, progress=False)
    result = {"start_s": time.perf_counter() - start, "images": len(data), "shape": list(data.images.shape[1:])}
    if kind == "map":  # the first pass also maps each page into the process; the second does not
        result["gather_img_s"] = gather_pass(data.images, data.targets, batch, seed=0)
        result["gather_again_img_s"] = gather_pass(data.images, data.targets, batch, seed=1)
    if kind == "gather":
        in_ram = data.images.clone()
        gather_pass(data.images, data.targets, batch, seed=0)  # pages mapped in, as from the second epoch on
        result.update(map_img_s=[], ram_img_s=[])
        for seed in range(passes):
            for key, images in (("map_img_s", data.images), ("ram_img_s", in_ram)):
                result[key].append(gather_pass(images, data.targets, batch, seed=seed))
    return {**result, **memory.stop()}


TRAIN_KINDS = ("train-map", "train-ram", "loop", "ddp-map", "ddp-ram")


def measure(kind: str, folder: Path, cache_dir: Path, args) -> dict:
    cmd = [sys.executable, __file__, *worker_args(kind, folder, cache_dir, args)]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started  # with the interpreter's start and imports
    return result


def worker_args(kind: str, folder: Path, cache_dir: Path, args) -> list[str]:
    return ["--worker", kind, "--folder", str(folder), "--cache-dir", str(cache_dir), "--size", str(args.size),
            "--batch", str(args.batch), "--passes", str(args.passes), "--train-steps", str(args.train_steps),
            "--train-batch", str(args.train_batch), "--train-threads", str(args.train_threads),
            "--runs-dir", str(args.runs_dir)]


def measure_ddp(kind: str, folder: Path, cache_dir: Path, args) -> list[dict]:
    """2 CPU processes under torchrun (gloo): a row per rank, then one for both: their memory summed."""
    reports = args.runs_dir / f"{kind}-reports"
    shutil.rmtree(reports, ignore_errors=True)
    reports.mkdir(parents=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
           *worker_args(kind, folder, cache_dir, args), "--report-dir", str(reports)]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if done.returncode != 0:
        raise RuntimeError(f"{kind} workers failed:\n{done.stderr[-5000:]}")
    ranks = [json.loads((reports / f"rank{r}.json").read_text()) for r in (0, 1)]
    process_s = time.perf_counter() - started
    rows = [{**r, "process_s": process_s, "rank": i} for i, r in enumerate(ranks)]
    total = {key: sum(r[key] for r in ranks) for key in ("private_mb", "file_mapped_mb", "peak_rss_mb", "pss_mb")}
    # a rank's loop img/s already counts both ranks' images (minivit.train's train_img_per_s)
    total.update(start_s=max(r["start_s"] for r in ranks), process_s=process_s, images=ranks[0]["images"],
                 shape=ranks[0]["shape"], loop_img_s=ranks[0]["loop_img_s"], rank="both")
    return rows + [total]


def med(values: list) -> float:
    """The median of the measured values (a run too short to time steady state gives None: left out)."""
    values = [v for v in values if v is not None]
    return median(values) if values else float("nan")


def print_table(rows: list[dict]) -> None:
    header = (f"{'N':>7}  {'run':<26}{'cache GB':>9}{'start s':>9}{'process s':>11}{'private MB':>12}"
              f"{'file-mapped MB':>16}{'peak RSS MB':>13}{'PSS MB':>9}{'img/s':>36}")
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        if "map_img_s" in r:
            what = "loop" if r["run"].startswith("loop") else "gather"
            speed = f"{what} {med(r['map_img_s']):,.0f} map, {med(r['ram_img_s']):,.0f} RAM"
        elif "gather_img_s" in r:
            speed = f"gather {r['gather_img_s']:,.0f} 1st, {r['gather_again_img_s']:,.0f} 2nd pass"
        else:
            speed = f"loop {r['loop_img_s']:,.0f}" if r.get("loop_img_s") else "-"
        cache_gb = f"{r['cache_gb']:.2f}" if "cache_gb" in r else ""
        pss = f"{r['pss_mb']:,.0f}" if r.get("pss_mb") else "-"
        print(f"{r['n']:>7}  {r['run']:<26}{cache_gb:>9}{r['start_s']:>9.2f}{r['process_s']:>11.2f}"
              f"{r['private_mb']:>12,.0f}{r['file_mapped_mb']:>16,.0f}{r['peak_rss_mb']:>13,.0f}{pss:>9}{speed:>36}")


def summary(rows: list[dict]) -> list[str]:
    """The cache's goals: a fast second start, a private memory that does not grow with N, one copy of the
    data for the processes of a machine, a loop as fast from the map as from RAM."""
    lines = []
    for run, what in (("second start (map)", "the mapped pass"), ("train from the map", "the training process")):
        maps = {r["n"]: r for r in rows if r["run"] == run}
        if not maps:
            continue
        largest, smallest = max(maps), min(maps)
        if run.startswith("second"):
            lines.append(f"second start at N={largest}: {maps[largest]['start_s']:.2f} s (goal < 5 s)")
        if largest != smallest:
            ratio = maps[largest]["private_mb"] / maps[smallest]["private_mb"]
            lines.append(f"private MB of {what}, N={largest} vs N={smallest}: x{ratio:.3f} (goal within 10%)")
    for r in rows:
        if r["run"].startswith("2 DDP from the map") and r.get("rank") == "both":
            one = next((o for o in rows if o["n"] == r["n"] and o["run"] == "train from the map"), None)
            if one:
                # PSS splits each shared page between the processes that map it: two copies of the images would
                # make the sum twice one process's; private memory (model, optimiser, torch) is per process anyway
                lines.append(f"2 DDP processes from the map at N={r['n']}: summed PSS {r['pss_mb']:,.0f} MB = "
                             f"x{r['pss_mb'] / one['pss_mb']:.2f} one process's {one['pss_mb']:,.0f} MB (one copy of "
                             f"the images: goal < 2); summed private {r['private_mb']:,.0f} MB = "
                             f"x{r['private_mb'] / one['private_mb']:.2f} one process's (each its own model and torch)")
        if "map_img_s" in r:
            ratio = med(r["map_img_s"]) / med(r["ram_img_s"])
            what = ("training loop img/s map / RAM" if r["run"].startswith("loop") else
                    "gather img/s map / RAM (the CPU gather, not the training loop)")
            goal = " (goal >= 0.95)" if r["run"].startswith("loop") else ""
            lines.append(f"{what} at N={r['n']}: {ratio:.2f}{goal} (medians of {len(r['map_img_s'])} alternating passes)")
    return lines


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=integer(at_least=1), nargs="+", default=[10_000, 50_000], help="dataset sizes")
    p.add_argument("--size", type=integer(at_least=1), default=224,
                   help="training size (mixed sizes are resized to it)")
    p.add_argument("--data-dir", type=Path, default=Path("runs/data_scale/data"),
                   help="where the generated JPEG folders live (reused between runs)")
    p.add_argument("--cache-dir", type=Path, default=Path("runs/data_scale/cache"),
                   help="cache folder of the runs; its data_scale-n<N> subfolders are emptied before each first start")
    p.add_argument("--ram-max", type=integer(at_least=0), default=10_000,
                   help="decode into RAM only for N up to this (N=50,000 at 224x224 RGB needs ~15 GB while stacking)")
    p.add_argument("--batch", type=integer(at_least=1), default=256, help="images per gathered batch")
    p.add_argument("--passes", type=integer(at_least=1), default=3,
                   help="gather and loop map vs RAM: passes over each")
    p.add_argument("--train-steps", type=integer(at_least=0), default=30,
                   help="steps of each training row (0: no training rows)")
    p.add_argument("--train-batch", type=integer(at_least=1), default=32, help="batch of the training rows")
    p.add_argument("--train-threads", type=integer(at_least=1), default=1,
                   help="torch threads of each training process (1: OpenMP's spinning threads do not stall on a "
                        "machine that other work shares; the 2 DDP processes then use the 2 cores)")
    p.add_argument("--no-ddp", action="store_true", help="leave out the 2-process rows")
    p.add_argument("--seed", type=integer(at_least=0), default=0)
    p.add_argument("--out", type=Path, default=Path("runs/benchmarks/data_scale.json"), help="JSON of every number")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--worker", choices=("build", "map", "ram", "gather", *TRAIN_KINDS), help=argparse.SUPPRESS)
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--runs-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--report-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is None and args.out.exists() and not args.overwrite:
        p.error(f"argument --out: {args.out} exists (pass --overwrite to replace it)")
    args.runs_dir = args.runs_dir or args.out.parent / f"{args.out.stem}-runs"  # the training rows' run folders
    return args


def run_worker(args) -> int:
    if args.worker not in TRAIN_KINDS:
        print(json.dumps(worker(args.worker, args.folder, args.cache_dir, args.size, args.batch, args.passes)))
        return 0
    result = train_worker(args.worker, args.folder, args.cache_dir, args.size, args)
    if args.report_dir:  # under torchrun: a file per rank
        (args.report_dir / f"rank{os.environ['RANK']}.json").write_text(json.dumps(result))
    else:
        print(json.dumps(result))
    return 0


def runs_for(n: int, args) -> list[tuple[str, str]]:
    """The (row name, worker kind) pairs measured at N, in order."""
    ram = n <= args.ram_max
    runs = [("first start (build)", "build"), ("second start (map)", "map")]
    runs += [("RAM decode", "ram"), ("gather map vs RAM", "gather")] if ram else []
    if args.train_steps:
        runs += [("train from the map", "train-map")]
        runs += [("train from RAM", "train-ram"), ("loop map vs RAM", "loop")] if ram else []
        if not args.no_ddp:
            runs += [("2 DDP from the map", "ddp-map")] + ([("2 DDP from RAM", "ddp-ram")] if ram else [])
    return runs


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    rows = []
    for n in args.n:
        folder = args.data_dir / f"faces-{n}-seed{args.seed}"
        generate(folder, n, args.seed, progress=not args.no_progress)
        cache_dir = args.cache_dir / f"data_scale-n{n}"
        shutil.rmtree(cache_dir, ignore_errors=True)  # a real first start
        for name, kind in runs_for(n, args):
            if kind.startswith("ddp"):
                rows += [{"n": n, "run": f"{name} ({'rank ' * (r['rank'] != 'both')}{r['rank']})", **r}
                         for r in measure_ddp(kind, folder, cache_dir, args)]
            else:
                rows.append({"n": n, "run": name, **measure(kind, folder, cache_dir, args)})
            if kind == "build":
                rows[-1]["cache_gb"] = sum(f.stat().st_size for f in cache_dir.rglob("images.u8")) / 1e9
            print(f"N={n} {name}: {rows[-1]['start_s']:.2f} s, load {os.getloadavg()[0]:.2f}", flush=True)
            rows[-1]["load_avg"] = os.getloadavg()[0]
        shutil.rmtree(args.runs_dir, ignore_errors=True)
    print_table(rows)
    lines = summary(rows)
    print("\n".join(lines))
    command = "python benchmarks/data_scale.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write_json({"meta": {"size": args.size, "batch": args.batch, "train_batch": args.train_batch,
                         "train_steps": args.train_steps, "cpus": os.cpu_count(), "torch": torch.__version__,
                         "command": command}, "rows": rows, "summary": lines}, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
