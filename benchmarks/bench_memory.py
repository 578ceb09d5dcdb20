"""Measured peak memory of one inversion step, one subprocess per configuration, next to hrinv.perf's estimate.

Each configuration runs in a fresh Python process (so peaks do not mix): it builds a config-f generator at ``--size``
(random weights, 8 mapping layers, channel_base 32768) and a seeded random VGG16, records its resident set, runs
:func:`hrinv.invert` for ``--steps`` steps with ``InversionConfig(memory=MODE)`` and reports the peak resident set
(``VmHWM`` from /proc/self/status, Linux) minus the resident set before the run: the working memory of the
inversion. On CUDA (``--device cuda``) it reports ``torch.cuda.max_memory_allocated`` instead. Finally the automatic
choice of :func:`hrinv.perf.plan_memory` is printed for 1024^2 and for a 10-megapixel non-square target
(2736 x 3648, INR head) at several free-memory budgets, and for this machine's free memory.

    PYTHONPATH=. python benchmarks/bench_memory.py                       # 1024^2, batch 1, modes none checkpoint tile
    PYTHONPATH=. python benchmarks/bench_memory.py --size 256 --modes none --steps 1      # quick
    PYTHONPATH=. python benchmarks/bench_memory.py --plans-only
    PYTHONPATH=. python benchmarks/bench_memory.py --inr-target 1368x1824 --budget-gib 8 --cap-gib 12   # INR head

``--inr-target HxW`` instead inverts one non-square target through the bundled 64 px G_s's INR head with the memory
modes ``plan_memory`` picks for ``--budget-gib`` (see :func:`child_inr`).
"""

import argparse
import json
import os
import subprocess
import sys
import time


def _rss(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def child(args):
    import torch

    from hrinv import perf
    from hrinv.generator.stylegan2 import Generator
    from hrinv.inversion import InversionConfig, invert
    from hrinv.losses.vgg import VGG16Conv

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        G = Generator(512, 0, 512, args.size, 3, mapping_kwargs={"num_layers": 8},
                      synthesis_kwargs={"channel_base": 32768, "channel_max": 512, "conv_clamp": 256}).to(device)
        vgg = VGG16Conv()
        for m in vgg.features.values():
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        vgg = vgg.to(device)
        target = torch.rand(args.batch, 3, args.size, args.size).mul(2).sub(1).to(device)
    w_stats = (torch.zeros(512, device=device), 1.0)
    config = InversionConfig(steps=args.steps, memory=args.mode, precision=args.precision, preview_every=0)
    plan = perf.plan_memory(args.size, args.size, args.batch, device=device, mode=args.mode)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    base_rss = _rss("VmRSS")
    t = time.perf_counter()
    invert(G, target, vgg, config, device=device, w_stats=w_stats)
    wall = time.perf_counter() - t
    peak = (torch.cuda.max_memory_allocated(device) - base) if device.type == "cuda" else _rss("VmHWM") - base_rss
    print(json.dumps({"mode": args.mode, "plan": plan.as_dict(), "peak_gib": round(peak / 2 ** 30, 2),
                      "base_rss_gib": round(base_rss / 2 ** 30, 2), "seconds": round(wall, 1)}))


def child_inr(args):
    """One real inversion step of a non-square target at ``--inr-target HxW`` through the bundled 64 px G_s's INR head
    (random target in [-1, 1], fixed seed), with the bundled caffe VGG16 conv loss and the memory modes that
    ``plan_memory`` chooses for ``--budget-gib`` of free memory (``InversionConfig(memory="auto")`` with the free memory
    read as that budget). The child's address space is capped at ``--cap-gib`` so an underestimate fails with an
    allocation error instead of pushing the machine into swap or the OOM killer."""
    import resource

    if args.cap_gib:
        cap = int(args.cap_gib * 2 ** 30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    import torch

    from hrinv import bundled, load_generator, load_vgg16, perf
    from hrinv.inversion import InversionConfig, invert

    torch.set_num_threads(args.threads)
    h, w = (int(x) for x in args.inr_target.lower().split("x"))
    budget = int(args.budget_gib * 2 ** 30)
    perf.free_memory_bytes = lambda device=None: budget  # this process plans as if it had the budget free
    G = load_generator(bundled.path("stylegan2_face64.safetensors"))
    vgg = load_vgg16(bundled.path("vgg16_caffe_conv_fp16.safetensors"))
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(1, 3, h, w, generator=gen).mul(2).sub(1)
    plan = perf.plan_memory(h, w, 1, device="cpu", inr=True, native=G.img_resolution)
    base_rss = _rss("VmRSS")
    t = time.perf_counter()
    res = invert(G, target, vgg, InversionConfig(steps=args.steps, memory="auto", preview_every=0),
                 w_stats=(torch.zeros(G.w_dim), 1.0))
    wall = time.perf_counter() - t
    peak = _rss("VmHWM") - base_rss
    print(json.dumps({"target": [h, w], "plan": plan.as_dict(), "peak_gib": round(peak / 2 ** 30, 2),
                      "base_rss_gib": round(base_rss / 2 ** 30, 2), "seconds": round(wall, 1),
                      "steps": args.steps, "psnr": res.metrics["psnr"]}))


def plans():
    from hrinv import perf

    print("| target | free memory | choice | estimated peak |")
    print("|---|---|---|---|")
    for (h, w, native, label) in ((1024, 1024, None, "1024^2, b1"),
                                  (2736, 3648, 1024, "10 MP (2736 x 3648), INR head of a 1024^2 G, b1"),
                                  (2736, 3648, 64, "10 MP (2736 x 3648), INR head of the bundled 64 px G_s, b1")):
        for free in (None, 24, 8, 4.5, 3.2):
            p = perf.plan_memory(h, w, 1, device="cpu", free_bytes=None if free is None else int(free * 2 ** 30),
                                 inr=native is not None, native=native)
            modes = ", ".join(x for x in (("VGG checkpointing" if p.checkpoint else ""),
                                          (f"VGG tiles of {p.tile} px" if p.tile else ""),
                                          (f"INR render tiles of {p.render_tile} px" if p.render_tile else ""))
                              if x) or "nothing"
            fm = f"{free} GiB" if free is not None else f"this machine ({perf.free_memory_bytes('cpu') / 2**30:.1f} GiB)"
            print(f"| {label} | {fm} | {modes} | {p.estimate / 2 ** 30:.1f} GiB |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--modes", nargs="+", default=["none", "checkpoint", "tile"])
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--plans-only", action="store_true")
    ap.add_argument("--inr-target", default=None, metavar="HxW",
                    help="instead of the config-f runs: one real inversion step at this non-square size (e.g. "
                         "2736x3648, 10 MP) through the bundled G_s's INR head, with the modes plan_memory picks for "
                         "--budget-gib")
    ap.add_argument("--budget-gib", type=float, default=24.0, help="free memory the --inr-target plan assumes")
    ap.add_argument("--cap-gib", type=float, default=0.0,
                    help="cap the --inr-target child's address space (RLIMIT_AS) at this many GiB (0 = no cap)")
    ap.add_argument("--child-mode", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-inr", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_inr:
        return child_inr(args)
    if args.child_mode:
        args.mode = args.child_mode
        return child(args)
    if args.inr_target:
        print(f"# peak memory of {args.steps} inversion step(s) at {args.inr_target} through the bundled G_s's INR "
              f"head, memory modes planned for {args.budget_gib} GiB free, fp32, 1 sample, {args.threads} thread(s), "
              f"load {os.getloadavg()}", flush=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--child-inr", "--inr-target", args.inr_target,
               "--budget-gib", str(args.budget_gib), "--cap-gib", str(args.cap_gib), "--steps", str(args.steps),
               "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(f"failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode}")
            return 1
        r = json.loads(out.stdout.strip().splitlines()[-1])
        p = r["plan"]
        modes = ", ".join(x for x in (("VGG checkpointing" if p["checkpoint"] else ""),
                                      (f"VGG tiles of {p['tile']} px" if p["tile"] else ""),
                                      (f"INR render tiles of {p['render_tile']} px" if p["render_tile"] else ""))
                          if x) or "nothing"
        print("| target | plan (budget) | measured peak (working) | estimate | resident before | wall s |")
        print("|---|---|---|---|---|---|")
        print(f"| {r['target'][0]} x {r['target'][1]} | {modes} ({args.budget_gib} GiB) | {r['peak_gib']} GiB | "
              f"{p['estimate_gib']} GiB | {r['base_rss_gib']} GiB | {r['seconds']} |")
        print(f"# load after {os.getloadavg()}")
        return 0
    if not args.plans_only:
        print(f"# peak memory of {args.steps} inversion step(s), {args.size}^2, batch {args.batch}, {args.precision}, "
              f"device {args.device}, load {os.getloadavg()}")
        print("| memory mode | measured peak (working) | estimate (hrinv.perf) | resident before | wall s |")
        print("|---|---|---|---|---|")
        for mode in args.modes:
            cmd = [sys.executable, os.path.abspath(__file__), "--child-mode", mode, "--size", str(args.size),
                   "--batch", str(args.batch), "--steps", str(args.steps), "--precision", args.precision,
                   "--device", args.device, "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(f"| {mode} | failed: {out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode} |")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {mode} | {r['peak_gib']} GiB | {r['plan']['estimate_gib']} GiB | {r['base_rss_gib']} GiB | "
                  f"{r['seconds']} |", flush=True)
    plans()
    return 0


if __name__ == "__main__":
    sys.exit(main())
