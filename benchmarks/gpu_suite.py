"""The GPU check in one script: N-step (default 1000) 1024^2 W+ (+noise) inversions, time and peak VRAM,
ours in each precision against NVIDIA stylegan2-ada-pytorch's generator in the same loop, batch 1 and 8.

UNMEASURED so far: written and dry-run on the CPU (``--device cpu --size 64 --steps 2``), never run on a GPU.

The loop, weights and loss are those of ``bench_vs_reference.py`` (same random weights in both generators, the same
seeded VGG16 conv loss at full resolution, torch Adam lr 0.1, noise re-normalisation). The reference runs its
pure-PyTorch ops unless ``--ref-cuda-ops`` lets it build its CUDA plugins (what the official projector does; needs
nvcc). Each variant runs alone (not alternated: 1000 steps are long enough), after ``--warmup`` steps; the peak is
``torch.cuda.max_memory_allocated`` over the timed steps, reset before each variant.

Variants of ours: ``fp32``, ``bf16`` (autocast), ``fp16`` (NVIDIA per-block fp16 in the 4 highest resolutions +
fp16 VGG + in-graph loss scaling), ``bf16-cl`` (bf16 + channels_last inputs), ``bf16-compile`` (bf16 +
``torch.compile`` of the synthesis; compile time printed separately, never at import).

    PYTHONPATH=. python benchmarks/gpu_suite.py --ref /path/to/stylegan2-ada-pytorch               # the full check
    PYTHONPATH=. python benchmarks/gpu_suite.py --ref /work/ref --device cpu --size 64 --steps 2 --batch 1  # dry run
    PYTHONPATH=. python benchmarks/gpu_suite.py --ref /work/ref --device cpu --quick      # smoke test, about a minute
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_vs_reference import Runner, build_loss, build_pair, import_reference  # noqa: E402

from hrinv.inversion import psnr  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_variant(runner, steps, warmup, device):
    runner.run(warmup)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    _sync(device)
    t0 = time.perf_counter()
    wall, _ = runner.run(steps)
    _sync(device)
    total = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated(device) - base) if device.type == "cuda" else 0
    return total, statistics.median(wall), peak


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", default=None, help="stylegan2-ada-pytorch checkout (outside this repository)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--variants", nargs="+", default=["fp32", "bf16", "fp16", "bf16-cl", "bf16-compile"])
    ap.add_argument("--ref-cuda-ops", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test that the script works (e.g. with --device cpu): 64^2, 2 steps after 1 warm-up, "
                         "batch 1, variants fp32 (+ bf16 where the CPU has native bf16); figures meaningless")
    args = ap.parse_args(argv)
    if args.quick:
        from hrinv import perf

        args.size, args.steps, args.warmup, args.batch = 64, 2, 1, [1]
        cpu = torch.device(args.device).type == "cpu"
        args.variants = ["fp32"] + (["bf16"] if not cpu or perf.cpu_supports_bf16() else [])
    if not args.ref:
        print("SKIPPED: no --ref PATH (a stylegan2-ada-pytorch checkout outside this repository).")
        return 0
    device = torch.device(args.device)
    networks = import_reference(args.ref, device, args.ref_cuda_ops)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"# {torch.cuda.get_device_name(device)}, torch {torch.__version__}, bf16 "
              f"{torch.cuda.is_bf16_supported()}")
    print(f"# {args.size}^2, {args.steps} steps per run after {args.warmup} warm-up, load {os.getloadavg()}")
    print("| variant | batch | total s | median s/step | peak MiB | time / reference | peak / reference | PSNR vs "
          "fp32 image (dB) |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in args.batch:
        G_ref, G_ours = build_pair(networks, args.size, device)
        loss = build_loss(device)
        g = torch.Generator().manual_seed(2)
        target = torch.rand(batch, 3, args.size, args.size, generator=g).mul(2).sub(1).to(device)
        ref = Runner("reference", G_ref, loss, target, batch, device, "ref")
        rt, rm, rp = run_variant(ref, args.steps, args.warmup, device)
        print(f"| reference | {batch} | {rt:.1f} | {rm:.4f} | {rp / 2**20:.0f} | 1.00 | 1.00 | - |", flush=True)
        del ref
        fp32_img = None
        for v in args.variants:
            prec = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16", "bf16-cl": "bf16", "bf16-compile": "bf16"}[v]
            r = Runner(v, G_ours, loss, target, batch, device, "ours", precision=prec, num_fp16=(v == "fp16"))
            extra = ""
            if v == "bf16-cl":
                G_ours.synthesis.to(memory_format=torch.channels_last)
                loss.vgg.to(memory_format=torch.channels_last)
            if v == "bf16-compile":
                t = time.perf_counter()
                synth = G_ours.synthesis
                compiled = torch.compile(synth.forward)
                G_ours.synthesis.forward = compiled
                r.run(1)
                extra = f" (compile + first step {time.perf_counter() - t:.0f} s)"
            try:
                tt, tm, tp = run_variant(r, args.steps, args.warmup, device)
                with torch.no_grad():
                    img = G_ours.synthesis(r.ws.detach(), noise={k: n.detach() for k, n in r.noise.items()}).float()
                if v == "fp32":
                    fp32_img = img
                q = f"{float(psnr(img, fp32_img).mean()):.1f}" if fp32_img is not None and v != "fp32" else "-"
                print(f"| {v}{extra} | {batch} | {tt:.1f} | {tm:.4f} | {tp / 2**20:.0f} | {tt / rt:.2f} | "
                      f"{(tp / rp) if rp else float('nan'):.2f} | {q} |", flush=True)
            except Exception as exc:  # report and carry on with the next variant
                print(f"| {v} | {batch} | failed: {type(exc).__name__}: {str(exc)[:120]} | | | | | |", flush=True)
            finally:
                if v == "bf16-compile":
                    del G_ours.synthesis.forward
                if v == "bf16-cl":
                    G_ours.synthesis.to(memory_format=torch.contiguous_format)
                    loss.vgg.to(memory_format=torch.contiguous_format)
            del r
            if device.type == "cuda":
                torch.cuda.empty_cache()
        del G_ref, G_ours, loss
    return 0


if __name__ == "__main__":
    sys.exit(main())
