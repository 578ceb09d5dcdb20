"""Write the bundled ``hrinv/bundled/vgg16_caffe_conv_fp16.safetensors`` from the caffe-convention VGG16 file.

The source is ``../shared/weights/vgg16_imagenet_caffe.safetensors`` (the Oxford VGG ImageNet VGG16 conv weights as
ported by Keras from Caffe, CC BY; see hrinv/bundled/vgg16_caffe_conv_fp16.md). Only the 13 conv layers
(``features.N.weight/bias``) are kept, rounded to float16 (half the size, 29 MB); the file metadata keeps the
source's licence, source and input-convention text and adds ``hrinv`` = ``{"convention": "caffe", ...}`` so that
:func:`hrinv.load_vgg16` picks the caffe input convention. ``load_vgg16`` upcasts to the requested dtype (float32 by
default). The script then prints how far the fp16 copy is from the fp32 original (weights and the perceptual loss)::

    python tools/bundle_vgg16_fp16.py [--src ../shared/weights/vgg16_imagenet_caffe.safetensors]
"""

import argparse
import json
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HRINV_SHARED", REPO.parent / "shared"))
DEST = REPO / "hrinv" / "bundled" / "vgg16_caffe_conv_fp16.safetensors"
CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def convert(src, dest):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata() or {})
        sd = {f"features.{i}.{p}": f.get_tensor(f"features.{i}.{p}") for i in CONV_INDICES for p in ("weight", "bias")}
    out = {k: v.to(torch.float16).contiguous() for k, v in sd.items()}
    meta = dict(meta)
    meta["dtype"] = "float16 (rounded from the float32 source; hrinv.load_vgg16 upcasts to the requested dtype)"
    meta["conversion"] = (f"tools/bundle_vgg16_fp16.py: the 13 conv layers of {Path(src).name}, rounded to float16 "
                          f"(round-to-nearest), nothing else changed")
    meta["hrinv"] = json.dumps({"convention": "caffe", "format": "hrinv.vgg16", "dtype": "float16"})
    save_file(out, str(dest), metadata=meta)
    return sd, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default=str(SHARED / "weights" / "vgg16_imagenet_caffe.safetensors"))
    ap.add_argument("--dest", default=str(DEST))
    args = ap.parse_args(argv)
    sd, out = convert(args.src, args.dest)
    worst = max(float(((out[k].float() - v).abs() / v.abs().max()).max()) for k, v in sd.items())
    print(f"wrote {args.dest} ({Path(args.dest).stat().st_size / 1e6:.1f} MB); worst rounding error / tensor max "
          f"{worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
