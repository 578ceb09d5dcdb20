"""HRInversion perceptual loss: VGG16 conv features at full resolution (paper Eq. 3 / 4).

``d_conv(x̂, x) = Σ_l ||λ_l c_l [φ_l(x̂) − φ_l(x)]||²`` summed over all channels and positions (the authors'
``mse_loss(reduction='sum')`` over λ-scaled flattened features), per sample, with φ_l the pre-ReLU outputs of
conv1_2, conv2_2, conv3_3, conv4_3, conv5_3 (torchvision ops 2, 7, 14, 21, 28) and **no down-sampling**. ``d_h`` uses
only taps 21 and 28. ``c_l`` is the calibration of the weight set: 1 for torchvision/timm weights; for the Caffe
weights one factor for all taps by default (the authors' layer balance kept), per-tap with ``calibration="rms"``
(see ``docs/perceptual-loss.md``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from hrinv.bufferpool import pooled_empty
from hrinv.errors import InvalidSettingError, ShapeError
from hrinv.losses.vgg import CONV_INDICES, KNOWN_CALIBRATIONS, RELU_INDICES, VGG16Conv, tap_reduction

__all__ = [
    "CALIBRATIONS",
    "KNOWN_CALIBRATIONS",
    "PRESETS",
    "PerceptualLoss",
    "TargetFeatures",
    "measure_calibration",
    "tile_halo",
    "check_calibration",
]

log = logging.getLogger(__name__)

CALIBRATIONS = ("auto", "rms", "global", "none")  # the named settings of PerceptualLoss(calibration=...)


def check_calibration(cal, who: str = "calibration"):
    """``cal`` when it is a valid ``calibration=`` setting (a name of :data:`CALIBRATIONS`, None or
    ``{op index: scale}``), else :class:`~hrinv.errors.InvalidSettingError` saying what is accepted."""
    if cal is None or isinstance(cal, dict) or (isinstance(cal, str) and cal in CALIBRATIONS):
        return cal
    raise InvalidSettingError(f"{who} must be one of {', '.join(repr(c) for c in CALIBRATIONS)}, None or "
                              f"{{op index: scale}}, got {cal!r}")

# Published λ sets (the HRInversion paper and its released configurations). Keys are conv op indices; the kind says whether the tap is the conv
# output itself ("conv") or the ReLU right after it ("relu", op index + 1).
PRESETS = {
    "vgg16_conv_1024": ("conv", {2: 2e-4, 7: 1e-4, 14: 1e-4, 21: 2e-4, 28: 5e-4}),  # HRInversion d_conv
    "vgg16_conv_256": ("conv", {2: 1e-3, 7: 6e-4, 14: 5e-4, 21: 5e-4, 28: 1e-3}),
    "vgg16_relu_1024": ("relu", {2: 6e-4, 7: 4e-4, 14: 4e-4, 21: 7e-4, 28: 7e-3}),
    "vgg16_relu_256": ("relu", {2: 1e-3, 7: 1e-3, 14: 1e-3, 21: 2e-3, 28: 1e-2}),
    "high": ("conv", {21: 2e-4, 28: 5e-4}),  # HRInversion d_h (Eq. 4), used by LSO
    "relu_high": ("relu", {21: 7e-4, 28: 7e-3}),
}
_HIGH_TAPS = (21, 28)

class _SquaredDistance(torch.autograd.Function):
    """``((f.float() - t.float()) * scale).square().sum(dim=(1, 2, 3))`` with bitwise the values and gradient that
    autograd gives for that chain (the same kernels in the same order), but its activation-sized temporaries (the
    difference, its square, the gradient) go into pooled buffers inside an optimisation loop on the CPU
    (:mod:`hrinv.bufferpool`), and backward builds the gradient in one buffer instead of three fresh ones."""

    @staticmethod
    def forward(ctx, f, t, scale):
        ff, tf = f.float(), t.float()
        shape = torch.broadcast_shapes(ff.shape, tf.shape)
        d = pooled_empty(shape, torch.float32, f.device)
        d = ff - tf if d is None else torch.sub(ff, tf, out=d)
        d.mul_(scale)  # [B, C, h, w]
        sq = pooled_empty(shape, torch.float32, f.device)
        sq = d.square() if sq is None else torch.pow(d, 2, out=sq)  # what square() runs
        ctx.save_for_backward(d)
        ctx.scale, ctx.shapes, ctx.dtypes = scale, (f.shape, t.shape), (f.dtype, t.dtype)
        return sq.sum(dim=(1, 2, 3))  # [B]

    @staticmethod
    def backward(ctx, grad):
        (d,) = ctx.saved_tensors
        # autograd's chain: sum -> expand; pow(2) -> grad * (2 * d); mul_(scale) -> * scale; sub -> identity
        g = pooled_empty(d.shape, d.dtype, d.device)
        g = d * 2 if g is None else torch.mul(d, 2, out=g)
        g.mul_(grad.reshape(-1, 1, 1, 1)).mul_(ctx.scale)  # (2 d) * grad == grad * (2 d) bitwise (commutative)
        grad_f = grad_t = None
        if ctx.needs_input_grad[1]:  # target features are constants in the loops; a differentiable t is honoured
            grad_t = (-g).sum_to_size(ctx.shapes[1]).to(ctx.dtypes[1])
        if ctx.needs_input_grad[0]:
            grad_f = g.sum_to_size(ctx.shapes[0]).to(ctx.dtypes[0])  # sum_to_size: only when f was broadcast
        return grad_f, grad_t, None


@dataclass
class TargetFeatures:
    """Features of a target image, computed once (no grad) by :meth:`PerceptualLoss.target`.

    Attributes:
        feats: ``{op index: tensor [B, C, h, w]}`` raw VGG features (not yet scaled by λ·c).
        size: (H, W) of the target image.
        config: the loss configuration they were computed for (checked on use).
    """

    feats: dict
    size: tuple
    config: tuple = field(repr=False)
    _cast: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def batch(self) -> int:
        return next(iter(self.feats.values())).shape[0]

    def feats_in(self, dtype: torch.dtype, channels_last: bool = False) -> dict:
        """:attr:`feats` in ``dtype`` (and channels_last), cast once and kept: a bf16 loop compares its features
        with these at every step, element-wise in the same layout."""
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        if all(v.dtype == dtype and v.is_contiguous(memory_format=fmt) for v in self.feats.values()):
            return self.feats
        key = (dtype, fmt)
        if key not in self._cast:
            self._cast[key] = {k: v.to(dtype).contiguous(memory_format=fmt) for k, v in self.feats.items()}
        return self._cast[key]

    def to(self, *args, **kwargs) -> TargetFeatures:
        return TargetFeatures({k: v.to(*args, **kwargs) for k, v in self.feats.items()}, self.size, self.config)


def _rf_margin(last_op: int) -> int:
    """Receptive-field margin (input pixels, one side) of the output of op ``last_op``, for windows aligned to the
    pooling grid: each 3×3 conv at reduction r widens it by r; an aligned 2×2 pool only merges whole cells."""
    return sum(tap_reduction(i - 1) for i in range(last_op + 1) if i in CONV_INDICES)


def tile_halo(last_op: int) -> int:
    """Smallest halo (input pixels) that makes tiling exact up to op ``last_op``: the receptive-field margin rounded
    up to the pooling alignment. 96 for conv5_3 (op 28; margin 90), 20 for conv3_3 (op 14; margin 18)."""
    align = tap_reduction(last_op)
    return int(math.ceil(_rf_margin(last_op) / align) * align)


_default_halo = tile_halo


class _SquaredDistanceBF16(torch.autograd.Function):
    """``sum_hw (f - t)^2`` per sample and channel, ``[B, C]`` float32, for bf16 features ``f`` (``t`` constant).

    bf16 has fp32's range, so the difference and its square stay in bf16, in the features' layout (NHWC under
    channels_last), with no fp32 copy of the features; the per-channel sums accumulate in fp32 inside the kernel and
    the caller sums the channels in fp32. It keeps only the difference for backward, whose gradient ``2 g d`` is one
    product (autograd's square and subtraction would allocate two or three activation-sized tensors).
    """

    @staticmethod
    def forward(ctx, f, t):
        d = f - t  # [B, C, h, w]
        ctx.save_for_backward(d)
        return d.square().sum(dim=(2, 3)).float()  # [B, C]

    @staticmethod
    def backward(ctx, grad):
        (d,) = ctx.saved_tensors
        return d * (2 * grad).to(d.dtype)[:, :, None, None], None


class PerceptualLoss(nn.Module):
    """The HRInversion VGG16 conv-feature loss, per sample.

    Args:
        vgg: a :class:`VGG16Conv` (from :func:`load_vgg16`). It is frozen (``eval``, ``requires_grad_(False)``).
        layers: ``"conv"`` (Eq. 3, d_conv), ``"high"`` (Eq. 4, d_h: taps 21/28 only), a preset name from
            :data:`PRESETS` (``vgg16_conv_256``, ``vgg16_relu_1024``, ...), or ``{conv op index: λ}``.
        downsample: ``None`` (default, the paper: full resolution); an int ``s`` area-resizes the normalised input to
            ``s × s`` as the reference's ``downsample_size`` (ablation / baseline); a ``(h, w)`` tuple resizes to that.
        taps: ``"conv"`` (pre-ReLU, the paper) or ``"relu"`` (post-ReLU, the CIPS-3D++ variant). ``None``: from the
            preset (``"conv"`` for dicts). With ``layers="conv"``/``"high"`` and ``taps="relu"`` the CIPS-3D++
            ``vgg16_relu_1024`` λ's are used.
        calibration: multipliers applied to the features before λ. ``"auto"`` (default): ``"global"`` when the
            weight set carries known constants (the known caffe weights), else none (torchvision/timm: the paper,
            unchanged). ``"global"``: one factor for all taps (the geometric mean of the five per-tap factors of
            d_conv's taps): it brings the features to the λ's order of magnitude and keeps the network's own,
            i.e. the authors', balance between the layers (error if the weights carry no constants).
            ``"rms"``: the per-tap calibration (unit RMS per tap on real faces at 1024²), which re-weights the
            layers (more conv1_2 and conv5_3; error if the weights carry none). ``"none"``/``None``: raw
            features. ``{op index: scale}``: explicit (e.g. from :func:`measure_calibration`). See
            ``docs/perceptual-loss.md`` for the measurement behind the default.
        checkpoint: recompute VGG segments in backward (``torch.utils.checkpoint``, non-reentrant). Same result,
            less memory.
        tile: process the image in spatial tiles of this many (network-input) pixels, each with a halo and each
            checkpointed, so memory is about one tile's activations. Exact (to float round-off) with the default
            halo.
        tile_halo: override the halo (pixels); smaller than :func:`tile_halo` gives an approximation.

    Shape:
        images: [B, 3, H, W] in [-1, 1], min(H, W) > 32. Output of ``forward``: [B].
    """

    def __init__(self, vgg: VGG16Conv, layers="conv", *, downsample=None, taps=None, calibration="auto",
                 checkpoint: bool = False, tile: int | None = None, tile_halo: int | None = None):
        super().__init__()
        if not isinstance(vgg, VGG16Conv):
            raise InvalidSettingError(f"vgg must be a hrinv.losses.VGG16Conv (from load_vgg16), got "
                                      f"{type(vgg).__name__}")
        if any(p.is_inference() for p in vgg.parameters()):
            raise InvalidSettingError("the VGG parameters are inference tensors (the network was built under "
                                      "torch.inference_mode()), so no gradient can flow through it; build it with "
                                      "load_vgg16(), which is safe under inference mode, or outside inference mode")
        self.vgg = vgg.eval().requires_grad_(False)
        self.kind, self.weights = self._resolve_layers(layers, taps)
        self.ops = {t: (t if self.kind == "conv" else t + 1) for t in self.weights}  # layer -> op index
        self.last_op = max(self.ops.values())
        self.downsample = self._resolve_downsample(downsample)
        self.calibration = self._resolve_calibration(calibration)
        self.checkpoint = bool(checkpoint)
        if tile is not None and (int(tile) < 16):
            raise InvalidSettingError(f"tile must be at least 16 pixels, got {tile}")
        align = tap_reduction(self.last_op)
        self.tile = None if tile is None else int(math.ceil(int(tile) / align) * align)
        # a halo that is not a multiple of the pooling alignment would shift the pooling grid: round it up
        self.halo = _default_halo(self.last_op) if tile_halo is None else int(math.ceil(int(tile_halo) / align) * align)
        # effective per-tap multiplier λ_l * c_l
        self.scales = {t: float(self.weights[t]) * float(self.calibration.get(self.ops[t], 1.0)) for t in self.weights}

    # ------------------------------------------------------------------------------------------------------------
    # configuration

    @staticmethod
    def _resolve_layers(layers, taps):
        if taps is not None and taps not in ("conv", "relu"):
            raise InvalidSettingError(f"taps must be 'conv' or 'relu', got {taps!r}")
        if isinstance(layers, dict):
            bad = [k for k in layers if int(k) not in CONV_INDICES]
            if bad or not layers:
                raise InvalidSettingError(f"layers dict keys must be conv op indices {list(CONV_INDICES)} (the tap is "
                                          f"that conv's output, or its ReLU with taps='relu'); got {sorted(layers)}")
            weights = {int(k): float(v) for k, v in sorted(layers.items()) if float(v) != 0.0}  # λ = 0: not computed
            if not weights or any(not math.isfinite(v) or v < 0 for v in weights.values()):
                raise InvalidSettingError(f"layers dict needs at least one finite λ > 0 (and none negative); got "
                                          f"{layers}")
            return taps or "conv", weights
        if layers in ("conv", "high"):
            kind = taps or "conv"
            name = "vgg16_conv_1024" if kind == "conv" else "vgg16_relu_1024"
            w = dict(PRESETS[name][1])
            if layers == "high":
                w = {t: w[t] for t in _HIGH_TAPS}
            return kind, w
        if layers in PRESETS:
            kind, w = PRESETS[layers]
            if taps is not None and taps != kind:
                raise InvalidSettingError(f"preset {layers!r} is defined on {kind} taps; taps={taps!r} contradicts it "
                                 f"(pass a dict of λ's to combine freely)")
            return kind, dict(w)
        raise InvalidSettingError(f"unknown layers {layers!r}; expected 'conv', 'high', one of {sorted(PRESETS)}, or "
                                  f"a dict "
                         f"{{conv op index: λ}}")

    @staticmethod
    def _resolve_downsample(ds):
        if ds is None or ds is False or (isinstance(ds, int) and ds <= 0):
            return None
        if isinstance(ds, int) and ds > 32:
            return (ds, ds)
        if isinstance(ds, (tuple, list)) and len(ds) == 2 and all(isinstance(v, int) and v > 32 for v in ds):
            return (int(ds[0]), int(ds[1]))
        raise InvalidSettingError(f"downsample must be None, an int > 32 or an (h, w) pair of ints > 32 (VGG needs "
                                  f"more than 32 px), got {ds!r}")

    def _resolve_calibration(self, cal) -> dict:
        check_calibration(cal)
        if cal is None or cal == "none":
            return {}
        if isinstance(cal, dict):
            return {int(k): float(v) for k, v in cal.items()}
        known = {int(k): float(v) for k, v in (self.vgg.calibration or {}).items()}
        if not known:
            if cal != "auto":
                raise InvalidSettingError(f"calibration={cal!r} needs measured constants, but these VGG16 weights "
                                          f"carry none (only known weight sets do); pass calibration="
                                          f"measure_calibration(vgg, images) or calibration='none'")
            if self.vgg.convention.name != "torchvision":
                log.warning("VGG16 weights with the %s convention but no known calibration: the paper's λ's assume "
                            "torchvision feature scales; consider measure_calibration()", self.vgg.convention.name)
            return {}
        if cal == "rms":  # per-tap unit RMS: re-weights the layers (selectable, not the default)
            return known
        # "auto" / "global": one factor for every tap keeps the network's own depth profile of activations, i.e.
        # the authors' balance between the λ's (a per-tap RMS scaling measured no clear win on the bundled pair:
        # docs/finetune.md, "Calibration of the caffe VGG16")
        ref = [t if self.kind == "conv" else t + 1 for t in PRESETS["vgg16_conv_1024"][1]]
        g = math.exp(sum(math.log(known[op]) for op in ref) / len(ref))
        return {op: g for op in known}

    @property
    def config(self) -> tuple:
        return (self.kind, tuple(sorted(self.ops.values())), self.downsample, self.vgg.meta.get("fingerprint"))

    def extra_repr(self) -> str:
        return (f"kind={self.kind}, weights={self.weights}, downsample={self.downsample}, "
                f"calibrated={bool(self.calibration)}, checkpoint={self.checkpoint}, tile={self.tile}")

    # ------------------------------------------------------------------------------------------------------------
    # helpers

    @staticmethod
    def _check_image(img, name):
        if not isinstance(img, torch.Tensor):
            raise ShapeError(f"{name}: expected a tensor [B, 3, H, W] in [-1, 1], got {type(img).__name__}")
        if img.ndim != 4 or img.shape[1] != 3:
            raise ShapeError(f"{name}: expected an RGB image batch [B, 3, H, W] in [-1, 1], got shape "
                             f"{tuple(img.shape)}. Convert ComfyUI [B, H, W, C] images with .movedim(-1, 1) * 2 - 1.")
        if not img.is_floating_point():
            raise ShapeError(f"{name}: expected a floating-point image in [-1, 1], got dtype {img.dtype}")
        if min(img.shape[-2:]) <= 32:
            h, w = img.shape[-2:]
            fix = ("the generated image is the limit: use a generator that renders more than 32 px (or one with an "
                   "INR head, rendering at the target's size)" if name == "pred" else
                   "upscale or pad the image so its shorter side is more than 32 px")
            raise ShapeError(f"{name}: the VGG16 loss needs images whose shorter side is more than 32 px (it pools 4-5 "
                             f"times before its deepest tap), got {h}x{w} px; {fix}.")

    def _network_input(self, img):
        x = self.vgg.preprocess(img)  # [B, 3, H, W]
        if self.downsample is not None:
            x = F.interpolate(x, size=self.downsample, mode="area")  # [B, 3, s, s]
        return x

    def _checkpointed_loss(self, x, target: TargetFeatures, m):
        """Loss with the trunk split into segments that end at the taps, each segment (and its tap distance)
        recomputed in backward: only the segment boundaries (the tap outputs) stay alive between forward and
        backward."""
        B, _, H, W = x.shape
        loss = x.new_zeros(B, dtype=torch.float32)
        h, start = x, 0
        for layer, op in sorted(self.ops.items(), key=lambda kv: kv[1]):
            r = tap_reduction(op)
            mk = None if m is None else self._mask_at(m, op, (H // r, W // r))

            def segment(h_in, start=start, op=op, layer=layer, t=target.feats[op], mk=mk):
                out = self.vgg.run(h_in, start, op)  # [B, C, H/r, W/r]
                return out, self._tap_distance(layer, out, t, mk)

            h, dist = _checkpoint(segment, h, use_reentrant=False)
            loss, start = loss + dist, op + 1
        return loss  # [B]

    def _mask_at(self, mask, op, shape, offset=(0, 0)):
        """Mask averaged over each feature cell of op ``op``: [Bm, 1, h, w] (``offset`` in feature cells)."""
        r = tap_reduction(op)
        h, w = shape
        y0, x0 = offset
        m = mask[..., y0 * r:(y0 + h) * r, x0 * r:(x0 + w) * r]  # [Bm, 1, h*r, w*r]
        return F.avg_pool2d(m, r) if r > 1 else m  # [Bm, 1, h, w]

    def _tap_distance(self, layer, f, t, mask):
        if f.dtype == torch.bfloat16 and mask is None and not t.requires_grad:
            return _SquaredDistanceBF16.apply(f, t.to(f.dtype)).sum(dim=1) * self.scales[layer] ** 2  # [B]
        if mask is None:
            return _SquaredDistance.apply(f, t, self.scales[layer])  # [B]
        d = (f.float() - t.float()).mul_(self.scales[layer])  # [B, C, h, w] (in place on a fresh tensor)
        return (d.square() * mask).sum(dim=(1, 2, 3))  # [B]

    def _prep_mask(self, mask, img_size, batch):
        if mask is None:
            return None
        ok = isinstance(mask, torch.Tensor) and mask.ndim == 4 and mask.shape[1] == 1 and mask.shape[0] in (1, batch)
        if not ok:
            raise ShapeError(f"mask: expected [B, 1, H, W] or [1, 1, H, W] with values in 0..1 and B={batch}, got "
                             f"{tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}")
        if tuple(mask.shape[-2:]) != tuple(img_size):
            raise ShapeError(f"mask: spatial size {tuple(mask.shape[-2:])} must equal the image size "
                             f"{tuple(img_size)}")
        m = mask.detach().to(torch.float32, copy=True)  # a normal tensor even if mask is an inference tensor
        if self.downsample is not None:
            m = F.interpolate(m, size=self.downsample, mode="area")
        return m

    # ------------------------------------------------------------------------------------------------------------
    # public API

    @torch.no_grad()
    def target(self, img: torch.Tensor) -> TargetFeatures:
        """Compute the target's features once (no grad).

        Args:
            img: target image in [-1, 1].

        Returns:
            :class:`TargetFeatures` to pass to :meth:`forward` at every step.

        Shape:
            img: [B, 3, H, W] (B = 1 is broadcast against any prediction batch).
        """
        self._check_image(img, "target")
        x = self._network_input(img.detach())
        if self.tile is not None:
            feats = self._tiled_features(x)
        else:
            feats = self.vgg(x, sorted(self.ops.values()))
        return TargetFeatures(feats, tuple(img.shape[-2:]), self.config)

    def forward(self, pred: torch.Tensor, target, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample perceptual distance.

        Args:
            pred: prediction in [-1, 1]; gradients flow to it.
            target: :class:`TargetFeatures` from :meth:`target` (recommended), or a target image.
            mask: optional region weights in 0..1 at the image resolution. Each tap's squared feature difference is
                multiplied by the mask averaged over that feature cell's pooling footprint. No renormalisation: an
                all-ones mask gives exactly the unmasked loss, a half mask about half of it.

        Returns:
            The loss of each sample (sum it before ``backward``).

        Shape:
            pred: [B, 3, H, W]; target: batch 1 or B, same H, W; mask: [B or 1, 1, H, W] -> [B]
        """
        self._check_image(pred, "pred")
        if isinstance(target, torch.Tensor):
            target = self.target(target)
        if not isinstance(target, TargetFeatures):
            raise ShapeError(f"target: expected TargetFeatures from loss.target(img) or an image tensor, got "
                             f"{type(target).__name__}")
        if target.config != self.config:
            raise ShapeError(f"target features were computed by a loss with a different configuration "
                             f"({target.config}) than this one ({self.config}); call this loss's .target(img)")
        if tuple(target.size) != tuple(pred.shape[-2:]):
            raise ShapeError(f"pred size {tuple(pred.shape[-2:])} differs from the target size {tuple(target.size)}; "
                             f"render or resize the prediction to the target's size")
        B = pred.shape[0]
        if target.batch not in (1, B):
            raise ShapeError(f"target batch {target.batch} must be 1 or equal the prediction batch {B}")
        m = self._prep_mask(mask, pred.shape[-2:], B)
        x = self._network_input(pred)  # [B, 3, H', W']
        if self.tile is not None:
            return self._tiled_loss(x, target, m)
        if self.checkpoint and torch.is_grad_enabled():
            return self._checkpointed_loss(x, target, m)
        feats = self.vgg(x, sorted(self.ops.values()))
        loss = pred.new_zeros(B, dtype=torch.float32)
        f0 = next(iter(feats.values()))
        tfeats = target.feats_in(f0.dtype, not f0.is_contiguous() and f0.is_contiguous(
            memory_format=torch.channels_last)) if f0.dtype == torch.bfloat16 else target.feats
        for layer, op in self.ops.items():
            f = feats[op]
            mk = None if m is None else self._mask_at(m, op, f.shape[-2:])
            loss = loss + self._tap_distance(layer, f, tfeats[op], mk)
        return loss  # [B]

    # ------------------------------------------------------------------------------------------------------------
    # tiling

    def _tiles(self, H, W):
        """Yield (core y0, y1, x0, x1) covering [0,H)x[0,W) with aligned boundaries."""
        T = self.tile
        ys = list(range(0, H, T))
        xs = list(range(0, W, T))
        for y0 in ys:
            for x0 in xs:
                yield y0, min(y0 + T, H), x0, min(x0 + T, W)

    def _tile_window(self, core, H, W):
        y0, y1, x0, x1 = core
        ty0, tx0 = max(0, y0 - self.halo), max(0, x0 - self.halo)
        ty1, tx1 = min(H, y1 + self.halo), min(W, x1 + self.halo)
        return ty0, ty1, tx0, tx1

    @staticmethod
    def _core_slices(op, core, window, H, W):
        """Global and tile-local feature index ranges of a tile's core at op ``op``."""
        r = tap_reduction(op)
        y0, y1, x0, x1 = core
        ty0, _, tx0, _ = window
        g = (y0 // r, (y1 // r) if y1 < H else H // r, x0 // r, (x1 // r) if x1 < W else W // r)
        loc = (g[0] - ty0 // r, g[1] - ty0 // r, g[2] - tx0 // r, g[3] - tx0 // r)
        return g, loc

    def _tiled_features(self, x) -> dict:
        B, _, H, W = x.shape
        ops = sorted(self.ops.values())
        out = {}
        for core in self._tiles(H, W):
            win = self._tile_window(core, H, W)
            feats = self.vgg(x[..., win[0]:win[1], win[2]:win[3]], ops)
            for op in ops:
                if op not in out:
                    r = tap_reduction(op)
                    out[op] = x.new_zeros((B, feats[op].shape[1], H // r, W // r), dtype=feats[op].dtype)
                g, loc = self._core_slices(op, core, win, H, W)
                out[op][..., g[0]:g[1], g[2]:g[3]] = feats[op][..., loc[0]:loc[1], loc[2]:loc[3]]
        return out

    def _tiled_loss(self, x, target: TargetFeatures, m):
        B, _, H, W = x.shape
        ops = sorted(self.ops.values())
        loss = x.new_zeros(B, dtype=torch.float32)
        for core in self._tiles(H, W):
            win = self._tile_window(core, H, W)
            pieces = []
            for layer, op in self.ops.items():
                g, loc = self._core_slices(op, core, win, H, W)
                if g[1] <= g[0] or g[3] <= g[2]:
                    continue  # a thin last tile can have no cell at deep taps
                t = target.feats[op][..., g[0]:g[1], g[2]:g[3]]
                mk = None if m is None else self._mask_at(m, op, (g[1] - g[0], g[3] - g[2]), (g[0], g[2]))
                pieces.append((layer, op, loc, t, mk))

            def tile_loss(xt, pieces=pieces):
                feats = self.vgg(xt, ops)
                total = 0.0
                for layer, op, loc, t, mk in pieces:
                    f = feats[op][..., loc[0]:loc[1], loc[2]:loc[3]]
                    total = total + self._tap_distance(layer, f, t, mk)
                return total  # [B]

            xt = x[..., win[0]:win[1], win[2]:win[3]]  # [B, 3, th, tw]
            if torch.is_grad_enabled() and xt.requires_grad:
                loss = loss + _checkpoint(tile_loss, xt, use_reentrant=False)
            else:
                loss = loss + tile_loss(xt)
        return loss  # [B]


# ----------------------------------------------------------------------------------------------------------------
# calibration

@torch.no_grad()
def measure_calibration(vgg: VGG16Conv, images, ops=None, reference: VGG16Conv | None = None) -> dict:
    """Measure per-tap calibration scales of a weight set on reference images.

    For every op, the RMS of its output over all images, channels and positions is measured. Without ``reference``
    the scale is ``1 / rms`` (features normalised to unit RMS on the reference images). With ``reference`` (e.g. the
    torchvision weights, when you have them) it is ``rms_reference / rms``, i.e. the features are brought to the
    reference weight set's scale, which is what the paper's λ's were tuned on.

    Args:
        vgg: the network to calibrate.
        images: iterable of images in [-1, 1], each [B, 3, H, W].
        ops: op indices to measure (default: every conv and every ReLU).
        reference: optional network whose scale to match.

    Returns:
        ``{op index: scale}``.
    """
    ops = sorted(ops or (CONV_INDICES + RELU_INDICES))

    def rms(net):
        acc = {op: 0.0 for op in ops}
        count = {op: 0 for op in ops}
        for img in images:
            feats = net(net.preprocess(img.to(next(net.parameters()).device)), ops)
            for op in ops:
                acc[op] += feats[op].double().square().sum().item()
                count[op] += feats[op].numel()
        return {op: math.sqrt(acc[op] / count[op]) for op in ops}

    images = list(images)
    mine = rms(vgg)
    ref = rms(reference) if reference is not None else {op: 1.0 for op in ops}
    return {op: ref[op] / mine[op] for op in ops}
