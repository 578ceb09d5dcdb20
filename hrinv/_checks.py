"""Input validation at the library boundary: no NaN, infinity or wrong value range gets in silently.

One NaN pixel in a target used to give an all-NaN latent and image without a word; ``lr=inf`` was accepted; NaN
masks, ``w_stats`` and LSO codes propagated. The public entry points (:func:`hrinv.invert`,
:func:`hrinv.local_style_optimize`, the configs, the renderer, the CLI) call these checks first, and
:func:`hrinv.optim.optimize` stops a run that goes non-finite with :class:`~hrinv.errors.NonFiniteError` naming the
step and the cause.

Policy (docs/robustness.md):

* NaN / infinity anywhere in an input (image, mask, latent, ``w_stats``, a numeric setting): an error.
* an image outside [-1, 1] by more than 0.5: an error (that is [0, 255] data); a mask outside [0, 1]: an error.
* an image batch whose values all lie in [0, 1] although the convention is [-1, 1]: a **warning**, not an error. It
  is almost certainly a [0, 1] image passed unconverted (the result is then washed out), but a very bright image in
  [-1, 1] looks the same, so we cannot refuse it.
"""

import logging
import math
import operator

import torch

from .errors import InvalidSettingError, NonFiniteError, ShapeError

__all__ = [
    "MAX_RENDER_PIXELS",
    "MAX_RENDER_SIDE",
    "check_finite_loss",
    "check_finite_tensor",
    "check_finite_variables",
    "check_image_range",
    "check_inversion_inputs",
    "check_lso_inputs",
    "check_mask_values",
    "check_number",
    "check_numbers",
    "check_render_size",
    "check_seed",
    "check_w_stats",
]

log = logging.getLogger(__name__)

# The largest output the renderer accepts: 16384 px a side and 2^27 px (134 MP, e.g. 16384 x 8192) in all. A float32
# RGB image of that size is 1.5 GiB; anything bigger is a typo (``--width 300000``), not a render.
MAX_RENDER_SIDE = 16384
MAX_SEED = 2 ** 62
MAX_RENDER_PIXELS = 1 << 27


def _where(t):
    """``'3 of 12288 values, first at [0, 1, 5, 7]'`` for the non-finite entries of ``t``."""
    bad = ~torch.isfinite(t)
    n = int(bad.sum())
    first = [int(i) for i in bad.nonzero()[0]] if n else []
    kinds = []
    if torch.isnan(t).any():
        kinds.append("NaN")
    if torch.isinf(t).any():
        kinds.append("inf")
    return f"{n} {'/'.join(kinds)} value(s) of {t.numel()}, the first at index {first}"


def check_finite_tensor(t, name, what_to_do="fix or drop the input"):
    """Raise :class:`ShapeError` if the tensor ``t`` holds NaN or infinity (``name`` is used in the message)."""
    if torch.is_tensor(t) and t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
        raise ShapeError(f"{name} holds non-finite values ({_where(t.detach())}); every value must be a finite number. "
                         f"{what_to_do[:1].upper() + what_to_do[1:]}")
    return t


def check_image_range(t, name, *, low=-1.0, high=1.0, slack=0.5, warn_unit_range=True):
    """Finite values in ``[low, high]`` (± ``slack``); warn when a [-1, 1] batch looks like [0, 1] data.

    Raises:
        ShapeError: non-finite values, or values far outside the range.
    """
    check_finite_tensor(t, name, "decode the image again or replace the bad pixels (e.g. torch.nan_to_num)")
    if not t.numel():
        return t
    lo, hi = float(t.min()), float(t.max())
    if lo < low - slack or hi > high + slack:
        raise ShapeError(f"{name} values must be in [{low:g}, {high:g}] (StyleGAN convention), got "
                         f"[{lo:.3g}, {hi:.3g}]; map [0, 1] images with x * 2 - 1 and [0, 255] with x / 127.5 - 1")
    if warn_unit_range and low == -1.0 and lo >= 0.0 and hi > 0.5:
        log.warning("%s lies entirely in [0, 1] (min %.3g, max %.3g) but images are expected in [-1, 1]: if it is a "
                    "[0, 1] image, pass x * 2 - 1, otherwise the result will be washed out.", name, lo, hi)
    return t


def check_mask_values(mask, name="mask"):
    """A loss mask: finite weights in [0, 1] (1e-6 tolerance). Raises :class:`ShapeError`."""
    check_finite_tensor(mask, name, "masks are weights in [0, 1]; clamp or rebuild it")
    if mask.numel():
        lo, hi = float(mask.min()), float(mask.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ShapeError(f"{name} weights must be in [0, 1], got [{lo:.3g}, {hi:.3g}]; use mask.clamp(0, 1) or a "
                             f"binary mask")
    return mask


def check_w_stats(w_stats, w_dim=None):
    """``(w_avg [w_dim], w_std > 0)`` from :func:`hrinv.inversion.compute_w_stats`, all finite."""
    if w_stats is None:
        return None
    if not isinstance(w_stats, (tuple, list)) or len(w_stats) != 2:
        raise InvalidSettingError(f"w_stats must be (w_avg, w_std) from compute_w_stats, got {type(w_stats).__name__}")
    w_avg, w_std = w_stats
    if not torch.is_tensor(w_avg) or (w_dim is not None and w_avg.numel() != w_dim):
        got = tuple(w_avg.shape) if torch.is_tensor(w_avg) else type(w_avg).__name__
        raise ShapeError(f"w_stats[0] (w_avg) must be a [{w_dim}] tensor, got {got}")
    check_finite_tensor(w_avg, "w_stats[0] (w_avg)", "recompute it with compute_w_stats(G)")
    std = float(w_std.item() if torch.is_tensor(w_std) else w_std)
    if not math.isfinite(std) or std <= 0:
        raise InvalidSettingError(f"w_stats[1] (w_std) must be a finite number > 0, got {std}; recompute it with "
                                  f"compute_w_stats(G)")
    return w_stats


def check_number(value, name, *, low=None, high=None, low_inclusive=True, allow_none=False):
    """A finite real number (not bool) within bounds; raises :class:`InvalidSettingError` naming ``name``."""
    if value is None and allow_none:
        return value
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value >= low if low_inclusive else value > low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        rng = (f" {'>=' if low_inclusive else '>'} {low:g}" if low is not None else "") + \
              (f" and <= {high:g}" if high is not None else "")
        raise InvalidSettingError(f"{name} must be a finite number{rng}, got {value!r}")
    return value


def check_numbers(obj, names, **bounds):
    """:func:`check_number` on several attributes of a config object (``obj.<name>``), each named in the message."""
    for n in names:
        check_number(getattr(obj, n), f"{type(obj).__name__}.{n}", **bounds)


def check_seed(seed, name="seed"):
    """``None`` or an integer in [0, 2^62] (``seed + i`` must stay within ``torch.Generator.manual_seed``'s 64 bits)."""
    if seed is None:
        return None
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise InvalidSettingError(f"{name} must be an integer in [0, 2^62] (sample i of a batch uses seed + i), got "
                                  f"{str(seed)[:40]}")
    return seed


def check_render_size(height, width):
    """Output size of a render: integers >= 1, at most ``MAX_RENDER_SIDE`` a side and ``MAX_RENDER_PIXELS`` in all."""
    sizes = []
    for n, v in (("height", height), ("width", width)):
        try:
            iv = operator.index(v)
        except TypeError:
            iv = None
        if iv is None or isinstance(v, bool) or not 1 <= iv <= MAX_RENDER_SIDE:
            raise ShapeError(f"render {n} must be an integer in [1, {MAX_RENDER_SIDE}], got {str(v)[:40]}")
        sizes.append(iv)
    height, width = sizes
    if height * width > MAX_RENDER_PIXELS:
        raise ShapeError(f"render size {width}x{height} is {height * width / 1e6:.0f} MP, more than the "
                         f"{MAX_RENDER_PIXELS / 1e6:.0f} MP limit ({height * width * 12 / 2**30:.1f} GiB as float "
                         f"RGB); render smaller")
    return height, width


def _latent_ws(lat):
    return getattr(lat, "ws", lat)


def check_inversion_inputs(G, target, mask=None, w_stats=None, init_latent=None):
    """Everything :func:`hrinv.invert` is given, checked for NaN/inf and value ranges before any work starts."""
    check_image_range(target, "target")
    if mask is not None and torch.is_tensor(mask):
        check_mask_values(mask)
    check_w_stats(w_stats, getattr(G, "w_dim", None))
    if init_latent is not None:
        check_finite_tensor(_latent_ws(init_latent), "init_latent.ws", "invert from w_avg instead (init_latent=None)")
        for k, v in (getattr(init_latent, "noise", None) or {}).items():
            check_finite_tensor(v, f"init_latent.noise[{k!r}]", "drop its noise (latent.noise = None)")


def check_lso_inputs(G_m, w_m, content, w_stats=None, latent=None):
    """Everything :func:`hrinv.local_style_optimize` is given, checked for NaN/inf and value ranges."""
    check_finite_tensor(w_m, "w_m", "lerp finite codes (check the inversions it came from)")
    check_image_range(content, "content")
    check_w_stats(w_stats, getattr(G_m, "w_dim", None))
    for k, v in (getattr(latent, "noise", None) or {}).items():
        check_finite_tensor(v, f"w_m.noise[{k!r}]", "drop its noise (latent.noise = None)")


# ----------------------------------------------------------------------------------------------------------------------
# Inside the optimisation loop


def check_finite_loss(loss, variables, step, steps):
    """Raise :class:`NonFiniteError` if the per-sample ``loss`` of ``step`` (0-based) is not finite, saying why."""
    if bool(torch.isfinite(loss).all()):
        return
    samples = [int(i) for i in (~torch.isfinite(loss.detach())).nonzero().flatten()][:8]
    bad_vars = [k for k, v in variables.items() if not bool(torch.isfinite(v.detach()).all())]
    if bad_vars:
        why = (f"the optimised variables {bad_vars} are already non-finite"
               + (" at the start: check the initial latent / w_stats" if step == 0 else
                  f" after step {step}: the previous update diverged (learning rate too high?)"))
    else:
        why = ("the variables are finite, so the images, the target or the loss produced NaN/inf (NaN in the target "
               "or mask, a fp16/bf16 overflow, or a damaged generator)")
    raise NonFiniteError(f"the optimisation went non-finite at step {step + 1} of {steps}: the loss of sample(s) "
                         f"{samples} is NaN/inf; {why}. Nothing is returned; fix the input or lower the learning rate",
                         step=step + 1)


def check_finite_variables(variables, step, steps, lr=None):
    """Raise :class:`NonFiniteError` if an Adam update (of 1-based ``step``) left a variable non-finite."""
    for k, v in variables.items():
        if not bool(torch.isfinite(v.detach()).all()):
            raise NonFiniteError(f"the optimisation went non-finite at step {step} of {steps}: the update made '{k}' "
                                 f"NaN/inf ({_where(v.detach())}) although the loss was finite"
                                 + (f"; the learning rate {lr:g} is too high" if lr is not None else "")
                                 + ". Lower the learning rate", step=step)
