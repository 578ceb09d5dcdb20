"""``hrinv render LATENT.safetensors --generator CKPT --width W --height H --out OUT.png``: render a saved latent.

With an INR head the generator renders any size directly (``--tile`` bounds the memory); without one the native
render is resampled (antialiased bicubic), which is a fallback, not the paper's INR. A latent batch of B codes writes
``OUT_0.png`` ... ``OUT_{B-1}.png``.
"""

import argparse
from pathlib import Path

HELP = "render a saved latent at any width x height (INR head when the generator has one, else resized)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._common import add_device_arguments

    parser.add_argument("latent", metavar="LATENT", help="latent file (.safetensors from hrinv, or a projector .npz)")
    parser.add_argument("--generator", "-g", required=True, metavar="CKPT",
                        help="the generator the latent belongs to (for stylised codes: the G_m saved by "
                             "`hrinv stylize --save-generator`)")
    parser.add_argument("--width", type=int, default=None, help="output width (default: the generator's)")
    parser.add_argument("--height", type=int, default=None, help="output height (default: the generator's)")
    parser.add_argument("--mode", default="auto", choices=["auto", "inr", "resize"],
                        help="auto (INR head if present, else resize), inr, resize")
    parser.add_argument("--fit", default="stretch", choices=["stretch", "crop", "pad"],
                        help="aspect policy for a non-square output (default stretch)")
    parser.add_argument("--tile", type=int, default=None, help="INR head tile size in pixels (bounds memory)")
    parser.add_argument("--index", type=int, default=None, help="render only this sample of a latent batch")
    parser.add_argument("--out", "-o", required=True, metavar="PNG", help="output image (.png/.jpg)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no output but errors")
    add_device_arguments(parser)


def run(args) -> int:
    import torch

    from ..io.checkpoints import load_generator
    from ..latent import Latent
    from ..rendering import render
    from .._checks import check_render_size
    from ..errors import InvalidSettingError, WeightsNotFoundError
    from ._common import check_image_suffix, resolve_device, resolve_dtype, save_image

    if not Path(args.latent).is_file():
        raise WeightsNotFoundError(f"latent file not found: {args.latent}")
    for name in ("width", "height", "tile"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise InvalidSettingError(f"--{name} must be >= 1, got {v}")
    check_render_size(args.height or 1, args.width or 1)  # before loading anything
    check_image_suffix(args.out)  # before the render, not after it
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    G = load_generator(args.generator, device=device, dtype=dtype)
    lat = Latent.load(args.latent)
    lat.check_compatible(G)  # shapes must fit; a different fingerprint only warns (fine-tuned generators share shapes)
    if args.index is not None:
        if not -lat.batch_size <= args.index < lat.batch_size:
            raise InvalidSettingError(f"--index {args.index} is out of range for a latent batch of {lat.batch_size}")
        lat = lat[args.index]
    height = int(args.height or G.img_resolution)
    width = int(args.width or G.img_resolution)
    check_render_size(height, width)
    with torch.no_grad():
        img = render(G, lat.ws.to(device), height, width, noise=lat.noise, mode=args.mode, fit=args.fit,
                     tile=args.tile)  # [B, 3, H, W] CPU
    out = Path(args.out)
    suffix = out.suffix or ".png"
    paths = [out.with_suffix(suffix)] if img.shape[0] == 1 else \
        [out.with_name(f"{out.stem}_{i}{suffix}") for i in range(img.shape[0])]
    for i, p in enumerate(paths):
        save_image(img[i], p)
    if not args.quiet:
        print(f"rendered {len(paths)} image(s) at {width}x{height} -> {', '.join(str(p) for p in paths)}")
    return 0
