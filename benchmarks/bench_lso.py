"""LSO (Eq. 8) defaults experiment: sweep λ_reg × lr on a small generator with the real VGG16 and print the figures.

The paper gives no λ_reg, learning rate or init scale for LSO. This script measures, for each setting, on a batch of
(content, reference) pairs:

- ``dh_drop``: fraction of d_h removed by LSO, ``1 − d_h(after) / d_h(before)`` (content/pose recovery; higher is
  better);
- ``style_drift``: how far the low-level VGG statistics (Gram matrices of conv1_2 and conv2_2, the classic "style"
  descriptor) moved away from the mixed image G_m(w_m), relative to how far the content image is from it:
  ``gram(result, mixed) / gram(content, mixed)``; 0 = style kept, 1 = moved as far as the content (lower is better);
- ``|w_opt|``: norm of the offset in units of w_std (how far LSO leaves w_m);
- ``gap``: the norm of ``w_s − w_m`` on the optimised rows in units of w_std (what a perfect content restoration of
  those rows would need), for scale.

Setting (deterministic, seeds fixed): G_s = the nv_small fixture (64², 10 W+ rows, w_dim 128); G_t = G_s with every
synthesis parameter moved by 0.3·mean|p|·N(0, 1) (a stand-in for fine-tuning); content x_s = G_s(w_s) clamped to
[-1, 1] (so the exact content code is known); reference code w_t = a mapped random z; λ per block (b4..b64) =
0.2, 0.2, 0.2, 0.7, 0.7 (the paper's 0.2-low / 0.7-high split at this size). LSO on rows "auto" (0–4), 50 steps.

Run: ``PYTHONPATH=. python benchmarks/bench_lso.py [--quick] [--pairs 3] [--steps 50]`` (CPU, a few minutes per
setting on a loaded 2-core machine; ``--device cuda`` when available). Needs ../shared (fixtures + VGG weights).
"""

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HRINV_SHARED", REPO.parent / "shared"))


def load_fixture_generator(name, device):
    from safetensors.torch import load_file

    from hrinv.generator.stylegan2 import Generator

    cfg = json.loads((SHARED / "fixtures" / name / "config.json").read_text())
    G = Generator(cfg["z_dim"], cfg["c_dim"], cfg["w_dim"], cfg["img_resolution"], cfg["img_channels"],
                  mapping_kwargs=cfg["mapping_kwargs"], synthesis_kwargs=cfg["synthesis_kwargs"])
    G.load_state_dict(load_file(str(SHARED / "fixtures" / name / "state_dict.safetensors")))
    return G.to(device).eval().requires_grad_(False)


def gram(feat):
    b, c, h, w = feat.shape
    f = feat.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)  # [B, C, C]


def style_distance(vgg, a, b):
    """Σ over conv1_2 / conv2_2 of ||Gram(a) − Gram(b)||² per sample."""
    fa = vgg(vgg.preprocess(a), [2, 7])
    fb = vgg(vgg.preprocess(b), [2, 7])
    return sum((gram(fa[k]) - gram(fb[k])).square().sum(dim=(1, 2)) for k in (2, 7))  # [B]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="the defaults, the two ablations, no ε, with noise maps")
    ap.add_argument("--reg", default="0,0.1,0.5,2", help="λ_reg values (relative units)")
    ap.add_argument("--lr", default="0.1,0.3", help="lr values (units of w_std/sqrt(w_dim))")
    ap.add_argument("--no-all-rows", action="store_true", help="skip the all-rows ablation in a sweep")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    if not (SHARED / "fixtures" / "nv_small").exists():
        print(f"needs {SHARED}/fixtures/nv_small and weights/ (set HRINV_SHARED)", file=sys.stderr)
        return 2

    from hrinv.interpolate import lerp_generators, lerp_latents, generator_relation
    from hrinv.inversion import compute_w_stats
    from hrinv.losses.perceptual import PerceptualLoss
    from hrinv.losses.vgg import load_vgg16
    from hrinv.lso import LSOConfig, local_style_optimize, resolve_rows

    device = torch.device(args.device)
    G_s = load_fixture_generator("nv_small", device)
    G_t = copy.deepcopy(G_s)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for k, p in G_t.named_parameters():
            if k.startswith("synthesis."):
                p.add_((0.3 * p.abs().mean() * torch.randn(p.shape, generator=g)).to(device))
    vgg = load_vgg16(str(SHARED / "weights" / "vgg16_imagenet_caffe.safetensors"), device=device)
    d_h = PerceptualLoss(vgg, layers="high")
    lam = [0.2, 0.2, 0.2, 0.7, 0.7]
    G_m = lerp_generators(G_s, G_t, lam)
    z = torch.randn(2 * args.pairs, G_s.z_dim, generator=g).to(device)
    with torch.no_grad():
        w_s = G_s.mapping(z[:args.pairs])  # [P, N, D]
        w_t = G_t.mapping(z[args.pairs:])  # [P, N, D]
        x_s = G_s.synthesis(w_s).clamp(-1, 1)  # [P, 3, 64, 64]
    w_m = lerp_latents(w_s, w_t, lam)
    stats = compute_w_stats(G_m)
    w_std = stats[1]
    rows = resolve_rows("auto", G_m.num_ws)
    with torch.no_grad():
        mixed = G_m.synthesis(w_m)
        base_style = style_distance(vgg, x_s, mixed)  # [P]
    gap = (w_s - w_m)[:, rows].flatten(1).norm(dim=1) / w_std
    rel = generator_relation(G_s, G_t)
    print(f"G_t vs G_s: median cosine {rel['median_cosine']:.3f}, relative distance {rel['relative_distance']:.3f}; "
          f"w_std(G_m) = {w_std:.3f}; rows {rows}; pairs {args.pairs}; steps {args.steps}; device {device}")
    print(f"gap |w_s - w_m| on those rows (w_std units): {', '.join(f'{x:.3f}' for x in gap)}")

    settings = []
    if args.quick:
        base = LSOConfig()
        settings = [("default", {}), ("no L2 (λ_reg=0)", {"reg_weight": 0.0}), ("all rows", {"rows": "all"}),
                    ("no ε", {"noise_factor": 0.0}), ("with noise maps", {"noise_maps": True})]
        print(f"defaults: lr {base.lr}, λ_reg {base.reg_weight}")
    else:
        for lr in [float(x) for x in args.lr.split(",")]:
            for reg in [float(x) for x in args.reg.split(",")]:
                settings.append((f"lr {lr:g} reg {reg:g}", {"lr": lr, "reg_weight": reg}))
        if not args.no_all_rows:
            settings.append(("all rows (defaults)", {"rows": "all"}))
    print(f"{'setting':28s} {'dh_drop':>8s} {'style_drift':>11s} {'|w_opt|':>8s} {'sec':>6s}")
    out = []
    for name, kw in settings:
        cfg = LSOConfig(steps=args.steps, seed=0, **kw)
        t0 = time.perf_counter()
        r = local_style_optimize(G_m, w_m, x_s, d_h, cfg, w_stats=stats)
        sec = time.perf_counter() - t0
        before = torch.tensor(r.metrics["d_h_before"])
        after = torch.tensor(r.metrics["d_h_after"])
        with torch.no_grad():
            img = G_m.synthesis(r.latent.ws.to(device))
            drift = (style_distance(vgg, img, mixed) / base_style).cpu()
        drop = 1 - after / before
        norm = torch.tensor(r.metrics["w_opt_norm"])
        row = {"setting": name, **{k: v for k, v in kw.items()}, "dh_drop": drop.tolist(),
               "style_drift": drift.tolist(), "w_opt_norm": norm.tolist(), "seconds": sec}
        out.append(row)
        print(f"{name:28s} {drop.mean():8.3f} {drift.mean():11.3f} {norm.mean():8.3f} {sec:6.0f}   "
              f"(per pair: drop {', '.join(f'{x:.2f}' for x in drop)}; drift {', '.join(f'{x:.2f}' for x in drift)})",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"gap": gap.tolist(), "w_std": w_std, "rows": out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
