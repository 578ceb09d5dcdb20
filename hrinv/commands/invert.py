"""``hrinv invert IMAGE... --generator G --vgg VGG --out DIR``: invert images into W+ (+ noise) (paper Eq. 1 / 5).

For each image it writes ``DIR/<stem>.png`` (the reconstruction), ``DIR/<stem>.latent.safetensors`` (the
:class:`hrinv.latent.Latent`) and ``DIR/<stem>.json`` (settings and metrics: PSNR, final loss, seconds).

Photos are aligned first (every face, FFHQ recipe, :func:`hrinv.align_faces`): face k of ``<stem>`` is then named
``<stem>_<k>`` and ``DIR/<stem>_<k>_aligned.png`` + ``DIR/<stem>.alignment.json`` (the transforms) are written too.
``--no-align`` takes the images as they are (already aligned faces, or non-face generators).
"""

import argparse
import logging
import sys
import time
from pathlib import Path

HELP = "invert images into a generator's W+ (+noise) space with the HRInversion loss (paper Eq. 1; Eq. 5 --no-noise-maps)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._common import add_device_arguments
    from .align import add_alignment_arguments

    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="photos (every face is aligned and inverted) or, with --no-align, aligned images")
    parser.add_argument("--generator", "-g", required=True, metavar="CKPT",
                        help="generator checkpoint (.pkl NVIDIA, .pt rosinality, .safetensors hrinv)")
    parser.add_argument("--vgg", required=True, metavar="VGG_WEIGHTS",
                        help="VGG16 weights for the perceptual loss (torchvision/timm/caffe file)")
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--preset", default="reconstruction",
                        choices=["reconstruction", "cross_domain", "downsampled_256", "nvidia_projector"],
                        help="starting settings: reconstruction (Eq. 1, default), cross_domain (Eq. 5: W+ only), "
                             "downsampled_256 (ablation baseline), nvidia_projector (W, noise reg., 256 px loss); "
                             "the options below override it")
    parser.add_argument("--steps", type=int, default=None, help="optimisation steps (paper: 1000)")
    parser.add_argument("--lr", type=float, default=None, help="Adam base learning rate (reference 0.1)")
    parser.add_argument("--latent-space", dest="space", choices=["w+", "w"], default=None,
                        help="latent space (default w+)")
    parser.add_argument("--noise-maps", dest="noise", action="store_true", default=None,
                        help="also optimise the noise maps (Eq. 1; default for the reconstruction preset)")
    parser.add_argument("--no-noise-maps", dest="noise", action="store_false",
                        help="W+ only, noise maps stay the generator's constants (Eq. 5)")
    # earlier spellings, still accepted (hidden from --help)
    parser.add_argument("--space", dest="space", choices=["w+", "w"], help=argparse.SUPPRESS)
    parser.add_argument("--noise", dest="noise", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-noise", dest="noise", action="store_false", help=argparse.SUPPRESS)
    parser.add_argument("--lambda-mse", type=float, default=None, help="weight of the pixel MSE term (default 0)")
    parser.add_argument("--noise-regularize", type=float, default=None,
                        help="weight of the noise-map regulariser (default 0; NVIDIA 1e5)")
    parser.add_argument("--loss-layers", choices=["conv", "high"], default=None,
                        help="VGG layers: conv (d_conv, default) or high (d_h)")
    parser.add_argument("--downsample", type=int, default=None,
                        help="compute the loss at this size (shorter side) instead of full resolution")
    parser.add_argument("--seed", type=int, default=0, help="seed (image i of a batch uses seed + i); default 0")
    parser.add_argument("--batch-size", type=int, default=1, help="images inverted together (same size only)")
    parser.add_argument("--keep-aspect", action="store_true",
                        help="keep non-square images: scale the longer side to the generator resolution and pad "
                             "(padding is masked out of the loss) or render through the INR head if there is one; "
                             "default: centre-crop to a square and LANCZOS-resize, like the reference projector")
    parser.add_argument("--early-stop", type=int, default=0, metavar="PATIENCE",
                        help="stop when the loss stalled for this many steps (after the latent-noise ramp); 0 = off")
    parser.add_argument("--save-target", action="store_true", help="also save the fitted target as <stem>_target.png")
    parser.add_argument("--no-align", dest="align", action="store_false",
                        help="the images are already aligned faces (default: detect and align every face)")
    add_alignment_arguments(parser)
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"], default="fp32",
                        help="compute precision of the generator and the loss: fp32 (exact, default), bf16 (3-4x "
                             "faster on CPUs with AMX; GPUs not measured), fp16 (GPU, with loss scaling), auto "
                             "(bf16/fp16 on a GPU, fp32 on the CPU); see docs/performance.md")
    add_device_arguments(parser)


def _config(args):
    from ..inversion import InversionConfig

    over = {"seed": int(args.seed)}
    for key, value in (("steps", args.steps), ("lr", args.lr), ("latent_space", args.space),
                       ("noise_maps", args.noise), ("lambda_mse", args.lambda_mse),
                       ("noise_regularize", args.noise_regularize), ("loss_layers", args.loss_layers),
                       ("downsample", args.downsample)):
        if value is not None:
            over[key] = value
    if args.early_stop:
        over["early_stop_patience"] = int(args.early_stop)
    if getattr(args, "precision", None):
        over["precision"] = args.precision
    return InversionConfig.preset(args.preset, **over)


def run(args) -> int:
    import torch

    from ..inversion import compute_w_stats, invert
    from ..io.checkpoints import load_generator
    from ..losses import load_vgg16
    from ..errors import InvalidSettingError
    from ._common import (Progress, load_image, output_dir, require_files, resolve_device, resolve_dtype, save_image,
                          write_json)

    try:
        config = _config(args)
    except ValueError as e:
        raise InvalidSettingError(str(e)) from None
    if args.batch_size < 1:
        raise InvalidSettingError(f"--batch-size must be >= 1, got {args.batch_size}")
    require_files(args.images, "image")
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    out = output_dir(args.out)

    G = load_generator(args.generator, device=device, dtype=dtype)
    vgg = load_vgg16(args.vgg, device=device)
    res = G.img_resolution
    if not args.quiet:
        print(f"generator {args.generator}: {res}px, {G.num_ws} ws, fingerprint {G.fingerprint()}; device {device}")
    stats = compute_w_stats(G, config.w_avg_samples, config.w_stats_seed, device=device)

    # Load (and align) images, then group images of the same size into batches.
    items = []
    no_face = 0
    faces_of = {}  # aligned name -> (photo, face index)
    for p in args.images:
        if args.align:
            from ..errors import NoFaceFoundError
            from .align import align_photo

            try:
                _, al = align_photo(p, res, args, device)
            except NoFaceFoundError as e:
                no_face += 1
                print(f"hrinv invert: {p}: no face: {e}", file=sys.stderr)
                continue
            doc = al.to_dict()
            doc["photo"] = str(p)
            write_json(out / f"{Path(p).stem}.alignment.json", doc)
            for k in range(len(al)):
                name = Path(p).with_name(f"{Path(p).stem}_{k}{Path(p).suffix}")
                save_image(al.crops[k], out / f"{name.stem}_aligned.png")
                items.append((name, al.crops[k:k + 1]))
                faces_of[str(name)] = (str(p), k)
        else:
            t = load_image(p, res, keep_aspect=args.keep_aspect)  # [1, 3, H, W]
            items.append((Path(p), t))
    groups = []
    for path, t in items:
        if groups and len(groups[-1]) < args.batch_size and groups[-1][0][1].shape == t.shape:
            groups[-1].append((path, t))
        else:
            groups.append([(path, t)])

    stems = {}
    for group in groups:
        target = torch.cat([t for _, t in group])  # [B, 3, H, W]
        names = []
        for path, _ in group:
            stem = path.stem
            stems[stem] = stems.get(stem, 0) + 1
            names.append(stem if stems[stem] == 1 else f"{stem}_{stems[stem]}")
        label = ", ".join(names) if len(names) <= 3 else f"{names[0]} +{len(names) - 1}"
        t0 = time.perf_counter()
        result = invert(G, target, vgg, config, device=device, dtype=dtype, w_stats=stats,
                        callback=Progress(label, quiet=args.quiet))
        seconds = time.perf_counter() - t0
        for i, (name, (path, t)) in enumerate(zip(names, group)):
            lat = result.latent[i]
            lat.settings["source_image"] = faces_of.get(str(path), (str(path),))[0]
            lat.save(out / f"{name}.latent.safetensors")
            save_image(result.image[i], out / f"{name}.png")
            if args.save_target:
                save_image(t[0], out / f"{name}_target.png")
            record = {"image": str(path), "generator": str(args.generator), "vgg": str(args.vgg),
                      "generator_fingerprint": lat.generator_fingerprint, "device": str(device),
                      "dtype": str(dtype), "batch_size": len(group), "settings": lat.settings,
                      "metrics": {"psnr": lat.metrics["psnr"][0], "loss": lat.metrics["loss"][0],
                                  "seconds": seconds, "seconds_per_image": seconds / len(group),
                                  "steps_run": result.metrics["steps_run"],
                                  "stopped_early": result.metrics["stopped_early"]}}
            if str(path) in faces_of:
                record["image"], record["face"] = faces_of[str(path)]
                record["alignment"] = f"{Path(faces_of[str(path)][0]).stem}.alignment.json"
            write_json(out / f"{name}.json", record)
            if not args.quiet:
                print(f"{name}: PSNR {record['metrics']['psnr']:.2f} dB, loss {record['metrics']['loss']:.4g}, "
                      f"{seconds / len(group):.1f}s -> {out / (name + '.png')}")
    return 1 if no_face else 0

