"""Does Local Style Optimisation (Eq. 8) beat plain lerp on identity, on a real pair, and with which settings?

The paper's claim: the outputs of lerp + LSO keep the content's identity better than plain lerp (Eq. 6-7) while
keeping the style. This script tests it on the bundled pair (or any G_s / G_t) with N real faces and tunes the LSO
settings with a small grid:

1. the N faces are inverted into G_s once (Eq. 5, W+ only, cross-domain preset); codes and reconstructions are cached
   in ``OUT/faces_w.safetensors``;
2. G_t: ``--target`` (e.g. the bundled demo G_t) or ``hrinv.finetune(G_s, style)`` cached as ``OUT/G_t.safetensors``;
   the style reference is inverted into G_t once (cached);
3. ``G_m = lerp_generators(G_s, G_t, λ)``, ``w_m = lerp_latents(w_s, w_t, λ)``; plain lerp = ``G_m(w_m)``;
4. every LSO variant of the grid runs on the same ``G_m``, ``w_m``, content faces and seed; its images and figures
   are cached per variant (``OUT/variants/<name>.*``), so an interrupted run resumes where it stopped.

Metrics per output, against the N real faces (content) and the style reference:

- **ID top-1**: ``hrinv.id_retrieval`` with the dlib network (chance 1/N), with a 95 % Wilson interval, and for
  each variant the paired bootstrap 95 % interval of (variant − plain lerp) over faces (2000 resamples);
- **ID distance**: mean squared dlib distance of each output to its own face (lower = more identity), with the
  paired bootstrap interval of the difference to plain lerp;
- **style distance**: the Gram distance of benchmarks/finetune_proof.py (relu1_2..relu4_3, relative to the
  reference's Gram, lower = closer to the reference's style);
- **style drift**: per face, ``Gd(output, lerp) / Gd(G_s recon, lerp)`` with ``Gd(a, b)`` the same Gram distance
  between two images: 0 = plain lerp's low-level statistics, 1 = as far as G_s's own rendering of the face (a
  variant that just returns the content is near 1);
- d_h before/after LSO and ``‖w_opt‖ / w_std``.

Selection rule (fixed before the first run):

- a variant **keeps the style** when it keeps at least 75 % of plain lerp's style gain over the G_s reconstructions:
  ``sd(recon) − sd(variant) ≥ 0.75 · (sd(recon) − sd(lerp))`` (a variant that just returns the content fails);
- (added after the first results: on the bundled demo pair plain lerp is *further* from the reference's Gram
  statistics than the G_s reconstructions, so the rule above is undefined there; on such a pair a variant keeps
  the style when its mean style drift is at most 0.25, the same 75 %)
- among the variants that keep the style, the one with the **lowest mean dlib distance** to the own face wins
  (a continuous, paired measure: top-1 over N faces moves in steps of 1/N and is reported alongside);
- it replaces the current default only if its paired bootstrap 95 % interval of the distance difference against
  the current default lies below zero (on every style that was run); otherwise the default stays.

Run (CPU, 1 thread; the runs documented in docs/interpolation-and-lso.md, about 80 min in all on a shared
2-core machine; without --variants the grid is default, reg0, reg0.1, rows0-6, reg1, rows0-2)::

    PYTHONPATH=. nice -n 10 python benchmarks/lso_tuning.py --num-faces 24 --threads 1 \
        --variants default reg0 rows0-6 reg0.1 --out runs/lso_tuning/demo
    PYTHONPATH=. nice -n 10 python benchmarks/lso_tuning.py --style ../shared/data/styles/jojogan/jojo.png \
        --num-faces 24 --threads 1 --variants default reg0 rows0-6 --out runs/lso_tuning/jojo

The second run can reuse the first's face inversion (same G_s, faces, steps and calibration): copy
``faces_w.safetensors`` into its folder first.

Writes ``OUT/results.json``, ``OUT/sheet.png`` (first 8 faces; rows: faces, G_s recon, lerp, the variants) and
prints a table. Needs ../shared (dlib weights, faces; jojo.png for the second style).
"""

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from finetune_proof import GRAM_TAPS, gram, load_images, sheet, style_distance  # benchmarks/ is this script's folder

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HRINV_SHARED", REPO.parent / "shared"))
BUNDLED = REPO / "hrinv" / "bundled"

# name -> LSOConfig overrides (the rest: LSOConfig defaults); "default" = the current LSOConfig()
VARIANTS = {
    "default": {},
    "reg0": {"reg_weight": 0.0},
    "reg0.1": {"reg_weight": 0.1},
    "rows0-6": {"rows": [0, 1, 2, 3, 4, 5, 6]},
    "reg1": {"reg_weight": 1.0},
    "rows0-2": {"rows": [0, 1, 2]},
    "reg0.25": {"reg_weight": 0.25},
    "steps100": {"steps": 100},
    "lr0.4": {"lr": 0.4},
    "reg0.1-steps100": {"reg_weight": 0.1, "steps": 100},
    "reg0.25-rows0-6": {"reg_weight": 0.25, "rows": [0, 1, 2, 3, 4, 5, 6]},
}
DEFAULT_GRID = ["default", "reg0", "reg0.1", "rows0-6", "reg1", "rows0-2"]  # run in this order (cached one by one)


def wilson(k, n, z=1.96):
    """95 % Wilson interval of a binomial proportion k/n."""
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def paired_bootstrap(a, b, reps=2000, seed=0):
    """95 % percentile interval of mean(a − b) over faces resampled with replacement."""
    g = torch.Generator().manual_seed(seed)
    d = (a.double() - b.double())
    idx = torch.randint(0, len(d), (reps, len(d)), generator=g)
    m = d[idx].mean(1).sort().values
    return float(d.mean()), float(m[int(0.025 * reps)]), float(m[int(0.975 * reps) - 1])


def save_tensors(path, **tensors):
    from safetensors.torch import save_file

    save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(path))


def load_tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


@torch.no_grad()
def pair_gram_distance(vgg, a, b):
    """Per image i: the mean over taps of ‖Gram(a_i) − Gram(b_i)‖² / ‖Gram(b_i)‖². Shape: [B]."""
    ga, gb = gram(vgg, a), gram(vgg, b)
    d = 0
    for t in GRAM_TAPS:
        d = d + (ga[t] - gb[t]).square().flatten(1).sum(1) / gb[t].square().flatten(1).sum(1)
    return d / len(GRAM_TAPS)


def evaluate(name, imgs, faces, styles, vgg, emb, dev, lerp=None, recon=None):
    import hrinv

    sd = style_distance(vgg, imgs.to(dev), styles.to(dev)).cpu()
    drift = None
    if lerp is not None:  # how far towards G_s's own rendering of the face, 0 = plain lerp's Gram, 1 = G_s recon's
        drift = (pair_gram_distance(vgg, imgs.to(dev), lerp.to(dev))
                 / pair_gram_distance(vgg, recon.to(dev), lerp.to(dev))).cpu()
    r = hrinv.id_retrieval((faces.cpu() + 1) / 2, (imgs.cpu() + 1) / 2, list(range(len(faces))), embedder=emb)
    k, n = int(r.hits.sum()), len(faces)
    lo, hi = wilson(k, n)
    return {"name": name, "style_distance": float(sd.mean()), "style_distance_median": float(sd.median()),
            "id_top1": k / n, "id_hits": k, "id_top1_wilson95": [lo, hi], "id_distance": float(r.true_distance.mean()),
            "style_drift": None if drift is None else float(drift.mean()),
            "style_drift_median": None if drift is None else float(drift.median()),
            "_hits": r.hits.float(), "_dist": r.true_distance.float(), "_sd": sd}


def summarize(results, base, rows, out):
    """Selection by the rule of the module docstring; writes OUT/results.json (after every variant)."""
    default = next((r for r in rows if r["name"] == "default"), None)
    for e in rows:
        if default is not None:
            e["delta_distance_vs_default"] = paired_bootstrap(e["_dist"], default["_dist"])
    ok = [e for e in rows if e["keeps_style"]]
    best = min(ok, key=lambda e: e["id_distance"]) if ok else None
    results["best"] = best["name"] if best else None
    results["best_beats_default"] = bool(best is not None and default is not None and best is not default
                                         and best["delta_distance_vs_default"][2] < 0)
    clean = lambda e: {k: v for k, v in e.items() if not k.startswith("_")}  # noqa: E731
    results["baselines"] = {k: clean(v) for k, v in base.items()}
    results["variants"] = [clean(e) for e in rows]
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--generator", default=str(BUNDLED / "stylegan2_face64.safetensors"))
    p.add_argument("--target", default=None,
                   help="an existing G_t (default: the bundled demo G_t with the bundled demo style; with --style "
                        "and no --target, G_t is fine-tuned on the style)")
    p.add_argument("--style", default=None, help="style reference (default: the bundled demo style)")
    p.add_argument("--vgg", default=str(BUNDLED / "vgg16_caffe_conv_fp16.safetensors"))
    p.add_argument("--dlib", default=str(SHARED / "weights/dlib_face_recognition_resnet_model_v1.dat"))
    p.add_argument("--faces", default=str(SHARED / "data/faces/celebahq"))
    p.add_argument("--num-faces", type=int, default=24)
    p.add_argument("--invert-steps", type=int, default=100)
    p.add_argument("--ft-steps", type=int, default=150)
    p.add_argument("--calibration", default="global")
    p.add_argument("--lam", default="0.2,0.2,0.2,0.7,0.7")
    p.add_argument("--variants", nargs="+", default=DEFAULT_GRID, choices=list(VARIANTS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="runs/lso_tuning")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import warnings

    import hrinv
    from hrinv.finetuning import FinetuneConfig, finetune
    from hrinv.interpolate import parse_lambda
    from hrinv.inversion import InversionConfig, compute_w_stats, invert
    from hrinv.losses import PerceptualLoss
    from hrinv.lso import LSOConfig, local_style_optimize

    dev = args.device
    out = Path(args.out)
    (out / "variants").mkdir(parents=True, exist_ok=True)
    say = lambda s, t, p: print(f"\r  step {s}/{t}", end="", flush=True)  # noqa: E731
    G_s = hrinv.load_generator(args.generator, device=dev)
    vgg = hrinv.load_vgg16(args.vgg, device=dev)
    emb = hrinv.load_face_embedder(args.dlib, device=dev)
    paths = sorted(q for q in Path(args.faces).iterdir() if q.suffix.lower() in (".jpg", ".png"))[:args.num_faces]
    faces = load_images(paths, G_s.img_resolution).to(dev)
    style_path = args.style or str(BUNDLED / "demo_style.png")
    styles = load_images([style_path], G_s.img_resolution).to(dev)
    d_conv = PerceptualLoss(vgg, layers="conv", calibration=args.calibration)
    d_h = PerceptualLoss(vgg, layers="high", calibration=args.calibration)
    print(f"{len(faces)} faces (chance {1 / len(faces):.3f}), style {Path(style_path).name}, calibration "
          f"{args.calibration}", flush=True)
    results = {"settings": vars(args), "faces": [q.name for q in paths], "lso_defaults": LSOConfig().to_dict(),
               "seconds": {}}

    # 1. faces into G_s, once
    cache = out / "faces_w.safetensors"
    if cache.exists():
        c = load_tensors(cache)
        w_s, recon = c["ws"].to(dev), c["recon"].to(dev)
        print("faces' codes: cached", flush=True)
    else:
        t0 = time.perf_counter()
        inv = invert(G_s, faces, d_conv, InversionConfig.preset("cross_domain", steps=args.invert_steps, seed=0),
                     device=dev, callback=say)
        w_s, recon = inv.latent.ws.float(), inv.image.float().clamp(-1, 1)
        save_tensors(cache, ws=w_s, recon=recon)
        results["seconds"]["invert_faces"] = time.perf_counter() - t0
        print(f"\ninverted {len(faces)} faces in {results['seconds']['invert_faces']:.0f} s", flush=True)

    # 2. G_t
    if args.target or not args.style:
        target = args.target or str(BUNDLED / "stylegan2_face64_demo_style.safetensors")
        G_t = hrinv.load_generator(target, device=dev)
        results["G_t"] = target
    else:
        gt_path = out / "G_t.safetensors"
        if gt_path.exists():
            G_t = hrinv.load_generator(gt_path, device=dev)
        else:
            t0 = time.perf_counter()
            print(f"fine-tune G_t on {Path(style_path).name} ({args.ft_steps} steps)", flush=True)
            G_t = finetune(G_s, styles, d_conv, FinetuneConfig(steps=args.ft_steps, invert_steps=args.invert_steps,
                                                               seed=0), device=dev, callback=say)
            hrinv.save_generator(G_t, gt_path)
            results["seconds"]["finetune"] = time.perf_counter() - t0
            print(f"\nfine-tuned in {results['seconds']['finetune']:.0f} s", flush=True)
        results["G_t"] = f"fine-tuned on {style_path}, {args.ft_steps} steps (OUT/G_t.safetensors)"

    # 3. reference into G_t, lerp
    rcache = out / "reference_w.safetensors"
    if rcache.exists():
        w_t = load_tensors(rcache)["ws"].to(dev)
    else:
        inv_t = invert(G_t, styles, d_conv, InversionConfig.preset("cross_domain", steps=args.invert_steps, seed=0),
                       device=dev, callback=say)
        w_t = inv_t.latent.ws.float()
        save_tensors(rcache, ws=w_t)
        print(f"\nreference inverted into G_t: PSNR {float(torch.tensor(inv_t.metrics['psnr']).mean()):.2f} dB",
              flush=True)
    lam = parse_lambda(args.lam)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        G_m = hrinv.lerp_generators(G_s, G_t, lam)
    results["lerp_warnings"] = [str(w.message) for w in caught]
    w_m = hrinv.lerp_latents(w_s, w_t, lam, generator=G_m)
    w_m = w_m.ws if hasattr(w_m, "ws") else w_m
    with torch.no_grad():
        plain = G_m.synthesis(w_m.to(dev), noise_mode="const").float().clamp(-1, 1)
        direct = G_t.synthesis(w_s.to(dev), noise_mode="const").float().clamp(-1, 1)
    stats = compute_w_stats(G_m, device=dev)

    base = {}
    for name, imgs in (("faces", faces), ("G_s recon", recon), ("G_t(w_s)", direct), ("lerp", plain)):
        base[name] = evaluate(name, imgs, faces, styles, vgg, emb, dev, plain, recon)
    lerp = base["lerp"]
    images = {"faces": faces, "G_s recon": recon, "lerp": plain}
    rows = []
    for name in args.variants:
        f_img, f_json = out / "variants" / f"{name}.safetensors", out / "variants" / f"{name}.json"
        cfg = LSOConfig(seed=0, **VARIANTS[name])
        if f_img.exists() and f_json.exists():
            img = load_tensors(f_img)["image"].to(dev)
            extra = json.loads(f_json.read_text())
            print(f"{name}: cached", flush=True)
        else:
            t0 = time.perf_counter()
            print(f"{name}: LSO {cfg.steps} steps, rows {cfg.rows}, lr {cfg.lr}, reg {cfg.reg_weight}", flush=True)
            r = local_style_optimize(G_m, w_m, faces, d_h, cfg, device=dev, callback=say, w_stats=stats)
            img = r.image.float().clamp(-1, 1)
            extra = {"seconds": time.perf_counter() - t0,
                     "d_h_before": float(torch.as_tensor(r.metrics["d_h_before"]).float().mean()),
                     "d_h_after": float(torch.as_tensor(r.metrics["d_h_after"]).float().mean()),
                     "w_opt_norm": float(torch.as_tensor(r.metrics["w_opt_norm"]).float().mean()),
                     "rows": r.rows, "config": cfg.to_dict()}
            save_tensors(f_img, image=img)
            f_json.write_text(json.dumps(extra, indent=1, default=str) + "\n")
            print(f"\n  {extra['seconds']:.0f} s", flush=True)
        e = evaluate(name, img, faces, styles, vgg, emb, dev, plain, recon)
        e.update(extra)
        e["delta_top1_vs_lerp"] = paired_bootstrap(e["_hits"], lerp["_hits"])
        e["delta_distance_vs_lerp"] = paired_bootstrap(e["_dist"], lerp["_dist"])
        gain_lerp = base["G_s recon"]["style_distance"] - lerp["style_distance"]
        gain = base["G_s recon"]["style_distance"] - e["style_distance"]
        e["style_gain_kept"] = gain / gain_lerp if gain_lerp > 0 else None
        e["style_rule"] = "reference" if gain_lerp > 0 else "drift"
        e["keeps_style"] = bool(gain >= 0.75 * gain_lerp if gain_lerp > 0 else e["style_drift"] <= 0.25)
        rows.append(e)
        images[name] = img
        summarize(results, base, rows, out)
    sheet([v[:8] for v in images.values()], out / "sheet.png")

    n = len(faces)
    print(f"\n{'output':<17}{'style':>7}{'drift':>7}{'top-1':>7}{'hits':>7}{'Wilson 95%':>13}{'ID dist':>8}"
          f"{'Δdist vs lerp [95%]':>27}{'Δtop1 vs lerp [95%]':>25}{'Δdist vs default [95%]':>27}{'keep':>5}"
          f"{'|w_opt|':>8}{'d_h after/before':>17}")
    for e in list(base.values()) + rows:
        lo, hi = e["id_top1_wilson95"]
        line = (f"{e['name']:<17}{e['style_distance']:>7.3f}{e['style_drift']:>7.3f}{e['id_top1']:>7.3f}"
                f"{e['id_hits']:>4}/{n:<2}{f'[{lo:.2f},{hi:.2f}]':>13}{e['id_distance']:>8.4f}")
        if "delta_distance_vs_lerp" in e:
            fmt = lambda t, f: f"{t[0]:+{f}} [{t[1]:+{f}},{t[2]:+{f}}]"  # noqa: E731
            dd = fmt(e["delta_distance_vs_default"], ".4f") if "delta_distance_vs_default" in e else "-"
            line += (f"{fmt(e['delta_distance_vs_lerp'], '.4f'):>27}{fmt(e['delta_top1_vs_lerp'], '.3f'):>25}"
                     f"{dd:>27}{'yes' if e['keeps_style'] else 'no':>5}{e['w_opt_norm']:>8.3f}"
                     f"{e['d_h_after'] / e['d_h_before']:>17.3f}")
        print(line)
    print(f"best that keeps the style: {results['best']}; beats the current default: {results['best_beats_default']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
