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
  (--passes each, the same random orders) and compare the medians: one process, one machine state.

"start s" is listing + opening (or decoding) inside the process, not the interpreter's and torch's import.
Memory, sampled every 10 ms from /proc/self/status: "private" is RssAnon (the process's own pages: heap,
tensors), "file-mapped" is RssFile (pages of mapped files, the cache included: page-cache pages that every
process mapping the file shares), "peak RSS" is VmHWM. "gather img/s" is a pass over all images through
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
    """Peaks of RssAnon and RssFile (MB) of this process, sampled every 10 ms by a thread, and VmHWM."""

    def __init__(self):
        self.peaks = {"RssAnon": 0.0, "RssFile": 0.0}
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

    def _run(self):
        while not self._stop.wait(0.01):
            now = self.read()
            for key in self.peaks:
                self.peaks[key] = max(self.peaks[key], now[key])

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        now = self.read()
        return {"private_mb": max(self.peaks["RssAnon"], now["RssAnon"]),
                "file_mapped_mb": max(self.peaks["RssFile"], now["RssFile"]), "peak_rss_mb": now["VmHWM"]}


def gather_pass(images: torch.Tensor, targets: torch.Tensor, batch: int, seed: int) -> float:
    """img/s of one pass over every image in a random order, through the prefetcher."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    start, seen = time.perf_counter(), 0
    with Prefetcher(images, targets, order.split(batch), depth=4) as batches:
        for xb, _ in batches:
            seen += len(xb)
    return seen / (time.perf_counter() - start)


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


def measure(kind: str, folder: Path, cache_dir: Path, size: int, batch: int, passes: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--folder", str(folder), "--cache-dir", str(cache_dir),
           "--size", str(size), "--batch", str(batch), "--passes", str(passes)]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} worker failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started  # with the interpreter's start and imports
    return result


def print_table(rows: list[dict]) -> None:
    header = (f"{'N':>7}  {'run':<22}{'cache GB':>9}{'start s':>9}{'process s':>11}{'private MB':>12}"
              f"{'file-mapped MB':>16}{'peak RSS MB':>13}{'gather img/s':>29}")
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        if "map_img_s" in r:
            gather = f"{median(r['map_img_s']):,.0f} map, {median(r['ram_img_s']):,.0f} RAM"
        else:
            gather = (f"{r['gather_img_s']:,.0f} 1st, {r['gather_again_img_s']:,.0f} 2nd pass" if "gather_img_s" in r
                      else "-")
        cache_gb = f"{r['cache_gb']:.2f}" if "cache_gb" in r else ""
        print(f"{r['n']:>7}  {r['run']:<22}{cache_gb:>9}{r['start_s']:>9.2f}{r['process_s']:>11.2f}"
              f"{r['private_mb']:>12,.0f}{r['file_mapped_mb']:>16,.0f}{r['peak_rss_mb']:>13,.0f}{gather:>29}")


def summary(rows: list[dict]) -> list[str]:
    """The cache's goals (a fast second start, memory that does not grow with N), as far as the cache layer
    alone measures them."""
    maps = {r["n"]: r for r in rows if r["run"].startswith("second")}
    lines = []
    if maps:
        largest = max(maps)
        lines.append(f"second start at N={largest}: {maps[largest]['start_s']:.2f} s (goal < 5 s)")
        smallest = min(maps)
        if largest != smallest:
            ratio = maps[largest]["private_mb"] / maps[smallest]["private_mb"]
            lines.append(f"private MB of the mapped pass, N={largest} vs N={smallest}: x{ratio:.3f} (goal within 10%)")
    for r in rows:
        if "map_img_s" in r:
            ratio = median(r["map_img_s"]) / median(r["ram_img_s"])
            lines.append(f"gather img/s map / RAM at N={r['n']}: {ratio:.2f} (medians of {len(r['map_img_s'])} "
                         f"alternating passes; the CPU gather, not the training loop)")
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
    p.add_argument("--passes", type=integer(at_least=1), default=3, help="gather map vs RAM: passes over each")
    p.add_argument("--seed", type=integer(at_least=0), default=0)
    p.add_argument("--out", type=Path, default=Path("runs/benchmarks/data_scale.json"), help="JSON of every number")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--worker", choices=("build", "map", "ram", "gather"), help=argparse.SUPPRESS)
    p.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is None and args.out.exists() and not args.overwrite:
        p.error(f"argument --out: {args.out} exists (pass --overwrite to replace it)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.folder, args.cache_dir, args.size, args.batch, args.passes)))
        return 0
    rows = []
    for n in args.n:
        folder = args.data_dir / f"faces-{n}-seed{args.seed}"
        generate(folder, n, args.seed, progress=not args.no_progress)
        cache_dir = args.cache_dir / f"data_scale-n{n}"
        shutil.rmtree(cache_dir, ignore_errors=True)  # a real first start
        runs = [("first start (build)", "build"), ("second start (map)", "map")]
        runs += [("RAM decode", "ram"), ("gather map vs RAM", "gather")] if n <= args.ram_max else []
        for name, kind in runs:
            rows.append({"n": n, "run": name, **measure(kind, folder, cache_dir, args.size, args.batch, args.passes)})
            if kind == "build":
                rows[-1]["cache_gb"] = sum(f.stat().st_size for f in cache_dir.rglob("images.u8")) / 1e9
            print(f"N={n} {name}: {rows[-1]['start_s']:.2f} s", flush=True)
    print_table(rows)
    lines = summary(rows)
    print("\n".join(lines))
    command = "python benchmarks/data_scale.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write_json({"meta": {"size": args.size, "batch": args.batch, "cpus": os.cpu_count(), "torch": torch.__version__,
                         "command": command}, "rows": rows, "summary": lines}, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
