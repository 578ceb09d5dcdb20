"""Generic optimisation core shared by inversion (Eq. 1 / 5) and LSO (Eq. 8).

The loop knows nothing about StyleGAN: it optimises a dict of leaf tensors (``variables``) with Adam under the
reference learning-rate schedule, optionally perturbs some of them with the decaying latent noise ε of the NVIDIA /
HRInversion projector, calls a user closure that renders images and returns a per-sample loss, reports progress
through ``callback(step, total, preview)`` and stops early or on cancellation. Any differentiable generator works
(StyleGAN2 W+, a DCGAN's z, an INR's coordinates, ...).

Schedules (the NVIDIA stylegan2-ada-pytorch ``projector.py``, as released with HRInversion), with
``t = step / steps``:

* learning rate ``lr(t) = lr · min(1, t / rampup) · (0.5 − 0.5 cos(π · min(1, (1 − t) / rampdown)))``; it is 0 at
  step 0 exactly as in the reference (that step only initialises Adam's moment estimates).
* latent noise ``σ(t) = scale · factor · max(0, 1 − t / ramp)²``, ``ε = σ · N(0, I)`` drawn independently for every
  element (so every W+ row gets its own draw) and, in a batch, from each sample's own random stream.

Batches are B independent problems: the closure returns a loss per sample, the core sums it (Adam is element-wise,
so the sum gives every sample exactly its own update) and every random draw of sample i comes from its own
``torch.Generator`` seeded with ``seeds[i]``, so a batch run equals B single runs with those seeds.

ComfyUI executes nodes inside ``torch.inference_mode()``; :func:`optimize` enters ``inference_mode(False)`` and
``enable_grad()`` itself and works on clones of the tensors it is given, so the caller's tensors are never modified
and inference tensors are accepted.

The set-up helpers at the end (:func:`placement`, :func:`loop_settings`, :func:`precision_closure`,
:func:`synthesis_renderer`, ...) are the pieces that ``invert`` and ``local_style_optimize`` share around the loop.
"""

import contextlib
import copy
import logging
import math
from collections.abc import Callable, Mapping, Sequence
import dataclasses
from dataclasses import dataclass, field

import torch

from ._checks import check_finite_loss, check_finite_variables
from .bufferpool import BufferPool
from .errors import InvalidSettingError, ShapeError

__all__ = [
    "EarlyStopping",
    "OptimResult",
    "PreparedLoss",
    "check_loop_settings",
    "fingerprint",
    "frozen",
    "grad_context",
    "history_tensor",
    "init_generators",
    "loop_settings",
    "lr_at",
    "make_generators",
    "noise_sigma_at",
    "noise_variables",
    "normalize_noise_maps_",
    "optimize",
    "placement",
    "precision_closure",
    "prepare_loss",
    "randn_per_sample",
    "sample_seeds",
    "setting_error",
    "settings_dict",
    "synthesis_renderer",
    "thaw",
]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, torch.Tensor | None], None]


# ----------------------------------------------------------------------------------------------------------------------
# Schedules


def lr_at(t: float, lr: float, rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """Learning rate of the reference projector at progress ``t`` in [0, 1].

    Args:
        t: ``step / steps``.
        lr: base learning rate.
        rampup: fraction of the run spent ramping linearly up from 0 (0 disables the ramp-up).
        rampdown: fraction at the end spent in a cosine ramp-down towards 0 (0 disables it).

    Returns:
        The learning rate (a float).
    """
    up = min(1.0, t / rampup) if rampup > 0 else 1.0
    down = 0.5 - 0.5 * math.cos(math.pi * min(1.0, (1.0 - t) / rampdown)) if rampdown > 0 else 1.0
    return lr * up * down


def noise_sigma_at(t: float, scale: float, factor: float = 0.05, ramp: float = 0.75) -> float:
    """Standard deviation of the latent noise ε at progress ``t``: ``scale · factor · max(0, 1 − t / ramp)²``.

    Args:
        t: ``step / steps``.
        scale: the spread of the latent distribution (``w_std`` for W / W+, the RMS L2 distance to w̄).
        factor: initial noise factor (reference 0.05).
        ramp: fraction of the run after which ε is 0 (reference 0.75; 0 disables ε).
    """
    if ramp <= 0 or factor == 0:
        return 0.0
    return scale * factor * max(0.0, 1.0 - t / ramp) ** 2


# ----------------------------------------------------------------------------------------------------------------------
# Per-sample random streams


def sample_seeds(batch: int, seed: int | None = None, generator: torch.Generator | None = None) -> list[int]:
    """Seeds of the B per-sample random streams.

    ``seed`` gives ``[seed, seed + 1, ...]`` (so sample i of a batch run equals a single run with ``seed + i``);
    otherwise seeds are drawn from ``generator`` (or from a fresh non-deterministic generator when both are None).
    """
    if seed is not None:
        return [int(seed) + i for i in range(batch)]
    if generator is None:
        generator = torch.Generator()
        generator.seed()
    return [int(s) for s in torch.randint(0, 2**62, (batch,), generator=generator, device=generator.device)]


def make_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU ``torch.Generator`` per seed (draws happen on the CPU so CPU and GPU runs see the same numbers)."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def randn_per_sample(shape: Sequence[int], generators: Sequence[torch.Generator], device=None,
                     dtype=torch.float32) -> torch.Tensor:
    """Standard normal tensor ``[B, *shape]`` whose row i is drawn from ``generators[i]`` (on the CPU, then moved)."""
    rows = [torch.randn(tuple(shape), generator=g, dtype=torch.float32) for g in generators]
    return torch.stack(rows).to(device=device, dtype=dtype)  # [B, *shape]


# ----------------------------------------------------------------------------------------------------------------------
# Inference-mode helpers


@contextlib.contextmanager
def grad_context():
    """Leave any outer ``torch.inference_mode()`` and enable autograd (ComfyUI runs nodes under inference mode, where
    nothing can be optimised)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def thaw(t: torch.Tensor) -> torch.Tensor:
    """A detached normal (non-inference) copy of ``t``; call inside :func:`grad_context`."""
    return t.detach().clone()


def module_has_inference_tensors(module: torch.nn.Module) -> bool:
    """True when a parameter or buffer of ``module`` was created under ``torch.inference_mode()``."""
    return any(t.is_inference() for t in list(module.parameters()) + list(module.buffers()))


def _first_tensor(module):
    if isinstance(module, torch.nn.Module):
        return next(iter(list(module.parameters()) + list(module.buffers())), None)
    return None


def frozen(module: torch.nn.Module, device=None, dtype=None) -> torch.nn.Module:
    """``module`` itself when it can be used read-only as it is: in eval mode, no parameter requiring grad, no
    inference tensor, every tensor already on ``device`` (None = where it is) and floating tensors in ``dtype`` (None
    = as they are); else a frozen private deep copy there. The caller's network is never modified, and an
    optimisation may run through the result. This is also what lets a host (ComfyUI's model management) keep one
    resident copy of a network on the GPU: the loops run through it instead of deep-copying it at every run."""
    tensors = list(module.parameters()) + list(module.buffers())
    dev = None if device is None else torch.device(device)
    ok = (not module.training and all(not p.requires_grad for p in module.parameters())
          and all(not t.is_inference() for t in tensors)
          and (dev is None or all(t.device == dev or (dev.index is None and t.device.type == dev.type)
                                  for t in tensors))
          and (dtype is None or all(t.dtype == dtype for t in tensors if t.is_floating_point())))
    if ok:
        return module
    with torch.inference_mode(False):
        return copy.deepcopy(module).to(device=device, dtype=dtype).eval().requires_grad_(False)


def normalize_noise_maps_(variables: dict[str, torch.Tensor]) -> None:
    """In place: every ``"noise.*"`` variable ``[B, 1, r, r]`` to zero mean and unit RMS per sample (the reference
    projector does this after every step). Use as ``optimize(post_step=...)``."""
    for name, v in variables.items():
        if name.startswith("noise."):
            v.sub_(v.mean(dim=(1, 2, 3), keepdim=True))
            v.mul_(v.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt())


# ----------------------------------------------------------------------------------------------------------------------
# The loss


@dataclass
class PreparedLoss:
    """A loss ready for an optimisation loop: a ``PerceptualLoss``-like object (``.target(img)`` once, then
    ``fn(pred, feats, mask=None) -> [B]``) or a plain callable ``fn(pred, target_img[, mask=]) -> [B]``."""

    fn: Callable
    has_feats: bool
    dtype: torch.dtype

    @torch.no_grad()
    def target(self, img: torch.Tensor):
        """What the loss compares against: features of ``img`` (computed once) or the image itself."""
        return self.fn.target(img.to(self.dtype)) if self.has_feats else img

    def __call__(self, pred: torch.Tensor, target, mask: torch.Tensor | None = None) -> torch.Tensor:
        pred = pred.to(self.dtype)
        out = self.fn(pred, target) if mask is None else self.fn(pred, target, mask=mask)
        return out.float().reshape(pred.shape[0])  # [B]


def prepare_loss(loss, device, *, layers="conv", who: str = "the optimisation") -> PreparedLoss:
    """Turn ``loss`` (a ``PerceptualLoss``, a VGG16 from :func:`hrinv.load_vgg16` — wrapped with ``layers`` — or a
    callable) into a :class:`PreparedLoss` on ``device``. The user's network never collects gradients nor keeps
    inference tensors: a private frozen copy is made when needed."""
    if loss is None:
        raise InvalidSettingError(f"{who} needs a loss: a hrinv.losses.PerceptualLoss, a VGG16 from "
                                  f"hrinv.load_vgg16(...), or a callable loss(pred, target) -> [B]")
    if isinstance(loss, torch.nn.Module) and not hasattr(loss, "target") and hasattr(loss, "preprocess"):
        from .losses.perceptual import PerceptualLoss

        loss = PerceptualLoss(loss, layers=layers)
    if isinstance(loss, torch.nn.Module):
        loss = frozen(loss, device=device)
    first = _first_tensor(loss)
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    return PreparedLoss(loss, hasattr(loss, "target"), dtype)


# ----------------------------------------------------------------------------------------------------------------------
# Settings


def settings_dict(config) -> dict:
    """JSON-able dict of an optimisation config dataclass (stored with what it produced): tuples become lists and a
    ``{tap: weight}`` ``loss_layers`` gets string keys."""
    d = dataclasses.asdict(config)
    for k, v in d.items():
        if isinstance(v, tuple):
            d[k] = list(v)
    if isinstance(d.get("loss_layers"), dict):
        d["loss_layers"] = {str(k): float(v) for k, v in d["loss_layers"].items()}
    return d


def setting_error(config, name: str, want: str) -> InvalidSettingError:
    """The error for a bad setting: ``<Config>.<name> must be <want>, got <value>``."""
    return InvalidSettingError(f"{type(config).__name__}.{name} must be {want}, got {getattr(config, name)!r}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_loop_settings(config, *, nonnegative=(), fractions=()) -> None:
    """Validate the settings every optimisation config shares (``steps, lr, lr_rampup, lr_rampdown, betas,
    w_avg_samples, seed, preview_every``) plus the named ``nonnegative`` numbers and ``fractions`` (in [0, 1]).
    Normalises ``betas`` to a tuple of floats. Raises :class:`InvalidSettingError` naming the setting."""
    if not _is_int(config.steps) or config.steps < 1:
        raise setting_error(config, "steps", "an integer >= 1")
    if not _is_number(config.lr) or config.lr <= 0:
        raise setting_error(config, "lr", "a positive number")
    for name in ("lr_rampup", "lr_rampdown", *nonnegative, *fractions):
        if not _is_number(getattr(config, name)) or getattr(config, name) < 0:
            raise setting_error(config, name, "a finite number >= 0")
    for name in ("lr_rampup", "lr_rampdown", *fractions):
        if getattr(config, name) > 1:
            raise setting_error(config, name, "a fraction of the run in [0, 1]")
    if config.lr_rampup + config.lr_rampdown > 1:
        raise setting_error(config, "lr_rampdown", f"<= 1 - lr_rampup (= {1 - config.lr_rampup:g})")
    try:
        config.betas = tuple(float(b) for b in config.betas)
    except (TypeError, ValueError):
        raise setting_error(config, "betas", "two numbers in [0, 1)") from None
    if len(config.betas) != 2 or not all(0 <= b < 1 for b in config.betas):
        raise setting_error(config, "betas", "two numbers in [0, 1)")
    if not _is_int(config.w_avg_samples) or config.w_avg_samples < 2:
        raise setting_error(config, "w_avg_samples", "an integer >= 2 (reference 10000)")
    if config.seed is not None and (not _is_int(config.seed) or config.seed < 0):
        raise setting_error(config, "seed", "None or an integer >= 0")
    if not _is_int(config.preview_every) or config.preview_every < 0:
        raise setting_error(config, "preview_every", "an integer >= 0 (0 = off)")


# ----------------------------------------------------------------------------------------------------------------------
# Early stopping


@dataclass
class EarlyStopping:
    """Stop when the loss of every sample stopped improving.

    Sample i has stalled when its best loss of the last ``patience`` steps is not at least ``min_rel_improvement``
    (relative) below its best loss before that window. Checks start only once ``t >= start`` (by default after the
    latent-noise ramp, when the loss is no longer dominated by ε jitter). ``patience = 0`` disables it.
    """

    patience: int = 0
    min_rel_improvement: float = 1e-3
    start: float = 0.75

    def __post_init__(self):
        if self.patience < 0:
            raise setting_error(self, "patience", "an integer >= 0 steps (0 = off)")
        if not 0.0 <= self.min_rel_improvement < 1.0:
            raise setting_error(self, "min_rel_improvement", "a fraction in [0, 1)")
        if not 0.0 <= self.start <= 1.0:
            raise setting_error(self, "start", "a fraction of the run in [0, 1]")

    def should_stop(self, history: list[list[float]], t: float) -> bool:
        p = self.patience
        if p <= 0 or t < self.start or len(history) <= p:
            return False
        before = [min(col) for col in zip(*history[:-p])]
        recent = [min(col) for col in zip(*history[-p:])]
        return all(r > b * (1.0 - self.min_rel_improvement) for b, r in zip(before, recent))


# ----------------------------------------------------------------------------------------------------------------------
# The loop


@dataclass
class OptimResult:
    """What :func:`optimize` returns.

    Attributes:
        variables: the optimised tensors (detached, same keys as given, without ε).
        history: per step, the list of per-sample losses (``history[step][i]``).
        steps_run: number of optimisation steps actually run.
        stopped_early: True when early stopping ended the loop.
    """

    variables: dict[str, torch.Tensor]
    history: list[list[float]] = field(default_factory=list)
    steps_run: int = 0
    stopped_early: bool = False


Closure = Callable[[dict[str, torch.Tensor], int, int], "tuple[torch.Tensor, torch.Tensor | None]"]


def optimize(variables: Mapping[str, torch.Tensor], closure: Closure, *, steps: int, lr: float = 0.1,
             lr_rampup: float = 0.05, lr_rampdown: float = 0.25, betas=(0.9, 0.999),
             perturb: Mapping[str, float | torch.Tensor] | None = None, noise_factor: float = 0.05,
             noise_ramp: float = 0.75, seeds: Sequence[int] | None = None,
             grad_mask: Mapping[str, torch.Tensor] | None = None,
             penalty: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None,
             post_step: Callable[[dict[str, torch.Tensor]], None] | None = None,
             callback: ProgressCallback | None = None, preview_every: int = 0,
             early_stopping: EarlyStopping | None = None) -> OptimResult:
    """Minimise ``closure(vars)`` (+ ``penalty(vars)``) over ``variables`` with Adam and the reference schedules.

    Args:
        variables: ``{name: tensor [B, ...]}`` initial values; they are cloned (never modified), so inference
            tensors are fine. Dim 0 must be the batch of independent problems for every variable.
        closure: ``closure(vars, step, steps) -> (loss [B], image [B, 3, H, W] or None)``; ``vars`` holds the
            variables with ε already added to those named in ``perturb``. The image is used for previews only.
        steps: number of Adam steps (>= 1).
        lr, lr_rampup, lr_rampdown: see :func:`lr_at`. ``betas``: Adam betas.
        perturb: ``{name: scale}`` variables that get latent noise ε with σ = :func:`noise_sigma_at` (scale, ...);
            scale is a float or a tensor broadcastable to the variable (e.g. per-sample ``[B, 1, 1]``).
        noise_factor, noise_ramp: ε schedule (reference 0.05 / 0.75).
        seeds: per-sample seeds of the ε draws (see :func:`sample_seeds`); required when ``perturb`` is given.
        grad_mask: ``{name: mask}`` multiplied into that variable's gradient before each step (e.g. LSO optimises
            only some W+ rows). Adam then sees zero gradients there, so masked entries stay exactly put.
        penalty: ``penalty(vars) -> [B]`` added to the closure's loss, computed on the variables **without** ε (e.g.
            LSO's ``λ_reg ||w_opt||²``).
        post_step: called under ``no_grad`` with the variables after every Adam step (e.g. noise normalisation).
        callback: ``callback(step, steps, preview)`` after every step (``step`` counts completed steps, 1..steps);
            ``preview`` is the detached image every ``preview_every`` steps and at the last step, else None.
            Raising from it cancels the run: the exception propagates and nothing is left behind.
        preview_every: preview period in steps (0 = never).
        early_stopping: optional :class:`EarlyStopping`.

    Returns:
        :class:`OptimResult` with detached final variables (without ε) and the loss history.
    """
    if not isinstance(steps, int) or steps < 1:
        raise InvalidSettingError(f"steps must be an integer >= 1, got {steps!r}")
    if not variables:
        raise InvalidSettingError("optimize() needs at least one variable to optimise")
    perturb = dict(perturb or {})
    unknown = set(perturb) - set(variables)
    if unknown:
        raise KeyError(f"perturb names {sorted(unknown)} are not variables (variables: {sorted(variables)})")
    if perturb and seeds is None:
        raise InvalidSettingError("optimize(perturb=...) needs per-sample seeds for the latent-noise draws")

    with grad_context(), BufferPool():  # activation buffers reused across steps, dropped at the end (CPU)
        params = {k: thaw(v).requires_grad_(True) for k, v in variables.items()}
        masks = {k: thaw(m) for k, m in (grad_mask or {}).items()}
        gens = make_generators(seeds) if perturb else []
        opt = torch.optim.Adam(list(params.values()), lr=lr, betas=tuple(betas))
        history: list[list[float]] = []
        stopped = False
        try:
            for step in range(steps):
                t = step / steps
                for group in opt.param_groups:
                    group["lr"] = lr_at(t, lr, lr_rampup, lr_rampdown)
                inputs = dict(params)
                sigma = noise_sigma_at(t, 1.0, noise_factor, noise_ramp)
                for name, scale in perturb.items():
                    p = params[name]
                    if sigma > 0:
                        eps = randn_per_sample(p.shape[1:], gens, device=p.device, dtype=p.dtype)  # like p
                        inputs[name] = p + eps * (sigma * scale)
                loss, image = closure(inputs, step, steps)
                if loss.ndim != 1:
                    raise ShapeError(f"the closure must return a per-sample loss of shape [B], got {tuple(loss.shape)}")
                check_finite_loss(loss, params, step, steps)  # NaN/inf: stop with the step and the cause
                if penalty is not None:
                    loss = loss + penalty(params)
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                for name, m in masks.items():
                    if params[name].grad is not None:
                        params[name].grad.mul_(m)
                opt.step()
                check_finite_variables(params, step + 1, steps, opt.param_groups[0]["lr"])
                if post_step is not None:
                    with torch.no_grad():
                        post_step(params)
                history.append([float(x) for x in loss.detach().float().cpu()])
                done = step + 1
                if callback is not None:
                    want = preview_every > 0 and (done % preview_every == 0 or done == steps)
                    preview = image.detach().clone() if (want and image is not None) else None
                    callback(done, steps, preview)
                if early_stopping is not None and early_stopping.should_stop(history, done / steps):
                    log.info("early stop after %d of %d steps (loss stalled)", done, steps)
                    stopped = True
                    break
            out = {k: p.detach().clone() for k, p in params.items()}
        finally:
            # Cancellation or error: drop the graph, the grads and Adam's state so nothing outlives the call.
            for p in params.values():
                p.grad = None
            opt.state.clear()
    return OptimResult(variables=out, history=history, steps_run=len(history), stopped_early=stopped)


# ----------------------------------------------------------------------------------------------------------------------
# Set-up shared by invert() and local_style_optimize()


def placement(module: torch.nn.Module, device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """``(device, dtype)`` a loop runs ``module`` in: the given ones, else those of its first parameter."""
    p0 = next(module.parameters())
    return (p0.device if device is None else torch.device(device)), (p0.dtype if dtype is None else dtype)


def init_generators(seeds: Sequence[int], salt: int) -> list[torch.Generator]:
    """Per-sample generators of an initialisation, derived from the loop's ``seeds`` (the ε streams) with a
    ``salt`` that keeps the two streams apart."""
    return make_generators([(int(s) * 1_000_003 + salt) % 2**63 for s in seeds])


def loop_settings(config, *, lr: float, noise_factor: float) -> dict:
    """The :func:`optimize` keywords every loop config carries (``steps``, schedules, ``betas``, ``noise_ramp``,
    ``preview_every``, noise-map normalisation), with the loop's own ``lr`` and ε ``noise_factor``."""
    return dict(steps=config.steps, lr=lr, lr_rampup=config.lr_rampup, lr_rampdown=config.lr_rampdown,
                betas=config.betas, noise_factor=noise_factor, noise_ramp=config.noise_ramp,
                preview_every=config.preview_every,
                post_step=normalize_noise_maps_ if config.normalize_noise else None)  # no-op without noise maps


def precision_closure(plan, render: Callable, score: Callable) -> Closure:
    """The :func:`optimize` closure for a :func:`hrinv.perf.precision_plan`: ``img = render(vars, force_fp32)``
    under the generator's autocast, ``score(img, vars) -> [B]`` under the loss's, with fp16 loss scaling around
    both."""
    def closure(v, step, steps):
        plan.guard.update()  # the previous step's overflow check (fp16 loss scaling only)
        v = {k: plan.guard.enter(t) for k, t in v.items()}
        with plan.generator_context():
            img = render(v, plan.force_fp32)
        with plan.loss_context():
            total = score(img, v)
        return plan.guard.exit(total), img

    return closure


def noise_variables(variables: Mapping[str, torch.Tensor]) -> list[str]:
    """Layer names of the ``"noise.<layer>"`` variables."""
    return [k[len("noise."):] for k in variables if k.startswith("noise.")]


def synthesis_renderer(G, variables: Mapping[str, torch.Tensor], dtype, shape, force_fp32: bool,
                       fixed_noise: Mapping[str, torch.Tensor] | None = None, render_tile: int | None = None) -> Callable:
    """``render(vars, force_fp32=force_fp32) -> [B, 3, H, W]`` through a StyleGAN2-style ``G.synthesis``: W+ codes
    from ``vars["ws"]`` (one row is repeated to ``G.num_ws``), noise maps from the ``"noise.*"`` variables, else
    ``fixed_noise``, else G's constant buffers; ``shape`` is the INR head's output size (None = native), rendered
    in checkpointed tiles of ``render_tile`` px when given."""
    names = noise_variables(variables)
    tiled = {} if render_tile is None else {"render_tile": render_tile}

    def render(v, force_fp32=force_fp32):
        ws = v["ws"] if v["ws"].shape[1] == G.num_ws else v["ws"].expand(-1, G.num_ws, -1)  # [B, num_ws, w_dim]
        noise = {n: v["noise." + n].to(dtype) for n in names} or None
        if noise is None and fixed_noise is not None:
            noise = {n: t.to(dtype) for n, t in fixed_noise.items()}
        return G.synthesis(ws.to(dtype), noise_mode="const", noise=noise, shape=shape, force_fp32=force_fp32,
                           **tiled)

    return render


def history_tensor(result: OptimResult, batch: int) -> torch.Tensor:
    """The loss history of ``result`` as ``[steps_run, batch]`` float32."""
    return torch.tensor(result.history, dtype=torch.float32).reshape(result.steps_run, batch)


def fingerprint(G) -> str:
    """``G.fingerprint()`` when the generator has one, else ``""`` (stored with a latent)."""
    return G.fingerprint() if hasattr(G, "fingerprint") else ""
