"""Time and peak memory of one perceptual-loss step (loss + backward to the prediction), side by side.

Modes, per image size:
  full      the paper's d_conv at full resolution (no down-sampling)
  down256   the reference baseline: area-resize the input to 256² first (``downsample=256``)
  ckpt      full resolution with activation checkpointing of the VGG segments (``checkpoint=True``)
  tile      full resolution, spatial tiles of ``--tile`` px with an exact halo, each tile checkpointed

Each (mode, size) runs in a fresh subprocess. CPU peak memory = the highest resident set size sampled every
millisecond during the step minus the size before it (large allocations are mmapped, so freed memory leaves RSS); on
CUDA, ``torch.cuda.max_memory_allocated`` above the level before the step. Target features are computed
before the timed step (the inversion loop computes them once).

    PYTHONPATH=. python benchmarks/bench_perceptual.py                      # CPU: 256, 512, 1024
    PYTHONPATH=. python benchmarks/bench_perceptual.py --device cuda --sizes 512 1024 2048
"""

import argparse
import json
import os
import subprocess
import sys
import time

MODES = ("full", "down256", "ckpt", "tile")


def _rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _RssPeak:
    """Samples the resident set size every millisecond in a thread (torch ops release the GIL) and keeps the max.

    The child processes run with a fixed ``MALLOC_MMAP_THRESHOLD_`` so that large tensors are mmapped and returned to
    the OS when freed: RSS then follows live memory instead of glibc's high-water mark.
    """

    def __enter__(self):
        import threading

        self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, _rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def run_one(mode, size, device, weights, tile, repeat):
    import torch

    from hrinv.losses import PerceptualLoss, load_vgg16

    dev = torch.device(device)
    vgg = load_vgg16(weights, device=dev)
    kwargs = {"full": {}, "down256": {"downsample": 256}, "ckpt": {"checkpoint": True}, "tile": {"tile": tile}}[mode]
    loss = PerceptualLoss(vgg, "conv", **kwargs)
    g = torch.Generator().manual_seed(0)
    tgt = (torch.rand(1, 3, size, size, generator=g) * 2 - 1).to(dev)
    pred0 = (torch.rand(1, 3, size, size, generator=g) * 2 - 1).to(dev)
    target = loss.target(tgt)
    warm = torch.rand(1, 3, 64, 64, generator=g).to(dev).requires_grad_(True)
    loss(warm, loss.target(warm.detach())).sum().backward()  # warm-up kernels / allocator
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_mb()
    times = []
    with _RssPeak() as sampler:
        for _ in range(repeat):
            pred = pred0.clone().requires_grad_(True)
            t0 = time.perf_counter()
            val = loss(pred, target).sum()
            val.backward()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            del pred
    if dev.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = sampler.peak - base
    tgt_mb = sum(f.numel() * f.element_size() for f in target.feats.values()) / 2**20
    return {"mode": mode, "size": size, "time_s": min(times), "peak_mb": peak, "target_mb": tgt_mb,
            "loss": float(val)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--weights", default=os.environ.get("HRINV_VGG16", "../shared/weights/"
                                                         "vgg16_imagenet_caffe.safetensors"))
    ap.add_argument("--one", nargs=2, metavar=("MODE", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        res = run_one(args.one[0], int(args.one[1]), args.device, args.weights, args.tile, args.repeat)
        print("RESULT " + json.dumps(res))
        return
    rows = {}
    for size in args.sizes:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--one", mode, str(size), "--device", args.device, "--tile",
                   str(args.tile), "--repeat", str(args.repeat), "--weights", args.weights]
            env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
            out = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
            if out.returncode != 0 or not line:
                print(f"{mode} @ {size}: failed\n{out.stderr[-2000:]}")
                continue
            rows[(mode, size)] = r = json.loads(line[0][7:])
            print(f"  {mode:8s} {size:5d}²  {r['time_s']:8.2f} s  peak {r['peak_mb']:8.0f} MiB  "
                  f"(target feats {r['target_mb']:.0f} MiB)", flush=True)
    print(f"\nloss + backward, device {args.device}; ratios vs 'full' at the same size")
    print(f"{'size':>6} | " + " | ".join(f"{m:>26s}" for m in args.modes))
    for size in args.sizes:
        full = rows.get(("full", size))
        cells = []
        for m in args.modes:
            r = rows.get((m, size))
            if r is None:
                cells.append(f"{'-':>26s}")
                continue
            rt = f"{r['time_s'] / full['time_s']:.2f}x" if full else "?"
            rm = f"{r['peak_mb'] / full['peak_mb']:.2f}x" if full and full["peak_mb"] > 0 else "?"
            cells.append(f"{r['time_s']:6.2f}s ({rt:>6}) {r['peak_mb']:6.0f}M ({rm:>5})")
        print(f"{size:>5}² | " + " | ".join(cells))


if __name__ == "__main__":
    main()
