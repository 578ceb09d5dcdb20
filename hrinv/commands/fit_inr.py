"""``hrinv fit-inr SRC DST.safetensors``: give a StyleGAN2 an INR head (any-resolution rendering).

No Style-INR-GAN weights were ever released, so the head is distilled from the generator's own output
(:func:`hrinv.generator.inr.fit_inr_head`); the result is saved with the generator in our ``.safetensors`` format.
"""

import json
from pathlib import Path

HELP = ("Distil an INR head (Style-INR-GAN style, any width x height) for a StyleGAN2 checkpoint from its own output "
        "and save generator + head as .safetensors.")


def add_arguments(parser):
    parser.add_argument("src", help="StyleGAN2 checkpoint (.pkl, .pt/.pth, .safetensors)")
    parser.add_argument("dst", help="output .safetensors (generator + INR head)")
    parser.add_argument("--steps", type=int, default=500, help="optimisation steps (default 500)")
    parser.add_argument("--batch", type=int, default=8, help="generator samples per trunk batch (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default 2e-3)")
    parser.add_argument("--hidden", type=int, default=64, help="MLP width (default 64)")
    parser.add_argument("--points", type=int, default=4096, help="pixels per image per step (default 4096)")
    parser.add_argument("--reuse", type=int, default=4, help="steps that share one trunk batch (default 4)")
    parser.add_argument("--max-scale", type=float, default=4.0, help="largest training shrink factor (default 4)")
    parser.add_argument("--which", choices=["G_ema", "G"], default="G_ema", help="generator of a training snapshot")
    parser.add_argument("--device", default="auto", help="auto (cuda if available, else mps, else cpu), cpu, cuda, ...")
    parser.add_argument("--force", action="store_true", help="overwrite DST if it exists")


def run(args):
    from .._checks import check_number, check_seed
    from ..errors import InvalidSettingError
    from ._common import device_or_torchrun

    dst = Path(args.dst)
    if dst.suffix.lower() != ".safetensors":
        raise InvalidSettingError(f"the destination must end in .safetensors, got {dst.name!r}")
    if dst.exists() and not args.force:
        raise InvalidSettingError(f"{dst} exists; pass --force to overwrite it")
    if dst.exists() and dst.resolve() == Path(args.src).resolve():
        raise InvalidSettingError("source and destination are the same file")
    for name in ("steps", "batch", "hidden", "points", "reuse"):
        if getattr(args, name) < (0 if name == "steps" else 1):
            raise InvalidSettingError(f"--{name} must be positive, got {getattr(args, name)}")
    check_seed(args.seed, "--seed")
    check_number(args.lr, "--lr", low=0, low_inclusive=False)
    check_number(args.max_scale, "--max-scale", low=1)
    if not dst.parent.is_dir():
        raise InvalidSettingError(f"the destination folder {dst.parent} does not exist; create it first")
    with device_or_torchrun(args) as (device, ctx):  # under torchrun: DDP, rank 0 writes DST
        return _fit(args, device, dst, ctx)


def _fit(args, device, dst, ctx):
    import torch

    from ..generator.inr import fit_inr_head
    from ..io.checkpoints import load_generator, save_generator
    from ._common import Progress

    main_rank = ctx is None or ctx.is_main
    G = load_generator(args.src, device="cpu", which=args.which)
    if G.inr is not None:
        print(f"note: {args.src} already has an INR head; it is replaced by a newly fitted one")
    G_head = fit_inr_head(G, steps=args.steps, batch=args.batch, lr=args.lr, device=device,
                          generator=torch.Generator().manual_seed(args.seed), hidden=args.hidden, points=args.points,
                          reuse=args.reuse, max_scale=args.max_scale,
                          callback=Progress("fit-inr", quiet=not main_rank))
    if ctx is not None:
        _check_ranks_agree(G_head, ctx)
        if not ctx.is_main:
            return 0
    meta = {"seed": args.seed, "src": str(args.src)}
    if ctx is not None:
        meta["ranks"] = ctx.world_size
    save_generator(G_head, dst, extra_meta={"fit_inr": meta})
    info = G_head.inr.fit_info
    print(f"wrote {dst}: {G.img_resolution}x{G.img_resolution} generator + INR head "
          f"(native {info['psnr_native_db']:.1f} dB; 2x in-between pixels: head {info['psnr_2x_head_db']:.2f} dB vs "
          f"bicubic {info['psnr_2x_bicubic_db']:.2f} dB)")
    if getattr(args, "verbose", False):
        print(json.dumps(info, indent=2))
    return 0


def _check_ranks_agree(G_head, ctx):
    """Every rank must hold the same head after DDP training (a cheap checksum, compared on rank 0)."""
    total = sum(float(p.detach().double().sum()) for p in G_head.inr.parameters())
    lo = -ctx.all_reduce_max(-total)
    hi = ctx.all_reduce_max(total)
    if hi - lo > 1e-9 * max(1.0, abs(hi)):
        raise RuntimeError(f"fit-inr: the ranks' INR heads differ after DDP training (checksums {lo} .. {hi}).")
    if ctx.is_main:
        print(f"{ctx.world_size} ranks trained the same head (checksum {total:.6g})")
