"""``hrinv convert SRC DST.safetensors``: any supported StyleGAN2 checkpoint -> our ``.safetensors`` format.

Reads NVIDIA ``.pkl`` snapshots and legacy TensorFlow pickles (both without running code from the file), rosinality
``.pt`` files and ``.safetensors``; writes weights + JSON metadata that :func:`hrinv.load_generator` reads back
instantly. ``--print`` only describes SRC.
"""

import json
from pathlib import Path

HELP = ("Convert a StyleGAN2 checkpoint (NVIDIA .pkl, legacy TensorFlow .pkl, rosinality .pt, .safetensors) into "
        "hrinv's .safetensors format, safely (nothing in the file is executed).")


def add_arguments(parser):
    parser.add_argument("src", help="checkpoint to read (.pkl, .pt/.pth, .safetensors; detected by content)")
    parser.add_argument("dst", nargs="?", help="output .safetensors file (omit with --print)")
    parser.add_argument("--which", choices=["G_ema", "G"], default="G_ema",
                        help="which generator of a training snapshot to take (default: G_ema, the averaged one)")
    parser.add_argument("--print", dest="print_info", action="store_true",
                        help="print the checkpoint's format, configuration and size (as JSON) and exit if no DST")
    parser.add_argument("--force", action="store_true", help="overwrite DST if it exists")


def run(args):
    from ..errors import InvalidSettingError
    from ..io.checkpoints import build_generator, read_checkpoint, save_generator

    init_kwargs, sd, extras = read_checkpoint(args.src, which=args.which)
    if args.print_info:
        num = sum(t.numel() for k, t in sd.items() if not k.endswith(("w_avg", "noise_const", "resample_filter")))
        info = {"path": str(args.src), "format": extras.get("format"), "which": args.which,
                "init_kwargs": init_kwargs, "num_params": num, "num_tensors": len(sd),
                "has_inr": bool(extras.get("inr")),
                "w_avg": "missing (will be estimated)" if extras.get("w_avg_missing") else "stored"}
        print(json.dumps(info, indent=2, default=str))
        if not args.dst:
            return 0
    if not args.dst:
        raise InvalidSettingError("hrinv convert needs a destination: hrinv convert SRC DST.safetensors "
                                    "(or --print to only describe SRC)")
    dst = Path(args.dst)
    if dst.suffix.lower() != ".safetensors":
        raise InvalidSettingError(f"the destination must end in .safetensors, got {dst.name!r}")
    if dst.exists() and not args.force:
        raise InvalidSettingError(f"{dst} exists; pass --force to overwrite it")
    if dst.resolve() == Path(args.src).resolve():
        raise InvalidSettingError("source and destination are the same file")
    G = build_generator(init_kwargs, sd, extras, source=args.src)
    if not dst.parent.is_dir():
        raise InvalidSettingError(f"the destination folder {dst.parent} does not exist; create it first (mkdir -p "
                                  f"{dst.parent})")
    save_generator(G, dst)
    print(f"wrote {dst} ({G.img_resolution}x{G.img_resolution}, w_dim {G.w_dim}, {len(sd)} tensors, "
          f"from {extras.get('format')})")
    return 0
