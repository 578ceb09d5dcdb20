"""Local Style Optimisation (HRInversion Eq. 8): restore the content's pose and semantics in a stylised image.

    min_{w_opt (, n)}  d_h(G_m(w_m + w_opt + ε, n), x_s) + λ_reg ||w_opt||²

``w_m`` (the lerped W+ code, Eq. 7) stays fixed; the offset ``w_opt`` lives only on the **early rows** of W+ (the
paper: rows 0–4 of 18 at 1024², i.e. the rows that modulate the convolutions of blocks b4–b16), so the later rows,
which carry the style's colours and textures, are untouched: rows outside the selection come back bit for bit equal
to ``w_m``. d_h is the high-level perceptual loss (VGG16 conv taps 21 and 28, Eq. 4); there is no pixel term on
purpose (paper Fig. 14). ε is the projector's decaying latent noise.

The paper gives no λ_reg, learning rate, schedule or init scale. Our defaults come from the experiment documented in
docs/interpolation-and-lso.md (benchmarks/bench_lso.py), and they are expressed in **units that do not depend on the
resolution, the VGG weights or the generator's W scale** (``reg_units="relative"``, the default):

    loss = d_h(...) / d_h(G_m(w_m), x_s)  +  λ_reg · ||w_opt||² / w_std²

i.e. d_h relative to its value before LSO (per sample), and the offset measured in w_std, the RMS distance of G_m's
w's from their mean (the same w_std that scales ε). λ_reg = 1 then means "moving the early rows by one w_std costs as
much as the whole initial d_h". The learning rate is in units of the per-dimension spread ``w_std / sqrt(w_dim)``.
``reg_units="paper"`` uses Eq. 8 literally (raw d_h, raw squared norm, absolute learning rate).

Those defaults were chosen on a random-weight generator. On the bundled real 64 px pair (benchmarks/lso_tuning.py,
24 faces, two styles) neither they nor any other tested setting beat plain lerp on dlib identity, and all gave back
style; no better default was found, so they were kept (docs/interpolation-and-lso.md, "On a real pair").
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Tuple, Union

import torch

from . import _checks, perf
from .errors import InvalidSettingError, ShapeError
from .lambdas import row_blocks
from .latent import Latent
from .optim import (check_loop_settings, fingerprint, frozen, grad_context, history_tensor, init_generators,
                    loop_settings, noise_variables, optimize, placement, precision_closure, prepare_loss,
                    randn_per_sample, sample_seeds, setting_error, settings_dict, synthesis_renderer)

__all__ = ["LSOConfig", "LSOResult", "local_style_optimize", "parse_rows", "resolve_rows"]

log = logging.getLogger(__name__)

RowSpec = Union[str, int, Sequence[int]]


@dataclass
class LSOConfig:
    """Settings of :func:`local_style_optimize`. See docs/interpolation-and-lso.md for how the defaults were chosen.

    Attributes:
        steps: Adam steps (paper: 50).
        rows: which W+ rows get an offset: ``"auto"`` (the rows of the convolutions of blocks up to b16: rows 0–4
            at 256² and above, the paper's choice at 1024²), ``"bN"`` (the conv rows of blocks up to bN), ``"all"``
            (the paper's ablation: collapses to the content image), an int n (rows 0..n-1) or a list of row indices.
        lr: Adam learning rate; in units of ``w_std / sqrt(w_dim)`` with ``reg_units="relative"``, absolute W units
            with ``"paper"``.
        lr_rampup, lr_rampdown: learning-rate ramps as fractions of the run (0 = constant).
        betas: Adam betas.
        reg_weight: λ_reg of Eq. 8 (units: see ``reg_units``). 0 = the paper's "no L2" ablation.
        reg_units: ``"relative"`` (default; d_h / d_h before LSO and ||w_opt||² / w_std²) or ``"paper"`` (raw).
        init_std: std of the random init of w_opt ("small random numbers around zero"), in units of
            ``w_std / sqrt(w_dim)`` (relative) or absolute (paper).
        noise_factor, noise_ramp: ε of Eq. 8: σ = w_std · noise_factor · max(0, 1 − t / noise_ramp)², on every row
            (0 disables ε).
        noise_maps: also optimise the noise maps n (the paper does, with the same Adam, and finds their effect
            negligible; off by default: cheaper, and the stylised codes come from W+-only projections).
        normalize_noise: zero-mean / unit-RMS noise maps after every step (when they are optimised).
        w_avg_samples, w_stats_seed: samples / seed of the w_std estimate (as the inversion's).
        seed: seed of the w_opt init and ε; sample i of a batch uses ``seed + i``. None = random unless a
            ``generator`` is given.
        preview_every: preview image to the callback every N steps (0 = never).
        force_fp32: run synthesis in fp32.
        precision: ``"fp32"`` (exact, default), ``"bf16"``, ``"fp16"`` or ``"auto"`` (see :mod:`hrinv.perf`).
    """

    steps: int = 50
    rows: RowSpec = "auto"
    lr: float = 0.2
    lr_rampup: float = 0.0
    lr_rampdown: float = 0.25
    betas: Tuple[float, float] = (0.9, 0.999)
    reg_weight: float = 0.5
    reg_units: str = "relative"
    init_std: float = 1e-3
    noise_factor: float = 0.05
    noise_ramp: float = 0.75
    noise_maps: bool = False
    normalize_noise: bool = True
    w_avg_samples: int = 10000
    w_stats_seed: int = 123
    seed: Optional[int] = None
    preview_every: int = 0
    force_fp32: bool = True
    precision: str = "fp32"
    optimize_noise: dataclasses.InitVar[Optional[bool]] = None  # the old name of noise_maps, still accepted

    def __post_init__(self, optimize_noise=None):
        if optimize_noise is not None:
            self.noise_maps = bool(optimize_noise)
        check_loop_settings(self, nonnegative=("reg_weight", "init_std", "noise_factor"), fractions=("noise_ramp",))
        self.precision = perf._check(self.precision)
        if self.reg_units not in ("relative", "paper"):
            raise setting_error(self, "reg_units", "'relative' or 'paper'")
        _checks.check_numbers(self, ("lr", "reg_weight", "init_std", "noise_factor"), low=0)
        _checks.check_seed(self.seed, "LSOConfig.seed")

    def to_dict(self) -> dict:
        """JSON-able dict (stored in the latent's settings)."""
        d = settings_dict(self)
        if not isinstance(self.rows, (str, int)):
            d["rows"] = [int(r) for r in self.rows]
        return d


LSOConfig.optimize_noise = property(lambda self: self.noise_maps, doc="Old name of ``noise_maps``.")


@dataclass
class LSOResult:
    """What :func:`local_style_optimize` returns.

    Attributes:
        latent: ``w_m + w_opt`` (rows outside ``rows`` exactly ``w_m``), noise maps when optimised or given.
        image: the result rendered without ε. Shape: ``[B, 3, H, W]`` in [-1, 1].
        w_opt: the offset on every row (zeros outside ``rows``). Shape: ``[B, num_ws, w_dim]``.
        rows: the optimised W+ rows.
        history: the objective per step and sample. Shape: ``[steps, B]``.
        metrics: ``d_h_before`` / ``d_h_after`` (raw d_h per sample), ``w_opt_norm`` (||w_opt|| / w_std per
            sample), ``seconds``.
    """

    latent: Latent
    image: torch.Tensor
    w_opt: torch.Tensor
    rows: list
    history: torch.Tensor
    metrics: dict = field(default_factory=dict)


def parse_rows(text) -> RowSpec:
    """A row selection typed by a user (CLI flag, node widget) -> a :class:`LSOConfig` ``rows`` value:
    ``"auto"`` (also for an empty text), ``"all"`` and ``"bN"`` stay strings, ``"5"`` is a count of leading rows,
    ``"0-4"``, ``"0,1,2"``, ``"0 1 2"`` or ``"0-2; 6"`` are lists of W+ rows. Non-strings are returned as they are.
    Checked against a generator by :func:`resolve_rows`.

    Raises:
        InvalidSettingError: text that is none of these.
    """
    if not isinstance(text, str):
        return text
    s = text.strip().lower()
    if not s or s in ("auto", "all") or (s.startswith("b") and s[1:].isdigit()):
        return s or "auto"
    if s.isdigit():
        return int(s)
    out = []
    for part in s.replace(";", ",").replace(" ", ",").split(","):
        try:
            if "-" in part:
                lo, hi = (int(p) for p in part.split("-", 1))
                out.extend(range(lo, hi + 1))
            elif part:
                out.append(int(part))
        except ValueError:
            raise InvalidSettingError(f"LSO rows must be 'auto', 'all', 'bN' (e.g. b16), a count (e.g. 5) or W+ rows "
                                      f"like '0-4' or '0,1,2'; got {text!r}.") from None
    return out


def resolve_rows(rows: RowSpec, num_ws: int) -> list:
    """The W+ rows selected by ``rows`` (see :class:`LSOConfig`) for a code with ``num_ws`` rows.

    Returns:
        Sorted list of distinct row indices.

    Raises:
        InvalidSettingError: empty, out-of-range or malformed selection.
    """
    blocks = row_blocks(num_ws, "nvidia")  # the block whose convolution each row modulates (last row: last torgb)
    if isinstance(rows, str):
        s = rows.strip().lower()
        if s == "all":
            out = list(range(num_ws))
        else:
            if s == "auto":
                limit = 16
            else:
                try:
                    limit = int(s[1:] if s.startswith("b") else s)
                except ValueError:
                    raise InvalidSettingError(f"LSO rows must be 'auto', 'all', 'bN', a count or a list of row "
                                              f"indices; got {rows!r}.") from None
                if limit not in blocks:
                    raise InvalidSettingError(f"LSO rows {rows!r}: this generator's blocks are "
                                              f"{sorted(set(blocks))}.")
            # conv rows of blocks <= limit; the last row only feeds the last torgb, never a conv
            out = [r for r in range(num_ws - 1) if blocks[r] <= limit]
    elif isinstance(rows, bool):
        raise InvalidSettingError(f"LSO rows must be 'auto', 'all', 'bN', a count or a list; got {rows!r}.")
    elif isinstance(rows, int):
        if not 1 <= rows <= num_ws:
            raise InvalidSettingError(f"LSO rows={rows}: a count of leading rows must be in 1..{num_ws}.")
        out = list(range(rows))
    else:
        try:
            out = sorted({int(r) for r in rows})
        except (TypeError, ValueError):
            raise InvalidSettingError(f"LSO rows must be 'auto', 'all', 'bN', a count or a list of ints; got "
                                      f"{rows!r}.") from None
        if out and (out[0] < 0 or out[-1] >= num_ws):
            raise InvalidSettingError(f"LSO rows {out}: indices must be in 0..{num_ws - 1}.")
    if not out:
        raise InvalidSettingError(f"LSO rows {rows!r} select no row of a {num_ws}-row W+ code.")
    return out


def _check_inputs(G_m, ws_in, content):
    """Shapes and ranges of the code and the content; returns ``(batch, render shape or None)``."""
    if not torch.is_tensor(ws_in) or ws_in.ndim != 3 or not ws_in.is_floating_point():
        raise ShapeError(f"w_m must be a Latent or a float tensor [B, num_ws, w_dim]; got "
                         f"{tuple(ws_in.shape) if torch.is_tensor(ws_in) else type(ws_in).__name__}.")
    if tuple(ws_in.shape[1:]) != (G_m.num_ws, G_m.w_dim):
        raise ShapeError(f"w_m has W+ shape {tuple(ws_in.shape[1:])} but G_m expects ({G_m.num_ws}, {G_m.w_dim}).")
    if not torch.is_tensor(content) or content.ndim != 4 or content.shape[1] != 3 or not content.is_floating_point():
        raise ShapeError(f"content must be a float RGB batch [B, 3, H, W] in [-1, 1]; got "
                         f"{tuple(content.shape) if torch.is_tensor(content) else type(content).__name__}.")
    lo, hi = float(content.min()), float(content.max())
    if lo < -1.5 or hi > 1.5:
        raise ShapeError(f"content values must be in [-1, 1] (StyleGAN convention), got [{lo:.3g}, {hi:.3g}].")
    batch = max(ws_in.shape[0], content.shape[0])
    if {ws_in.shape[0], content.shape[0]} - {1, batch}:
        raise ShapeError(f"w_m holds {ws_in.shape[0]} codes but content holds {content.shape[0]} images: they pair up "
                         f"one to one, or one side holds a single item used for all. Pass as many content images as "
                         f"codes (the images the codes were inverted from), or a single code or a single image.")
    h, w = content.shape[-2:]
    res = G_m.img_resolution
    if (h, w) == (res, res):
        return batch, None
    if getattr(G_m, "inr", None) is None:
        raise ShapeError(f"content is {h}x{w} but G_m renders {res}x{res} and has no INR head: resize/crop the "
                         f"content to {res}x{res} (as for the inversion).")
    return batch, (int(h), int(w))


def _fixed_noise(base, G, batch, device):
    """The noise maps of the input latent (checked against G), ``{layer: [B, 1, r, r]}``, or None."""
    if base is None or base.noise is None:
        return None
    base.check_compatible(G)
    return {k: v.detach().to(device=device, dtype=torch.float32).expand(batch, -1, -1, -1).clone()
            for k, v in base.noise.items()}


def local_style_optimize(G_m, w_m, content: torch.Tensor, loss, config: Optional[LSOConfig] = None, *, device=None,
                         dtype=None, callback: Optional[Callable] = None, generator: Optional[torch.Generator] = None,
                         w_stats: Optional[Tuple[torch.Tensor, float]] = None) -> LSOResult:
    """Eq. 8: optimise an offset on the early W+ rows so that ``G_m(w_m + w_opt)`` regains the content's semantics.

    Args:
        G_m: the interpolated generator (from :func:`hrinv.lerp_generators`); never modified.
        w_m: the interpolated code: a :class:`Latent` or a tensor ``[B, num_ws, w_dim]`` (batch 1 broadcasts).
        content: the content image x_s in [-1, 1]. Shape: ``[B or 1, 3, H, W]`` with ``H = W = G_m.img_resolution``
            (any ``H, W`` when ``G_m.inr`` exists).
        loss: d_h, a :class:`hrinv.losses.PerceptualLoss` with ``layers="high"`` (or a VGG16, wrapped so), or any
            callable ``loss(pred, target_img) -> [B]``.
        config: :class:`LSOConfig` (default: paper settings + our chosen λ_reg / lr).
        device, dtype: where / in which dtype G_m runs (default: G_m's). Variables stay float32.
        callback: ``callback(step, total, preview)``; raise from it to cancel (nothing is left behind).
        generator: ``torch.Generator`` drawing the per-sample seeds when ``config.seed`` is None.
        w_stats: precomputed ``(w_avg, w_std)`` of G_m (from :func:`hrinv.inversion.compute_w_stats`).

    Returns:
        :class:`LSOResult`.

    Raises:
        ShapeError: content / code shapes that do not fit G_m.
        InvalidSettingError: a bad row selection or config.
    """
    from .inversion import w_stats_on  # local: invert imports heavy helpers we do not need at import time

    config = config or LSOConfig()
    t0 = time.perf_counter()
    base = w_m if isinstance(w_m, Latent) else None
    ws_in = w_m.ws if base is not None else w_m
    batch, shape = _check_inputs(G_m, ws_in, content)
    _checks.check_lso_inputs(G_m, ws_in, content, w_stats, base)
    rows = resolve_rows(config.rows, G_m.num_ws)
    relative = config.reg_units == "relative"

    with grad_context():
        device, dtype = placement(G_m, device, dtype)
        G = frozen(G_m, device, dtype)
        loss_fn = _d_h(loss, device)
        w_base = ws_in.detach().to(device=device, dtype=torch.float32).expand(batch, -1, -1).clone()  # [B, N, D]
        target = loss_fn.target(content.detach().to(device=device, dtype=torch.float32).expand(batch, -1, -1, -1))
        w_std = w_stats_on(G, config, w_stats, device, dtype)[1]
        unit = w_std / math.sqrt(G.w_dim) if relative else 1.0  # per-dimension spread of W
        fixed_noise = _fixed_noise(base, G, batch, device)
        seeds = sample_seeds(batch, config.seed, generator)
        variables, row_mask = _init_variables(G, config, w_base, rows, seeds, unit * config.init_std, fixed_noise)
        render = synthesis_renderer(G, variables, dtype, shape, config.force_fp32, fixed_noise)
        amp = perf.precision_plan(config.precision, device, G, config.force_fp32)

        with torch.no_grad():
            d0 = loss_fn(render({**variables, "ws": w_base}), target)  # [B] (noise maps at their initial values)
        scale_dh = 1.0 / d0.clamp_min(1e-12) if relative else torch.ones_like(d0)  # [B]
        reg = config.reg_weight * (1.0 / (w_std * w_std) if relative else 1.0)
        result = optimize(variables, precision_closure(amp, render, lambda img, v: loss_fn(img, target) * scale_dh),
                          **loop_settings(config, lr=config.lr * unit, noise_factor=config.noise_factor),
                          perturb={"ws": w_std}, seeds=seeds, grad_mask={"ws": row_mask},
                          penalty=lambda v: reg * (v["ws"] - w_base).square().sum(dim=(1, 2)),  # [B]
                          callback=callback)

        final = result.variables
        with torch.no_grad():
            img = render(final).float()
            d1 = loss_fn(img, target)
        w_opt = final["ws"] - w_base  # [B, N, D], zeros outside the rows
        noise = {n: final["noise." + n].detach().clone() for n in noise_variables(final)} or fixed_noise
        metrics = {"d_h_before": [float(x) for x in d0], "d_h_after": [float(x) for x in d1],
                   "w_opt_norm": [float(x) / w_std for x in w_opt.flatten(1).norm(dim=1)],
                   "seconds": time.perf_counter() - t0}
        settings = {"lso": config.to_dict(), "rows": rows, "w_std": w_std, "seeds": [str(s) for s in seeds],
                    "render_shape": list(shape) if shape else None, "base": base.settings if base is not None else None}
        latent = Latent(final["ws"].detach().clone().contiguous(), noise, fingerprint(G_m), settings, metrics)
        log.info("LSO on %d image(s), rows %s, %d steps in %.1f s: d_h %s", batch, rows, result.steps_run,
                 metrics["seconds"], ", ".join(f"{a:.4g} -> {b:.4g}" for a, b in zip(d0.tolist(), d1.tolist())))
    return LSOResult(latent=latent, image=img.detach().clamp(-1, 1), w_opt=w_opt.detach(), rows=rows,
                     history=history_tensor(result, batch), metrics=metrics)


def _d_h(loss, device):
    """The LSO loss prepared for the loop (a VGG16 is wrapped with the paper's d_h taps); says when its taps are not
    the paper's."""
    loss_fn = prepare_loss(loss, device, layers="high", who="local_style_optimize()")
    if set(getattr(loss_fn.fn, "weights", None) or {21: 0, 28: 0}) != {21, 28}:
        log.info("LSO with perceptual taps %s; the paper's d_h uses taps 21 and 28 only (low-level taps align "
                 "pixels and damage the background, Fig. 14)", sorted(loss_fn.fn.weights))
    return loss_fn


def _init_variables(G, config, w_base, rows, seeds, init_scale, fixed_noise):
    """The loop's variables and the gradient mask of ``"ws"``.

    The variable is the whole code ``w_m + w_opt`` (``w_opt`` drawn with std ``init_scale`` on the chosen rows from
    per-sample generators derived from ``seeds``); the mask lets gradients reach only the chosen rows (the others
    stay w_m's values bit for bit), while ε perturbs every row, as in the inversion. With ``noise_maps`` the noise
    maps start from the latent's, else from G's constant buffers.
    """
    batch, device = w_base.shape[0], w_base.device
    row_index = torch.tensor(rows, device=device)
    w_opt0 = randn_per_sample((len(rows), G.w_dim), init_generators(seeds, 29), device=device) * init_scale
    variables = {"ws": w_base.index_add(1, row_index, w_opt0)}  # [B, N, D]
    row_mask = torch.zeros(1, G.num_ws, 1, device=device).index_fill_(1, row_index, 1.0)
    if config.noise_maps:
        for name, buf in G.synthesis.noise_buffers().items():
            start = (fixed_noise or {}).get(name, buf.detach().to(device, torch.float32).expand(batch, 1, -1, -1))
            variables["noise." + name] = start.clone().contiguous()  # [B, 1, r, r]
    return variables, row_mask
