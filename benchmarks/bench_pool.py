"""What the activation buffer pool and the leaner VGG loss do to one 256² inversion step on the CPU: time, page faults,
peak memory. Printed side by side, variants alternated in one process (``--loss``) or one subprocess per variant
(``--peak``). Needs no reference checkout: our generator and loss with the random weights of
``bench_vs_reference.py``.

``--loss``: the VGG conv loss alone (forward + backward to a fixed image) with the old op chain (every ReLU out of
place, autograd's distance), the new one, and the new one with a :class:`hrinv.bufferpool.BufferPool` current; CPU
seconds (min / median), minor page faults per step, and whether loss and image gradient are bitwise those of the old
chain.

``--peak``: our whole step (generator + loss + Adam) with and without the pool, each in its own subprocess: the
steady-state peak resident set (``VmHWM`` after resetting it with ``/proc/self/clear_refs`` once the first step has
run) and what the pool holds between steps (Linux only).

    PYTHONPATH=. python benchmarks/bench_pool.py --loss --batch 4 --repeats 4
    PYTHONPATH=. python benchmarks/bench_pool.py --peak --batch 4
"""

import argparse
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_vs_reference import Runner, build_loss  # noqa: E402

from hrinv.bufferpool import BufferPool  # noqa: E402
from hrinv.generator.stylegan2 import Generator  # noqa: E402
from hrinv.losses import perceptual  # noqa: E402
from hrinv.losses import vgg as vgg_mod  # noqa: E402


def _old_chain():
    return (lambda h, inplace: F.relu(h),
            lambda f, t, scale: (f.float() - t.float()).mul_(scale).square().sum(dim=(1, 2, 3)))


def _set_chain(chain):
    vgg_mod._ReLU.apply = staticmethod(chain[0])
    perceptual._SquaredDistance.apply = staticmethod(chain[1])


def loss_ab(batch, size, repeats):
    loss = build_loss("cpu")
    g = torch.Generator().manual_seed(0)
    feats = loss.target(torch.rand(batch, 3, size, size, generator=g) * 2 - 1)
    pred0 = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    new = (vgg_mod._ReLU.apply, perceptual._SquaredDistance.apply)
    variants = {"old chain": (_old_chain(), None), "new": (new, None), "new + pool": (new, BufferPool())}

    def step(pool):
        pred = pred0.clone().requires_grad_(True)
        with pool.use() if pool is not None else contextlib.nullcontext():
            value = loss(pred, feats).sum()
            value.backward()
        return value.detach(), pred.grad

    first, times = {}, {k: ([], []) for k in variants}
    try:
        for name, (chain, pool) in variants.items():  # warm-up, and the results to compare
            _set_chain(chain)
            first[name] = step(pool)
        for _ in range(repeats):
            for name, (chain, pool) in variants.items():
                _set_chain(chain)
                f0, c0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
                step(pool)
                times[name][0].append(time.process_time() - c0)
                times[name][1].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    finally:
        _set_chain(new)
    print(f"VGG conv loss alone, {size}^2, batch {batch}, forward + backward, CPU s per step, {repeats} alternated "
          f"repeats; load {tuple(round(x, 2) for x in os.getloadavg())}")
    print("| variant | min s | median s | minor page faults per step (median) | loss, gradient bitwise = old chain |")
    print("|---|---|---|---|---|")
    for name in variants:
        t, f = times[name]
        same = torch.equal(first[name][0], first["old chain"][0]) and torch.equal(first[name][1],
                                                                                    first["old chain"][1])
        print(f"| {name} | {min(t):.3f} | {statistics.median(t):.3f} | {statistics.median(f):.0f} | {same} |")


def _status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def peak_child(batch, size, pool):
    torch.set_num_threads(1)
    from bench_vs_reference import CONFIGS

    cfg = CONFIGS.get(size, CONFIGS[1024])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = Generator(512, 0, 512, size, 3, mapping_kwargs={"num_layers": cfg["map"]},
                      synthesis_kwargs={"channel_base": cfg["channel_base"], "channel_max": cfg["channel_max"],
                                        "num_fp16_res": 4, "conv_clamp": 256}).eval().requires_grad_(False)
        target = torch.rand(batch, 3, size, size).mul(2).sub(1)
    r = Runner("fp32", G, build_loss("cpu"), target, batch, "cpu", "ours", pool=pool)
    r.step()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset VmHWM to the current resident set
    r.step()
    r.step()
    held = r.pool.held_bytes if r.pool is not None else 0
    print(f"{_status('VmHWM')} {held}")


def peak(batch, size):
    rows = []
    for pool in (False, True):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--peak-child", "--batch", str(batch),
                              "--size", str(size)] + (["--pool"] if pool else []),
                             capture_output=True, text=True, check=True).stdout.split()
        rows.append((pool, int(out[-2]), int(out[-1])))
    print(f"Our step (generator + VGG conv loss + Adam), {size}^2, batch {batch}, fp32, 1 thread: peak resident set "
          f"of steps 2-3; load {tuple(round(x, 2) for x in os.getloadavg())}")
    print("| pool | peak resident set GiB | held by the pool between steps GiB |")
    print("|---|---|---|")
    for pool, hwm, held in rows:
        print(f"| {'yes' if pool else 'no'} | {hwm / 2**30:.3f} | {held / 2**30:.3f} |")
    print(f"pool / no pool peak: {rows[1][1] / rows[0][1]:.3f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loss", action="store_true", help="A/B of the VGG loss alone")
    ap.add_argument("--peak", action="store_true", help="peak resident set with and without the pool")
    ap.add_argument("--peak-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--pool", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.peak_child:
        peak_child(args.batch, args.size, args.pool)
        return 0
    if not (args.loss or args.peak):
        ap.error("say --loss and/or --peak")
    if args.loss:
        loss_ab(args.batch, args.size, args.repeats)
    if args.peak:
        peak(args.batch, args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
