"""The whole HRInversion stylisation pipeline as one call (paper Sec. III-C), photo in, photo out.

``stylize(photo, reference, G_s, G_t, vgg)``:

1. detect and FFHQ-align every face of the photo (:func:`hrinv.align_faces`; skipped with ``align=False`` for
   already aligned faces);
2. invert the faces in G_s and the references in G_t (Eq. 5: W+ only, d_conv, the generators' constant noise);
3. G_m = lerp(G_s, G_t, λ) (Eq. 6) and, per (face, reference), w_m = lerp(w_s, w_t, λ) (Eq. 7);
4. Local Style Optimisation of w_m towards the face (Eq. 8; ``lso_steps=0`` skips it);
5. render (through the INR head when G_m has one, else by resizing);
6. paste the stylised faces back into the photo (:func:`hrinv.paste_back`; ``paste=False`` skips it).

The CLI (``hrinv stylize``) and the ComfyUI nodes call this function; they only convert files/types.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from .errors import InvalidSettingError, ShapeError

__all__ = ["StylizeConfig", "StylizeResult", "stylize"]

log = logging.getLogger(__name__)


@dataclass
class StylizeConfig:
    """Settings of :func:`stylize` (defaults = the paper's).

    Attributes:
        lam: λ per block (weight of G_t): ``"paper"`` (0.2 for b4-b64, 0.7 from b128), ``"swap:bN"``, a number, a
            per-block list/dict (see :func:`hrinv.interpolate.parse_lambda`).
        scheme: W+ row -> block mapping of the latent lerp, ``"authors"`` or ``"nvidia"``.
        mapping_lam: λ of the mapping network (None = λ of b4, ``"source"``, ``"target"`` or a number).
        steps: inversion steps of the faces (paper 1000); ``reference_steps`` for the references (None = steps).
        lso_steps: LSO steps (paper 50; 0 = no LSO). ``lso_rows``, ``lso_reg``, ``lso_lr``, ``lso_noise``: see
            :class:`hrinv.LSOConfig` (None = its default).
        seed: seed of the inversions and LSO (sample i uses seed + i).
        precision: compute precision of the generator and the loss in the inversions and LSO: ``"fp32"`` (exact,
            default), ``"bf16"``, ``"fp16"`` or ``"auto"`` (see :mod:`hrinv.perf`); ignored by the full config
            objects below, which carry their own.
        calibration: feature calibration of the perceptual losses built from ``vgg`` (d_conv of the inversions, d_h
            of LSO): ``"auto"`` (default; keeps the authors' layer balance), ``"rms"``, ``"global"``, ``"none"`` or
            ``{op index: scale}`` (see :class:`hrinv.PerceptualLoss`).
        width, height: size of the rendered faces (None = the generator's resolution). With paste-back they must be
            equal (the aligned crop is square).
        fit, tile: aspect policy / INR tile size of :func:`hrinv.render`.
        select, min_face, padding, max_faces: face choice and FFHQ padding of :func:`hrinv.align_faces`.
        detect_max_side: longer side of the detection copy (see :func:`hrinv.detect_faces`).
        feather, color_match, mask_shape: paste-back blending (see :func:`hrinv.paste_back`).
        inversion, reference_inversion, lso: full config objects that override the fields above when given.
    """

    lam: Any = "paper"
    scheme: str = "authors"
    mapping_lam: Any = None
    steps: int = 1000
    reference_steps: Optional[int] = None
    lso_steps: int = 50
    lso_rows: Any = "auto"
    lso_reg: Optional[float] = None
    lso_lr: Optional[float] = None
    lso_noise: bool = False
    seed: int = 0
    precision: str = "fp32"
    calibration: Any = "auto"
    width: Optional[int] = None
    height: Optional[int] = None
    fit: str = "stretch"
    tile: Optional[int] = None
    select: Any = "all"
    min_face: float = 32
    padding: str = "reflect"
    max_faces: Optional[int] = None
    detect_max_side: int = 1280
    feather: float = 0.1
    color_match: Any = False
    mask_shape: str = "square"
    inversion: Any = None
    reference_inversion: Any = None
    lso: Any = None

    def __post_init__(self):
        from .losses.perceptual import check_calibration

        check_calibration(self.calibration, "StylizeConfig.calibration")
        for name in ("steps", "lso_steps", "seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (1 if name == "steps" else 0):
                raise InvalidSettingError(f"StylizeConfig.{name} must be an integer >= {1 if name == 'steps' else 0}, "
                                          f"got {v!r}")
        if self.reference_steps is not None and (not isinstance(self.reference_steps, int) or self.reference_steps < 1):
            raise InvalidSettingError(f"StylizeConfig.reference_steps must be None or an integer >= 1, got "
                                      f"{self.reference_steps!r}")
        for name in ("width", "height"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 8):
                raise InvalidSettingError(f"StylizeConfig.{name} must be None or an integer >= 8, got {v!r}")
        from . import perf

        self.precision = perf._check(self.precision)
        if isinstance(self.lam, str):
            from .interpolate import parse_lambda

            self.lam = parse_lambda(self.lam)

    def inversion_configs(self):
        """(content, reference) :class:`hrinv.InversionConfig`: the cross-domain preset (Eq. 5) unless given."""
        from .inversion import InversionConfig

        c = self.inversion or InversionConfig.preset("cross_domain", steps=int(self.steps), seed=int(self.seed),
                                                     precision=self.precision)
        r = self.reference_inversion or InversionConfig.preset(
            "cross_domain", steps=int(self.reference_steps or self.steps), seed=int(self.seed),
            precision=self.precision)
        return c, r

    def lso_config(self):
        """The :class:`hrinv.LSOConfig` (None when ``lso_steps == 0`` and no ``lso`` object is given)."""
        from .lso import LSOConfig

        if self.lso is not None:
            return self.lso
        if self.lso_steps <= 0:
            return None
        kw = {"rows": self.lso_rows, "seed": int(self.seed), "noise_maps": bool(self.lso_noise),
              "precision": self.precision}
        if self.lso_reg is not None:
            kw["reg_weight"] = float(self.lso_reg)
        if self.lso_lr is not None:
            kw["lr"] = float(self.lso_lr)
        return LSOConfig(steps=int(self.lso_steps), **kw)

    def to_dict(self) -> dict:
        d = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if hasattr(v, "to_dict"):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = list(v)
            d[f.name] = v
        return d


@dataclass
class StylizeResult:
    """What :func:`stylize` made. N = faces, R = references.

    Attributes:
        faces: ``[R, N, 3, h, w]`` stylised faces in [-1, 1] (after LSO).
        mixed: ``[R, N, 3, h, w]`` the lerped codes before LSO.
        content: ``[N, 3, res, res]`` the aligned input faces in [-1, 1].
        content_latent: :class:`hrinv.Latent` (batch N) of the faces in G_s; ``content_image`` its rendering.
        reference_latent: :class:`hrinv.Latent` (batch R) of the references in G_t; ``reference_image`` its rendering.
        latents: list of R :class:`hrinv.Latent` (batch N), the final codes in G_m.
        G_m: the interpolated generator.
        alignment: the :class:`hrinv.FaceAlignment` of the photo (None with ``align=False``).
        photo: ``[R, 3, H, W]`` in [0, 1], the photo with the stylised faces pasted in (None without paste-back).
        mask: ``[R, H, W]`` in [0, 1], what was replaced.
        metrics: PSNRs, LSO d_h before/after, seconds per stage.
        config: the settings used (JSON-able).
    """

    faces: torch.Tensor
    mixed: torch.Tensor
    content: torch.Tensor
    content_latent: Any
    content_image: torch.Tensor
    reference_latent: Any
    reference_image: torch.Tensor
    latents: list
    G_m: Any
    alignment: Any = None
    photo: Optional[torch.Tensor] = None
    mask: Optional[torch.Tensor] = None
    metrics: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)


class _Progress:
    """Maps the stages' own ``callback(step, total, preview)`` onto one overall bar and announces stages."""

    def __init__(self, callback, on_stage, total):
        self.callback, self.on_stage, self.total, self.done = callback, on_stage, max(int(total), 1), 0

    def stage(self, label, steps):
        if self.on_stage is not None:
            self.on_stage(label, steps)
        base = self.done
        self.done += steps

        def cb(step, total, preview=None):
            if self.callback is not None:
                self.callback(base + min(int(step), steps), self.total, preview)
        return cb


def _square_batch(x: torch.Tensor, res: int, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ShapeError(f"{name}: expected a tensor [B, 3, H, W] in [-1, 1], got {type(x).__name__}")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3:
        raise ShapeError(f"{name}: expected aligned images [B, 3, H, W] in [-1, 1], got {tuple(x.shape)}")
    if float(x.min()) < -1.01 or float(x.max()) > 1.01:
        raise ShapeError(f"{name}: expected values in [-1, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}] "
                         f"(images in [0, 1] convert with x * 2 - 1)")
    x = x.float()
    if tuple(x.shape[-2:]) != (res, res):
        if x.shape[-1] != x.shape[-2]:
            raise ShapeError(f"{name}: aligned faces must be square, got {tuple(x.shape[-2:])}; use align=True for "
                             f"photos")
        x = F.interpolate(x, size=(res, res), mode="bilinear", antialias=True, align_corners=False).clamp(-1, 1)
    return x


def _check_reference_latent(latent, G_t, r):
    ws = getattr(latent, "ws", None)
    if not isinstance(ws, torch.Tensor) or tuple(ws.shape) != (r, G_t.num_ws, G_t.w_dim):
        got = tuple(ws.shape) if isinstance(ws, torch.Tensor) else type(latent).__name__
        raise ShapeError(f"reference_latent must be a hrinv.Latent with one W+ code per reference in G_t, shape "
                         f"[{r}, {G_t.num_ws}, {G_t.w_dim}]; got {got}. Pass the reference_latent of an earlier "
                         f"result with the same references, or None to invert them.")
    fp = getattr(latent, "generator_fingerprint", "")
    if fp and hasattr(G_t, "fingerprint") and fp != G_t.fingerprint():
        raise InvalidSettingError(f"reference_latent was found in another generator (fingerprint {fp}) than this G_t "
                                  f"({G_t.fingerprint()}); invert the references in this G_t (reference_latent=None).")


@torch.no_grad()
def _render_reference(G_t, latent, ref_cfg, device, dtype):
    """The references' codes rendered in G_t as :func:`hrinv.invert` renders its result (constant noise, clamped)."""
    from . import perf

    Gc = perf.frozen_on(G_t, device, dtype)
    noise = None if latent.noise is None else {k: v.to(device=device, dtype=dtype) for k, v in latent.noise.items()}
    img = Gc.synthesis(latent.ws.to(device=device, dtype=torch.float32).to(dtype), noise_mode="const", noise=noise,
                       force_fp32=ref_cfg.force_fp32)
    return img.float().clamp(-1, 1)


def stylize(content, reference, G_s, G_t, vgg, *, config: StylizeConfig | None = None, align: bool = True,
            paste: bool = True, callback: Callable | None = None, on_stage: Callable | None = None, device=None,
            dtype=None, alignment=None, reference_latent=None) -> StylizeResult:
    """Photo (or aligned faces) + reference style images -> stylised faces, pasted back into the photo.

    Args:
        content: with ``align=True`` one photo: ``[3, H, W]`` float in [0, 1] or a PIL image (grey/RGBA/16-bit are
            converted). With ``align=False``: aligned faces ``[N, 3, S, S]`` in [-1, 1] (resized to G's resolution).
        reference: aligned style image(s) ``[R, 3, S, S]`` (or ``[3, S, S]``) in [-1, 1].
        G_s: source generator; G_t: target generator fine-tuned from it (same architecture).
        vgg: the VGG16 of :func:`hrinv.load_vgg16` (d_conv for the inversions, d_h for LSO).
        config: :class:`StylizeConfig`.
        align: detect and align the faces of the photo (False: ``content`` is already aligned).
        paste: warp the stylised faces back into the photo (needs ``align=True``).
        callback: ``callback(step, total, preview)`` over the whole run; raise from it to cancel.
        on_stage: ``on_stage(label, steps)`` when a stage starts (for progress text).
        device, dtype: where the networks run (default: G_s's device and dtype).
        alignment: a precomputed :class:`hrinv.FaceAlignment` of this photo (skips detection).
        reference_latent: the references' codes in G_t (a :class:`hrinv.Latent` of batch R, e.g. the
            ``reference_latent`` of an earlier result with the same references and settings): skips their inversion,
            so a job that stylises many contents with the same references inverts them once. The result is then
            the same as with the inversion run here (same seed and settings), bit for bit on a given device.

    Returns:
        :class:`StylizeResult`.

    Raises:
        NoFaceFoundError: ``align=True`` and the photo has no face.
        IncompatibleGeneratorsError: G_s and G_t have different architectures.
    """
    from .face import align_faces, as_photo, paste_back
    from .interpolate import lerp_generators, lerp_latents
    from .inversion import compute_w_stats, invert, psnr
    from .losses import PerceptualLoss
    from .lso import local_style_optimize
    from .rendering import render

    config = config or StylizeConfig()
    t_start = time.perf_counter()
    p0 = next(G_s.parameters())
    device = p0.device if device is None else torch.device(device)
    dtype = p0.dtype if dtype is None else dtype
    res = G_s.img_resolution
    height = int(config.height or res)
    width = int(config.width or res)
    if paste and not align:
        raise InvalidSettingError("paste=True needs align=True: only faces aligned from a photo can be pasted back. "
                                  "Pass paste=False for already aligned faces.")
    if paste and height != width:
        raise InvalidSettingError(f"paste-back needs square faces; width={width} and height={height} differ. Set "
                                  f"one size (or leave both at None).")
    timings = {}
    # Checks the generators before the long part.
    G_m = lerp_generators(G_s, G_t, config.lam, mapping_lam=config.mapping_lam)
    photo = None
    if align:
        t0 = time.perf_counter()
        photo = as_photo(content, "content")
        if alignment is None:
            alignment = align_faces(photo, size=res, select=config.select, min_size=config.min_face, device=device,
                                    padding=config.padding, max_faces=config.max_faces,
                                    max_side=config.detect_max_side)
        elif tuple(alignment.photo_size) != tuple(photo.shape[-2:]):
            raise ShapeError(f"the given alignment is for a {alignment.photo_size} photo, this one is "
                             f"{tuple(photo.shape[-2:])}")
        contents = alignment.crops if alignment.crops is not None and alignment.size == res else None
        if contents is None:
            from .face import warp_face

            contents = torch.stack([warp_face(photo, t, res, padding=config.padding, device=device)[0]
                                    for t in alignment.faces]) * 2 - 1
        timings["align"] = time.perf_counter() - t0
    else:
        alignment = None
        contents = _square_batch(content, res, "content")
    references = _square_batch(reference, res, "reference")
    contents, references = contents.to(device), references.to(device)
    inv_cfg, ref_cfg = config.inversion_configs()
    lso_cfg = config.lso_config()
    n, r = contents.shape[0], references.shape[0]
    if reference_latent is not None:
        _check_reference_latent(reference_latent, G_t, r)
    ref_steps = 0 if reference_latent is not None else ref_cfg.steps
    total = inv_cfg.steps + ref_steps + (r * lso_cfg.steps if lso_cfg is not None else 0)
    prog = _Progress(callback, on_stage, total)

    d_conv = PerceptualLoss(vgg, layers="conv", calibration=config.calibration)
    t0 = time.perf_counter()
    inv_s = invert(G_s, contents, d_conv, inv_cfg, device=device, dtype=dtype,
                   callback=prog.stage(f"invert {n} face(s) in G_s", inv_cfg.steps))
    timings["invert_content"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if reference_latent is None:
        inv_t = invert(G_t, references, d_conv, ref_cfg, device=device, dtype=dtype,
                       callback=prog.stage(f"invert {r} reference(s) in G_t", ref_cfg.steps))
        ref_latent, ref_image = inv_t.latent, inv_t.image
    else:
        ref_latent, ref_image = reference_latent, _render_reference(G_t, reference_latent, ref_cfg, device, dtype)
    timings["invert_reference"] = time.perf_counter() - t0

    d_h = PerceptualLoss(vgg, layers="high", calibration=config.calibration) if lso_cfg is not None else None
    stats_m = (compute_w_stats(G_m, lso_cfg.w_avg_samples, lso_cfg.w_stats_seed, device=device, dtype=dtype)
               if lso_cfg is not None else None)
    faces, mixed_all, latents, lso_metrics = [], [], [], []
    timings["lso"] = 0.0
    for j in range(r):
        w_m = lerp_latents(inv_s.latent, ref_latent[j], config.lam, generator=G_m, scheme=config.scheme)
        with torch.no_grad():
            mixed = render(G_m, w_m.ws.to(device), height, width, noise=w_m.noise, fit=config.fit, tile=config.tile)
        t0 = time.perf_counter()
        if lso_cfg is not None:
            lso = local_style_optimize(G_m, w_m, contents, d_h, lso_cfg, device=device, dtype=dtype, w_stats=stats_m,
                                       callback=prog.stage(f"LSO with reference {j}", lso_cfg.steps))
            final, metrics_j = lso.latent, lso.metrics
        else:
            final, metrics_j = w_m, {}
        timings["lso"] += time.perf_counter() - t0
        with torch.no_grad():
            img = render(G_m, final.ws.to(device), height, width, noise=final.noise, fit=config.fit,
                         tile=config.tile)
        faces.append(img.float().cpu())
        mixed_all.append(mixed.float().cpu())
        latents.append(final)
        lso_metrics.append(metrics_j)

    out_photo = out_mask = None
    if paste:
        t0 = time.perf_counter()
        pasted, masks = [], []
        for j in range(r):
            p, m = paste_back(photo, faces[j], alignment, feather=config.feather, color_match=config.color_match,
                              mask_shape=config.mask_shape, device=device)
            pasted.append(p.cpu())
            masks.append(m.cpu())
        out_photo, out_mask = torch.stack(pasted), torch.stack(masks)
        timings["paste"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    metrics = {
        "content_psnr": [float(v) for v in inv_s.latent.metrics["psnr"]],
        "reference_psnr": [float(v) for v in ref_latent.metrics["psnr"]] if "psnr" in (ref_latent.metrics or {})
        else [float(v) for v in psnr(ref_image.float(), references.float().to(ref_image.device))],
        "lso": [{k: v for k, v in m.items() if k in ("d_h_before", "d_h_after", "w_opt_norm")} for m in lso_metrics],
        "lerp": G_m.meta.get("lerp"),
        "seconds": timings,
        "faces": n, "references": r,
    }
    cfg = config.to_dict()
    cfg["inversion_content"], cfg["inversion_reference"] = inv_cfg.to_dict(), ref_cfg.to_dict()
    if reference_latent is not None:  # what the given codes were found with (their own settings when they say)
        cfg["inversion_reference"] = (reference_latent.settings or {}).get("inversion", "given (reference_latent)")
    cfg["lso_config"] = lso_cfg.to_dict() if lso_cfg is not None else None
    return StylizeResult(faces=torch.stack(faces), mixed=torch.stack(mixed_all), content=contents.float().cpu(),
                         content_latent=inv_s.latent, content_image=inv_s.image.float().cpu(),
                         reference_latent=ref_latent, reference_image=ref_image.float().cpu(), latents=latents,
                         G_m=G_m, alignment=alignment, photo=out_photo, mask=out_mask, metrics=metrics, config=cfg)
