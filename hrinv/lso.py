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
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Tuple, Union

import torch

from . import _checks
from .errors import InvalidSettingError, ShapeError
from .interpolate import row_blocks
from .latent import Latent
from .optim import grad_context, make_generators, module_has_inference_tensors, optimize, randn_per_sample, \
    sample_seeds

__all__ = ["LSOConfig", "LSOResult", "local_style_optimize", "resolve_rows"]

log = logging.getLogger("HRInv")

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
        optimize_noise: also optimise the noise maps n (the paper does, with the same Adam, and finds their effect
            negligible; off by default: cheaper, and the stylised codes come from W+-only projections).
        normalize_noise: zero-mean / unit-RMS noise maps after every step (when they are optimised).
        w_avg_samples, w_stats_seed: samples / seed of the w_std estimate (as the inversion's).
        seed: seed of the w_opt init and ε; sample i of a batch uses ``seed + i``. None = random unless a
            ``generator`` is given.
        preview_every: preview image to the callback every N steps (0 = never).
        force_fp32: run synthesis in fp32.
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
    optimize_noise: bool = False
    normalize_noise: bool = True
    w_avg_samples: int = 10000
    w_stats_seed: int = 123
    seed: Optional[int] = None
    preview_every: int = 0
    force_fp32: bool = True

    def __post_init__(self):
        def bad(name, want):
            raise InvalidSettingError(f"LSOConfig.{name} must be {want}, got {getattr(self, name)!r}")

        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            bad("steps", "an integer >= 1 (the paper uses 50)")
        for name in ("lr",):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
                bad(name, "a positive number")
        for name in ("reg_weight", "init_std", "noise_factor", "noise_ramp", "lr_rampup", "lr_rampdown"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                bad(name, "a finite number >= 0")
        for name in ("noise_ramp", "lr_rampup", "lr_rampdown"):
            if getattr(self, name) > 1:
                bad(name, "a fraction of the run in [0, 1]")
        if self.lr_rampup + self.lr_rampdown > 1:
            bad("lr_rampdown", "<= 1 - lr_rampup")
        if self.reg_units not in ("relative", "paper"):
            bad("reg_units", "'relative' or 'paper'")
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            bad("betas", "two numbers in [0, 1)")
        if not isinstance(self.w_avg_samples, int) or self.w_avg_samples < 2:
            bad("w_avg_samples", "an integer >= 2")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0):
            bad("seed", "None or an integer >= 0")
        if not isinstance(self.preview_every, int) or self.preview_every < 0:
            bad("preview_every", "an integer >= 0")
        _checks.check_numbers(self, ("lr", "reg_weight", "init_std", "noise_factor"), low=0)
        _checks.check_seed(self.seed, "LSOConfig.seed")

    def to_dict(self) -> dict:
        """JSON-able dict (stored in the latent's settings)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        if not isinstance(self.rows, (str, int)):
            d["rows"] = [int(r) for r in self.rows]
        return d


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


def _frozen(G, device, dtype):
    """G itself when it is already frozen, normal (no inference tensors) and in place; else a frozen copy."""
    first = next(G.parameters())
    needs_copy = (module_has_inference_tensors(G) or any(p.requires_grad for p in G.parameters())
                  or first.device != device or first.dtype != dtype)
    if needs_copy:
        return copy.deepcopy(G).to(device=device, dtype=dtype).eval().requires_grad_(False)
    return G


def _prepare_loss(loss, device):
    if loss is None:
        raise InvalidSettingError("local_style_optimize needs a loss: hrinv.losses.PerceptualLoss(vgg, layers='high') "
                                  "(d_h, Eq. 4) or a VGG16 from hrinv.load_vgg16(...)")
    if isinstance(loss, torch.nn.Module) and not hasattr(loss, "target") and hasattr(loss, "preprocess"):
        from .losses.perceptual import PerceptualLoss

        loss = PerceptualLoss(loss, layers="high")
    if isinstance(loss, torch.nn.Module):
        tensors = list(loss.parameters()) + list(loss.buffers())
        if module_has_inference_tensors(loss) or any(p.requires_grad for p in loss.parameters()) or (
                tensors and tensors[0].device != device):
            loss = copy.deepcopy(loss).to(device).requires_grad_(False)
        loss.eval()
        weights = getattr(loss, "weights", None)
        if isinstance(weights, dict) and set(weights) != {21, 28}:
            log.info("LSO with perceptual taps %s; the paper's d_h uses taps 21 and 28 only (low-level taps align "
                     "pixels and damage the background, Fig. 14)", sorted(weights))
    return loss


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
    from .inversion import compute_w_stats  # local: invert imports heavy helpers we do not need at import time

    config = config or LSOConfig()
    t0 = time.perf_counter()
    base_latent = w_m if isinstance(w_m, Latent) else None
    ws_in = w_m.ws if base_latent is not None else w_m
    if not torch.is_tensor(ws_in) or ws_in.ndim != 3 or not ws_in.is_floating_point():
        raise ShapeError(f"w_m must be a Latent or a float tensor [B, num_ws, w_dim]; got "
                         f"{tuple(ws_in.shape) if torch.is_tensor(ws_in) else type(ws_in).__name__}.")
    if tuple(ws_in.shape[1:]) != (G_m.num_ws, G_m.w_dim):
        raise ShapeError(f"w_m has W+ shape {tuple(ws_in.shape[1:])} but G_m expects ({G_m.num_ws}, {G_m.w_dim}).")
    if not torch.is_tensor(content) or content.ndim != 4 or content.shape[1] != 3 or not content.is_floating_point():
        raise ShapeError(f"content must be a float RGB batch [B, 3, H, W] in [-1, 1]; got "
                         f"{tuple(content.shape) if torch.is_tensor(content) else type(content).__name__}.")
    _checks.check_lso_inputs(G_m, ws_in, content, w_stats, base_latent)
    lo, hi = float(content.min()), float(content.max())
    if lo < -1.5 or hi > 1.5:
        raise ShapeError(f"content values must be in [-1, 1] (StyleGAN convention), got [{lo:.3g}, {hi:.3g}].")
    batch = max(ws_in.shape[0], content.shape[0])
    if {ws_in.shape[0], content.shape[0]} - {1, batch}:
        raise ShapeError(f"w_m batch {ws_in.shape[0]} and content batch {content.shape[0]} do not broadcast.")
    h, w = content.shape[-2:]
    res = G_m.img_resolution
    shape = None
    if (h, w) != (res, res):
        if getattr(G_m, "inr", None) is None:
            raise ShapeError(f"content is {h}x{w} but G_m renders {res}x{res} and has no INR head: resize/crop the "
                             f"content to {res}x{res} (as for the inversion).")
        shape = (int(h), int(w))
    rows = resolve_rows(config.rows, G_m.num_ws)
    relative = config.reg_units == "relative"

    with grad_context():
        p0 = next(G_m.parameters())
        device = p0.device if device is None else torch.device(device)
        dtype = p0.dtype if dtype is None else dtype
        G = _frozen(G_m, device, dtype)
        loss_fn = _prepare_loss(loss, device)
        has_feats = hasattr(loss_fn, "target")
        w_base = ws_in.detach().to(device=device, dtype=torch.float32).expand(batch, -1, -1).clone()  # [B, N, D]
        x_s = content.detach().to(device=device, dtype=torch.float32).expand(batch, -1, -1, -1)  # [B, 3, H, W]
        lp = next(iter(list(loss_fn.parameters()) + list(loss_fn.buffers())), None) \
            if isinstance(loss_fn, torch.nn.Module) else None
        loss_dtype = lp.dtype if lp is not None and lp.is_floating_point() else torch.float32
        with torch.no_grad():
            target = loss_fn.target(x_s.to(loss_dtype)) if has_feats else x_s
        if w_stats is None:
            w_stats = compute_w_stats(G, config.w_avg_samples, config.w_stats_seed, device=device, dtype=dtype)
        w_std = float(w_stats[1])
        unit = w_std / math.sqrt(G.w_dim) if relative else 1.0  # per-dimension spread of W

        fixed_noise = None
        if base_latent is not None and base_latent.noise is not None:
            base_latent.check_compatible(G)
            fixed_noise = {k: v.detach().to(device=device, dtype=torch.float32).expand(batch, -1, -1, -1).clone()
                           for k, v in base_latent.noise.items()}

        seeds = sample_seeds(batch, config.seed, generator)
        init_gens = make_generators([(s * 1_000_003 + 29) % 2 ** 63 for s in seeds])
        eps_gens = make_generators(seeds)
        variables = {"w_opt": randn_per_sample((len(rows), G.w_dim), init_gens, device=device) *
                     (config.init_std * unit)}  # [B, R, D]
        noise_names = []
        if config.optimize_noise:
            bufs = G.synthesis.noise_buffers()
            for name, buf in bufs.items():
                start = fixed_noise[name] if fixed_noise and name in fixed_noise else \
                    buf.detach().to(device=device, dtype=torch.float32).expand(batch, 1, *buf.shape[-2:])
                variables["noise." + name] = start.clone().contiguous()  # [B, 1, r, r]
                noise_names.append(name)
        row_index = torch.tensor(rows, device=device)

        def compose(w_opt):
            """w_m with w_opt added on the chosen rows; the other rows are w_m's own tensors."""
            return w_base.index_add(1, row_index, w_opt)  # [B, N, D]

        def render(ws, v):
            noise = {n: v["noise." + n].to(dtype) for n in noise_names} if noise_names else None
            if noise is None and fixed_noise is not None:
                noise = {n: t.to(dtype) for n, t in fixed_noise.items()}
            return G.synthesis(ws.to(dtype), noise_mode="const", noise=noise, shape=shape,
                               force_fp32=config.force_fp32)  # [B, 3, H, W]

        def d_h(img):
            pred = img.to(loss_dtype) if has_feats else img.float()
            return loss_fn(pred, target).float().reshape(batch)  # [B]

        with torch.no_grad():
            d0 = d_h(render(w_base, variables))  # [B] (noise maps at their initial values)
        scale_dh = 1.0 / d0.clamp_min(1e-12) if relative else torch.ones_like(d0)  # [B]
        scale_reg = 1.0 / (w_std * w_std) if relative else 1.0

        def closure(v, step, steps):
            ws = compose(v["w_opt"])
            t = step / steps
            sigma = w_std * config.noise_factor * max(0.0, 1.0 - t / config.noise_ramp) ** 2 \
                if config.noise_ramp > 0 else 0.0
            if sigma > 0:
                ws = ws + sigma * randn_per_sample(ws.shape[1:], eps_gens, device=device)  # ε on every row
            img = render(ws, v)
            reg = v["w_opt"].square().sum(dim=(1, 2))  # [B]
            return d_h(img) * scale_dh + config.reg_weight * scale_reg * reg, img

        def post_step(params):
            if config.normalize_noise:
                for n in noise_names:
                    p = params["noise." + n]
                    p.sub_(p.mean(dim=(1, 2, 3), keepdim=True))
                    p.mul_(p.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt())

        result = optimize(variables, closure, steps=config.steps, lr=config.lr * unit, lr_rampup=config.lr_rampup,
                          lr_rampdown=config.lr_rampdown, betas=config.betas, post_step=post_step if noise_names
                          else None, callback=callback, preview_every=config.preview_every)

        with torch.no_grad():
            final = result.variables
            ws = compose(final["w_opt"])
            img = render(ws, final).float()
            d1 = d_h(img)
        w_opt_full = torch.zeros_like(w_base).index_add(1, row_index, final["w_opt"])  # [B, N, D]
        noise = {n: final["noise." + n].detach().clone() for n in noise_names} or fixed_noise
        seconds = time.perf_counter() - t0
        metrics = {"d_h_before": [float(x) for x in d0], "d_h_after": [float(x) for x in d1],
                   "w_opt_norm": [float(x) / w_std for x in final["w_opt"].flatten(1).norm(dim=1)],
                   "seconds": seconds}
        settings = {"lso": config.to_dict(), "rows": rows, "w_std": w_std, "seeds": [str(s) for s in seeds],
                    "render_shape": list(shape) if shape else None,
                    "base": base_latent.settings if base_latent is not None else None}
        fp = G_m.fingerprint() if hasattr(G_m, "fingerprint") else ""
        latent = Latent(ws.detach().clone().contiguous(), noise, fp, settings, metrics)
        history = torch.tensor(result.history, dtype=torch.float32).reshape(result.steps_run, batch)
        log.info("LSO on %d image(s), rows %s, %d steps in %.1f s: d_h %s", batch, rows, result.steps_run, seconds,
                 ", ".join(f"{a:.4g} -> {b:.4g}" for a, b in zip(metrics["d_h_before"], metrics["d_h_after"])))
    return LSOResult(latent=latent, image=img.detach().clamp(-1, 1), w_opt=w_opt_full.detach(), rows=rows,
                     history=history, metrics=metrics)
