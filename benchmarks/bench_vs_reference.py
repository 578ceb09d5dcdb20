"""Our W+ (+noise) inversion step against NVIDIA stylegan2-ada-pytorch's generator, same weights, same loss, same loop.

The reference is NVIDIA's own code, fetched by you OUTSIDE this repository (never committed), e.g.
``git clone https://github.com/NVlabs/stylegan2-ada-pytorch /somewhere/ref``. Its custom CUDA ops are never compiled
here: on the CPU its ``upfirdn2d`` / ``bias_act`` / ``conv2d_gradfix`` take their pure-PyTorch reference paths by
themselves (they only try the plugin for CUDA tensors); with ``--device cuda`` we force ``impl="ref"`` too so no
compiler is needed (say ``--ref-cuda-ops`` to let it build its plugins, as the official projector would).

Both generators get the same random weights (the reference's ``G.state_dict()`` loads strictly into ours), the same
seeded random VGG16 conv trunk inside our :class:`hrinv.losses.PerceptualLoss` (layers "conv", full resolution), the
same Adam (``torch.optim.Adam``, lr 0.1), and the same step: synthesis -> loss -> backward -> Adam -> noise
re-normalisation. The reference optimises its ``noise_const`` buffers as the official projector does (shared across
the batch); ours per-sample noise maps ``[B, 1, r, r]`` as :func:`hrinv.invert` does.

Variants of ours (alternated with the reference in one process; each repeat runs every variant for ``--steps``
steps after ``--warmup``): ``fp32`` (the library's defaults), ``fp32-fused`` (the old always-fused modconv),
``bf16`` (``precision="bf16"``), ``fp32-nopool`` (fp32 without the :class:`hrinv.bufferpool.BufferPool` that
every variant of ours otherwise has current during its steps, as :func:`hrinv.optim.optimize` does). The
reference's loop has a pool current too: NVIDIA's generator never uses it, but the VGG loss both loops share does, so
the loss costs the same in both. A ``loss alone`` row times that shared loss (forward + backward to a fixed image)
in the same alternation, and a second table gives the generator's part: each step minus the loss alone. Printed: min
and median step time and our time / reference time, with the load average next to the table.

    PYTHONPATH=. python benchmarks/bench_vs_reference.py --ref /work/ref
    PYTHONPATH=. python benchmarks/bench_vs_reference.py --ref /work/ref --batch 1 4 --repeats 5 --variants fp32 bf16
    PYTHONPATH=. python benchmarks/bench_vs_reference.py --ref /work/ref --device cuda --size 1024 --batch 1 8
"""

import argparse
import contextlib
import importlib
import os
import statistics
import sys
import time
import types

import torch

from hrinv import perf
from hrinv.bufferpool import BufferPool
from hrinv.generator.stylegan2 import Generator
from hrinv.optim import precision_closure, prepare_loss, synthesis_renderer
from hrinv.losses import PerceptualLoss
from hrinv.losses.vgg import VGG16Conv

CONFIGS = {  # stylegan2-ada-pytorch train.py cfg specs (fmaps -> channel_base = fmaps * 32768), mapping layers
    256: {"channel_base": 16384, "channel_max": 512, "map": 8},  # cfg "paper256"
    512: {"channel_base": 32768, "channel_max": 512, "map": 8},  # cfg "paper512"
    1024: {"channel_base": 32768, "channel_max": 512, "map": 8},  # cfg "paper1024" / config-f
}


def import_reference(path, device, cuda_ops=False):
    """Import NVIDIA's ``training.networks`` from ``path`` without compiling anything (see module doc)."""
    if not os.path.isfile(os.path.join(path, "training", "networks.py")):
        raise SystemExit(f"--ref {path!r} is not a stylegan2-ada-pytorch checkout (no training/networks.py)")
    sys.modules.setdefault("requests", types.ModuleType("requests"))  # dnnlib.util imports it; never used here
    sys.path.insert(0, os.path.abspath(path))
    networks = importlib.import_module("training.networks")
    if torch.device(device).type == "cuda" and not cuda_ops:
        from torch_utils.ops import bias_act, upfirdn2d
        bias_act._init = lambda: False  # the plugin loaders report "not available": the reference path runs
        upfirdn2d._init = lambda: False
    return networks


def build_pair(networks, res, device, seed=0):
    cfg = CONFIGS.get(res, CONFIGS[1024])
    kwargs = {"z_dim": 512, "c_dim": 0, "w_dim": 512, "img_resolution": res, "img_channels": 3,
              "mapping_kwargs": {"num_layers": cfg["map"]},
              "synthesis_kwargs": {"channel_base": cfg["channel_base"], "channel_max": cfg["channel_max"],
                                   "num_fp16_res": 4, "conv_clamp": 256}}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G_ref = networks.Generator(**kwargs).eval().requires_grad_(False)
        for name, p in G_ref.named_parameters():
            if name.endswith("noise_strength"):
                p.data.fill_(0.05)
    G_ours = Generator(**kwargs)
    G_ours.load_state_dict(G_ref.state_dict(), strict=True)
    return G_ref.to(device), G_ours.to(device).eval().requires_grad_(False)


def build_loss(device, seed=1):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vgg = VGG16Conv()
        for m in vgg.features.values():  # He init so the features neither vanish nor explode
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            torch.nn.init.zeros_(m.bias)
    # frozen, as invert() uses it (prepare_loss then takes it as it is, no copy); the reference loop shares it
    return PerceptualLoss(vgg.to(device), layers="conv", calibration="none").eval().requires_grad_(False)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One variant: owns its variables, optimiser and target features; ``run(n)`` returns per-step seconds.

    Ours runs through the library's own loop pieces, as :func:`hrinv.invert` does: ``prepare_loss`` (target
    features computed once in fp32), ``perf.precision_plan`` (autocast and the per-loop weight casts) and
    ``precision_closure`` around ``synthesis_renderer`` (the fp32-fused variant alone renders with
    ``fused_modconv=True``)."""

    def __init__(self, name, G, loss, target, batch, device, kind, precision="fp32", fused=None, num_fp16=False,
                 pool=True):
        self.name, self.G, self.device, self.kind, self.precision = name, G, device, kind, precision
        # ours runs as hrinv.optim.optimize() does: a BufferPool current during every step, alive as long as the loop.
        # The reference's loop gets one too: NVIDIA's generator never asks it for anything, but the VGG loss that
        # both loops share does, so the shared loss costs the same in both and the ratio compares the generators.
        self.pool = BufferPool() if pool else None
        self.force_fp32 = not num_fp16
        if kind == "loss":  # a fixed image as the only variable
            self.loss = loss
            with torch.no_grad():
                self.feats = loss.target(target)
            self.img = torch.rand(target.shape, generator=torch.Generator().manual_seed(3)).mul(2).sub(1)
            self.img = self.img.to(device).requires_grad_(True)
            self.params, self.noise = [self.img], {}
            self.opt = torch.optim.Adam(self.params, lr=0.0)
            return
        num_ws = G.num_ws if kind == "ours" else G.synthesis.num_ws
        g = torch.Generator().manual_seed(7)  # every variant starts from the same point
        self.ws = torch.randn(batch, num_ws, 512, generator=g).mul_(0.1).to(device).requires_grad_(True)
        if kind == "ours":
            self.loss = prepare_loss(loss, device)
            self.feats = self.loss.target(target)
            names = G.synthesis.noise_names
            self.noise = {n: torch.randn(batch, 1, G.synthesis.noise_resolution(n), G.synthesis.noise_resolution(n),
                                         generator=g).to(device).requires_grad_(True) for n in names}
            self.vars = {"ws": self.ws, **{"noise." + n: t for n, t in self.noise.items()}}
            plan = perf.precision_plan(precision, device, G, self.force_fp32)
            if fused is None:
                render = synthesis_renderer(G, self.vars, torch.float32, None, self.force_fp32)
            else:
                def render(v, force_fp32):
                    return G.synthesis(v["ws"], noise={n: v["noise." + n] for n in names}, force_fp32=force_fp32,
                                       fused_modconv=fused)
            self.closure = precision_closure(plan, render, lambda img, v: self.loss(img, self.feats))
        else:
            self.loss = loss
            with torch.no_grad():
                self.feats = loss.target(target)
            self.noise = {n: b for n, b in G.synthesis.named_buffers() if "noise_const" in n}
            for b in self.noise.values():
                b.requires_grad_(True)
        params = [self.ws] + list(self.noise.values())
        self.params = params
        self.opt = torch.optim.Adam(params, lr=0.1, betas=(0.9, 0.999))

    def step(self):
        with self.pool.use() if self.pool is not None else contextlib.nullcontext():
            return self._step()

    def _step(self):
        self.opt.zero_grad(set_to_none=True)
        if self.kind == "loss":  # the shared VGG loss alone (forward + backward to the image), for the split
            loss = self.loss(self.img, self.feats).sum()
        elif self.kind == "ours":
            loss = self.closure(self.vars, 0, 1)[0].sum()
        else:
            img = self.G.synthesis(self.ws, noise_mode="const", force_fp32=self.force_fp32)
            loss = self.loss(img.float(), self.feats).sum()
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            for buf in self.noise.values():
                buf -= buf.mean()
                buf *= buf.square().mean().rsqrt()
        return float(loss.detach())

    def run(self, n):
        wall, cpu = [], []
        for _ in range(n):
            _sync(self.device)
            t, c = time.perf_counter(), time.process_time()
            self.step()
            _sync(self.device)
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        return wall, cpu


def table(rows, load, clock):
    print(f"load average (1, 5, 15 min) before / after: {load[0]} / {load[1]}; clock: {clock}")
    print("| variant | batch | min s/step | median s/step | ours / reference (min) | ours / reference (median) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.3f} | {r[4]} | {r[5]} |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", default=None, help="path of a stylegan2-ada-pytorch checkout (outside this repo)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--variants", nargs="+", default=["fp32", "fp32-fused", "bf16"],
                    help="fp32 | fp32-nopool | fp32-fused | bf16 | fp16 | fp16-blocks (NVIDIA num_fp16_res "
                         "blocks, GPU)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant per repeat")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = leave)")
    ap.add_argument("--ref-cuda-ops", action="store_true", help="let the reference build its CUDA plugins")
    args = ap.parse_args(argv)
    if not args.ref:
        print("SKIPPED: no --ref PATH given. Fetch NVlabs/stylegan2-ada-pytorch outside this repository and pass its "
              "path, e.g. --ref /work/ref.")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    networks = import_reference(args.ref, device, args.ref_cuda_ops)
    load0 = tuple(round(x, 2) for x in os.getloadavg())
    rows = {"wall": [], "cpu": [], "wall-gen": [], "cpu-gen": []}
    print(f"# {args.size}^2 W+ (+noise) inversion step, device {device}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}, cpu bf16 {perf.cpu_supports_bf16()}, {args.repeats} repeats x {args.steps} "
          f"steps (after {args.warmup} warm-up)")
    for batch in args.batch:
        G_ref, G_ours = build_pair(networks, args.size, device)
        loss = build_loss(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(2)
            target = torch.rand(batch, 3, args.size, args.size).mul(2).sub(1).to(device)
        runners = [Runner("reference", G_ref, loss, target, batch, device, "ref")]
        for v in args.variants:
            prec = {"fp32": "fp32", "fp32-nopool": "fp32", "fp32-fused": "fp32", "bf16": "bf16", "fp16": "fp16",
                    "fp16-blocks": "fp32"}[v]
            runners.append(Runner(v, G_ours, loss, target, batch, device, "ours", precision=prec,
                                  fused=True if v == "fp32-fused" else None, num_fp16=v == "fp16-blocks",
                                  pool=v != "fp32-nopool"))
        runners.append(Runner("loss alone", None, loss, target, batch, device, "loss"))
        for r in runners:
            r.run(args.warmup)
        times = {r.name: ([], []) for r in runners}
        for _ in range(args.repeats):
            for r in runners:
                wall, cpu = r.run(args.steps)
                times[r.name][0].extend(wall)
                times[r.name][1].extend(cpu)
        for clock, k in (("wall", 0), ("cpu", 1)):
            ref = times["reference"][k]
            ref_min, ref_med = min(ref), statistics.median(ref)
            for r in runners:
                t = times[r.name][k]
                mn, md = min(t), statistics.median(t)
                rows[clock].append((r.name, batch, mn, md, f"{mn / ref_min:.2f}", f"{md / ref_med:.2f}"))
            # the generator's part: step time minus the shared loss's time (min - min, median - median)
            lmin, lmed = min(times["loss alone"][k]), statistics.median(times["loss alone"][k])
            for r in runners:
                if r.kind == "loss" or r.precision != "fp32":
                    continue  # the loss alone is timed in fp32: subtracting it from a bf16/fp16 step means nothing
                t = times[r.name][k]
                gmn, gmd = min(t) - lmin, statistics.median(t) - lmed
                rows[clock + "-gen"].append((r.name, batch, gmn, gmd, f"{gmn / (ref_min - lmin):.2f}",
                                             f"{gmd / (ref_med - lmed):.2f}"))
        del runners, G_ref, G_ours
    load1 = tuple(round(x, 2) for x in os.getloadavg())
    for clock in ("cpu", "wall"):
        table(rows[clock], (load0, load1), clock + (" (process CPU time; the fair figure on a shared machine when "
                                                    "threads = 1)" if clock == "cpu" else " (wall time)"))
        table(rows[clock + "-gen"], (load0, load1), clock + ", generator part only: each step minus the 'loss alone' "
              "time (the VGG loss both loops share, forward + backward)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
