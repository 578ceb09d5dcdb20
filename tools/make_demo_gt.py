"""Make the bundled demo target generator ``stylegan2_face64_demo_style.safetensors``: G_s fine-tuned on demo_style.

``hrinv.finetune`` (JoJoGAN recipe with our perceptual loss, seeded) of the bundled G_s on the bundled
``demo_style.png``, so that ``hrinv demo`` needs no fine-tuning. Also writes a copy of a G_s checkpoint in float16
(``--half-gs``), the form in which generators are bundled (half the bytes; loaders upcast)::

    python tools/make_demo_gt.py --half-gs runs/face64/stylegan2_face64.safetensors   # -> hrinv/bundled/
    python tools/make_demo_gt.py --steps 150 --invert-steps 200                        # G_t -> hrinv/bundled/

G_t keeps G_s's INR head (``hrinv.finetune`` copies it; as ``tools/fit_bundled_inr.py --gt-head shared``); the
head's figures on G_t are measured and stored in its metadata. Then refresh the manifest with tools/bundle_add.py.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "hrinv" / "bundled"


def save_half(G, path, extra=None):
    from hrinv.io.checkpoints import save_generator

    fp = G.fingerprint()
    meta = dict(G.meta)
    H = G.to(torch.float16)
    H.meta = meta
    assert H.fingerprint() == fp  # the fingerprint rounds to fp16: unchanged
    return save_generator(H, path, extra_meta=extra)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--half-gs", default=None, metavar="CKPT", help="write this G_s as hrinv/bundled/"
                                                                   "stylegan2_face64.safetensors in float16 and exit")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--invert-steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calibration", default="auto", choices=["auto", "global", "rms"],
                    help="perceptual-loss calibration of the caffe VGG16 (default auto = global: the authors' layer "
                         "balance)")
    ap.add_argument("--out", default=str(BUNDLED / "stylegan2_face64_demo_style.safetensors"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from hrinv import bundled
    from hrinv.finetuning import FinetuneConfig, finetune
    from hrinv.imageio import read_image
    from hrinv.io.checkpoints import load_generator
    from hrinv.losses import PerceptualLoss, load_vgg16

    if args.half_gs:
        G = load_generator(args.half_gs)
        src = G.meta.get("converted_from") or {}
        G.meta = {k: v for k, v in src.items() if k in ("name", "trained_by", "teacher", "step", "w_std")}
        side = Path(args.half_gs).parent / "metrics.json"  # written beside it by tools/train_face64.py
        extra = json.loads(side.read_text(encoding="utf-8")) if side.is_file() else None
        p = save_half(G, BUNDLED / "stylegan2_face64.safetensors", extra=extra)
        print(f"wrote {p} ({p.stat().st_size / 1e6:.2f} MB), fingerprint {G.fingerprint()}")
        return 0
    G_s = load_generator(bundled.path("stylegan2_face64.safetensors"))
    vgg = load_vgg16(bundled.path("vgg16_caffe_conv_fp16.safetensors"))
    res = G_s.img_resolution
    style = F.interpolate(read_image(bundled.path("demo_style.png"))[None] * 2 - 1, size=(res, res), mode="area")
    cfg = FinetuneConfig(steps=args.steps, invert_steps=args.invert_steps, seed=args.seed)
    loss = PerceptualLoss(vgg, layers=cfg.loss_layers, calibration=args.calibration)
    g = {round(c, 12) for c in loss.calibration.values()}
    calibration = f"{args.calibration} ({'global' if len(g) == 1 else 'rms'})"
    t0 = time.time()
    last = [0.0]

    def cb(step, total, preview=None):
        if time.time() - last[0] > 20 or step == total:
            last[0] = time.time()
            print(f"{step}/{total} ({time.time() - t0:.0f} s)", flush=True)

    G_t = finetune(G_s, style, loss, config=cfg, callback=cb, generator=torch.Generator().manual_seed(args.seed))
    secs = time.time() - t0
    G_t.meta["name"] = "stylegan2_face64_demo_style"
    extra = {"made_by": "tools/make_demo_gt.py", "seconds": round(secs, 1), "calibration": calibration,
             "config": json.loads(json.dumps(cfg.__dict__, default=str))}
    if G_t.inr is not None:  # finetune copied G_s's INR head: record it as tools/fit_bundled_inr.py --gt-head shared
        from fit_bundled_inr import GS_NAME, _extra_of, measure  # the script beside this one

        note = dict(_extra_of(bundled.path(GS_NAME)).get("inr_head") or {})
        note.update(shared_with=GS_NAME, measured=measure(G_t, G_t.inr))
        extra["inr_head"] = note
        print(f"INR head shared with {GS_NAME}; on G_t: {json.dumps(note['measured'])}")
    p = save_half(G_t, args.out, extra=extra)
    print(f"wrote {p} ({p.stat().st_size / 1e6:.2f} MB) in {secs:.0f} s; parent {G_t.meta.get('parent_fingerprint')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
