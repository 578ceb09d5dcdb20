"""``hrinv stylize --content IMG --reference IMG --source G_s --target G_t --vgg VGG --out DIR``: the paper's cross-
domain pipeline (Sec. III-C).

1. invert every content image in G_s and every reference image in G_t (Eq. 5: W+ only, d_conv, noise at G's
   constants);
2. G_m = lerp(G_s, G_t, λ) (Eq. 6) and, per (content, reference) pair, w_m = lerp(w_s, w_t, λ) (Eq. 7);
3. Local Style Optimisation of w_m towards the content (Eq. 8, ``--lso-steps 0`` skips it);
4. render at ``--width x --height`` (through the INR head when G_m has one, else by resizing).

Files in DIR, for content ``c`` and reference ``r``: ``c__r.png`` (the result), ``c__r_mixed.png`` (before LSO),
``c__r.latent.safetensors`` (the final code, in G_m), ``c__r.json`` (settings + metrics), ``c_inv.png`` /
``c.latent.safetensors`` (content inversion in G_s), ``r_inv.png`` / ``r.latent.safetensors`` (reference inversion in
G_t), ``generator_m.safetensors`` with ``--save-generator`` (needed to re-render the codes with ``hrinv render``).
"""

import argparse
import logging
import sys
import time
from pathlib import Path

HELP = ("content + reference + source/target generators -> invert (Eq. 5), lerp generators and latents (Eq. 6/7), "
        "Local Style Optimisation (Eq. 8), render")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._common import add_device_arguments

    parser.add_argument("--content", "-c", required=True, nargs="+", metavar="IMG",
                        help="content image(s) x_s (aligned faces for face generators)")
    parser.add_argument("--reference", "-r", required=True, nargs="+", metavar="IMG",
                        help="reference (style) image(s) x_t; every content is stylised with every reference")
    parser.add_argument("--source", required=True, metavar="CKPT", help="source generator G_s (e.g. FFHQ)")
    parser.add_argument("--target", required=True, metavar="CKPT", help="target generator G_t, fine-tuned from G_s")
    parser.add_argument("--vgg", required=True, metavar="VGG_WEIGHTS", help="VGG16 weights (torchvision/timm/caffe)")
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--lam", default="paper",
                        help="λ per block (weight of G_t): paper (0.2 for b4-b64, 0.7 from b128), swap:bN (layer "
                             "swapping from block bN), a number, or one number per block 'b4,b8,...' (default paper)")
    parser.add_argument("--scheme", default="authors", choices=["authors", "nvidia"],
                        help="W+ row -> block mapping for the latent lerp: authors (two rows per block, the released "
                             "code) or nvidia (exact layer usage)")
    parser.add_argument("--mapping-lam", default=None,
                        help="λ of the mapping network: first (λ of b4, default), source, target or a number")
    parser.add_argument("--steps", type=int, default=1000, help="inversion steps for content and reference (1000)")
    parser.add_argument("--reference-steps", type=int, default=None, help="inversion steps for the references "
                                                                          "(default --steps)")
    parser.add_argument("--lso-steps", type=int, default=50, help="LSO steps (paper 50; 0 = no LSO)")
    parser.add_argument("--lso-rows", default="auto",
                        help="W+ rows LSO may change: auto (convs of b4-b16), bN, a count, 0,1,2 or all")
    parser.add_argument("--lso-reg-weight", dest="lso_reg", type=float, default=None,
                        help="LSO λ_reg (relative units; see docs)")
    parser.add_argument("--lso-reg", dest="lso_reg", type=float, help=argparse.SUPPRESS)  # earlier spelling
    parser.add_argument("--lso-lr", type=float, default=None, help="LSO learning rate (units of w_std/sqrt(w_dim))")
    parser.add_argument("--lso-noise-maps", dest="lso_noise", action="store_true",
                        help="LSO also optimises the noise maps")
    parser.add_argument("--lso-noise", dest="lso_noise", action="store_true", help=argparse.SUPPRESS)  # earlier
    parser.add_argument("--width", type=int, default=None, help="output width (default: the generator's)")
    parser.add_argument("--height", type=int, default=None, help="output height (default: the generator's)")
    parser.add_argument("--fit", default="stretch", choices=["stretch", "crop", "pad"],
                        help="aspect policy for a non-square output (default stretch)")
    parser.add_argument("--tile", type=int, default=None, help="render the INR head in tiles of this many pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of inversions and LSO (default 0)")
    parser.add_argument("--save-generator", action="store_true",
                        help="also save G_m as DIR/generator_m.safetensors (to re-render with `hrinv render`)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    add_device_arguments(parser)


def _unique_stems(paths):
    seen, out = {}, []
    for p in paths:
        stem = Path(p).stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return out


def _say(args, text):
    if not args.quiet:
        print(text, flush=True)


def run(args) -> int:
    import torch

    from ..errors import InvalidSettingError
    from ..interpolate import lerp_generators, lerp_latents, parse_lambda, row_lambdas
    from ..inversion import InversionConfig, compute_w_stats, invert
    from ..io.checkpoints import load_generator, save_generator
    from ..losses import PerceptualLoss, load_vgg16
    from ..lso import LSOConfig, local_style_optimize, parse_rows
    from ..rendering import render
    from ._common import Progress, load_image, resolve_device, resolve_dtype, save_image, write_json

    t_start = time.perf_counter()
    missing = [p for p in list(args.content) + list(args.reference) if not Path(p).is_file()]
    if missing:
        print(f"hrinv stylize: error: image file(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        lam = parse_lambda(args.lam)
        mapping_lam = args.mapping_lam
        if mapping_lam is not None and mapping_lam not in ("first", "source", "target"):
            mapping_lam = float(mapping_lam)
        inv_cfg = InversionConfig.preset("cross_domain", steps=int(args.steps), seed=int(args.seed))
        ref_cfg = InversionConfig.preset("cross_domain", steps=int(args.reference_steps or args.steps),
                                         seed=int(args.seed))
        lso_kw = {"rows": parse_rows(args.lso_rows), "seed": int(args.seed), "noise_maps": bool(args.lso_noise)}
        if args.lso_reg is not None:
            lso_kw["reg_weight"] = float(args.lso_reg)
        if args.lso_lr is not None:
            lso_kw["lr"] = float(args.lso_lr)
        lso_cfg = LSOConfig(steps=max(1, int(args.lso_steps)), **lso_kw)
    except (ValueError, InvalidSettingError) as e:
        print(f"hrinv stylize: error: {e}", file=sys.stderr)
        return 2
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    G_s = load_generator(args.source, device=device, dtype=dtype)
    G_t = load_generator(args.target, device=device, dtype=dtype)
    G_m = lerp_generators(G_s, G_t, lam, mapping_lam=mapping_lam)  # checks compatibility before the long part
    info = G_m.meta["lerp"]
    _say(args, f"G_s {args.source} / G_t {args.target}: {G_s.img_resolution}px, {G_s.num_ws} ws; λ per block "
               f"{', '.join(f'{k}={v:g}' for k, v in info['lambda_per_block'].items())}; weight cosine "
               f"{info['relation']['median_cosine']:.3f}; device {device}")
    vgg = load_vgg16(args.vgg, device=device)
    d_conv = PerceptualLoss(vgg, layers="conv")
    d_h = PerceptualLoss(vgg, layers="high")
    res = G_s.img_resolution
    height = int(args.height or res)
    width = int(args.width or res)

    contents = torch.cat([load_image(p, res) for p in args.content])  # [C, 3, res, res]
    references = torch.cat([load_image(p, res) for p in args.reference])  # [R, 3, res, res]
    c_names, r_names = _unique_stems(args.content), _unique_stems(args.reference)
    timings = {}

    t0 = time.perf_counter()
    inv_s = invert(G_s, contents, d_conv, inv_cfg, device=device, dtype=dtype,
                   callback=Progress("invert content in G_s", quiet=args.quiet))
    timings["invert_content"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    inv_t = invert(G_t, references, d_conv, ref_cfg, device=device, dtype=dtype,
                   callback=Progress("invert reference in G_t", quiet=args.quiet))
    timings["invert_reference"] = time.perf_counter() - t0
    for i, name in enumerate(c_names):
        inv_s.latent[i].save(out / f"{name}.latent.safetensors")
        save_image(inv_s.image[i], out / f"{name}_inv.png")
    for j, name in enumerate(r_names):
        inv_t.latent[j].save(out / f"{name}.latent.safetensors")
        save_image(inv_t.image[j], out / f"{name}_inv.png")

    stats_m = compute_w_stats(G_m, lso_cfg.w_avg_samples, lso_cfg.w_stats_seed, device=device, dtype=dtype)
    if args.save_generator:
        save_generator(G_m, out / "generator_m.safetensors")
    per_row = row_lambdas(lam, G_m.num_ws, args.scheme, G_m.synthesis.block_resolutions).tolist()
    for j, r_name in enumerate(r_names):
        w_m = lerp_latents(inv_s.latent, inv_t.latent[j], lam, generator=G_m, scheme=args.scheme)  # batch = contents
        with torch.no_grad():
            mixed = render(G_m, w_m.ws.to(device), height, width, noise=w_m.noise, fit=args.fit, tile=args.tile)
        t0 = time.perf_counter()
        if args.lso_steps > 0:
            lso = local_style_optimize(G_m, w_m, contents, d_h, lso_cfg, device=device, dtype=dtype, w_stats=stats_m,
                                       callback=Progress(f"LSO with {r_name}", quiet=args.quiet))
            final, lso_metrics = lso.latent, lso.metrics
        else:
            final, lso_metrics = w_m, {}
        seconds_lso = time.perf_counter() - t0
        with torch.no_grad():
            img = render(G_m, final.ws.to(device), height, width, noise=final.noise, fit=args.fit, tile=args.tile)
        for i, c_name in enumerate(c_names):
            stem = f"{c_name}__{r_name}"
            save_image(img[i], out / f"{stem}.png")
            save_image(mixed[i], out / f"{stem}_mixed.png")
            lat = final[i]
            lat.settings = {"stylize": {"content": str(args.content[i]), "reference": str(args.reference[j])},
                            **lat.settings}
            lat.save(out / f"{stem}.latent.safetensors")
            record = {
                "content": str(args.content[i]), "reference": str(args.reference[j]),
                "source": str(args.source), "target": str(args.target), "vgg": str(args.vgg),
                "device": str(device), "dtype": str(dtype), "output_size": [height, width], "fit": args.fit,
                "generator_m_fingerprint": G_m.fingerprint(),
                "lerp": {"lam": args.lam, "lambda_per_block": info["lambda_per_block"],
                         "lambda_mapping": info["lambda_mapping"], "lambda_inr": info["lambda_inr"],
                         "scheme": args.scheme, "lambda_per_row": per_row, "relation": info["relation"]},
                "inversion": {"content": inv_cfg.to_dict(), "reference": ref_cfg.to_dict()},
                "lso": lso_cfg.to_dict() if args.lso_steps > 0 else None,
                "metrics": {
                    "content_psnr": inv_s.latent.metrics["psnr"][i],
                    "reference_psnr": inv_t.latent.metrics["psnr"][j],
                    "lso_d_h_before": lso_metrics.get("d_h_before", [None] * len(c_names))[i],
                    "lso_d_h_after": lso_metrics.get("d_h_after", [None] * len(c_names))[i],
                    "lso_w_opt_norm": lso_metrics.get("w_opt_norm", [None] * len(c_names))[i],
                    "seconds": {**timings, "lso": seconds_lso},
                },
                "files": {"image": f"{stem}.png", "mixed": f"{stem}_mixed.png", "latent": f"{stem}.latent.safetensors",
                          "content_inversion": f"{c_name}_inv.png", "reference_inversion": f"{r_name}_inv.png",
                          "generator_m": "generator_m.safetensors" if args.save_generator else None},
            }
            write_json(out / f"{stem}.json", record)
            m = record["metrics"]
            extra = (f", LSO d_h {m['lso_d_h_before']:.4g} -> {m['lso_d_h_after']:.4g}"
                     if m["lso_d_h_before"] is not None else "")
            _say(args, f"{stem}: content PSNR {m['content_psnr']:.2f} dB, reference PSNR {m['reference_psnr']:.2f} dB"
                       f"{extra} -> {out / (stem + '.png')}")
    _say(args, f"done in {time.perf_counter() - t_start:.1f}s")
    return 0
