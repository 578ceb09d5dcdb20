"""Overhead of the ComfyUI node layer over direct hrinv calls (no ComfyUI needed: the pack runs over the test stubs).

Prints, for the same work: the node's time, the direct library call's time, and their ratio; plus the pack's import
time. Tiny seeded 64 px generator and a random VGG16, so it runs anywhere; the figures show the glue cost (image
conversion, progress/preview callbacks, copies), not model speed.

    python benchmarks/bench_nodes.py [--steps 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from nodes_harness import face_images, random_vgg, run_node, stubbed_pack, tiny_generators  # noqa: E402


def paired(fa, fb, repeat):
    """Median times of ``fa`` and ``fb``, run alternately (a shared, busy machine drifts; pairs see the same load)."""
    ta, tb, out = [], [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fa()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        fb()
        tb.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, stubbed_pack(tmp) as h:
        t_import = time.perf_counter() - t0
        from hrinv.inversion import InversionConfig, compute_w_stats, invert
        from hrinv.rendering import render

        G, _ = tiny_generators()
        vgg = random_vgg()
        types = h.node_module.types
        gh, vh = types.GeneratorHandle(G, "tiny"), types.VGGHandle(vgg, "random")
        img = face_images(2)
        stats = compute_w_stats(G)
        h.node_module.invert._W_STATS[G] = ((10000, 123), stats)     # both sides reuse the same w statistics
        node_inv = lambda: run_node(h.nodes["HRInv_Invert"], generator=gh, image=img, vgg=vh, steps=a.steps)  # noqa
        cfg = InversionConfig(steps=a.steps, seed=0, preview_every=max(1, a.steps // 25))
        direct_inv = lambda: invert(G, img.permute(0, 3, 1, 2) * 2 - 1, vgg, cfg, w_stats=stats)  # noqa: E731
        t_node, t_lib, (lat, _) = paired(node_inv, direct_inv, a.repeat)
        node_r = lambda: run_node(h.nodes["HRInv_RenderAnyResolution"], generator=gh, latent=lat, width=256,  # noqa
                                  height=256)
        direct_r = lambda: render(G, lat.latent.ws, 256, 256)  # noqa: E731
        r_node, r_lib, _ = paired(node_r, direct_r, a.repeat)
    print(f"pack import + node listing (stubs): {t_import * 1000:.0f} ms")
    print(f"{'work':<36}{'node':>10}{'hrinv':>10}{'node/hrinv':>12}")
    print(f"{f'invert 2 x 64 px, {a.steps} steps':<36}{t_node:>9.2f}s{t_lib:>9.2f}s{t_node / t_lib:>12.2f}")
    print(f"{'render 2 x 256 px (resize mode)':<36}{r_node:>9.3f}s{r_lib:>9.3f}s{r_node / r_lib:>12.2f}")


if __name__ == "__main__":
    main()
