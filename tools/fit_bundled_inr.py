"""Give the bundled 64 px generators an INR head (any-resolution rendering), measure it, and write them back.

The bundled G_s (``stylegan2_face64.safetensors``) was distilled without a head, so it could only be rendered at
64 px (or resized). This script distils a head for G_s with :func:`hrinv.generator.inr.fit_inr_head` (seeded), then
measures it on held-out z (seed 10,000, const noise):

* native 64 px: the head's render vs the generator's own output (exact by construction: the residual is gated to 0
  at input pixel centres);
* in-between pixels: 2x and 4x super-resolution (the maps shrunk to 32 / 16 px, antialiased, the head renders 64 px)
  vs the native output, head vs plain bicubic;
* the same figures for the demo G_t (``stylegan2_face64_demo_style.safetensors``) through G_s's head, and through a
  head fitted on G_t itself (``--gt-steps``, 0 = skip), to decide whether G_t can share G_s's head;
* it also writes 64 / 128 / 256 px renders (head and bicubic) of a few z as PNGs into ``--out`` for inspection.

``lerp_generators`` needs both generators of a pair to carry a head (or neither), and ``hrinv.finetune`` copies G_s's
head into every G_t it makes; so with ``--write-bundle`` both bundled generators are rewritten in float16 with the
chosen head (``--gt-head shared|own``), keeping their metadata; then update the manifest with tools/bundle_add.py.

    # what made the bundled heads (894 s + 143 s on a shared 2-core CPU; 1 thread is much faster there than 2)
    OMP_NUM_THREADS=1 PYTHONPATH=. python tools/fit_bundled_inr.py --steps 2500 --gt-steps 500 --threads 1 \
        --out /tmp/face64_inr --write-bundle --gt-head shared
    python tools/bundle_add.py hrinv/bundled/stylegan2_face64.safetensors ...   # then the same for G_t

A fitted head is kept in ``--out`` (``gs_head_<steps>.safetensors``) and reused by a second run with the same
arguments.
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "hrinv" / "bundled"
GS_NAME = "stylegan2_face64.safetensors"
GT_NAME = "stylegan2_face64_demo_style.safetensors"


def _fit(G, steps, seed, args, label):
    from hrinv.generator.inr import fit_inr_head

    t0 = time.time()
    last = [t0]

    def cb(step, total, preview=None):
        if time.time() - last[0] > 30 or step == total:
            last[0] = time.time()
            print(f"{label}: {step}/{total} ({time.time() - t0:.0f} s)", flush=True)

    G_h = fit_inr_head(G, steps=steps, batch=args.batch, reuse=args.reuse, hidden=args.hidden,
                       generator=torch.Generator().manual_seed(seed), callback=cb)
    secs = time.time() - t0
    G_h.inr.fit_info["seconds"] = round(secs, 1)
    G_h.inr.fit_info["seed"] = seed
    print(f"{label}: fitted in {secs:.0f} s: {json.dumps(G_h.inr.fit_info)}", flush=True)
    return G_h


def _held_out_maps(G, n, seed):
    """The synthesis features and 64 px images (float32) of ``n`` seeded held-out z, with constant noise."""
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))
    x, img = G.synthesis.forward_features(G.mapping(z, None), noise_mode="const")
    return x.float(), img.float()


@torch.no_grad()
def measure(G, head, n=64, seed=10_000):
    """PSNR (dB, mean over n held-out z) of ``head`` on ``G``'s maps: native, and 2x / 4x super-resolution vs bicubic."""
    from hrinv.generator.inr import psnr

    x, img = _held_out_maps(G, n, seed)
    R = img.shape[-1]
    out = {"n": n, "seed": seed, "native_db": float(psnr(head(x, img, (R, R)), img).mean())}
    for f in (2, 4):
        h = R // f
        xs = F.interpolate(x, size=(h, h), mode="bilinear", align_corners=False, antialias=True)
        imgs = F.interpolate(img, size=(h, h), mode="bicubic", align_corners=False, antialias=True)
        sr = head(xs, imgs, (R, R))
        bic = F.interpolate(imgs, size=(R, R), mode="bicubic", align_corners=False)
        out[f"sr{f}x_head_db"] = float(psnr(sr, img).mean())
        out[f"sr{f}x_bicubic_db"] = float(psnr(bic, img).mean())
    # a 128 px head render, averaged back over 2 x 2 pixels, vs the 64 px output (consistency across sizes)
    up2 = head(x, img, (2 * R, 2 * R))
    out["render128_pooled_vs_native_db"] = float(psnr(F.avg_pool2d(up2, 2), img).mean())
    bic2 = F.interpolate(img, size=(2 * R, 2 * R), mode="bicubic", align_corners=False)
    out["bicubic128_pooled_vs_native_db"] = float(psnr(F.avg_pool2d(bic2, 2), img).mean())
    # how far a 256 px head render is from plain bicubic upsampling of the 64 px output
    up = head(x[:8], img[:8], (4 * R, 4 * R))
    bic = F.interpolate(img[:8], size=(4 * R, 4 * R), mode="bicubic", align_corners=False)
    out["render256_vs_bicubic_db"] = float(psnr(up, bic).mean())
    return out


@torch.no_grad()
def sheet(G, path, seed=10_000, k=4):
    """Rows: z; columns: 64 px (nearest x4), 128 px head (nearest x2), 256 px head, 256 px bicubic."""
    from PIL import Image

    x, img = _held_out_maps(G, k, seed)
    R = img.shape[-1]
    cols = [F.interpolate(img, scale_factor=4, mode="nearest"),
            F.interpolate(G.inr(x, img, (2 * R, 2 * R)), scale_factor=2, mode="nearest"),
            G.inr(x, img, (4 * R, 4 * R)),
            F.interpolate(img, size=(4 * R, 4 * R), mode="bicubic", align_corners=False)]
    grid = torch.cat([torch.cat(list(c), dim=1) for c in cols], dim=2)  # [3, k*4R, 4*4R]
    arr = ((grid.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(arr).save(path)


def _save_half(G, path, extra):
    from hrinv.io.checkpoints import save_generator

    fp = G.fingerprint()
    meta = dict(G.meta)
    H = G.to(torch.float16)
    H.meta = meta
    assert H.fingerprint() == fp  # the INR head is not part of the fingerprint; fp16 rounding leaves it unchanged
    return save_generator(H, path, extra_meta=extra)


def _extra_of(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["hrinv"]).get("extra") or {}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2500, help="fit_inr_head steps for G_s (default 2500)")
    ap.add_argument("--gt-steps", type=int, default=0, help="also fit a head on G_t for comparison (0 = skip)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reuse", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/face64_inr", help="folder for fitted heads, figures and pictures")
    ap.add_argument("--write-bundle", action="store_true", help="rewrite both bundled generators with the head")
    ap.add_argument("--gt-head", choices=["shared", "own"], default="shared",
                    help="G_t's head in the bundle: a copy of G_s's (default) or its own (needs --gt-steps)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from hrinv import bundled
    from hrinv.io.checkpoints import load_generator, save_generator

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    G_s = load_generator(bundled.path(GS_NAME))
    G_t = load_generator(bundled.path(GT_NAME))
    G_s.inr = G_t.inr = None  # refit from the trunk even when the bundle already has heads

    cache = out / f"gs_head_{args.steps}_s{args.seed}_h{args.hidden}.safetensors"
    if cache.is_file():
        G_sh = load_generator(cache)
        print(f"reusing {cache}: {json.dumps(G_sh.inr.fit_info)}")
    else:
        G_sh = _fit(G_s, args.steps, args.seed, args, "G_s head")
        save_generator(G_sh, cache)
    figures = {"hardware": f"{platform.machine()}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}",
               "args": vars(args), "gs_fit_info": G_sh.inr.fit_info}
    figures["G_s_with_G_s_head"] = measure(G_s, G_sh.inr)
    figures["G_t_with_G_s_head"] = measure(G_t, G_sh.inr)
    G_th = None
    if args.gt_steps:
        gcache = out / f"gt_head_{args.gt_steps}_s{args.seed}_h{args.hidden}.safetensors"
        if gcache.is_file():
            G_th = load_generator(gcache)
        else:
            G_th = _fit(G_t, args.gt_steps, args.seed, args, "G_t head")
            save_generator(G_th, gcache)
        figures["gt_fit_info"] = G_th.inr.fit_info
        figures["G_t_with_own_head"] = measure(G_t, G_th.inr)
    sheet(G_sh, out / "gs_64_128_256_bicubic.png")
    G_ts = load_generator(bundled.path(GT_NAME))
    G_ts.attach_inr(G_sh.inr)
    sheet(G_ts, out / "gt_with_gs_head_64_128_256_bicubic.png")
    print(json.dumps(figures, indent=2))
    (out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")

    if args.write_bundle:
        if args.gt_head == "own" and G_th is None:
            ap.error("--gt-head own needs --gt-steps N")
        note = {"made_by": "tools/fit_bundled_inr.py", "fit_info": G_sh.inr.fit_info,
                "measured": figures["G_s_with_G_s_head"]}
        gs_extra = dict(_extra_of(bundled.path(GS_NAME)))
        gs_extra["inr_head"] = note
        G_s.attach_inr(G_sh.inr)
        p = _save_half(G_s, BUNDLED / GS_NAME, gs_extra)
        print(f"wrote {p} ({p.stat().st_size} bytes)")
        gt_extra = dict(_extra_of(bundled.path(GT_NAME)))
        if args.gt_head == "shared":
            gt_extra["inr_head"] = dict(note, shared_with=GS_NAME, measured=figures["G_t_with_G_s_head"])
            G_t.attach_inr(G_sh.inr)
        else:
            gt_extra["inr_head"] = {"made_by": "tools/fit_bundled_inr.py", "fit_info": G_th.inr.fit_info,
                                    "measured": figures["G_t_with_own_head"]}
            G_t.attach_inr(G_th.inr)
        p = _save_half(G_t, BUNDLED / GT_NAME, gt_extra)
        print(f"wrote {p} ({p.stat().st_size} bytes); now refresh manifest.json with tools/bundle_add.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
