"""``hrinv demo``: the whole method on a fresh install, offline, with the models and pictures bundled in hrinv.

:func:`run_demo` takes the bundled demo photo (NASA's public-domain portrait of Eileen Collins) or the user's photo,
and the bundled demo style (a cartoon made by the project) with its pre-made target generator, or the user's style
picture (then G_t is fine-tuned from the bundled G_s with :func:`hrinv.finetune` first). It runs the paper pipeline
(:func:`hrinv.stylize`: align -> invert in G_s -> invert the reference in G_t -> lerp -> LSO -> render -> paste
back) and writes

* ``DIR/stylized.png``: the whole photo with its face(s) stylised;
* ``DIR/comparison.png``: side by side, per face: the aligned input, its reconstruction in G_s, plain lerp
  (Eq. 6/7), lerp + LSO (Eq. 8), and the style reference;
* ``DIR/demo.json``: settings, figures (reconstruction PSNR, seconds) and the files used.

The bundled G_s is a 64 px StyleGAN2 distilled from a 64 px DCGAN (see hrinv/bundled/stylegan2_face64.md), so the
faces are small and soft: the demo shows the method working end to end, not the paper's 1024 px quality. With real
models use ``hrinv finetune`` and ``hrinv stylize``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

__all__ = ["DemoConfig", "DemoResult", "run_demo", "BUNDLED_G_S", "BUNDLED_G_T", "BUNDLED_PHOTO", "BUNDLED_STYLE"]

log = logging.getLogger(__name__)

BUNDLED_G_S = "stylegan2_face64.safetensors"
BUNDLED_G_T = "stylegan2_face64_demo_style.safetensors"
BUNDLED_VGG = "vgg16_caffe_conv_fp16.safetensors"
BUNDLED_PHOTO = "demo_photo.png"
BUNDLED_STYLE = "demo_style.png"


@dataclass
class DemoConfig:
    """Settings of :func:`run_demo` (defaults: a few minutes on a laptop CPU).

    Attributes:
        steps: inversion steps of the photo's faces (and of the style reference), W+ (Eq. 5).
        lso_steps: Local Style Optimisation steps (Eq. 8; 0 = none).
        finetune_steps: fine-tuning steps when a user style is given (the bundled style has a pre-made G_t).
        lam: λ per block of the generator/latent lerp (weight of G_t), b4 first. The paper's 0.2 / 0.7 split between
            coarse (<= 64 px) and fine (>= 128 px) blocks is moved down to this 64 px generator: the coarse blocks
            b4-b16 keep 0.2 of G_t, the fine blocks b32/b64 (colour and texture here) take 0.7.
        face_size: side (px) at which the stylised faces are rendered before pasting back.
        seed: seed of every random draw.
        max_faces: stylise at most this many faces of the photo (largest first).
        calibration: perceptual-loss calibration of the bundled caffe VGG16 for the inversions, LSO and fine-tuning.
            ``"rms"`` (per-tap unit RMS), the loss both bundled generators were made with: on the demo photo it gives
            a 1.2 dB better reconstruction and less dotted texture than the library default ``"auto"`` (the
            authors' layer balance; docs/bundled.md).
    """

    steps: int = 300
    lso_steps: int = 50
    finetune_steps: int = 200
    lam: str = "0.2,0.2,0.2,0.7,0.7"
    face_size: int = 256
    seed: int = 0
    max_faces: Optional[int] = 4
    calibration: str = "rms"


@dataclass
class DemoResult:
    stylized: Path
    comparison: Path
    report: Path
    metrics: dict = field(default_factory=dict)


def _bundled(name):
    from . import bundled

    return bundled.path(name)


def _style_face(img, res, device):
    """A user's style picture -> one aligned face [1, 3, res, res] in [-1, 1]: FFHQ-aligned when a face is detected,
    else the centred square (drawings are often not detected)."""
    from .errors import NoFaceFoundError
    from .face import align_faces

    try:
        return align_faces(img, size=res, select="largest", device=device).crops[:1].cpu()
    except NoFaceFoundError:
        log.info("no face detected in the style picture: using its centred square")
        _, H, W = img.shape
        s = min(H, W)
        sq = img[:, (H - s) // 2:(H - s) // 2 + s, (W - s) // 2:(W - s) // 2 + s]
        return F.interpolate(sq[None] * 2 - 1, size=(res, res), mode="area")


def _comparison(panels, labels, size=160):
    """Rows of panels (one row per face) with a label strip on top -> PIL image."""
    from PIL import Image, ImageDraw

    rows = len(panels[0])
    pad, strip = 4, 18
    W = len(panels) * (size + pad) + pad
    H = strip + rows * (size + pad) + pad
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, (col, label) in enumerate(zip(panels, labels)):
        x = pad + c * (size + pad)
        draw.text((x + 2, 3), label, fill=(0, 0, 0))
        for r in range(rows):
            t = col[r].detach().float().cpu().clamp(-1, 1)
            t = F.interpolate(t[None], size=(size, size), mode="bicubic", align_corners=False)[0].clamp(-1, 1)
            arr = ((t + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
            canvas.paste(Image.fromarray(arr), (x, strip + pad + r * (size + pad)))
    return canvas


def _save_photo(img, path):
    from PIL import Image

    arr = (img.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(arr).save(path)


def run_demo(out_dir, photo=None, style=None, config: DemoConfig | None = None, *, device=None,
             callback: Callable | None = None, on_stage: Callable | None = None) -> DemoResult:
    """Stylise the face(s) of a photo with the bundled models and write the demo pictures.

    Args:
        out_dir: output folder (created).
        photo: path of a photo, or ``None`` for the bundled demo photo.
        style: path of a style picture (a face; it is aligned, or its centred square used), or ``None`` for the
            bundled demo style and its pre-made target generator.
        config: :class:`DemoConfig`.
        device: torch device (default CPU).
        callback: ``callback(step, total, preview)`` of the running stage (fine-tuning, then the pipeline).
        on_stage: ``on_stage(label, steps)`` when a stage starts.

    Returns:
        :class:`DemoResult` with the written paths and figures.
    """
    from .finetuning import FinetuneConfig, finetune
    from .imageio import read_image
    from .interpolate import parse_lambda
    from .io.checkpoints import load_generator
    from .losses import PerceptualLoss, load_vgg16
    from .pipeline import StylizeConfig, stylize

    config = config or DemoConfig()
    device = torch.device(device or "cpu")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    photo_path = Path(photo) if photo is not None else _bundled(BUNDLED_PHOTO)
    img = read_image(photo_path)  # [3, H, W] in [0, 1]
    G_s = load_generator(_bundled(BUNDLED_G_S), device=device)
    vgg = load_vgg16(_bundled(BUNDLED_VGG), device=device)
    res = G_s.img_resolution
    figures = {}
    if style is None:
        style_path = _bundled(BUNDLED_STYLE)
        reference = F.interpolate(read_image(style_path)[None] * 2 - 1, size=(res, res), mode="area")
        G_t = load_generator(_bundled(BUNDLED_G_T), device=device)
        g_t_from = f"bundled {BUNDLED_G_T}"
    else:
        style_path = Path(style)
        reference = _style_face(read_image(style_path), res, device)
        ft = FinetuneConfig(steps=config.finetune_steps, seed=config.seed)
        if on_stage:
            on_stage("fine-tune G_t on the style", ft.invert_steps + ft.steps)
        loss = PerceptualLoss(vgg, layers=ft.loss_layers, calibration=config.calibration)
        t1 = time.time()
        G_t = finetune(G_s, reference.to(device), loss, config=ft, device=device, callback=callback,
                       generator=torch.Generator().manual_seed(config.seed))
        figures["finetune_seconds"] = round(time.time() - t1, 1)
        g_t_from = f"fine-tuned from G_s on {style_path.name} ({ft.steps} steps)"
    scfg = StylizeConfig(lam=parse_lambda(config.lam), steps=config.steps, lso_steps=config.lso_steps,
                         seed=config.seed, width=config.face_size, height=config.face_size, select="all",
                         max_faces=config.max_faces, calibration=config.calibration)
    t2 = time.time()
    r = stylize(img, reference.to(device), G_s, G_t, vgg, config=scfg, device=device, callback=callback,
                on_stage=on_stage)
    figures["stylize_seconds"] = round(time.time() - t2, 1)
    stylized = out / "stylized.png"
    _save_photo(r.photo[0], stylized)
    n = r.content.shape[0]
    ref_col = [reference[0]] * n
    comp = _comparison([r.content, r.content_image, r.mixed[0], r.faces[0], ref_col],
                       ["input (aligned)", "reconstruction", "plain lerp", "lerp + LSO", "style"])
    comparison = out / "comparison.png"
    comp.save(comparison)
    figures.update({k: v for k, v in r.metrics.items() if isinstance(v, (int, float, list, dict, str))})
    figures["faces"] = int(n)
    figures["seconds"] = round(time.time() - t0, 1)
    report = out / "demo.json"
    info = {"photo": str(photo_path), "style": str(style_path), "G_s": BUNDLED_G_S, "G_t": g_t_from,
            "config": asdict(config), "device": str(device), "metrics": figures,
            "outputs": {"stylized": stylized.name, "comparison": comparison.name}}
    report.write_text(json.dumps(info, indent=1, default=str), encoding="utf-8")
    mask = r.mask[0] if r.mask is not None else None
    res_obj = DemoResult(stylized, comparison, report, figures)
    res_obj.mask = mask
    res_obj.photo = img
    return res_obj
