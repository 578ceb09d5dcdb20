"""Benchmark the StyleGAN2 generator and INR rendering.

Prints, per resolution (config-f-like widths: channel_base 32768, channel_max 512, 8 mapping layers, random weights):
forward time of mapping + synthesis and peak memory; fused vs unfused modulated conv (time ratio); and INR rendering
at a large non-square size, tiled vs untiled (time and peak memory side by side, as ratios).

CPU peak memory = peak resident set size above the baseline, sampled every 2 ms by a thread reading /proc (torch's
allocations are invisible to tracemalloc); ``resource.getrusage`` maxrss is printed too. On CUDA the figures are
``torch.cuda.max_memory_allocated`` above the baseline.

    PYTHONPATH=. python benchmarks/bench_generator.py                    # CPU: 64, 256, 1024 (a couple of minutes)
    PYTHONPATH=. python benchmarks/bench_generator.py --device cuda --res 256 1024 --batch 4
"""

import argparse
import os
import resource
import threading
import time

import torch

from hrinv.generator.inr import INRHead
from hrinv.generator.stylegan2 import Generator
from hrinv.rendering import render


def _rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


class PeakMemory:
    """Context manager: peak memory (bytes) above the value at entry, on ``device``."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.peak = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.base = _rss_bytes()
            self._max = self.base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self._max = max(self._max, _rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._max, _rss_bytes()) - self.base
        return False


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats):
    """Best-of-``repeats`` wall time (s) and peak memory (bytes) of ``fn()`` (after one warm-up call)."""
    fn()
    best, peak = float("inf"), 0
    for _ in range(repeats):
        with PeakMemory(device) as pm:
            t = time.perf_counter()
            fn()
            _sync(device)
            dt = time.perf_counter() - t
        best, peak = min(best, dt), max(peak, pm.peak)
    return best, peak


def config_f(res, device):
    return Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3,
                     mapping_kwargs={"num_layers": 8},
                     synthesis_kwargs={"channel_base": 32768, "channel_max": 512, "conv_clamp": 256},
                     device=device).requires_grad_(False)


def mib(b):
    return f"{b / 2 ** 20:8.1f} MiB"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--res", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--inr-res", type=int, default=256, help="generator resolution for the INR render benchmark")
    p.add_argument("--inr-size", type=int, nargs=2, default=[1024, 2048], metavar=("H", "W"))
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}, batch {args.batch}")

    print("\n== forward (mapping + synthesis), config-f widths, noise const, fp32 ==")
    print(f"{'res':>5} {'params':>8} {'fused s':>9} {'fused peak':>13} {'unfused s':>10} {'unfused peak':>13} "
          f"{'unfused/fused':>14}")
    for res in args.res:
        G = config_f(res, dev)
        z = torch.randn(args.batch, 512, generator=g).to(dev)
        nparam = sum(t.numel() for t in G.parameters())
        with torch.no_grad():
            tf, mf = timed(lambda G=G, z=z: G.synthesis(G.mapping(z), fused_modconv=True), dev, args.repeats)
            tu, mu = timed(lambda G=G, z=z: G.synthesis(G.mapping(z), fused_modconv=False), dev, args.repeats)
        print(f"{res:>5} {nparam / 1e6:7.1f}M {tf:9.3f} {mib(mf):>13} {tu:10.3f} {mib(mu):>13} {tu / tf:14.2f}")
        del G

    H, W = args.inr_size
    print(f"\n== INR render {H}x{W} from a {args.inr_res}^2 config-f generator (untrained head, hidden 64) ==")
    G = config_f(args.inr_res, dev)
    R = args.inr_res
    G.attach_inr(INRHead(G.synthesis.channels[R], R, device=dev))
    ws = G.mapping(torch.randn(args.batch, 512, generator=g).to(dev))
    with torch.no_grad():
        tn, mn = timed(lambda: G.synthesis(ws), dev, 1)
    tu, mu = timed(lambda: render(G, ws, H, W, tile=None, device=dev), dev, 1)
    tt, mt = timed(lambda: render(G, ws, H, W, tile=args.tile, device=dev), dev, 1)
    tr, mr = timed(lambda: render(G, ws, H, W, mode="resize", device=dev), dev, 1)
    same = (render(G, ws, H, W, tile=None, device=dev) - render(G, ws, H, W, tile=args.tile, device=dev)).abs().max()
    out_b = args.batch * 3 * H * W * 4
    print(f"(native {R}^2 synthesis alone: {tn:.3f} s, {mib(mn)}; the fp32 output itself is {mib(out_b)})")
    print(f"{'':>18} {'time s':>8} {'peak':>13}")
    print(f"{'untiled':>18} {tu:8.3f} {mib(mu):>13}")
    print(f"{'tile ' + str(args.tile):>18} {tt:8.3f} {mib(mt):>13}")
    print(f"{'resize (no head)':>18} {tr:8.3f} {mib(mr):>13}")
    print(f"tiled/untiled: time x{tt / tu:.2f}, peak memory x{mt / max(mu, 1):.2f}; max |tiled - untiled| = "
          f"{same.item():.2e}")
    print(f"\nprocess maxrss: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
