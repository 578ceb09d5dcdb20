"""``hrinv finetune --generator G_s --style IMG [IMG ...] --vgg VGG --out G_t.safetensors``: few-shot G_t.

Fine-tunes a copy of G_s on 1-10 style references (JoJoGAN's recipe with the HRInversion perceptual loss, see
docs/finetune.md) and writes G_t as our ``.safetensors`` (parent fingerprint and settings in its metadata), a JSON
of the settings and figures next to it (``G_t.json``) and a preview sheet (``G_t.png``: references, their
inversions in G_s, the same codes rendered by G_t).

Under ``torchrun --nproc-per-node N -m hrinv finetune ...`` the ranks train one G_t with DistributedDataParallel:
``--batch-size`` is per rank (a step sees ``batch_size x N`` codes, each rank its own slice of one global draw),
gradients are averaged, rank 0 alone prints progress and writes the files (docs/finetune.md).
"""

import argparse
import logging
import sys
import time
from pathlib import Path

from ..losses.perceptual import CALIBRATIONS

HELP = "fine-tune a target generator G_t from 1-10 style images (JoJoGAN recipe with the HRInversion loss)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._common import add_device_arguments

    parser.add_argument("--generator", "-g", required=True, metavar="CKPT",
                        help="source generator G_s (.pkl NVIDIA, .pt rosinality, .safetensors hrinv)")
    parser.add_argument("--style", "-s", required=True, nargs="+", metavar="IMG",
                        help="1-10 style reference images, aligned like G_s's faces (centre-cropped and resized)")
    parser.add_argument("--vgg", required=True, metavar="VGG_WEIGHTS",
                        help="VGG16 weights for the perceptual loss (torchvision/timm/caffe file)")
    parser.add_argument("--out", "-o", required=True, metavar="G_T",
                        help="output generator file (.safetensors); G_t.json and G_t.png are written beside it")
    parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps (default 300)")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 2e-3)")
    parser.add_argument("--preserve-color", action="store_true",
                        help="keep the face's colours: mix fewer W+ rows (JoJoGAN's preserve-colour layout)")
    parser.add_argument("--mix-rows", default=None, metavar="ROWS",
                        help="explicit W+ rows to mix with random codes, comma-separated (default: auto)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="how far mixed rows move to the random code (default 1 = replaced)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="training codes per step (default 4); under torchrun per rank (global = N x this)")
    parser.add_argument("--invert-steps", type=int, default=None,
                        help="inversion steps per reference into G_s (default 500)")
    parser.add_argument("--lambda-mse", type=float, default=None, help="weight of a pixel MSE term (default 0)")
    parser.add_argument("--calibration", default=None, choices=CALIBRATIONS,
                        help="perceptual-loss calibration of the VGG taps (default auto: for the caffe VGG16 one "
                             "factor for all taps, the authors' layer balance; rms: per tap; see "
                             "docs/perceptual-loss.md)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    add_device_arguments(parser)


def _config(args):
    from ..finetuning import FinetuneConfig

    over = {"seed": int(args.seed)}
    for key, value in (("steps", args.steps), ("lr", args.lr), ("alpha", args.alpha), ("batch_size", args.batch_size),
                       ("invert_steps", args.invert_steps), ("lambda_mse", args.lambda_mse)):
        if value is not None:
            over[key] = value
    if args.preserve_color:
        over["preserve_color"] = True
    if args.mix_rows:
        try:
            over["mix_rows"] = [int(x) for x in args.mix_rows.replace(" ", "").split(",") if x]
        except ValueError:
            raise ValueError(f"--mix-rows must be comma-separated row numbers like 4,5,6, got {args.mix_rows!r}") \
                from None
    return FinetuneConfig(**over)


class _Bar:
    """tqdm progress bar when tqdm is installed (it is not a runtime dependency), else the plain printer."""

    def __init__(self, quiet, desc="finetune"):
        self.bar = None
        self.desc = desc
        self.quiet = quiet
        self.fallback = None

    def __call__(self, step, total, preview=None):
        if self.quiet:
            return
        if self.bar is None and self.fallback is None:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc=self.desc, unit="step")
            except ImportError:
                from ._common import Progress

                self.fallback = Progress(self.desc)
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            if step == total:
                self.bar.close()
        else:
            self.fallback(step, total, preview)


def run(args) -> int:
    from ._common import device_or_torchrun, require_files, resolve_dtype

    try:
        config = _config(args)
    except ValueError as e:
        print(f"hrinv finetune: error: {e}", file=sys.stderr)
        return 2
    require_files(args.style, "style image")
    out = Path(args.out)
    if out.suffix.lower() != ".safetensors":
        print(f"hrinv finetune: error: --out must be a .safetensors file, got {out.name!r}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    with device_or_torchrun(args) as (device, ctx):  # under torchrun: DDP, rank 0 writes the files
        return _run(args, config, out, device, resolve_dtype(args.dtype), ctx)


def _run(args, config, out, device, dtype, ctx) -> int:
    import torch

    from ..finetuning import finetune
    from ..inversion import InversionConfig, compute_w_stats, invert
    from ..io.checkpoints import load_generator, save_generator
    from ..losses import PerceptualLoss, load_vgg16
    from ._common import load_image, save_image, write_json

    G_s = load_generator(args.generator, device=device, dtype=dtype)
    vgg = load_vgg16(args.vgg, device=device)
    loss = PerceptualLoss(vgg, layers=config.loss_layers,
                          **({"calibration": args.calibration} if args.calibration else {}))
    res = G_s.img_resolution
    styles = torch.cat([load_image(p, res) for p in args.style]).to(device)  # [K, 3, R, R]
    if not args.quiet:
        print(f"G_s {args.generator}: {res}px, {G_s.num_ws} ws, fingerprint {G_s.fingerprint()}; "
              f"{len(args.style)} style image(s); device {device}")
    stats = compute_w_stats(G_s, config.w_avg_samples, config.w_stats_seed, device=device)
    t0 = time.perf_counter()
    # The references' codes in G_s (Eq. 5), inverted here so the preview sheet can show them; finetune() reuses them.
    inv_cfg = InversionConfig.preset("cross_domain", steps=max(1, config.invert_steps), lr=config.invert_lr,
                                     seed=config.seed, loss_layers=config.loss_layers)
    inv = invert(G_s, styles, loss, inv_cfg, device=device, dtype=dtype, w_stats=stats,
                 callback=_Bar(args.quiet, "invert refs"))
    G_t = finetune(G_s, styles, loss, config, device=device, dtype=dtype, callback=_Bar(args.quiet, "finetune"),
                   w_stats=stats, style_latents=inv.latent.ws, distributed=ctx is not None)
    seconds = time.perf_counter() - t0
    if ctx is not None:
        _check_ranks_agree(G_t, ctx)
        if not ctx.is_main:
            return 0
    info = G_t.meta["finetune"]
    info["reference_inversion_psnr"] = [float(x) for x in inv.metrics["psnr"]]
    save_generator(G_t, out, extra_meta={"finetune_styles": [str(p) for p in args.style]})

    # Preview sheet: row 1 the references, row 2 their codes in G_s, row 3 the same codes in G_t.
    with torch.no_grad():
        ws = inv.latent.ws.to(device=device, dtype=dtype)
        rows = [styles.float(), G_s.synthesis(ws, noise_mode="const").float().clamp(-1, 1),
                G_t.synthesis(ws, noise_mode="const").float().clamp(-1, 1)]
    sheet = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)  # [3, 3R, K*R]
    save_image(sheet.cpu(), out.with_suffix(".png"))
    rec = {"generator": str(args.generator), "style_images": [str(p) for p in args.style], "vgg": str(args.vgg),
           "out": str(out), "parent_fingerprint": G_t.meta["parent_fingerprint"], "fingerprint": G_t.fingerprint(),
           "device": str(device), "dtype": str(dtype), "calibration": args.calibration or "auto",
           "settings": info["config"], "seed": info["seed"], "mixed_rows": info["mixed_rows"],
           "tuned_blocks": info["tuned_blocks"],
           "metrics": {"loss_first": info["loss_first"], "loss_last": info["loss_last"],
                       "reference_inversion_psnr": info["reference_inversion_psnr"],
                       "reference_psnr_in_G_t": info["reference_psnr_in_G_t"], "seconds": seconds}}
    write_json(out.with_suffix(".json"), rec)
    if not args.quiet:
        print(f"G_t -> {out} (loss {info['loss_first']:.4g} -> {info['loss_last']:.4g}, references in G_t "
              f"{', '.join(f'{x:.1f}' for x in info['reference_psnr_in_G_t'])} dB PSNR, {seconds:.1f}s)")
    return 0


def _check_ranks_agree(G_t, ctx):
    """Every rank must hold the same G_t after DDP training (a cheap checksum, compared over the ranks)."""
    total = sum(float(p.detach().double().sum()) for p in G_t.synthesis.parameters())
    lo, hi = -ctx.all_reduce_max(-total), ctx.all_reduce_max(total)
    if hi - lo > 1e-9 * max(1.0, abs(hi)):
        raise RuntimeError(f"finetune: the ranks' G_t differ after DDP training (checksums {lo} .. {hi}).")
    if ctx.is_main:
        print(f"{ctx.world_size} ranks trained the same G_t (checksum {total:.6g}; global batch "
              f"{G_t.meta['finetune']['config']['batch_size']} x {ctx.world_size})")
