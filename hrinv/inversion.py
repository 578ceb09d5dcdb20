"""GAN inversion into W+ (+ noise) with the HRInversion perceptual loss (paper Eq. 1, and Eq. 5 without noise).

``invert(G, target, loss, config)`` finds, for each image of ``target [B, 3, H, W]`` (in [-1, 1]), the W+ code (and
optionally the per-layer noise maps) whose synthesis is closest to it under ``loss`` (the VGG16 conv loss d_conv at
full resolution by default) plus ``λ_mse`` times the pixel MSE. The loop is the reference projector's (NVIDIA
stylegan2-ada ``projector.py`` as released in HRInversion): w initialised at w̄, Adam lr 0.1 with a 5 % linear
ramp-up and 25 % cosine ramp-down, latent noise ε with σ = w_std · 0.05 · max(0, 1 − t / 0.75)², per-step noise-map
normalisation. See ``docs/inversion.md`` for every default and its source.

The user's generator is never modified: a frozen deep copy is optimised through. Batches are B independent problems
(sample i of a batch with ``seed`` equals a single run with ``seed + i``). Non-square targets go through the INR head
(``shape=(H, W)``) when the generator has one, else are padded to a square and masked out of the loss.
"""

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import _checks, perf
from .errors import InvalidSettingError, ShapeError
from .latent import Latent
from .optim import (
    EarlyStopping,
    check_loop_settings,
    fingerprint,
    frozen,
    grad_context,
    history_tensor,
    init_generators,
    loop_settings,
    noise_variables,
    optimize,
    placement,
    precision_closure,
    prepare_loss,
    randn_per_sample,
    sample_seeds,
    setting_error,
    settings_dict,
    synthesis_renderer,
)

__all__ = [
    "PRESETS",
    "InversionConfig",
    "InversionResult",
    "compute_w_stats",
    "crop_from_square",
    "invert",
    "pad_to_square",
    "psnr",
]

log = logging.getLogger(__name__)

_SPACES = ("w+", "w")
_INITS = ("mean", "random")
_NON_SQUARE = ("auto", "inr", "pad")


@dataclass
class InversionConfig:
    """Settings of :func:`invert`. Defaults = the HRInversion reconstruction setting (Eq. 1); see docs/inversion.md.

    Attributes:
        steps: Adam steps (paper Table I: 1000).
        lr: base learning rate (reference 0.1).
        latent_space: ``"w+"`` (one code per layer, HRInversion) or ``"w"`` (one code repeated, NVIDIA projector).
        noise_maps: optimise the per-layer noise maps with W+ (Eq. 1). False = Eq. 5 (W+ only, the noise stays
            the generator's constant buffers), used for the cross-domain projections.
        noise_regularize: weight of the noise-map autocorrelation regulariser (reference function default 1e5, the
            authors' shipped config 0; the paper argues it is not needed without down-sampling).
        normalize_noise: re-normalise every noise map to zero mean / unit RMS after each step (reference: on).
        lambda_mse: weight of the pixel MSE (mean over pixels, images in [-1, 1]); the paper gives no value, 0.
        initial_noise_factor: ε starts at ``w_std · initial_noise_factor`` (reference 0.05).
        noise_ramp: fraction of the run after which ε is 0 (reference 0.75).
        lr_rampup, lr_rampdown: learning-rate ramps as fractions of the run (reference 0.05 / 0.25).
        betas: Adam betas (reference (0.9, 0.999)).
        w_avg_samples: number of z samples mapped to estimate w̄ and w_std (reference 10000).
        w_stats_seed: seed of those z samples (reference ``np.random.RandomState(123)``, reproduced exactly).
        init: ``"mean"`` (w̄, reference) or ``"random"`` (a mapped random z, truncated towards w̄ by
            ``init_truncation``; drawn per sample from its seed).
        init_truncation: ψ of the random init (1 = no truncation).
        seed: seed of the noise-map init and the ε draws; sample i of a batch uses ``seed + i``. None = random
            unless ``invert(generator=...)`` is given.
        preview_every: send a preview image to the callback every N steps (0 = never).
        early_stop_patience: stop when no sample improved its loss by ``early_stop_min_rel`` (relative) within this
            many steps, checked after the ε ramp (0 = off, the reference).
        early_stop_min_rel: see above.
        loss_layers: ``"conv"`` (d_conv, Eq. 3), ``"high"`` (d_h) or a ``{tap: weight}`` dict; used when
            :func:`invert` is given a VGG network rather than a ready loss.
        downsample: area-downsample prediction and target so their shorter side is at most this before the loss
            (None = full resolution, HRInversion; 256 = the NVIDIA/rosinality baseline of the ablation).
        non_square: ``"auto"`` (INR head if the generator has one, else pad), ``"inr"`` or ``"pad"``.
        force_fp32: run synthesis in fp32 (reference inversion setting for our code: True).
        precision: ``"fp32"`` (exact, default), ``"bf16"``, ``"fp16"`` or ``"auto"``: the compute precision of the
            generator and the loss (the optimised variables stay fp32); see :mod:`hrinv.perf` and
            docs/performance.md.
        memory: memory-saving mode of the VGG loss when :func:`invert` builds it from a VGG network: ``"auto"``
            (chosen from the free memory by :func:`hrinv.perf.plan_memory`), ``"none"``, ``"checkpoint"`` or
            ``"tile"``. A ready ``PerceptualLoss`` keeps its own settings.
    """

    steps: int = 1000
    lr: float = 0.1
    latent_space: str = "w+"
    noise_maps: bool = True
    noise_regularize: float = 0.0
    normalize_noise: bool = True
    lambda_mse: float = 0.0
    initial_noise_factor: float = 0.05
    noise_ramp: float = 0.75
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    betas: tuple[float, float] = (0.9, 0.999)
    w_avg_samples: int = 10000
    w_stats_seed: int = 123
    init: str = "mean"
    init_truncation: float = 1.0
    seed: int | None = None
    preview_every: int = 0
    early_stop_patience: int = 0
    early_stop_min_rel: float = 1e-3
    loss_layers: str | dict[int, float] = "conv"
    downsample: int | None = None
    non_square: str = "auto"
    force_fp32: bool = True
    precision: str = "fp32"
    memory: str = "auto"
    optimize_noise: dataclasses.InitVar[bool | None] = None  # the old name of noise_maps, still accepted

    def __post_init__(self, optimize_noise=None):
        if optimize_noise is not None:
            self.noise_maps = bool(optimize_noise)
        check_loop_settings(self, nonnegative=("noise_regularize", "lambda_mse", "initial_noise_factor"),
                            fractions=("noise_ramp", "early_stop_min_rel"))
        self.precision = perf._check(self.precision)
        if self.memory not in ("auto", "none", "checkpoint", "tile"):
            raise setting_error(self, "memory", "'auto', 'none', 'checkpoint' or 'tile'")
        if isinstance(self.latent_space, str):
            self.latent_space = self.latent_space.lower()
        checks = {
            "latent_space": (self.latent_space in _SPACES, f"one of {_SPACES}"),
            "early_stop_min_rel": (self.early_stop_min_rel < 1, "a fraction in [0, 1)"),
            "init": (self.init in _INITS, f"one of {_INITS}"),
            "init_truncation": (0 <= self.init_truncation <= 1, "ψ in [0, 1]"),
            "early_stop_patience": (isinstance(self.early_stop_patience, int) and self.early_stop_patience >= 0,
                                    "an integer >= 0 (0 = off)"),
            "loss_layers": (self.loss_layers in ("conv", "high") if isinstance(self.loss_layers, str)
                            else isinstance(self.loss_layers, dict) and bool(self.loss_layers),
                            "'conv', 'high' or a non-empty {vgg tap: weight} dict"),
            "downsample": (self.downsample is None or (isinstance(self.downsample, int) and self.downsample > 32),
                           "None (full resolution) or an integer > 32 (VGG needs more than 32 px)"),
            "non_square": (self.non_square in _NON_SQUARE, f"one of {_NON_SQUARE}"),
        }
        for name, (ok, want) in checks.items():
            if not ok:
                raise setting_error(self, name, want)
        _checks.check_number(self.lr, "InversionConfig.lr", low=0, low_inclusive=False)  # also refuses inf / NaN
        _checks.check_seed(self.seed, "InversionConfig.seed")

    def to_dict(self) -> dict:
        """JSON-able dict (stored in the latent's settings)."""
        return settings_dict(self)

    @classmethod
    def preset(cls, name: str, **overrides) -> "InversionConfig":
        """A named setting: see :data:`PRESETS` (``reconstruction`` = Eq. 1, ``cross_domain`` = Eq. 5, ...)."""
        if name not in PRESETS:
            raise InvalidSettingError(f"unknown inversion preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


InversionConfig.optimize_noise = property(lambda self: self.noise_maps, doc="Old name of ``noise_maps``.")


PRESETS = {
    # Eq. 1: W+ and noise, d_conv at full resolution.
    "reconstruction": {},
    # Eq. 5: the source / target projections of the stylisation: W+ only, noise left at G's constants.
    "cross_domain": {"noise_maps": False},
    # Ablation baseline (paper Fig. 1b / Table II): the same loop with the loss computed at 256 px.
    "downsampled_256": {"downsample": 256},
    # NVIDIA stylegan2-ada projector: W space, noise maps with the 1e5 regulariser, loss at 256 px.
    "nvidia_projector": {"latent_space": "w", "noise_regularize": 1e5, "downsample": 256},
}


@dataclass
class InversionResult:
    """What :func:`invert` returns.

    Attributes:
        latent: the optimised :class:`Latent` (``ws [B, num_ws, w_dim]``, noise maps or None, settings, metrics).
        image: the reconstruction without ε, cropped back to the target size. Shape: ``[B, 3, H, W]``, [-1, 1].
        history: loss per step and sample. Shape: ``[steps_run, B]``.
    """

    latent: Latent
    image: torch.Tensor
    history: torch.Tensor
    metrics: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------------
# Helpers


@torch.no_grad()
def compute_w_stats(G, num_samples: int = 10000, seed: int = 123, device=None, dtype=None,
                    chunk: int = 1000) -> tuple[torch.Tensor, float]:
    """w̄ and w_std of ``G``'s mapping, as the reference projector computes them.

    ``z = np.random.RandomState(seed).randn(num_samples, z_dim)``; ``w = G.mapping(z)[:, 0]``; ``w̄ = mean(w)``;
    ``w_std = sqrt(Σ ||w − w̄||² / N)`` (the RMS L2 distance over all w_dim dims, not a per-dim std).

    Returns:
        ``(w_avg [w_dim] float32, w_std float)``.
    """
    if getattr(G, "c_dim", 0):
        raise ShapeError(f"inversion of conditional generators (c_dim={G.c_dim}) is not supported: w̄ would depend "
                         f"on the class label; use an unconditional generator")
    p = next(G.mapping.parameters())
    device = p.device if device is None else torch.device(device)
    dtype = p.dtype if dtype is None else dtype
    z_all = np.random.RandomState(seed).randn(num_samples, G.z_dim)  # [N, z_dim] float64, as the reference
    ws = []
    with torch.inference_mode(False):
        for i in range(0, num_samples, chunk):
            z = torch.from_numpy(z_all[i:i + chunk]).to(device=device, dtype=dtype)  # [n, z_dim]
            ws.append(G.mapping(z, None)[:, 0].float())  # [n, w_dim]
    w = torch.cat(ws)  # [N, w_dim]
    w_avg = w.mean(0)  # [w_dim]
    w_std = float(((w - w_avg).square().sum() / num_samples).sqrt())
    return w_avg.detach().clone(), w_std


def pad_to_square(img: torch.Tensor, mode: str = "replicate") -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """Pad ``img [B, C, H, W]`` (centred) to a square of side ``max(H, W)``.

    Args:
        img: images.
        mode: ``F.pad`` mode for the border (``replicate`` keeps VGG features near the edge plausible).

    Returns:
        ``(square [B, C, S, S], mask [B, 1, S, S] (1 on the image, 0 on the padding), pads (left, right, top,
        bottom))``; :func:`crop_from_square` undoes it.
    """
    h, w = img.shape[-2:]
    s = max(h, w)
    left, top = (s - w) // 2, (s - h) // 2
    pads = (left, s - w - left, top, s - h - top)
    square = F.pad(img, pads, mode=mode) if any(pads) else img.clone()  # [B, C, S, S]
    mask = torch.zeros(img.shape[0], 1, s, s, device=img.device, dtype=img.dtype)
    mask[:, :, top:top + h, left:left + w] = 1
    return square, mask, pads


def crop_from_square(img: torch.Tensor, pads: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pad_to_square`: remove ``pads = (left, right, top, bottom)`` from ``img [..., S, S]``."""
    left, right, top, bottom = (int(p) for p in pads)
    h, w = img.shape[-2:]
    return img[..., top:h - bottom, left:w - right]


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB per sample of images in [-1, 1] (clamped, compared in [0, 1], like 8-bit PSNR). Shape: ``[B]``."""
    a = (pred.detach().float().clamp(-1, 1) + 1) / 2
    b = (target.detach().float().clamp(-1, 1) + 1) / 2
    se = (a - b).square()  # [B, C, H, W]
    if mask is None:
        mse = se.flatten(1).mean(1)
    else:
        m = mask.float().expand_as(se)
        mse = (se * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1e-8)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def _masked_mse(pred, target, mask):
    se = (pred - target).square()  # [B, C, H, W]
    if mask is None:
        return se.flatten(1).mean(1)
    m = mask.expand_as(se)
    return (se * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1e-8)


def _noise_regularizer(maps: list[torch.Tensor]) -> torch.Tensor:
    """Reference autocorrelation penalty, per sample: Σ over maps and octaves of mean(v·roll(v))² (W and H)."""
    total = 0
    for v in maps:  # [B, 1, r, r]
        while True:
            total = total + (v * torch.roll(v, shifts=1, dims=3)).mean(dim=(1, 2, 3)).square()
            total = total + (v * torch.roll(v, shifts=1, dims=2)).mean(dim=(1, 2, 3)).square()
            if v.shape[2] <= 8:
                break
            v = F.avg_pool2d(v, kernel_size=2)
    return total  # [B]


def _resize_for_loss(img: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or min(img.shape[-2:]) <= size:
        return img
    h, w = img.shape[-2:]
    scale = size / min(h, w)
    return F.interpolate(img, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")


# ----------------------------------------------------------------------------------------------------------------------
# invert()


def _with_memory_plan(loss, config: InversionConfig, device, size, batch, inr=False, native=None):
    """A bare VGG network becomes a ``PerceptualLoss`` with the memory-saving mode that :func:`hrinv.perf.plan_memory`
    picks for this size (``config.memory``); a ready loss keeps its own settings. Returns ``(loss, render_tile)``:
    the INR render tile of the plan (None: render in one piece)."""
    is_vgg = isinstance(loss, torch.nn.Module) and not hasattr(loss, "target") and hasattr(loss, "preprocess")
    if not is_vgg or config.downsample is not None:
        return loss, None
    from .losses import PerceptualLoss

    plan = perf.plan_memory(size[0], size[1], batch, device=device, mode=config.memory,
                            dtype=perf.resolve_precision(config.precision, device), inr=inr, native=native)
    log.info("memory plan: %s%s", plan.reason,
             f"; INR render in tiles of {plan.render_tile} px" if plan.render_tile else "")
    return PerceptualLoss(loss, layers=config.loss_layers, checkpoint=plan.checkpoint, tile=plan.tile), \
        plan.render_tile


def invert(G, target: torch.Tensor, loss=None, config: InversionConfig | None = None, *, device=None, dtype=None,
           mask: torch.Tensor | None = None, callback: Callable | None = None,
           generator: torch.Generator | None = None, w_stats: tuple[torch.Tensor, float] | None = None,
           init_latent: Latent | None = None, seeds: Sequence[int] | None = None) -> InversionResult:
    """Invert ``target`` into ``G``'s W+ (+ noise) space (paper Eq. 1; Eq. 5 with ``noise_maps=False``).

    Args:
        G: a :class:`hrinv.generator.stylegan2.Generator` (never modified; a frozen copy is used).
        target: images in [-1, 1]. Shape: ``[B, 3, H, W]`` with ``H = W = G.img_resolution``, or any ``H, W`` when
            ``G.inr`` exists, or non-square with ``max(H, W) = G.img_resolution`` (padded and masked).
        loss: a ``PerceptualLoss`` (``.target(img)`` + ``loss(pred, feats, mask=None) -> [B]``), a VGG16 from
            :func:`hrinv.load_vgg16` (wrapped with ``config.loss_layers``), or any callable
            ``loss(pred, target_img) -> [B]``.
        config: :class:`InversionConfig` (default: the paper's reconstruction setting).
        device, dtype: where / in which dtype the generator copy runs (default: G's). Variables stay float32.
        mask: optional loss weights in [0, 1]. Shape: ``[B or 1, 1, H, W]``.
        callback: ``callback(step, total, preview)``; raise from it to cancel (nothing is left behind).
        generator: ``torch.Generator`` that draws the per-sample seeds when ``config.seed`` is None.
        w_stats: precomputed ``(w_avg, w_std)`` from :func:`compute_w_stats` (skips 10000 mapping samples).
        init_latent: start from this latent instead of w̄ (its noise maps too, when it has them).
        seeds: one seed per sample (instead of ``config.seed + i``): a batch of independent problems that
            reproduces single runs with these seeds (to float rounding; see docs/robustness.md), e.g. the items of a
            batch job.

    Returns:
        :class:`InversionResult`.

    Raises:
        ShapeError: the target/mask shape does not fit the generator.
    """
    config = config or InversionConfig()
    t0 = time.perf_counter()
    with grad_context():
        device, dtype = placement(G, device, dtype)
        tgt = _prepare_target(G, target, mask, config, device, w_stats, init_latent)
        Gc = frozen(G, device, dtype)  # G itself when already frozen there (a host's resident copy), else a copy
        b = tgt.image.shape[0]
        objective, render_tile = _objective(loss, config, device, tgt, Gc.img_resolution)
        w_avg, w_std = w_stats_on(Gc, config, w_stats, device, dtype)
        seeds = _seeds(seeds, b, config.seed, generator)
        variables = _init_variables(Gc, config, b, w_avg, seeds, device, init_latent)
        render = synthesis_renderer(Gc, variables, dtype, tgt.shape, config.force_fp32,
                                    render_tile=render_tile)
        amp = perf.precision_plan(config.precision, device, Gc, config.force_fp32)
        early = EarlyStopping(config.early_stop_patience, config.early_stop_min_rel, config.noise_ramp) \
            if config.early_stop_patience else None
        result = optimize(variables, precision_closure(amp, render, objective),
                          **loop_settings(config, lr=config.lr, noise_factor=config.initial_noise_factor),
                          perturb={"ws": w_std}, seeds=seeds, callback=tgt.cropping(callback), early_stopping=early)

        final = result.variables
        with torch.no_grad():
            img = render(final).float()  # [B, 3, H', W']
            final_loss, quality = objective(img, final), psnr(img, tgt.image, tgt.mask)  # [B], [B]
        metrics = {"loss": [float(x) for x in final_loss], "psnr": [float(x) for x in quality],
                   "seconds": time.perf_counter() - t0, "steps_run": result.steps_run,
                   "stopped_early": result.stopped_early}
        settings = {"inversion": config.to_dict(), "target_size": list(tgt.size), "pads": list(tgt.pads or ()),
                    "render_shape": list(tgt.shape) if tgt.shape else None, "seeds": [str(s) for s in seeds],
                    "w_std": w_std}
        noise = {n: final["noise." + n].detach().clone() for n in noise_variables(final)} or None
        ws = final["ws"].expand(-1, Gc.num_ws, -1)  # latent_space "w": its one row repeated
        latent = Latent(ws.detach().clone().contiguous(), noise, fingerprint(G), settings, metrics)
        log.info("inverted %d image(s) in %.1f s: PSNR %s dB", b, metrics["seconds"],
                 ", ".join(f"{x:.2f}" for x in quality))
    return InversionResult(latent=latent, image=tgt.crop(img).detach().clamp(-1, 1),
                           history=history_tensor(result, b), metrics=metrics)


@dataclass
class _Target:
    """The checked target on the loop's device (float32), fitted to the generator (see :func:`_fit_to_generator`).

    Attributes:
        image, mask: ``[B, 3, H', W']`` and ``[B, 1, H', W']`` or None (padded to a square in ``"pad"`` mode).
        shape: the INR head's render size, or None (native resolution).
        pads: the padding ``(left, right, top, bottom)`` that :func:`crop_from_square` removes, or None.
        size: ``(H, W)`` of the given target.
    """

    image: torch.Tensor
    mask: torch.Tensor | None
    shape: tuple | None
    pads: tuple | None
    size: tuple

    def crop(self, img: torch.Tensor) -> torch.Tensor:
        """``img`` back at the target's own size (removes the padding, if any)."""
        return img if self.pads is None else crop_from_square(img, self.pads)

    def cropping(self, callback: Callable | None) -> Callable | None:
        """``callback`` with its previews cropped back to the target's size."""
        if callback is None or self.pads is None:
            return callback
        return lambda step, total, preview: callback(step, total, None if preview is None else self.crop(preview))


def _prepare_target(G, target, mask, config, device, w_stats, init_latent) -> _Target:
    """Check the inputs and make private float32 copies of target and mask on ``device`` (inference tensors cannot
    join autograd, and the inputs are never modified), fitted to ``G``."""
    target = _check_target(target, "target")
    _checks.check_inversion_inputs(G, target, mask, w_stats, init_latent)
    b, _, h, w = target.shape
    mask = None if mask is None else _check_mask(mask, b, h, w).detach().clone().to(device, torch.float32)
    target = target.detach().clone().to(device=device, dtype=torch.float32)  # [B, 3, H, W]
    return _Target(*_fit_to_generator(G, target, mask, config.non_square), size=(int(h), int(w)))


def _objective(loss, config, device, tgt: _Target, native: int):
    """``(objective, render_tile)``: ``objective(img, vars) -> [B]`` is the perceptual loss against the target (at
    ``config.downsample``), plus ``λ_mse`` times the masked pixel MSE and the noise regulariser when their weights are
    > 0; ``render_tile`` is the INR render tile of the memory plan (None: one piece)."""
    size = tuple(tgt.image.shape[-2:])
    loss, render_tile = _with_memory_plan(loss, config, device, size, tgt.image.shape[0], inr=tgt.shape is not None,
                                          native=native)
    loss_fn = prepare_loss(loss, device, layers=config.loss_layers, who="invert()")
    mask_small = None if tgt.mask is None else _resize_for_loss(tgt.mask, config.downsample)
    tgt_feats = loss_fn.target(_resize_for_loss(tgt.image, config.downsample))

    def objective(img, v):
        total = loss_fn(_resize_for_loss(img.float(), config.downsample), tgt_feats, mask_small)  # [B]
        if config.lambda_mse > 0:
            total = total + config.lambda_mse * _masked_mse(img.float(), tgt.image, tgt.mask)
        noise_names = noise_variables(v)
        if config.noise_regularize > 0 and noise_names:
            total = total + config.noise_regularize * _noise_regularizer([v["noise." + n] for n in noise_names])
        return total

    return objective, render_tile


def w_stats_on(G, config, w_stats, device, dtype) -> tuple[torch.Tensor, float]:
    """``(w_avg [w_dim] float32 on device, w_std)``: the given ``w_stats``, else :func:`compute_w_stats` with the
    config's ``w_avg_samples`` / ``w_stats_seed``."""
    if w_stats is None:
        w_stats = compute_w_stats(G, config.w_avg_samples, config.w_stats_seed, device=device, dtype=dtype)
    return w_stats[0].detach().clone().to(device=device, dtype=torch.float32), float(w_stats[1])


def _seeds(seeds, b, seed, generator) -> list[int]:
    """The per-sample seeds: ``seeds`` as given (checked), else :func:`hrinv.optim.sample_seeds`."""
    if seeds is None:
        return sample_seeds(b, seed, generator)
    seeds = [int(x) for x in seeds]
    if len(seeds) != b or any(x < 0 for x in seeds):
        raise InvalidSettingError(f"invert(seeds=...) needs one seed >= 0 per target image ({b}), got "
                                  f"{len(seeds)}: {seeds[:8]}")
    return seeds


def _fit_to_generator(G, target, mask, non_square):
    """Non-square or other-size targets: render through the INR head (``shape``) or pad to a square and mask the
    padding out. Returns ``(target, mask, shape, pads)``."""
    h, w = target.shape[-2:]
    res = G.img_resolution
    if (h, w) == (res, res):
        return target, mask, None, None
    if G.inr is not None and non_square in ("auto", "inr"):
        return target, mask, (h, w), None
    if non_square == "inr":
        raise ShapeError(f"non_square='inr' needs a generator with an INR head (G.inr is None); target is "
                         f"{h}x{w}, generator renders {res}x{res}")
    if max(h, w) != res:
        raise ShapeError(f"target is {h}x{w} px but the generator renders {res}x{res} px and has no INR head: "
                         f"resize the image to {res}x{res} (crop or stretch it), or keep its aspect ratio and scale it "
                         f"so its longer side is {res} px (the rest is then padded and left out of the loss)")
    target, pad_mask, pads = pad_to_square(target)  # [B, 3, res, res], [B, 1, res, res]
    mask = pad_mask if mask is None else pad_to_square(mask, mode="constant")[0] * pad_mask
    return target, mask, None, pads


def _check_target(t, name):
    if not isinstance(t, torch.Tensor) or t.ndim != 4 or t.shape[1] != 3:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ShapeError(f"{name} must be an RGB image batch [B, 3, H, W] in [-1, 1], got {got}")
    if not t.is_floating_point():
        raise ShapeError(f"{name} must be floating point in [-1, 1], got {t.dtype}; convert uint8 with x / 127.5 - 1")
    if min(t.shape[-2:]) < 4:
        raise ShapeError(f"{name} is only {t.shape[-2]}x{t.shape[-1]} px")
    lo, hi = float(t.min()), float(t.max())
    if lo < -1.5 or hi > 1.5:
        raise ShapeError(f"{name} values must be in [-1, 1] (StyleGAN convention), got [{lo:.3g}, {hi:.3g}]; "
                         f"map [0, 1] images with x * 2 - 1 and [0, 255] with x / 127.5 - 1")
    return t


def _check_mask(mask, b, h, w):
    if not isinstance(mask, torch.Tensor) or mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] not in (1, b) \
            or tuple(mask.shape[-2:]) != (h, w):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ShapeError(f"mask must be [B or 1, 1, H, W] = [{b} or 1, 1, {h}, {w}] with weights in [0, 1], got {got}")
    return mask.expand(b, 1, h, w)


def _init_variables(Gc, config, b, w_avg, seeds, device, init_latent):
    """Initial ``{"ws": ..., "noise.<layer>": ...}`` (float32) for a batch of ``b`` problems; random draws come from
    per-sample generators derived from ``seeds``."""
    gens = init_generators(seeds, 17)
    variables = {}
    rows = 1 if config.latent_space == "w" else Gc.num_ws
    if init_latent is not None:
        init_latent.check_compatible(Gc)
        if init_latent.batch_size not in (1, b):
            raise ShapeError(f"init_latent has batch {init_latent.batch_size}, the target batch is {b}")
        ws = init_latent.ws.detach().clone().to(device=device, dtype=torch.float32).expand(b, -1, -1)
        if config.latent_space == "w":
            ws = ws.mean(1, keepdim=True)
        variables["ws"] = ws.contiguous()  # [B, rows, w_dim]
    elif config.init == "random":
        z = randn_per_sample((Gc.z_dim,), gens, device=device, dtype=next(Gc.mapping.parameters()).dtype)
        with torch.no_grad():
            w0 = Gc.mapping(z, None)[:, :1].float()  # [B, 1, w_dim]
        w0 = w_avg + config.init_truncation * (w0 - w_avg)
        variables["ws"] = w0.expand(b, rows, -1).contiguous()
    else:
        variables["ws"] = w_avg.reshape(1, 1, -1).expand(b, rows, -1).contiguous()  # [B, rows, w_dim]
    if config.noise_maps:
        bufs = Gc.synthesis.noise_buffers()
        for name, buf in bufs.items():
            r = buf.shape[-2:]
            if init_latent is not None and init_latent.noise is not None and name in init_latent.noise:
                n = init_latent.noise[name].detach().clone().to(device=device, dtype=torch.float32).expand(b, 1, *r)
            else:
                n = randn_per_sample((1, *r), gens, device=device)  # [B, 1, r, r]
            variables["noise." + name] = n.contiguous()
    return variables
