"""Speed and memory switches shared by the loops: reduced precision, loss scaling, memory-saving modes.

Nothing here runs at import (no compile, no device query); every function is cheap and side-effect free unless its
name says otherwise. See docs/performance.md for the measured effect of each switch.

Precision (``precision=`` of :class:`~hrinv.inversion.InversionConfig` / ``LSOConfig``, the nodes and the CLI):

* ``"fp32"``: everything in float32 (the reference; the default).
* ``"bf16"``: the generator and the VGG loss run under ``torch.autocast(dtype=torch.bfloat16)`` (convolutions and
  matmuls in bf16; the demodulation coefficients, the loss total and the optimised variables in fp32), with the
  frozen weights cast once per loop (:class:`ComputeWeights`) and, on the CPU, channels_last convolutions. On a CPU
  with AMX this measured 3-4x faster than fp32 per 256^2 inversion step (docs/performance.md); without
  AVX512-BF16/AMX it is emulated and far slower (about 90x measured on an AVX2-only CPU; a warning says so).
* ``"fp16"``: float16 autocast with gradient scaling (:class:`GradScaleGuard`); meant for CUDA GPUs.
* ``"auto"``: bf16 on a CUDA GPU that supports it, else fp16 on CUDA; fp32 on the CPU (see :func:`resolve_precision`
  for why the CPU stays fp32).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging

import torch

__all__ = [
    "PRECISIONS",
    "ComputeWeights",
    "GradScaleGuard",
    "MemoryPlan",
    "PrecisionPlan",
    "active_weights",
    "autocast",
    "autocast_dtype",
    "cpu_supports_bf16",
    "free_memory_bytes",
    "frozen_on",
    "plan_memory",
    "precision_plan",
    "resolve_precision",
]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16", "auto")


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 dot products (AVX512-BF16 or AMX-BF16; Linux ``/proc/cpuinfo`` flags)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    return False


def _check(precision) -> str:
    from .errors import InvalidSettingError

    if not isinstance(precision, str) or precision.lower() not in PRECISIONS:
        raise InvalidSettingError(f"precision must be one of {PRECISIONS}, got {precision!r}; 'fp32' is the exact "
                                  f"reference, 'auto' picks bf16/fp16 on a GPU")
    return precision.lower()


def resolve_precision(precision: str, device) -> torch.dtype:
    """The compute dtype that ``precision`` means on ``device``.

    ``"auto"`` gives bf16 on CUDA devices that support it (fp16 on older ones) and fp32 on the CPU and other devices.
    bf16 on the CPU is 3-4x faster than fp32 on a CPU with AMX (256^2 step, docs/performance.md) and keeps the
    identity, but the 1000-step quality experiment (``benchmarks/bf16_quality.py``, real faces) ended 0.53 dB PSNR
    under fp32 on average (criterion 0.3 dB), so the CPU default stays exact; choose ``"bf16"`` explicitly.

    Returns:
        ``torch.float32``, ``torch.bfloat16`` or ``torch.float16``.
    """
    p = _check(precision)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if p == "auto":
        if dev.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[p]
    if dtype == torch.bfloat16 and dev.type == "cpu" and not cpu_supports_bf16():
        log.warning("precision='bf16' on a CPU without AVX512-BF16/AMX: it is emulated and far slower than fp32 "
                    "(about 90x on an AVX2-only CPU, docs/performance.md); use 'fp32' or 'auto' on this machine")
    return dtype


def autocast(dtype: torch.dtype, device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``'s type, or a no-op context for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return torch.autocast(device_type=dev.type, dtype=dtype)

def autocast_dtype(device_type: str):
    """The dtype autocast computes in on ``device_type`` ("cpu", "cuda", ...) right now, or None when it is off
    (torch >= 2.4's per-device functions; the older CPU / GPU ones otherwise)."""
    try:
        on = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        on = torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()
    if not on:
        return None
    if hasattr(torch, "get_autocast_dtype"):
        return torch.get_autocast_dtype(device_type)
    return torch.get_autocast_cpu_dtype() if device_type == "cpu" else torch.get_autocast_gpu_dtype()


_ACTIVE_WEIGHTS: contextvars.ContextVar = contextvars.ContextVar("hrinv_compute_weights", default=None)


class ComputeWeights:
    """The frozen weights of one loop in its compute dtype and memory layout, cast once instead of at every call.

    ``torch.autocast`` keeps its casts only for leaf tensors that require grad; the frozen generator and VGG of an
    inversion do not, so without this every convolution re-casts its fp32 weight to bf16 at every step (and
    oneDNN, when the activations are channels_last, re-lays it out too). While :meth:`active` (the precision plan's
    contexts do it), the ops ask :func:`active_weights` for a weight through :meth:`cast` and for quantities derived
    from it (the demodulation's per-filter sum of squares) through :meth:`derived`; both are computed once per
    frozen ``nn.Parameter`` and kept until the plan is dropped (the end of the loop). A tensor that requires grad
    (fine-tuning), a temporary, or a parameter changed in place since (its version counter moved) is never served
    from the cache.

    Attributes:
        dtype: the dtype the convolutions compute in (the autocast dtype; float32 = no cast, only the derived values
            are cached).
        channels_last: keep 4-D weights channels_last. oneDNN then runs the convolutions in NHWC, and their outputs
            (and everything computed from them element-wise) stay NHWC: measured 3-5x faster for bf16 3x3
            convolutions than NCHW on a CPU with AMX (docs/performance.md). Used for bf16 on the CPU.
    """

    def __init__(self, dtype: torch.dtype, channels_last: bool = False):
        self.dtype, self.channels_last = dtype, bool(channels_last)
        self._cache: dict = {}

    @staticmethod
    def _frozen(w) -> bool:
        return isinstance(w, torch.nn.Parameter) and not w.requires_grad

    def _get(self, w, key, make):
        k = (id(w), key)
        hit = self._cache.get(k)
        if hit is not None and hit[0] is w and hit[1] == w._version:
            return hit[2]
        value = make(w.detach())
        self._cache[k] = (w, w._version, value)  # holds w: its id cannot be reused while cached
        return value

    def serves(self, x: torch.Tensor) -> bool:
        """True when a convolution of ``x`` computes in :attr:`dtype` (autocast to it is on for ``x``'s device, or
        ``x`` is already in it without autocast): only then is the cached cast the one the op would make."""
        amp = autocast_dtype(x.device.type)
        return amp == self.dtype if amp is not None else x.dtype == self.dtype

    def cast(self, w):
        """``w`` in :attr:`dtype` (channels_last when asked and 4-D): cached for a frozen parameter, else
        ``w.to(dtype)`` (differentiable). ``None`` stays ``None``."""
        if w is None:
            return None
        if not self._frozen(w):
            return w.to(self.dtype)
        if w.dtype == self.dtype and not (self.channels_last and w.ndim == 4):
            return w

        def make(t):
            t = t.to(self.dtype)
            return t.contiguous(memory_format=torch.channels_last) if self.channels_last and t.ndim == 4 else t

        return self._get(w, "cast", make)

    def derived(self, w, key, fn):
        """``fn(w)``, computed once for a frozen parameter (``key`` names the quantity), else at every call."""
        if not self._frozen(w):
            return fn(w)
        return self._get(w, key, fn)

    @contextlib.contextmanager
    def active(self):
        """Make this cache the one :func:`active_weights` returns (in this thread / context) while inside."""
        token = _ACTIVE_WEIGHTS.set(self)
        try:
            yield self
        finally:
            _ACTIVE_WEIGHTS.reset(token)


def active_weights() -> ComputeWeights | None:
    """The :class:`ComputeWeights` of the loop running in this context (inside a precision plan's generator or loss
    context), else None: the ops then cast as they always did."""
    return _ACTIVE_WEIGHTS.get()


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, guard):
        ctx.scale, ctx.guard = scale, guard
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        g = g * ctx.scale
        if ctx.guard is not None and not bool(torch.isfinite(g).all()):  # overflow inside the scaled region
            ctx.guard._overflow = True
            g = torch.zeros_like(g)  # this step's update comes from Adam's momentum only
        return g, None, None


class GradScaleGuard:
    """Loss scaling that lives inside the autograd graph, so loss values and the optimiser stay untouched.

    ``inputs = guard.enter(inputs)`` marks where the reduced-precision region starts (gradients leaving it are
    divided by the scale) and ``loss = guard.exit(loss)`` where it ends (gradients entering it are multiplied by the
    scale). Gradients inside the region are therefore ``scale`` times larger, which keeps fp16 gradients out of the
    subnormal range. A gradient that overflowed is replaced by zeros on its way out (so the optimiser never sees
    inf/nan) and the next :meth:`update` halves the scale; it doubles after ``growth_interval`` good steps.
    With ``enabled=False`` everything is the identity.
    """

    def __init__(self, enabled: bool, init_scale: float = 2.0 ** 12, growth_interval: int = 200):
        self.enabled = bool(enabled)
        self.scale = float(init_scale) if enabled else 1.0
        self.growth_interval = int(growth_interval)
        self._good = 0
        self.skipped = 0

    def enter(self, x: torch.Tensor) -> torch.Tensor:
        """Mark a variable entering the scaled region (its gradient is unscaled and checked on the way out)."""
        if self.enabled and x.requires_grad:
            self._pending = True
            return _ScaleGrad.apply(x, 1.0 / self.scale, self)
        return x

    def exit(self, x: torch.Tensor) -> torch.Tensor:
        """Mark the loss leaving the scaled region; call :meth:`update` once per step after backward."""
        return _ScaleGrad.apply(x, self.scale, None) if self.enabled and x.requires_grad else x

    _overflow = False
    _pending = False

    def update(self) -> bool:
        """After backward: adapt the scale; False when this step overflowed (its gradients were zeroed)."""
        if not self.enabled or not self._pending:
            return True
        ok = not self._overflow
        self._overflow = self._pending = False
        if ok:
            self._good += 1
            if self._good >= self.growth_interval:
                self.scale, self._good = min(self.scale * 2.0, 2.0 ** 24), 0
        else:
            self.scale, self._good = max(self.scale / 2.0, 1.0), 0
            self.skipped += 1
            log.info("fp16 gradient overflow: loss scale lowered to %g", self.scale)
        return ok


class PrecisionPlan:
    """How one loop runs for a ``precision`` setting (see :func:`precision_plan`).

    Attributes:
        name: the resolved setting, ``"fp32" | "bf16" | "fp16"``.
        dtype: compute dtype.
        force_fp32: the ``force_fp32`` to pass to the synthesis (False for fp16: NVIDIA's per-block fp16, the
            ``num_fp16_res`` highest resolutions in fp16 with their pre-normalisation and ``conv_clamp``).
        guard: :class:`GradScaleGuard` (enabled for fp16 only).
        weights: :class:`ComputeWeights`, the frozen weights cast once for this loop (channels_last for bf16 on
            the CPU).
    """

    def __init__(self, name, dtype, device, force_fp32, guard):
        self.name, self.dtype, self.device, self.force_fp32, self.guard = name, dtype, device, force_fp32, guard
        dev = torch.device(device) if device is not None else torch.device("cpu")
        # bf16 on the CPU: weights (hence activations) channels_last, oneDNN's fast layout for bf16 (AMX/AVX512-BF16)
        self.weights = ComputeWeights(dtype, channels_last=(dtype == torch.bfloat16 and dev.type == "cpu"))

    @contextlib.contextmanager
    def _context(self, amp: bool):
        with (autocast(self.dtype, self.device) if amp else contextlib.nullcontext()), self.weights.active():
            yield

    def generator_context(self):
        """Autocast for the synthesis: bf16 everywhere; fp16 is per-block (no autocast) when the generator has
        ``num_fp16_res > 0`` blocks, else autocast fp16. The frozen weights are cast once per loop
        (:attr:`weights`, a :class:`ComputeWeights`)."""
        return self._context(not (self.name == "fp16" and not self.force_fp32))

    def loss_context(self):
        """Autocast for the VGG loss, with the same per-loop weight casts."""
        return self._context(True)

    def __repr__(self):
        return f"PrecisionPlan({self.name}, force_fp32={self.force_fp32}, loss_scaling={self.guard.enabled})"


def precision_plan(precision: str, device, G=None, force_fp32: bool = True) -> PrecisionPlan:
    """Resolve ``precision`` for a loop on ``device`` with generator ``G``.

    ``force_fp32`` is the config's own flag; it is kept for fp32/bf16. For fp16 a generator with ``num_fp16_res > 0``
    runs its fp16 blocks natively (``force_fp32=False``), others run under fp16 autocast; the loss always runs under
    autocast, and a :class:`GradScaleGuard` scales gradients.
    """
    dtype = resolve_precision(precision, device)
    name = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
    ff32 = force_fp32
    if name == "fp16":
        nfp16 = int(getattr(getattr(G, "synthesis", None), "num_fp16_res", 0) or 0)
        ff32 = nfp16 == 0
    return PrecisionPlan(name, dtype, device, ff32, GradScaleGuard(name == "fp16"))


def frozen_on(module: torch.nn.Module, device, dtype=None) -> torch.nn.Module:
    """:func:`hrinv.optim.frozen` (the one implementation): ``module`` itself when it can be used read-only on
    ``device`` (and ``dtype``), else a frozen deep copy there."""
    from .optim import frozen

    return frozen(module, device, dtype)


# ----------------------------------------------------------------------------------------------------------------------
# Memory


def free_memory_bytes(device) -> int:
    """Free memory on ``device``: CUDA free bytes (``torch.cuda.mem_get_info``) or, on the CPU, ``MemAvailable``
    from /proc/meminfo (falls back to 8 GiB when unknown)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


# Bytes that one input pixel of the VGG16 trunk costs, per sample, when the activations up to conv5_3 are kept for
# backward in fp32 (conv outputs + ReLU outputs + pools, counted from the layer table), and with checkpointing (the
# tap outputs, counted); each count times a factor calibrated on measured CPU peaks of one inversion step
# (benchmarks/bench_memory.py, see docs/performance.md): config-f 1024^2 without memory saving 4.89 GiB, with VGG
# checkpointing 3.76 GiB; the bundled 64 px G_s through its INR head at 912 x 1216, INR untiled and no memory saving
# 4.56 GiB, INR render tiles + VGG checkpointing 2.37 GiB at 912 x 1216 and 5.24 GiB at 1368 x 1824 (2.22 KB per
# extra pixel: the checkpointing factor). The counts miss the loss's temporaries and, with checkpointing, the
# full-resolution segment recomputed in backward with its gradients (about 2.15x the count).
_VGG_BYTES_PER_PX = 4 * (2 * 64 * 2 + 64 / 4 + (2 * 128 * 2 + 128 / 4) / 4 + (3 * 256 * 2 + 256 / 4) / 16
                         + (3 * 512 * 2 + 512 / 4) / 64 + (3 * 512 * 2) / 256 + 3) * 1.4
_VGG_CKPT_BYTES_PER_PX = 4 * (64 * 3 + 128 / 4 + 256 / 16 + 512 / 64 + 512 / 256 + 3) * 2.15
# The target's tap features, kept at full size in every mode (counted in the two constants above; VGG tiles keep them
# too, next to one tile's activations).
_VGG_TARGET_BYTES_PER_PX = 4 * (64 + 128 / 4 + 256 / 16 + 512 / 64 + 512 / 256)
# Generator synthesis with grads, per output pixel per sample (the last two blocks dominate: 32 / 64 channels, about
# ten saved activations each): counted; with the VGG factors above it gives 5.06 / 4.05 GiB for the 1024^2 peaks
# measured at 4.89 / 3.76 GiB (a factor 1.4 here, used before, had absorbed the VGG's missing temporaries).
_GEN_BYTES_PER_PX = 4 * (32 * 10 + 64 * 10 / 4 + 12)
# The INR head (64 hidden channels) rendering with grads, per output pixel per sample: measured CPU peak of forward +
# backward of the bundled 64 px G_s's head at 912 x 1216 (1686 B/px). With checkpointed render tiles only one tile of
# that exists at a time, plus about 32 B/px (measured from 1.1 to 4.4 MP at 512 px tiles: the 3-channel pieces, their
# concatenation and its gradient); 48 B/px is kept for the estimate.
_INR_BYTES_PER_PX = 1700
_INR_TILED_BYTES_PER_PX = 48
# With VGG tiles, the full-size fp32 RGB tensors that live next to one tile's activations: the target, the rendered
# prediction and its gradient, the tile crops, their gradients and the loss's copies. Counted as eight 12 B/px images:
# fitted to the measured peak of a 10 MP step (2736 x 3648 through the bundled G_s's head, VGG tiles of 512 + render
# tiles: 7.67 GiB working memory; with one image, 12 B/px, the estimate was 7.0 GiB, 9 % under).
_TILED_IMAGE_BYTES_PER_PX = 8 * 12


class MemoryPlan:
    """The memory-saving modes chosen for one run, and why.

    Attributes:
        checkpoint: recompute VGG segments in backward.
        tile: VGG tile size in pixels (None = untiled).
        render_tile: INR render tile in pixels (None = untiled).
        estimate: estimated peak bytes with these modes; ``budget``: the bytes it had to fit in.
        reason: a one-line explanation (logged).
    """

    def __init__(self, checkpoint=False, tile=None, render_tile=None, estimate=0, budget=0, reason=""):
        self.checkpoint, self.tile, self.render_tile = bool(checkpoint), tile, render_tile
        self.estimate, self.budget, self.reason = int(estimate), int(budget), reason

    def as_dict(self) -> dict:
        return {"checkpoint": self.checkpoint, "tile": self.tile, "render_tile": self.render_tile,
                "estimate_gib": round(self.estimate / 2 ** 30, 2), "budget_gib": round(self.budget / 2 ** 30, 2),
                "reason": self.reason}

    def __repr__(self):
        return f"MemoryPlan({self.as_dict()})"


def plan_memory(height: int, width: int, batch: int = 1, *, device=None, free_bytes: int | None = None,
                dtype: torch.dtype = torch.float32, headroom: float = 0.8, mode: str = "auto", inr: bool | None = None,
                native: int | None = None) -> MemoryPlan:
    """Choose the memory-saving modes of an inversion at ``height x width`` from the free memory.

    Order of preference (fastest first): nothing, VGG checkpointing, VGG tiles of 512 / 256 px (each checkpointed).
    For a target rendered through the INR head, the render runs in checkpointed 512 px tiles (cheap: the head is
    about 3 % of the VGG cost per pixel) whenever the untiled render would not fit next to the untiled loss.

    Args:
        height, width: target size (the loss runs at this size).
        batch: samples optimised together.
        device: where the run happens (its free memory is read when ``free_bytes`` is None).
        free_bytes: override the free memory (tests, or a budget such as 24 GiB).
        dtype: compute dtype (bf16/fp16 halve the activation estimate).
        headroom: fraction of the free memory the plan may use.
        mode: ``"auto"`` or a forced mode: ``"none"``, ``"checkpoint"``, ``"tile"`` (VGG tiles of 512 px).
        inr: the target is rendered through the INR head (``G.synthesis(..., shape=(H, W))``); ``None`` assumes so
            when a side exceeds 1024 px.
        native: the generator's own resolution when ``inr`` (default 1024): its synthesis runs at that size.

    Returns:
        :class:`MemoryPlan`.
    """
    from .errors import InvalidSettingError

    if mode not in ("auto", "none", "checkpoint", "tile"):
        raise InvalidSettingError(f"memory mode must be 'auto', 'none', 'checkpoint' or 'tile', got {mode!r}")
    px = int(height) * int(width) * int(batch)
    scale = 0.5 if dtype in (torch.bfloat16, torch.float16) else 1.0
    budget = int((free_memory_bytes(device) if free_bytes is None else int(free_bytes)) * headroom)
    if inr is None:
        inr = max(int(height), int(width)) > 1024
    full = _VGG_BYTES_PER_PX * px * scale
    ckpt = _VGG_CKPT_BYTES_PER_PX * px * scale
    if inr:
        native_px = int(native or 1024) ** 2 * int(batch)
        gen = (_GEN_BYTES_PER_PX * native_px + _INR_BYTES_PER_PX * px) * scale
    else:
        gen = _GEN_BYTES_PER_PX * px * scale

    def tiled(t):  # one tile (+ 96 px halo) of activations + the kept full-size target features + image-sized tensors
        return (_VGG_BYTES_PER_PX * batch * (t + 192) ** 2 + _VGG_TARGET_BYTES_PER_PX * px) * scale \
            + _TILED_IMAGE_BYTES_PER_PX * px

    if mode == "none":
        return MemoryPlan(False, None, None, gen + full, budget, "forced: no memory saving")
    if mode == "checkpoint":
        return MemoryPlan(True, None, None, gen + ckpt, budget, "forced: VGG checkpointing")
    if mode == "tile":
        return MemoryPlan(False, 512, None, gen + tiled(512), budget, "forced: VGG tiles of 512 px")
    render_tile = None
    if inr and gen + full > budget and px > 512 * 512 * batch:
        render_tile = 512
        gen = (_GEN_BYTES_PER_PX * native_px + _INR_BYTES_PER_PX * 512 * 512 * batch) * scale \
            + _INR_TILED_BYTES_PER_PX * px
    for ck, tile, est, why in ((False, None, gen + full, "fits without memory saving"),
                               (True, None, gen + ckpt, "VGG checkpointing"),
                               (False, 512, gen + tiled(512), "VGG tiles of 512 px"),
                               (False, 256, gen + tiled(256), "VGG tiles of 256 px")):
        if est <= budget:
            reason = f"{why}: estimated {est / 2**30:.1f} GiB of {budget / 2**30:.1f} GiB usable"
            return MemoryPlan(ck, tile, render_tile, est, budget, reason)
    est = gen + tiled(256)
    return MemoryPlan(False, 256, render_tile, est, budget,
                      f"does not fit: estimated {est / 2**30:.1f} GiB of {budget / 2**30:.1f} GiB usable even with "
                      f"256 px tiles; expect swapping or an out-of-memory error (use a smaller batch or size)")
