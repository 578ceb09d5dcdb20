"""Pure-PyTorch building blocks of the StyleGAN2 generator.

These reproduce the *semantics* of NVIDIA stylegan2-ada-pytorch's ``upfirdn2d``, ``bias_act``, ``conv2d_resample``
and ``modulated_conv2d`` (their reference, non-CUDA code paths), written from the maths with plain ``torch``
operations. Nothing here is compiled, so everything runs on any device and dtype torch supports.

Conventions (as NVIDIA):
    * Filters are 2-D ``[fh, fw]`` tensors made by :func:`setup_filter` (normalised to sum 1).
    * ``padding`` is ``[x0, x1, y0, y1]`` (or one int for all four); negative padding crops.
    * ``flip_weight=True`` means correlation (what ``F.conv2d`` does); ``False`` means true convolution.
"""

import contextlib
import math

import torch
import torch.nn.functional as F

from ..bufferpool import pooled_like
from ..perf import active_weights, autocast_dtype

__all__ = [
    "ACT_GAIN",
    "bias_act",
    "conv2d_resample",
    "downsample2d",
    "modconv_epilogue",
    "modulated_conv2d",
    "normalize_2nd_moment",
    "setup_filter",
    "upfirdn2d",
    "upsample2d",
]

# Default gain applied after each activation so that the output keeps unit variance (NVIDIA ``def_gain``).
ACT_GAIN = {"linear": 1.0, "relu": math.sqrt(2), "lrelu": math.sqrt(2), "tanh": 1.0, "sigmoid": 1.0,
            "elu": 1.0, "selu": 1.0, "softplus": 1.0, "swish": math.sqrt(2)}


def setup_filter(f, device=None, dtype=None, normalize=True):
    """Build a 2-D FIR filter: separable outer product for a 1-D list, normalised to sum 1.

    Args:
        f: Sequence or tensor of taps (1-D) or a 2-D kernel. ``None`` means ``[1]``.
        device, dtype: Of the returned tensor (default CPU / float32).
        normalize: Divide by the sum of the taps.

    Returns:
        Tensor ``[fh, fw]``.
    """
    if f is None:
        f = [1]
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim == 1:
        f = f[:, None] * f[None, :]  # [fh, fw]
    if f.ndim != 2:
        raise ValueError(f"setup_filter: expected a 1-D or 2-D filter, got shape {tuple(f.shape)}")
    if normalize:
        f = f / f.sum()
    return f.to(device=device, dtype=dtype if dtype is not None else torch.float32)


def _parse_padding(padding):
    if isinstance(padding, int):
        return [padding] * 4
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        return [padding[0], padding[0], padding[1], padding[1]]
    if len(padding) != 4:
        raise ValueError(f"padding must be an int, [px, py] or [x0, x1, y0, y1]; got {padding}")
    return padding


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Upsample (zero insertion), pad, FIR-filter and downsample a batch of 2-D images.

    Args:
        x: Input ``[N, C, H, W]``.
        f: Filter ``[fh, fw]`` or ``None`` (identity).
        up, down: Integer factors (same in x and y).
        padding: ``int`` or ``[x0, x1, y0, y1]``, applied after upsampling; negative values crop.
        flip_filter: ``False`` = convolution (the filter is flipped, as in signal processing), ``True`` = correlation.
        gain: Overall scale applied to the filter.

    Returns:
        Tensor ``[N, C, H', W']`` with ``H' = (H * up + y0 + y1 - fh + 1) // down`` (ceil division as NVIDIA).
    """
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    px0, px1, py0, py1 = _parse_padding(padding)
    n, c, h, w = x.shape
    if up > 1:  # zero insertion: every sample followed by (up - 1) zeros in both directions
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)  # [N, C, H*up, W*up]
    if max(px0, px1, py0, py1) > 0:
        x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    if min(px0, px1, py0, py1) < 0:
        x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]
    f = f.to(device=x.device, dtype=x.dtype) * gain
    if not flip_filter:
        f = f.flip([0, 1])
    weight = f[None, None].repeat(c, 1, 1, 1)  # [C, 1, fh, fw] depthwise
    x = F.conv2d(x, weight, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def _filter_size(f):
    return (1, 1) if f is None else (int(f.shape[-1]), int(f.shape[-2]))


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1):
    """2x (or ``up``x) upsampling with an FIR low-pass, output size exactly ``up`` times the input."""
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)
    p = [px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2, py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * up * up)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1):
    """FIR low-pass then ``down``x decimation, output size exactly ``1 / down`` of the input."""
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)
    p = [px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2, py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain)


_ACTS = {
    "linear": lambda x, a: x,
    "relu": lambda x, a: F.relu(x),
    "lrelu": lambda x, a: F.leaky_relu(x, a),
    "tanh": lambda x, a: torch.tanh(x),
    "sigmoid": lambda x, a: torch.sigmoid(x),
    "elu": lambda x, a: F.elu(x),
    "selu": lambda x, a: F.selu(x),
    "softplus": lambda x, a: F.softplus(x),
    "swish": lambda x, a: torch.sigmoid(x) * x,
}


def bias_act(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    """Bias add, activation, gain and optional clamp, in that order (NVIDIA ``bias_act`` semantics).

    Args:
        x: Input tensor.
        b: Optional bias ``[x.shape[dim]]``.
        dim: Dimension of ``x`` that ``b`` runs along.
        act: ``linear | relu | lrelu | tanh | sigmoid | elu | selu | softplus | swish``.
        alpha: Negative slope of ``lrelu`` (default 0.2).
        gain: Output scale; ``None`` = the activation's default gain (``sqrt(2)`` for lrelu).
        clamp: Clamp the output to ``[-clamp, clamp]``; ``None`` = no clamp.

    Returns:
        Tensor like ``x``.
    """
    if act not in _ACTS:
        raise ValueError(f"bias_act: unknown activation {act!r}; expected one of {sorted(_ACTS)}")
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.to(x.dtype).reshape(shape)
    x = _ACTS[act](x, 0.2 if alpha is None else float(alpha))
    gain = ACT_GAIN[act] if gain is None else float(gain)
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def _conv(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    if not flip_weight:
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


# The stride-2 transposed convolution runs in polyphase form (four small regular convolutions) from this many input
# pixels on: measured on a CPU (oneDNN, 1 thread, fp32, forward + backward) it is 1.4x faster for a 128 -> 64 channel
# layer at 128^2 input and about even or slower for the small, wide layers (512 channels at 16^2 .. 64^2).
POLYPHASE_MIN_PIXELS = 128 * 128
# The same for channels_last (NHWC) activations, i.e. bf16 on the CPU: measured (bf16, AMX, 1 thread) 1.1-1.3x faster
# from 32^2 inputs on (512 -> 256 channels), 2x slower at 8^2 and 16^2 (512 channels).
POLYPHASE_MIN_PIXELS_NHWC = 32 * 32


class _Interleave2x(torch.autograd.Function):
    """Place the four phase outputs ``p[ry][rx]`` of a stride-2 transposed convolution on their output grid
    (rows ``border + ry + 2m``, columns ``border + rx + 2n``) inside a zero border of ``border`` pixels."""

    @staticmethod
    def forward(ctx, p00, p01, p10, p11, border):
        n, c, h0, w0 = p00.shape
        full_h, full_w = h0 + p11.shape[2], w0 + p11.shape[3]  # 2 (H - 1) + k
        nhwc = not p00.is_contiguous() and p00.is_contiguous(memory_format=torch.channels_last)  # keep the layout
        out = torch.empty(n, c, full_h + 2 * border, full_w + 2 * border, dtype=p00.dtype, device=p00.device,
                          memory_format=torch.channels_last if nhwc else torch.contiguous_format)
        if border:
            out[:, :, :border].zero_()
            out[:, :, -border:].zero_()
            out[:, :, :, :border].zero_()
            out[:, :, :, -border:].zero_()
        ctx.slices = []
        for (ry, rx), p in zip(((0, 0), (0, 1), (1, 0), (1, 1)), (p00, p01, p10, p11)):
            sl = (slice(None), slice(None), slice(border + ry, border + ry + 2 * p.shape[2] - 1, 2),
                  slice(border + rx, border + rx + 2 * p.shape[3] - 1, 2))
            out[sl].copy_(p)
            ctx.slices.append(sl)
        return out

    @staticmethod
    def backward(ctx, grad):
        return (*(grad[sl] for sl in ctx.slices), None)


def _conv_transpose2x_polyphase(x, w, border=0):
    """``F.conv_transpose2d(x, w, stride=2)`` (``w`` ``[I, O, kh, kw]``) as four regular convolutions, one per output
    phase, interleaved into a buffer with a zero border of ``border`` pixels. Output ``[N, O, 2 (H - 1) + kh + 2
    border, 2 (W - 1) + kw + 2 border]``."""
    phases = []
    for ry in (0, 1):
        for rx in (0, 1):
            k = w[:, :, ry::2, rx::2].flip([2, 3]).transpose(0, 1)  # [O, I, ceil((kh - ry) / 2), ...] correlation
            phases.append(F.conv2d(x, k, padding=(k.shape[2] - 1, k.shape[3] - 1)))
    return _Interleave2x.apply(*phases, int(border))


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    """2-D convolution with optional FIR up/downsampling, laid out as NVIDIA ``conv2d_resample`` does.

    Args:
        x: Input ``[N, C_in * groups?, H, W]`` (``C_in`` per group as in ``F.conv2d``).
        w: Weight ``[C_out, C_in / groups, kh, kw]``.
        f: Low-pass filter from :func:`setup_filter` (needed when ``up`` or ``down`` > 1).
        up, down: Integer resampling factors.
        padding: Padding with respect to the upsampled image (int or ``[x0, x1, y0, y1]``).
        groups: Convolution groups.
        flip_weight: ``True`` = correlation (``F.conv2d``), ``False`` = convolution.
        flip_filter: Passed to :func:`upfirdn2d`.

    Returns:
        Tensor ``[N, C_out, H * up / down, W * up / down]`` (for ``padding = k // 2``).
    """
    out_c, in_c, kh, kw = w.shape
    fw, fh = _filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    if kw == 1 and kh == 1 and down > 1 and up == 1:  # 1x1 conv after downsampling (cheaper)
        x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)
    if kw == 1 and kh == 1 and up > 1 and down == 1:  # 1x1 conv before upsampling (cheaper)
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=[px0, px1, py0, py1], gain=up * up, flip_filter=flip_filter)
    if down > 1 and up == 1:  # filter, then strided conv
        x = upfirdn2d(x, f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)
    if up > 1:  # transposed strided conv, then filter
        if groups == 1:
            w = w.transpose(0, 1)  # [C_in, C_out, kh, kw]
        else:
            w = w.reshape(groups, out_c // groups, in_c, kh, kw).transpose(1, 2)
            w = w.reshape(groups * in_c, out_c // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        border = px0 + pxt
        nhwc = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        if (up == 2 and groups == 1 and pxt == 0 and pyt == 0 and px1 == border and py0 == border
                and py1 == border and border >= 0
                and x.shape[2] * x.shape[3] >= (POLYPHASE_MIN_PIXELS_NHWC if nhwc else POLYPHASE_MIN_PIXELS)):
            # polyphase form of the stride-2 transposed convolution, written straight into the zero-padded buffer
            # the FIR filter needs (no separate pad copy); same values as the transposed path below
            x = _conv_transpose2x_polyphase(x, w if not flip_weight else w.flip([2, 3]), border)
            x = upfirdn2d(x, f, gain=up * up, flip_filter=flip_filter)
            if down > 1:
                x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
            return x
        x = _conv(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=not flip_weight)
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up * up,
                      flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x
    if up == 1 and down == 1 and px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:  # plain conv
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)
    # General case (not used by the generator): explicit upfirdn2d, conv, decimate.
    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up * up,
                  flip_filter=flip_filter)
    x = _conv(x, w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x


def modulated_conv2d(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None, demodulate=True,
                     flip_weight=True, fused_modconv=True):
    """StyleGAN2 modulated (and demodulated) convolution.

    Args:
        x: Input ``[N, I, H, W]``.
        weight: ``[O, I, kh, kw]`` (already the effective weight; gains are folded into ``styles``).
        styles: Per-sample input-channel scales ``[N, I]``.
        noise: Optional tensor added to the output (broadcastable to ``[N, O, H', W']``).
        up, down, padding, resample_filter, flip_weight: As :func:`conv2d_resample`.
        demodulate: Normalise each output channel's per-sample weight to unit L2 norm.
        fused_modconv: ``True`` = one grouped conv with per-sample weights (batch as groups); ``False`` = scale the
            activations before and after one shared conv. Mathematically equal.

    Returns:
        Tensor ``[N, O, H', W']``.
    """
    n = x.shape[0]
    _, in_c, kh, kw = weight.shape
    if styles.shape != (n, in_c):
        raise ValueError(f"modulated_conv2d: styles must be [{n}, {in_c}], got {tuple(styles.shape)}")

    if x.dtype == torch.float16 and demodulate:  # pre-normalise to avoid fp16 overflow (result is scale-invariant)
        weight = weight * (1 / math.sqrt(in_c * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    w = None
    dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, O, I, kh, kw]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, O]
    if demodulate and fused_modconv:
        w = w * dcoefs.reshape(n, -1, 1, 1, 1)  # [N, O, I, kh, kw]

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)  # [N, I, H, W]
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                            flip_weight=flip_weight)  # [N, O, H', W']
        if demodulate:
            x = x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1)
        if noise is not None:
            x = x + noise.to(x.dtype)
        return x

    x = x.reshape(1, -1, *x.shape[2:])  # [1, N*I, H, W]
    w = w.reshape(-1, in_c, kh, kw)  # [N*O, I, kh, kw]
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding, groups=n,
                        flip_weight=flip_weight)  # [1, N*O, H', W']
    x = x.reshape(n, -1, *x.shape[2:])  # [N, O, H', W']
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


def _pooled_mul(x, s4):
    """``x * s4`` (``s4`` broadcast over ``x``'s pixels), into a pooled buffer when there is one (bitwise the same
    values: the same kernel writes them)."""
    buf = pooled_like(x) if x.dtype == s4.dtype and x.is_contiguous() else None  # keeps x's memory format
    return x * s4 if buf is None else torch.mul(x, s4, out=buf)


def _into_pooled(op, like, *args):
    """``op(*args)`` (an ATen op with a ``grad_input=`` out variant, e.g. ``hardtanh_backward``) into a pooled
    buffer shaped like ``like`` when there is one, else a fresh result."""
    buf = pooled_like(like) if like.is_contiguous() else None  # keeps like's memory format
    return op(*args) if buf is None else op.grad_input(*args, grad_input=buf)


class _ModconvEpilogue(torch.autograd.Function):
    """``out = clamp(lrelu(y * d + n + b) * gain, -c, c)`` computed in place on ``y``, saving only ``out``.

    The unfused modulated convolution's tail (demodulation, noise, bias, leaky ReLU, gain, clamp) as one step: the
    plain-op chain allocates five activation-sized tensors and keeps three of them for backward; this allocates none
    and keeps only ``out`` (which the next layer keeps anyway). Backward recovers the pre-activation from ``out``
    (leaky ReLU with a positive slope is invertible; where the clamp cut, the gradient is 0 anyway).
    """

    @staticmethod
    def forward(ctx, y, d, n, b, alpha, gain, clamp):
        # y [N, O, H, W] (fresh conv output, overwritten), d [N, O] | None, n broadcastable | None, b [O] | None
        if d is not None:
            y.mul_(d.to(y.dtype).reshape(d.shape[0], -1, 1, 1))
        if n is not None:
            y.add_(n.to(y.dtype))
        if b is not None:
            y.add_(b.to(y.dtype).reshape(1, -1, 1, 1))
        if alpha is not None:
            y.mul_(gain)  # lrelu(z) * g = lrelu(z * g) for g > 0
            torch.nn.functional.leaky_relu_(y, alpha)
        elif gain != 1:
            y.mul_(gain)
        if clamp is not None:
            y.clamp_(-clamp, clamp)
        ctx.mark_dirty(y)
        ctx.save_for_backward(y, d, n, b)
        ctx.alpha, ctx.gain, ctx.clamp = alpha, gain, clamp
        ctx.n_shape = None if n is None else n.shape
        return y

    @staticmethod
    def backward(ctx, grad):
        out, d, n, b = ctx.saved_tensors
        alpha, gain, clamp = ctx.alpha, ctx.gain, ctx.clamp
        if out.dtype not in (torch.float32, torch.float64):
            return _ModconvEpilogue._backward_low_precision(ctx, grad, out, d, n, b)
        aten = torch.ops.aten
        # gc = the gradient that passed the clamp; g = gradient w.r.t. the pre-activation z = y * d + n + b. Fused
        # kernels, one allocation each: hardtanh_backward zeroes where |out| >= clamp, leaky_relu_backward takes the
        # slope from the sign of its (positive-slope) result.
        # (written into pooled buffers inside an optimisation loop on the CPU: hrinv.bufferpool)
        if clamp is not None:
            gc = _into_pooled(aten.hardtanh_backward, out, grad, out, -clamp, clamp)
        else:
            gc = grad
        if alpha is not None:
            g = _into_pooled(aten.leaky_relu_backward, out, gc, out, alpha, True).mul_(gain)
        else:
            g = gc * gain
        grad_y = grad_d = grad_n = grad_b = None
        need_y, need_d, need_n, need_b = ctx.needs_input_grad[:4]
        N, O = out.shape[0], out.shape[1]
        hw = out.shape[2] * out.shape[3]
        gs = g.sum(dim=(2, 3)) if (need_b or (need_d and d is not None and b is not None)) else None  # [N, O]
        if need_b:
            grad_b = gs.sum(dim=0).to(b.dtype)
        nb = None
        if n is not None and (need_n or (need_d and d is not None)):
            nb = n.expand(N, 1, out.shape[2], out.shape[3]) if n.ndim < 4 or n.shape[0] != N else n
        if need_n:
            grad_n = g.sum(dim=1, keepdim=True).sum_to_size(ctx.n_shape).to(n.dtype)
        if need_d and d is not None:
            # grad_d = sum_hw(g * y) with y * d = z - n - b, and g * z = gc * out exactly (the leaky ReLU's slope
            # cancels: out = slope * z wherever gc != 0): no activation-sized temporary, only dot products (einsum).
            gv = g.reshape(N, O, hw)
            acc = torch.einsum("nck,nck->nc", gc.reshape(N, O, hw), out.reshape(N, O, hw))
            if n is not None:
                acc = acc - torch.einsum("nck,nk->nc", gv, nb.reshape(N, hw).to(g.dtype))
            if b is not None:
                acc = acc - gs * b.to(g.dtype).reshape(1, -1)
            grad_d = acc.div_(d.to(acc.dtype)).to(d.dtype)
        if need_y:
            grad_y = g.mul_(d.to(g.dtype).reshape(d.shape[0], -1, 1, 1)) if d is not None else g
        return grad_y, grad_d, grad_n, grad_b, None, None, None

    @staticmethod
    def _backward_low_precision(ctx, grad, out, d, n, b):
        if out.dtype == torch.bfloat16:
            return _ModconvEpilogue._backward_bf16(ctx, grad, out, d, n, b)
        # fp16: the reductions in fp32 from the pre-activation recovered in fp32 (fp16 sums could overflow)
        alpha, gain, clamp = ctx.alpha, ctx.gain, ctx.clamp
        if alpha is not None:
            slope = torch.where(out > 0, gain, gain * alpha).to(grad.dtype)
            g = grad * slope
        else:
            g = grad * gain
        if clamp is not None:
            g = g.masked_fill_(out.abs() >= clamp, 0)
        grad_y = grad_d = grad_n = grad_b = None
        need_y, need_d, need_n, need_b = ctx.needs_input_grad[:4]
        if need_b:
            grad_b = g.sum(dim=(0, 2, 3), dtype=torch.float32).to(b.dtype)
        if need_n:
            gn = g.sum(dim=1, keepdim=True, dtype=torch.float32)  # [N, 1, H, W]
            grad_n = gn.sum_to_size(ctx.n_shape).to(n.dtype)
        if need_d and d is not None:
            z = out.float() / gain
            if alpha is not None:
                z = torch.where(out > 0, z, z / alpha)
            if n is not None:
                z = z.sub_(n.float())
            if b is not None:
                z = z.sub_(b.float().reshape(1, -1, 1, 1))
            grad_d = (z.mul_(g.float())).sum(dim=(2, 3)).div_(d.float()).to(d.dtype)
        if need_y:
            grad_y = g.mul_(d.to(g.dtype).reshape(d.shape[0], -1, 1, 1)) if d is not None else g
        return grad_y, grad_d, grad_n, grad_b, None, None, None

    @staticmethod
    def _backward_bf16(ctx, grad, out, d, n, b):
        # bf16 (fp32's range, so no overflow): the fp32 path's fused kernels in bf16, in the layout of `out` (NHWC
        # under channels_last), no fp32 activation-sized temporary. Every sum accumulates in fp32 inside the
        # kernel and rounds once at the end; the [N, O] pieces of the demodulation gradient are combined in fp32.
        alpha, gain, clamp = ctx.alpha, ctx.gain, ctx.clamp
        aten = torch.ops.aten
        gc = aten.hardtanh_backward(grad, out, -clamp, clamp) if clamp is not None else grad  # fresh with a clamp
        g = aten.leaky_relu_backward(gc, out, alpha, True).mul_(gain) if alpha is not None else gc * gain
        grad_y = grad_d = grad_n = grad_b = None
        need_y, need_d, need_n, need_b = ctx.needs_input_grad[:4]
        want_d = need_d and d is not None
        gs = g.sum(dim=(2, 3)).float() if (need_b or (want_d and b is not None)) else None  # [N, O]
        if need_b:
            grad_b = gs.sum(dim=0).to(b.dtype)
        if need_n:
            grad_n = g.sum(dim=1, keepdim=True).sum_to_size(ctx.n_shape).to(n.dtype)  # [N, 1, H, W] -> n's shape
        if want_d:
            # grad_d = sum_hw(g * y) with y * d = z - n - b and g * z = gc * out (the slope cancels, as in fp32)
            prod = gc.mul_(out) if clamp is not None else gc * out  # gc is ours (and done with) when clamped
            acc = prod.sum(dim=(2, 3)).float()  # [N, O]
            del prod
            if n is not None:  # sum_hw g * n for a map shared by the channels: a batched matrix-vector product
                N, O, H, W = out.shape
                nv = n.to(g.dtype).expand(N, 1, H, W).reshape(N, 1, H * W)
                if not g.is_contiguous() and g.is_contiguous(memory_format=torch.channels_last):
                    gn_d = torch.bmm(nv, g.permute(0, 2, 3, 1).reshape(N, H * W, O)).reshape(N, O)
                else:
                    gn_d = torch.bmm(g.reshape(N, O, H * W), nv.transpose(1, 2)).reshape(N, O)
                acc = acc - gn_d.float()
            if b is not None:
                acc = acc - gs * b.float().reshape(1, -1)
            grad_d = acc.div_(d.float()).to(d.dtype)
        if need_y:
            grad_y = g.mul_(d.to(g.dtype).reshape(d.shape[0], -1, 1, 1)) if d is not None else g
        return grad_y, grad_d, grad_n, grad_b, None, None, None


def modconv_epilogue(y, dcoefs=None, noise=None, bias=None, act="lrelu", alpha=0.2, gain=None, clamp=None):
    """``clamp(act(y * dcoefs + noise + bias) * gain)`` with ``act`` in ``lrelu | linear``, in place on ``y``.

    ``y`` must be a fresh tensor nobody else uses (a convolution's output). Same values as
    ``bias_act(y * dcoefs + noise, bias, act=act, gain=gain, clamp=clamp)``; far fewer temporaries (see
    :class:`_ModconvEpilogue`). ``dcoefs`` ``[N, O]``, ``noise`` broadcastable to ``y``, ``bias`` ``[O]``.
    """
    if act not in ("lrelu", "linear"):
        raise ValueError(f"modconv_epilogue: act must be 'lrelu' or 'linear', got {act!r}")
    g = float(ACT_GAIN[act] if gain is None else gain)
    if g <= 0:
        raise ValueError(f"modconv_epilogue: gain must be > 0, got {g}")
    a = float(alpha) if act == "lrelu" else None
    if a is not None and a <= 0:
        raise ValueError(f"modconv_epilogue: the leaky ReLU slope must be > 0 (invertible), got {a}")
    c = float(clamp) if clamp is not None and clamp >= 0 else None
    return _ModconvEpilogue.apply(y, dcoefs, noise, bias, a, g, c)


class _Modulate(torch.autograd.Function):
    """``x * s[:, :, None, None]`` whose backward gets the style gradient ``sum_hw(grad * x)`` from batched dot
    products (einsum) instead of an activation-sized product (autograd's broadcast multiply allocates one per layer)."""

    @staticmethod
    def forward(ctx, x, s):
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, s)
        return _pooled_mul(x, s.reshape(s.shape[0], -1, 1, 1))

    @staticmethod
    def backward(ctx, grad):
        x, s = ctx.saved_tensors
        if grad.dtype == torch.bfloat16 and ctx.needs_input_grad[1]:
            return _Modulate._backward_bf16(ctx, grad, x, s)
        grad_x = grad_s = None
        if ctx.needs_input_grad[0]:
            grad_x = _pooled_mul(grad, s.reshape(s.shape[0], -1, 1, 1))
        if ctx.needs_input_grad[1]:
            n, c = s.shape
            hw = x.shape[2] * x.shape[3]
            if grad.dtype in (torch.float32, torch.float64):
                grad_s = torch.einsum("nck,nck->nc", grad.reshape(n, c, hw), x.reshape(n, c, hw))
            else:  # reduced precision: accumulate in fp32 as autograd's sum would
                grad_s = (grad * x).sum(dim=(2, 3), dtype=torch.float32).to(s.dtype)
        return grad_x, grad_s

    @staticmethod
    def _backward_bf16(ctx, grad, x, s):
        # bf16 (fp32's range): the style gradient from one bf16 product, summed with fp32 accumulation inside the
        # kernel; the input gradient is then written into that product's buffer (one activation-sized allocation)
        t = grad * x  # [N, C, H, W], in grad's layout
        grad_s = t.sum(dim=(2, 3)).to(s.dtype)
        grad_x = torch.mul(grad, s.to(grad.dtype).reshape(s.shape[0], -1, 1, 1), out=t) \
            if ctx.needs_input_grad[0] else None
        return grad_x, grad_s


def modulated_conv2d_unfused(x, weight, styles, noise=None, bias=None, up=1, padding=0, resample_filter=None,
                             demodulate=True, flip_weight=True, act="lrelu", gain=None, clamp=None):
    """Unfused modulated convolution with its tail fused in place: what a layer runs when gradients are needed.

    Equals ``bias_act(modulated_conv2d(x, ..., noise=noise, fused_modconv=False), bias, act, gain, clamp)``. One
    shared convolution for the whole batch (fast to differentiate: no per-sample weights in the graph) and the tail
    via :func:`modconv_epilogue`.
    """
    n = x.shape[0]
    _, in_c, kh, kw = weight.shape
    if styles.shape != (n, in_c):
        raise ValueError(f"modulated_conv2d: styles must be [{n}, {in_c}], got {tuple(styles.shape)}")
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / math.sqrt(in_c * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)
    cw = active_weights()  # a loop's per-loop weight casts (hrinv.perf.ComputeWeights), if any serves this conv
    cw = cw if cw is not None and cw.serves(x) else None
    dcoefs = None
    if demodulate:  # sum_i,k (w_oik s_ni)^2 = (s_n^2) @ (sum_k w_oik^2)^T  -- no [N, O, I, k, k] tensor
        acc = torch.promote_types(weight.dtype, torch.float32)  # at least fp32 (float64 stays float64)

        def sumsq(w):
            return w.to(acc).square().sum(dim=[2, 3])  # [O, I]

        wsq = cw.derived(weight, "demod_sumsq", sumsq) if cw is not None else sumsq(weight)
        with _exact(x):  # in fp32 even under autocast
            dcoefs = (styles.to(acc).square() @ wsq.t() + 1e-8).rsqrt()  # [N, O]
    xm = _Modulate.apply(x, styles.to(x.dtype))  # [N, I, H, W]
    if cw is not None and cw.channels_last and up > 1:
        # the up-sampling conv takes the weight as [I, O, k, k]: cache it channels_last in that shape (oneDNN's
        # transposed convolution is 1.3-2x faster with it) and pass a view that conv2d_resample transposes back
        w = cw.derived(weight, "up_conv_nhwc", lambda t: t.to(cw.dtype).transpose(0, 1).contiguous(
            memory_format=torch.channels_last)).transpose(0, 1)
    else:
        w = cw.cast(weight) if cw is not None else weight.to(x.dtype)
    y = conv2d_resample(xm, w, f=resample_filter, up=up, padding=padding, flip_weight=flip_weight)
    return modconv_epilogue(y, dcoefs, noise, bias, act=act, gain=gain, clamp=clamp)


def _exact(x):
    """Autocast off on ``x``'s device while inside, when it is on (else a no-op): for the small reductions that
    should stay in fp32 under bf16/fp16 autocast."""
    dev = x.device.type
    return torch.autocast(dev, enabled=False) if autocast_dtype(dev) is not None else contextlib.nullcontext()


def normalize_2nd_moment(x, dim=1, eps=1e-8):
    """Scale ``x`` to unit mean square along ``dim`` (the mapping network's input normalisation)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()
