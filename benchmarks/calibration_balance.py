"""How much the per-tap ("rms") calibration of the caffe VGG16 changes d_conv against the default ("global").

For N aligned faces at S² it prints, per pair kind (a face against its Gaussian-blurred copy, and against another
face), the cosine between the input gradients of d_conv under the two calibrations, and each tap's share of the
loss under both. ``"global"`` scales every tap by one factor, so its shares are the caffe network's own balance
under the paper's λ's; ``"rms"`` re-weights the taps. The figures are quoted in docs/perceptual-loss.md.

    PYTHONPATH=. python benchmarks/calibration_balance.py --weights ../shared/weights/vgg16_imagenet_caffe.safetensors \
        --images ../shared/data/faces/celebahq --num 4 --size 256
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F


def blur(x, sigma):
    """Separable Gaussian blur of [B, 3, H, W] (reflect padding)."""
    r = int(3 * sigma + 1)
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="VGG16 weights with known calibration constants (caffe)")
    ap.add_argument("--images", required=True, help="folder of aligned face .jpg/.png (the first --num are used)")
    ap.add_argument("--num", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from hrinv.imageio import read_image
    from hrinv.losses import PerceptualLoss, load_vgg16

    vgg = load_vgg16(args.weights)
    if not vgg.calibration:
        sys.exit(f"{args.weights}: these weights carry no calibration constants, nothing to compare")
    files = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".jpg", ".png"))[:args.num]
    if len(files) < 2:
        sys.exit(f"{args.images}: need at least 2 face images, found {len(files)}")
    S = args.size
    imgs = torch.stack([F.interpolate(read_image(f)[None], size=(S, S), mode="area")[0] for f in files]) * 2 - 1
    for name, pred in ((f"blurred copy (sigma={S / 128:g} px)", blur(imgs, S / 128)),
                       ("another face", imgs.roll(1, 0))):
        grads, shares = {}, {}
        for cal in ("global", "rms"):
            loss = PerceptualLoss(vgg, "conv", calibration=cal)
            p = pred.clone().requires_grad_(True)
            loss(p, loss.target(imgs)).sum().backward()
            grads[cal] = p.grad.flatten(1)
            with torch.no_grad():
                per = {t: float(PerceptualLoss(vgg, {t: lam}, calibration=cal)(pred, imgs).sum())
                       for t, lam in loss.weights.items()}
            shares[cal] = {t: 100 * v / sum(per.values()) for t, v in per.items()}
        cos = F.cosine_similarity(grads["global"], grads["rms"], dim=1)
        print(f"{len(files)} faces at {S}^2, face vs {name}: gradient cosine rms vs global "
              f"{', '.join(f'{c:.3f}' for c in cos.tolist())}")
        for cal in ("global", "rms"):
            print(f"  loss share ({cal}): " + ", ".join(f"op {t} {v:.1f} %" for t, v in shares[cal].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
