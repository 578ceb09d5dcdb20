"""Measure the per-tap calibration of a VGG16 weight set on reference face images.

Prints the RMS of every conv and ReLU output over the images and the resulting ``1 / rms`` scales, formatted as the
``KNOWN_CALIBRATIONS`` entry of ``hrinv/losses/perceptual.py``. With ``--reference`` (another weights file, e.g.
torchvision's ``vgg16-397923af.pth``) the scales are ``rms_reference / rms`` instead.

    python benchmarks/measure_calibration.py --weights ../shared/weights/vgg16_imagenet_caffe.safetensors \
        --images ../shared/data/faces/celebahq --size 512
"""

import argparse
import glob
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

from hrinv.losses import load_vgg16
from hrinv.losses.perceptual import measure_calibration
from hrinv.losses.vgg import CONV_INDICES, RELU_INDICES


def load_images(folder, size, limit):
    files = sorted(glob.glob(os.path.join(folder, "*.jpg")) + glob.glob(os.path.join(folder, "*.png")))[:limit]
    if not files:
        sys.exit(f"no .jpg/.png images in {folder}")
    for f in files:
        im = Image.open(f).convert("RGB").resize((size, size), Image.LANCZOS)
        a = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 127.5 - 1.0  # [3, S, S]
        yield a[None]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--reference", default=None, help="weights whose feature scale to match (default: unit RMS)")
    ap.add_argument("--images", required=True)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--limit", type=int, default=1000)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    vgg = load_vgg16(args.weights)
    ref = load_vgg16(args.reference) if args.reference else None
    images = list(load_images(args.images, args.size, args.limit))
    t0 = time.perf_counter()
    ops = sorted(CONV_INDICES + RELU_INDICES)
    scales = measure_calibration(vgg, images, ops=ops, reference=ref)
    print(f"# {len(images)} images at {args.size}^2, {time.perf_counter() - t0:.1f} s, fingerprint "
          f"{vgg.meta['fingerprint']}, convention {vgg.convention.name}")
    print("op  rms(1/scale)  scale")
    for op in ops:
        print(f"{op:>2}  {1.0 / scales[op]:12.4f}  {scales[op]:.6g}")
    print("scales = {" + ", ".join(f"{op}: {scales[op]:.6g}" for op in ops) + "}")


if __name__ == "__main__":
    main()
