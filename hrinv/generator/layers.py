"""Layers of the StyleGAN2 generator (equalised learning rate, modulated convs, synthesis blocks).

Our own code following the semantics and parameter names of NVIDIA stylegan2-ada-pytorch ``training/networks.py``.
"""

import math

import torch

from ..errors import CheckpointFormatError
from ..perf import autocast_dtype
from . import ops

__all__ = ["Conv2dLayer", "FullyConnectedLayer", "SynthesisBlock", "SynthesisLayer", "ToRGBLayer"]


def _dd(device, dtype):
    return {"device": device, "dtype": dtype}



class FullyConnectedLayer(torch.nn.Module):
    """Equalised-learning-rate linear layer: ``act(x @ (weight * lr / sqrt(in)).T + bias * lr)``."""

    def __init__(self, in_features, out_features, bias=True, activation="linear", lr_multiplier=1.0, bias_init=0.0,
                 device=None, dtype=None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features], **_dd(device, dtype))
                                         / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init), **_dd(device, dtype))) \
            if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        """``x [N, in] -> [N, out]``."""
        w = self.weight.to(x.dtype) * self.weight_gain  # [out, in]
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())  # [N, out]
        return ops.bias_act(x.matmul(w.t()), b, act=self.activation)


class Conv2dLayer(torch.nn.Module):
    """Equalised-learning-rate conv with optional FIR resampling (used by the ``resnet`` skip path)."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear", up=1, down=1,
                 resample_filter=(1, 3, 3, 1), conv_clamp=None, device=None, dtype=None):
        super().__init__()
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter, device=device))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = ops.ACT_GAIN[activation]
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size],
                                                     **_dd(device, dtype)))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels], **_dd(device, dtype))) if bias else None

    def forward(self, x, gain=1.0):
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = ops.conv2d_resample(x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                                padding=self.padding, flip_weight=(self.up == 1))
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 conv (+ optional 2x upsampling) + noise + bias + lrelu (+ clamp)."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1, use_noise=True,
                 activation="lrelu", resample_filter=(1, 3, 3, 1), conv_clamp=None, channels_last=False,
                 device=None, dtype=None):
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter, device=device))
        self.padding = kernel_size // 2
        self.act_gain = ops.ACT_GAIN[activation]
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1, device=device, dtype=dtype)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size],
                                                     **_dd(device, dtype)))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution], **_dd(device, dtype)))
            self.noise_strength = torch.nn.Parameter(torch.zeros([], **_dd(device, dtype)))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels], **_dd(device, dtype)))

    def forward(self, x, w, noise_mode="const", fused_modconv=True, gain=1.0, noise=None, generator=None):
        """``x [B, I, r/up, r/up], w [B, w_dim] -> [B, O, r, r]``; ``noise`` (broadcastable to ``[B, 1, r, r]``)
        replaces the noise map chosen by ``noise_mode``; it is scaled by ``noise_strength`` like the built-in maps."""
        styles = self.affine(w)  # [B, I]
        n = None
        if self.use_noise:
            if noise is not None:
                n = noise.to(device=x.device, dtype=x.dtype) * self.noise_strength.to(x.dtype)
            elif noise_mode == "random":
                shape = [x.shape[0], 1, self.resolution, self.resolution]
                dev = generator.device if generator is not None else x.device
                r = torch.randn(shape, generator=generator, device=dev, dtype=torch.float32)
                n = r.to(device=x.device, dtype=x.dtype) * self.noise_strength.to(x.dtype)  # [B, 1, r, r]
            elif noise_mode == "const":
                n = self.noise_const.to(x.dtype) * self.noise_strength.to(x.dtype)  # [r, r]
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        if not fused_modconv and self.activation in ("lrelu", "linear"):  # one shared conv + in-place tail
            return ops.modulated_conv2d_unfused(x, self.weight, styles, noise=n, bias=self.bias, up=self.up,
                                                padding=self.padding, resample_filter=self.resample_filter,
                                                flip_weight=(self.up == 1), act=self.activation,
                                                gain=self.act_gain * gain, clamp=clamp)
        x = ops.modulated_conv2d(x, self.weight, styles, noise=n, up=self.up, padding=self.padding,
                                 resample_filter=self.resample_filter, flip_weight=(self.up == 1),
                                 fused_modconv=fused_modconv)
        return ops.bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


class ToRGBLayer(torch.nn.Module):
    """Modulated (not demodulated) 1x1 conv to image channels + bias (+ clamp)."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False,
                 device=None, dtype=None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1, device=device, dtype=dtype)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size],
                                                     **_dd(device, dtype)))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels], **_dd(device, dtype)))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x, w, fused_modconv=True):
        styles = self.affine(w) * self.weight_gain  # [B, I]
        if not fused_modconv:
            return ops.modulated_conv2d_unfused(x, self.weight, styles, bias=self.bias, demodulate=False,
                                                act="linear", gain=1.0, clamp=self.conv_clamp)
        x = ops.modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return ops.bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(torch.nn.Module):
    """One resolution of the synthesis network: (const | 2x up conv0) + conv1 + ToRGB, skip/orig/resnet."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last, architecture="skip",
                 resample_filter=(1, 3, 3, 1), conv_clamp=None, use_fp16=False, fp16_channels_last=False,
                 device=None, dtype=None, **layer_kwargs):
        super().__init__()
        if architecture not in ("orig", "skip", "resnet"):
            raise CheckpointFormatError(f"SynthesisBlock: architecture must be 'orig', 'skip' or 'resnet', got "
                                        f"{architecture!r}.")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter, device=device))
        self.num_conv = 0
        self.num_torgb = 0
        dd = _dd(device, dtype)
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution], **dd))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs, **dd)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, **layer_kwargs, **dd)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp, **dd)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, **dd)

    def compute_dtype(self, force_fp32=True):
        base = self.conv1.weight.dtype
        return torch.float16 if (self.use_fp16 and not force_fp32 and base == torch.float32) else base

    def forward(self, x, img, ws, force_fp32=True, fused_modconv=None, noise_mode="const", noise=None,
                generator=None):
        """``x [B, C_in, r/2, r/2] | None``, ``img [B, 3, r/2, r/2] | None``, ``ws [B, num_conv + num_torgb, w_dim]``
        -> ``(x [B, C, r, r], img [B, 3, r, r] | None)``. ``noise`` = ``{"conv0": t, "conv1": t}`` overrides."""
        noise = noise or {}
        dtype = self.compute_dtype(force_fp32)
        if fused_modconv is None:
            # Unfused whenever a gradient will flow (inversion, LSO, fine-tuning): one shared convolution per layer is
            # 1.3x faster to differentiate than the batch-grouped per-sample weights (docs/performance.md). Without
            # gradients NVIDIA's inference rule: fused, except fp16 with batch > 1.
            needs_grad = torch.is_grad_enabled() and (
                ws.requires_grad or (x is not None and x.requires_grad) or self.conv1.weight.requires_grad
                or self.conv1.affine.weight.requires_grad or any(torch.is_tensor(t) and t.requires_grad
                                                                 for t in noise.values()))
            fused_modconv = not needs_grad and (dtype != torch.float16 or int(ws.shape[0]) == 1)
        w_iter = iter(ws.unbind(dim=1))
        kw = {"fused_modconv": fused_modconv, "noise_mode": noise_mode, "generator": generator}
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])  # [B, C, 4, 4]
            x = self.conv1(x, next(w_iter), noise=noise.get("conv1"), **kw)
        else:
            if not (x.dtype == torch.bfloat16 and autocast_dtype(x.device.type) == torch.bfloat16):
                x = x.to(dtype)  # under bf16 autocast the activations stay bf16 (no round trip through fp32)
            if self.architecture == "resnet":
                y = self.skip(x, gain=math.sqrt(0.5))
                x = self.conv0(x, next(w_iter), noise=noise.get("conv0"), **kw)
                x = self.conv1(x, next(w_iter), gain=math.sqrt(0.5), noise=noise.get("conv1"), **kw)
                x = y + x
            else:
                x = self.conv0(x, next(w_iter), noise=noise.get("conv0"), **kw)
                x = self.conv1(x, next(w_iter), noise=noise.get("conv1"), **kw)  # [B, C, r, r]
        if img is not None:
            img = ops.upsample2d(img, self.resample_filter)  # [B, 3, r, r]
        if self.is_last or self.architecture == "skip":
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(self.conv1.weight.dtype)  # the skip image stays in the parameter dtype (fp32 by default)
            img = img + y if img is not None else y
        return x, img
