"""``hrinv stylize --content PHOTO --reference IMG --source G_s --target G_t --vgg VGG --out DIR``: the paper's cross-
domain pipeline (Sec. III-C), photo in, photo out. The work is done by :func:`hrinv.stylize`; this command reads and
writes files.

1. every face of each content photo is detected and FFHQ-aligned (``--no-align`` for already aligned faces);
2. the faces are inverted in G_s and every reference in G_t (Eq. 5: W+ only, d_conv, noise at G's constants);
3. G_m = lerp(G_s, G_t, λ) (Eq. 6) and, per (face, reference) pair, w_m = lerp(w_s, w_t, λ) (Eq. 7);
4. Local Style Optimisation of w_m towards the face (Eq. 8, ``--lso-steps 0`` skips it);
5. render at ``--width x --height`` (through the INR head when G_m has one, else by resizing);
6. the stylised faces are pasted back into the photo (``--no-paste`` skips it).

Files in DIR, for content ``c`` and reference ``r``. A face is named ``c_k`` (face k of photo c, largest first) when
aligned, ``c`` with ``--no-align``. ``c__r.png`` (the photo with the stylised faces pasted in), ``c__r_mask.png``
(what was replaced), ``c.json`` (the alignment transforms, as ``hrinv align`` writes them), ``c_k.png`` (the aligned
face); per face ``c_k__r.png`` (the stylised face; with ``--no-align`` this is ``c__r.png``), ``c_k__r_mixed.png``
(before LSO), ``c_k__r.latent.safetensors`` (the final code, in G_m), ``c_k__r.json`` (settings + metrics),
``c_k_inv.png`` / ``c_k.latent.safetensors`` (face inversion in G_s), ``r_inv.png`` / ``r.latent.safetensors``
(reference inversion in G_t), ``generator_m.safetensors`` with ``--save-generator`` (to re-render the codes with
``hrinv render``).
"""

import argparse
import logging
import sys
import time
from pathlib import Path

from ..losses.perceptual import CALIBRATIONS

HELP = ("content + reference + source/target generators -> invert (Eq. 5), lerp generators and latents (Eq. 6/7), "
        "Local Style Optimisation (Eq. 8), render")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._common import add_device_arguments
    from .align import add_alignment_arguments

    parser.add_argument("--content", "-c", required=True, nargs="+", metavar="IMG",
                        help="content photo(s) x_s: every face in them is stylised (aligned faces with --no-align)")
    parser.add_argument("--reference", "-r", required=True, nargs="+", metavar="IMG",
                        help="reference (style) image(s) x_t; every content is stylised with every reference")
    parser.add_argument("--source", required=True, metavar="CKPT", help="source generator G_s (e.g. FFHQ)")
    parser.add_argument("--target", required=True, metavar="CKPT", help="target generator G_t, fine-tuned from G_s")
    parser.add_argument("--vgg", required=True, metavar="VGG_WEIGHTS", help="VGG16 weights (torchvision/timm/caffe)")
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--lam", default="paper",
                        help="λ per block (weight of G_t): paper (0.2 for b4-b64, 0.7 from b128), swap:bN (layer "
                             "swapping from block bN), a number, or one number per block 'b4,b8,...' (default paper)")
    parser.add_argument("--scheme", default="authors", choices=["authors", "nvidia"],
                        help="W+ row -> block mapping for the latent lerp: authors (two rows per block, the released "
                             "code) or nvidia (exact layer usage)")
    parser.add_argument("--mapping-lam", default=None,
                        help="λ of the mapping network: first (λ of b4, default), source, target or a number")
    parser.add_argument("--steps", type=int, default=1000, help="inversion steps for content and reference (1000)")
    parser.add_argument("--reference-steps", type=int, default=None, help="inversion steps for the references "
                                                                          "(default --steps)")
    parser.add_argument("--lso-steps", type=int, default=50, help="LSO steps (paper 50; 0 = no LSO)")
    parser.add_argument("--lso-rows", default="auto",
                        help="W+ rows LSO may change: auto (convs of b4-b16), bN, a count, 0,1,2 or all")
    parser.add_argument("--lso-reg-weight", dest="lso_reg", type=float, default=None,
                        help="LSO λ_reg (relative units; see docs)")
    parser.add_argument("--lso-reg", dest="lso_reg", type=float, help=argparse.SUPPRESS)  # earlier spelling
    parser.add_argument("--lso-lr", type=float, default=None, help="LSO learning rate (units of w_std/sqrt(w_dim))")
    parser.add_argument("--lso-noise-maps", dest="lso_noise", action="store_true",
                        help="LSO also optimises the noise maps")
    parser.add_argument("--lso-noise", dest="lso_noise", action="store_true", help=argparse.SUPPRESS)  # earlier
    parser.add_argument("--width", type=int, default=None, help="output width (default: the generator's)")
    parser.add_argument("--height", type=int, default=None, help="output height (default: the generator's)")
    parser.add_argument("--fit", default="stretch", choices=["stretch", "crop", "pad"],
                        help="aspect policy for a non-square output (default stretch)")
    parser.add_argument("--tile", type=int, default=None, help="render the INR head in tiles of this many pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of inversions and LSO (default 0)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"], default="fp32",
                        help="compute precision of the generator and the loss in the inversions and LSO: fp32 (exact, "
                             "default), bf16 (3-4x faster on CPUs with AMX; GPUs not measured), fp16 (GPU, "
                             "with loss scaling), auto (bf16/fp16 on a GPU, fp32 on the CPU); see docs/performance.md")
    parser.add_argument("--calibration", choices=CALIBRATIONS, default="auto",
                        help="perceptual-loss calibration of the VGG taps (default auto: the authors' layer balance; "
                             "rms: per-tap unit RMS for the caffe VGG16; see docs/perceptual-loss.md)")
    parser.add_argument("--save-generator", action="store_true",
                        help="also save G_m as DIR/generator_m.safetensors (to re-render with `hrinv render`)")
    parser.add_argument("--no-align", dest="align", action="store_false",
                        help="the content images are already aligned faces (default: detect and align every face "
                             "of each content photo)")
    parser.add_argument("--no-paste", dest="paste", action="store_false",
                        help="do not paste the stylised faces back into the photo (default: paste back)")
    parser.add_argument("--feather", type=float, default=0.1,
                        help="paste-back edge width as a fraction of the face crop (default 0.1)")
    parser.add_argument("--color-match", type=float, default=0.0, metavar="STRENGTH",
                        help="match the stylised face's Lab colour statistics to the original face (0..1, default 0)")
    add_alignment_arguments(parser)
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    add_device_arguments(parser)


def _unique_stems(paths):
    seen, out = {}, []
    for p in paths:
        stem = Path(p).stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return out


def _say(args, text):
    if not args.quiet:
        print(text, flush=True)


class _StageProgress:
    """CLI progress for hrinv.stylize: one Progress line per stage."""

    def __init__(self, quiet):
        from ._common import Progress

        self.quiet, self.Progress, self.current, self.base = quiet, Progress, None, 0

    def on_stage(self, label, steps):
        self.current = self.Progress(label, quiet=self.quiet)
        self.steps = steps
        self.start = None

    def __call__(self, step, total, preview=None):
        if self.current is None:
            return
        if self.start is None:
            self.start = step - 1
        self.current(step - self.start, self.steps, preview)


def config_from_args(args):
    """The :class:`hrinv.pipeline.StylizeConfig` of the stylize options (shared by ``hrinv stylize`` and
    ``hrinv batch stylize``)."""
    from ..lso import parse_rows
    from ..pipeline import StylizeConfig
    from .align import parse_select

    mapping_lam = args.mapping_lam
    if mapping_lam is not None and mapping_lam not in ("first", "source", "target"):
        mapping_lam = float(mapping_lam)
    width, height = args.width, args.height
    if args.align and args.paste and (width or height):
        width = height = int(width or height)  # pasted faces are square
    return StylizeConfig(
        lam=args.lam, scheme=args.scheme, mapping_lam=mapping_lam, steps=int(args.steps),
        reference_steps=args.reference_steps, lso_steps=max(0, int(args.lso_steps)), lso_rows=parse_rows(args.lso_rows),
        lso_reg=args.lso_reg, lso_lr=args.lso_lr, lso_noise=bool(args.lso_noise), seed=int(args.seed),
        precision=getattr(args, "precision", None) or "fp32", calibration=getattr(args, "calibration", None) or "auto",
        width=width, height=height, fit=args.fit, tile=args.tile, select=parse_select(args.faces),
        min_face=float(args.min_face), padding=args.padding, detect_max_side=int(args.detect_max_side),
        feather=float(args.feather), color_match=float(args.color_match))


def run(args) -> int:
    import torch

    from ..errors import InvalidSettingError, NoFaceFoundError
    from ..imageio import read_image
    from ..io.checkpoints import load_generator, save_generator
    from ..losses import load_vgg16
    from ..pipeline import stylize
    from ._common import load_image, output_dir, require_files, resolve_device, resolve_dtype, save_image, write_json

    t_start = time.perf_counter()
    require_files(list(args.content) + list(args.reference), "image")
    try:
        config = config_from_args(args)
    except (ValueError, InvalidSettingError) as e:
        raise InvalidSettingError(str(e)) from None
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    out = output_dir(args.out)

    G_s = load_generator(args.source, device=device, dtype=dtype)
    G_t = load_generator(args.target, device=device, dtype=dtype)
    from ..interpolate import lerp_generators

    info = lerp_generators(G_s, G_t, config.lam, mapping_lam=config.mapping_lam).meta["lerp"]  # checks before the long part
    _say(args, f"G_s {args.source} / G_t {args.target}: {G_s.img_resolution}px, {G_s.num_ws} ws; λ per block "
               f"{', '.join(f'{k}={v:g}' for k, v in info['lambda_per_block'].items())}; weight cosine "
               f"{info['relation']['median_cosine']:.3f}; device {device}")
    vgg = load_vgg16(args.vgg, device=device)
    res = G_s.img_resolution
    references = torch.cat([load_image(p, res) for p in args.reference])  # [R, 3, res, res]
    c_names, r_names = _unique_stems(args.content), _unique_stems(args.reference)

    # Jobs: with alignment one per photo (its faces are a batch); without, all contents in one batch.
    if args.align:
        jobs = [(c_names[i], [args.content[i]], True) for i in range(len(args.content))]
    else:
        jobs = [(None, list(args.content), False)]
    saved_refs, no_face, G_saved = False, 0, False
    ref_latent = None  # the references' codes in G_t: inverted with the first photo, reused for the others
    for photo_name, paths, aligned in jobs:
        progress = _StageProgress(args.quiet)
        if aligned:
            try:
                content = read_image(paths[0])
                res_ = stylize(content, references, G_s, G_t, vgg, config=config, align=True, paste=args.paste,
                               callback=progress, on_stage=progress.on_stage, device=device, dtype=dtype,
                               reference_latent=ref_latent)
                ref_latent = res_.reference_latent
            except NoFaceFoundError as e:
                no_face += 1
                print(f"hrinv stylize: {paths[0]}: no face: {e}", file=sys.stderr)
                continue
            face_names = [f"{photo_name}_{k}" for k in range(res_.content.shape[0])]
            doc = res_.alignment.to_dict()
            doc["photo"] = str(paths[0])
            doc["files"] = [f"{n}.png" for n in face_names]
            write_json(out / f"{photo_name}.json", doc)
            for k, n in enumerate(face_names):
                save_image(res_.content[k], out / f"{n}.png")
        else:
            content = torch.cat([load_image(p, res) for p in paths])
            res_ = stylize(content, references, G_s, G_t, vgg, config=config, align=False, paste=False,
                           callback=progress, on_stage=progress.on_stage, device=device, dtype=dtype)
            face_names = c_names
        if args.save_generator and not G_saved:
            save_generator(res_.G_m, out / "generator_m.safetensors")
            G_saved = True
        for i, name in enumerate(face_names):
            res_.content_latent[i].save(out / f"{name}.latent.safetensors")
            save_image(res_.content_image[i], out / f"{name}_inv.png")
        if not saved_refs:
            for j, name in enumerate(r_names):
                res_.reference_latent[j].save(out / f"{name}.latent.safetensors")
                save_image(res_.reference_image[j], out / f"{name}_inv.png")
            saved_refs = True
        m_all = res_.metrics
        info = m_all["lerp"]
        from ..interpolate import row_lambdas

        per_row = row_lambdas(config.lam, res_.G_m.num_ws, args.scheme, res_.G_m.synthesis.block_resolutions).tolist()
        for j, r_name in enumerate(r_names):
            if res_.photo is not None:
                save_image(res_.photo[j] * 2 - 1, out / f"{photo_name}__{r_name}.png")
                save_image(res_.mask[j][None].expand(3, -1, -1) * 2 - 1, out / f"{photo_name}__{r_name}_mask.png")
            lso_m = m_all["lso"][j]
            for i, c_name in enumerate(face_names):
                stem = f"{c_name}__{r_name}"
                save_image(res_.faces[j, i], out / f"{stem}.png")
                save_image(res_.mixed[j, i], out / f"{stem}_mixed.png")
                lat = res_.latents[j][i]
                src = str(paths[0] if aligned else paths[i])
                lat.settings = {"stylize": {"content": src, "reference": str(args.reference[j]),
                                            **({"face": i} if aligned else {})}, **lat.settings}
                lat.save(out / f"{stem}.latent.safetensors")
                record = {
                    "content": src, "face": i if aligned else None, "reference": str(args.reference[j]),
                    "source": str(args.source), "target": str(args.target), "vgg": str(args.vgg),
                    "device": str(device), "dtype": str(dtype), "output_size": list(res_.faces.shape[-2:]),
                    "fit": args.fit, "generator_m_fingerprint": res_.G_m.fingerprint(),
                    "lerp": {"lam": args.lam, "lambda_per_block": info["lambda_per_block"],
                             "lambda_mapping": info["lambda_mapping"], "lambda_inr": info["lambda_inr"],
                             "scheme": args.scheme, "lambda_per_row": per_row, "relation": info["relation"]},
                    "inversion": {"content": res_.config["inversion_content"],
                                  "reference": res_.config["inversion_reference"]},
                    "lso": res_.config["lso_config"],
                    "alignment": res_.alignment.faces[i].to_dict(res_.alignment.size) if aligned else None,
                    "paste": ({"feather": config.feather, "color_match": config.color_match}
                              if res_.photo is not None else None),
                    "metrics": {
                        "content_psnr": m_all["content_psnr"][i],
                        "reference_psnr": m_all["reference_psnr"][j],
                        "lso_d_h_before": lso_m.get("d_h_before", [None] * len(face_names))[i],
                        "lso_d_h_after": lso_m.get("d_h_after", [None] * len(face_names))[i],
                        "lso_w_opt_norm": lso_m.get("w_opt_norm", [None] * len(face_names))[i],
                        "seconds": m_all["seconds"],
                    },
                    "files": {"image": f"{stem}.png", "mixed": f"{stem}_mixed.png",
                              "latent": f"{stem}.latent.safetensors", "content_inversion": f"{c_name}_inv.png",
                              "reference_inversion": f"{r_name}_inv.png",
                              "photo": f"{photo_name}__{r_name}.png" if res_.photo is not None else None,
                              "mask": f"{photo_name}__{r_name}_mask.png" if res_.photo is not None else None,
                              "generator_m": "generator_m.safetensors" if args.save_generator else None},
                }
                write_json(out / f"{stem}.json", record)
                m = record["metrics"]
                extra = (f", LSO d_h {m['lso_d_h_before']:.4g} -> {m['lso_d_h_after']:.4g}"
                         if m["lso_d_h_before"] is not None else "")
                _say(args, f"{stem}: content PSNR {m['content_psnr']:.2f} dB, reference PSNR "
                           f"{m['reference_psnr']:.2f} dB{extra} -> {out / (stem + '.png')}")
            if res_.photo is not None:
                _say(args, f"{photo_name}__{r_name}: {len(face_names)} face(s) pasted back -> "
                           f"{out / (photo_name + '__' + r_name + '.png')}")
    _say(args, f"done in {time.perf_counter() - t_start:.1f}s")
    if no_face and no_face == len(jobs):
        return 1
    return 0
