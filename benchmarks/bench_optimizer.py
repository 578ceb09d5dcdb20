"""Optimiser cost: the first use of ``torch.optim.Adam`` in a fresh process, and a whole inversion run.

``hrinv.optim.optimize`` uses ``torch.optim.Adam`` (it used a hand-written Adam, written so that the first use would
not import ``torch._dynamo``). This script measures what that choice costs, so the docs can cite a figure:

1. first use in a fresh process: ``import torch.optim`` + one ``Adam.step()``, after ``import torch`` (median of
   ``--procs`` processes);
2. a whole W+ inversion on a seeded random 64 px generator with a pixel loss, ``--steps`` steps (median of
   ``--repeats``), i.e. what a user waits for.

Run the script at two commits (before/after a change of optimiser) and compare the printed figures; it prints the
optimiser share of the run as a ratio. Run: ``PYTHONPATH=. python benchmarks/bench_optimizer.py``. No ../shared.
"""

import argparse
import statistics
import subprocess
import sys
import time

import torch

FIRST_USE = ("import time, torch; t = time.perf_counter(); import torch.optim; "
             "p = torch.zeros(3, requires_grad=True); p.grad = torch.ones(3); o = torch.optim.Adam([p], lr=0.1); "
             "o.step(); print(time.perf_counter() - t)")


def first_use_seconds(procs):
    out = []
    for _ in range(procs):
        r = subprocess.run([sys.executable, "-c", FIRST_USE], capture_output=True, text=True, check=True)
        out.append(float(r.stdout.strip()))
    return statistics.median(out)


def inversion_seconds(steps, repeats):
    from hrinv.generator.stylegan2 import Generator
    from hrinv.inversion import InversionConfig, compute_w_stats, invert

    G = Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=64, img_channels=3, mapping_kwargs={"num_layers": 2},
                  synthesis_kwargs={"channel_base": 1024, "channel_max": 32}).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    stats = compute_w_stats(G, 500)

    def mse(pred, tgt):
        return (pred - tgt).square().flatten(1).mean(1)

    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        invert(G, target, mse, InversionConfig(steps=steps, seed=0), w_stats=stats)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    first = first_use_seconds(args.procs)
    run = inversion_seconds(args.steps, args.repeats)
    print(f"torch {torch.__version__}, 1 thread")
    print(f"first use of torch.optim.Adam in a fresh process: {first:.3f} s")
    print(f"W+ inversion, 64 px random generator, batch 2, {args.steps} steps: {run:.3f} s")
    print(f"first use / inversion run: {first / run:.3f}")


if __name__ == "__main__":
    main()
