"""Inversion speed and peak memory: full-resolution HRInversion loss vs. the down-sampled (256 px) baseline.

For every (resolution, batch) it runs a few optimisation steps of :func:`hrinv.invert` twice: with the VGG16 conv loss
at full resolution (the paper) and with prediction and target area-down-sampled to 256 px before the loss (the
NVIDIA/rosinality projector setting the paper's ablation compares with). It prints iterations/s (per batch and per
image) and peak memory side by side with the full/baseline ratio.

Each setting runs in its own subprocess so peak memory is per setting (CPU: peak RSS of that process, and the part
added by the optimisation on top of the loaded models; CUDA: ``torch.cuda.max_memory_allocated``).

The generator is randomly initialised with the StyleGAN2 config-f layout (8-layer mapping, 512-d W, skip
architecture, conv_clamp 256) at the requested resolution; on CPU the default widths are reduced
(``--channel-base 8192 --channel-max 128``, i.e. 1/4 of config-f's 32768/512) to keep the run to a few minutes. Pass
``--channel-base 32768 --channel-max 512`` for true config-f widths (GPU). Timings do not depend on the weights'
values, so random weights are fine; the VGG16 weights are the real ones.

    python benchmarks/bench_invert.py                      # CPU, 256 and 1024, batch 1 and 4
    python benchmarks/bench_invert.py --device cuda --channel-base 32768 --channel-max 512 --iters 20
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VGG = REPO.parent / "shared" / "weights" / "vgg16_imagenet_caffe.safetensors"


def run_one(args):
    import torch

    sys.path.insert(0, str(REPO))
    from hrinv.generator.stylegan2 import Generator
    from hrinv.inversion import InversionConfig, compute_w_stats, invert
    from hrinv.losses import PerceptualLoss, load_vgg16

    device = torch.device(args.device)
    torch.manual_seed(0)  # benchmark script only: reproducible random generator weights
    G = Generator(512, 0, 512, args.res, 3, {"num_layers": 8},
                  {"channel_base": args.channel_base, "channel_max": args.channel_max, "num_fp16_res": 0,
                   "conv_clamp": 256}, device=device)
    loss = PerceptualLoss(load_vgg16(args.vgg, device=device), "conv")
    g = torch.Generator().manual_seed(1)
    target = (torch.rand(args.batch, 3, args.res, args.res, generator=g) * 2 - 1).to(device)
    stats = compute_w_stats(G, 1000)
    cfg = InversionConfig(steps=args.warmup + args.iters, seed=0, downsample=256 if args.mode == "ds256" else None)
    stamps = []

    def cb(step, total, preview):
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    invert(G, target, loss, cfg, w_stats=stats, callback=cb)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    timed = stamps[args.warmup - 1:] if args.warmup > 0 else stamps
    secs = (timed[-1] - timed[0]) / max(1, len(timed) - 1)
    n_params = sum(p.numel() for p in G.synthesis.parameters())
    print(json.dumps({"s_per_it": secs, "peak_bytes": peak, "base_bytes": base, "g_params": n_params}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--iters", type=int, default=2, help="timed iterations per setting")
    ap.add_argument("--warmup", type=int, default=1, help="untimed iterations per setting")
    ap.add_argument("--channel-base", type=int, default=8192)
    ap.add_argument("--channel-max", type=int, default=128)
    ap.add_argument("--vgg", default=str(DEFAULT_VGG))
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    # internal: one setting in this process
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--res", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=["full", "ds256"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.one:
        return run_one(args)
    if not Path(args.vgg).is_file():
        sys.exit(f"VGG16 weights not found at {args.vgg} (pass --vgg PATH)")

    print(f"device {args.device}; generator: random config-f layout, channel_base {args.channel_base}, channel_max "
          f"{args.channel_max}; VGG16 conv loss (real weights); {args.warmup} warm-up + {args.iters} timed steps")
    hdr = (f"{'res':>5} {'batch':>5} | {'full it/s':>10} {'img/s':>7} {'peak MB':>8} {'+MB':>7} | "
           f"{'ds256 it/s':>10} {'img/s':>7} {'peak MB':>8} {'+MB':>7} | {'time x':>6} {'mem x':>6}")
    print(hdr)
    print("-" * len(hdr))
    env = dict(os.environ)
    for res in args.resolutions:
        for b in args.batches:
            row = {}
            for mode in ("full", "ds256"):
                cmd = [sys.executable, __file__, "--one", "--res", str(res), "--batch", str(b), "--mode", mode,
                       "--device", args.device, "--iters", str(args.iters), "--warmup", str(args.warmup),
                       "--channel-base", str(args.channel_base), "--channel-max", str(args.channel_max),
                       "--vgg", args.vgg, "--threads", str(args.threads)]
                r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
                lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
                if r.returncode != 0 or not lines:
                    row[mode] = None
                    print(f"  {res}px batch {b} {mode}: failed ({r.stderr.strip().splitlines()[-1:]})")
                else:
                    row[mode] = json.loads(lines[-1])
            f, d = row["full"], row["ds256"]

            def cols(x, b=b):
                if x is None:
                    return f"{'-':>10} {'-':>7} {'-':>8} {'-':>7}"
                its = 1 / x["s_per_it"]
                return (f"{its:10.4f} {its * b:7.3f} {x['peak_bytes'] / 2**20:8.0f} "
                        f"{(x['peak_bytes'] - x['base_bytes']) / 2**20:7.0f}")

            ratio_t = f"{f['s_per_it'] / d['s_per_it']:6.2f}" if f and d else f"{'-':>6}"
            ratio_m = (f"{(f['peak_bytes'] - f['base_bytes']) / max(1, d['peak_bytes'] - d['base_bytes']):6.2f}"
                       if f and d else f"{'-':>6}")
            print(f"{res:>5} {b:>5} | {cols(f)} | {cols(d)} | {ratio_t} {ratio_m}",
                  flush=True)
    print("time x = full / ds256 seconds per step; mem x = full / ds256 memory added by the optimisation (+MB)")


if __name__ == "__main__":
    main()
