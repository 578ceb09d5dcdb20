"""Throughput of `hrinv batch invert`: items per minute with 1 process vs N processes under torchrun.

    python benchmarks/bench_batch.py [--items 8] [--steps 10] [--nproc 2] [--device cpu] [--with-threads]
                                     [--batch-size 4]

Builds a seeded tiny 64 px generator, a random VGG16 and small pictures in a temporary folder (nothing downloaded),
then runs the same job with `python -m hrinv batch invert` (1 process, 1 thread) and with `torchrun --standalone
--nproc-per-node N` (1 thread per rank); `--with-threads` adds 1 process using N threads. It prints, side by side, the wall
time of the whole command (interpreter + torch start, model loading, the items) and the job time reported by the
engine (model loading + items), as items per minute, and the ratios. The load average is printed before and after:
on a shared machine the ratio says as much about the neighbours as about the code.

On GPUs, use --device cuda with a real generator: each rank then owns one GPU and the items are independent, so
throughput scales with the number of GPUs until the file system or the CPU-side image decoding becomes the limit.

``--batch-size B`` adds 1 process, 1 thread with ``hrinv batch invert --batch-size B`` (B items per optimisation)
next to the 1-item-at-a-time run.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _make_data(d: Path, items: int):
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the package and the suite's seeded tiny models (script only)
    from nodes_harness import random_vgg, tiny_generators

    from hrinv.io.checkpoints import save_generator

    G, _ = tiny_generators()
    save_generator(G, d / "g.safetensors")
    save_file({f"features.{k}": v.contiguous() for k, v in random_vgg().features.state_dict().items()},
              str(d / "vgg.safetensors"))
    rng = np.random.default_rng(0)
    (d / "imgs").mkdir()
    for i in range(items):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(d / "imgs" / f"im{i:04d}.png")
    del torch


def _run(cmd, env, label):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"{label} failed:\n{r.stderr[-3000:]}")
    m = re.search(r"; ([0-9.]+)s; table", r.stderr)
    job = float(m.group(1)) if m else float("nan")
    return wall, job


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=0,
                    help="also run 1 process, 1 thread inverting this many items together (--batch-size)")
    ap.add_argument("--no-torchrun", action="store_true", help="skip the torchrun run")
    ap.add_argument("--with-threads", action="store_true",
                    help="also run 1 process with --nproc threads (intra-op parallelism instead of more processes)")
    args = ap.parse_args()

    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPU(s)")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        _make_data(d, args.items)
        base = ["batch", "invert", "--input", str(d / "imgs"), "-g", str(d / "g.safetensors"), "--vgg",
                str(d / "vgg.safetensors"), "--steps", str(args.steps), "--no-noise", "--no-align",
                "--device", args.device]
        runs = [
            ("1 process, 1 thread", [sys.executable, "-m", "hrinv", *base, "--out", str(d / "o1"), "--threads", "1"],
             {"OMP_NUM_THREADS": "1"}),
            (f"torchrun {args.nproc} processes x 1 thread",
             [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.nproc),
              "-m", "hrinv", *base, "--out", str(d / "oN")], {"OMP_NUM_THREADS": "1"}),
        ]
        if args.no_torchrun:
            runs.pop()
        if args.batch_size > 1:
            runs.append((f"1 process, 1 thread, batch {args.batch_size}",
                         [sys.executable, "-m", "hrinv", *base, "--out", str(d / "oB"), "--threads", "1",
                          "--batch-size", str(args.batch_size)], {"OMP_NUM_THREADS": "1"}))
        if args.with_threads:
            runs.append((f"1 process, {args.nproc} threads", [sys.executable, "-m", "hrinv", *base, "--out",
                                                             str(d / "oT"), "--threads", str(args.nproc)], {}))
        results = []
        for label, cmd, extra in runs:
            wall, job = _run(cmd, {**env, **extra}, label)
            results.append((label, wall, job))
            print(f"  {label:<34} wall {wall:7.1f} s  job {job:7.1f} s", flush=True)
    ref_wall, ref_job = results[0][1], results[0][2]
    print(f"\n{args.items} items x {args.steps} steps, tiny 64 px generator, random VGG16, device {args.device}")
    print(f"{'run':<36}{'items/min (wall)':>18}{'items/min (job)':>17}{'ratio wall':>12}{'ratio job':>11}")
    for label, wall, job in results:
        print(f"{label:<36}{60 * args.items / wall:18.1f}{60 * args.items / job:17.1f}{ref_wall / wall:12.2f}"
              f"{ref_job / job:11.2f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
