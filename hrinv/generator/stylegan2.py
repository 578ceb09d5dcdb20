"""StyleGAN2 generator (mapping + synthesis) with NVIDIA stylegan2-ada-pytorch semantics and state-dict names.

Our own implementation of the network described in Karras et al., "Analyzing and Improving the Image Quality of
StyleGAN" (CVPR 2020), laid out so that ``G_ema.state_dict()`` of a stylegan2-ada-pytorch snapshot loads strictly.
See docs/generator.md for the semantics and for where we differ from NVIDIA (fp16 off by default, no w_avg tracking,
fused modconv by default, explicit per-layer noise, optional INR head under ``inr.*``).
"""

import copy
import hashlib
import json
import logging
import math

import numpy as np
import torch

from ..errors import CheckpointFormatError, ShapeError
from . import ops
from .layers import FullyConnectedLayer, SynthesisBlock

__all__ = ["NOISE_MODES", "Generator", "MappingNetwork", "SynthesisNetwork"]

log = logging.getLogger(__name__)

NOISE_MODES = ("const", "random", "none")


def _plain(obj):
    """Deep-copy ``obj`` into JSON-able builtins (EasyDict -> dict, tuple -> list, numpy scalars -> Python)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ----------------------------------------------------------------------------------------------------------------------
# Mapping


class MappingNetwork(torch.nn.Module):
    """z (+ label c) -> w, broadcast to ``num_ws`` rows, with optional truncation towards ``w_avg``."""

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None, layer_features=None,
                 activation="lrelu", lr_multiplier=0.01, w_avg_beta=0.995, device=None, dtype=None):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        if z_dim == 0 and c_dim == 0:
            raise CheckpointFormatError("MappingNetwork: z_dim and c_dim are both 0; at least one input is needed.")
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features, device=device, dtype=dtype)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                                          lr_multiplier=lr_multiplier, device=device, dtype=dtype))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim], device=device, dtype=dtype))

    def _dtype(self):
        return self.fc0.weight.dtype if self.num_layers > 0 else torch.float32

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None):
        """Map latents to W.

        Args:
            z: ``[B, z_dim]`` (ignored when ``z_dim == 0``).
            c: ``[B, c_dim]`` labels; required when ``c_dim > 0``.
            truncation_psi: 1 = no truncation; ``w_avg + psi * (w - w_avg)`` otherwise.
            truncation_cutoff: Truncate only the first ``cutoff`` rows of W+ (``None`` = all).

        Returns:
            ``ws [B, num_ws, w_dim]`` (or ``[B, w_dim]`` when built with ``num_ws=None``).
        """
        dtype = self._dtype()
        x = None
        if self.z_dim > 0:
            if z is None or z.ndim != 2 or z.shape[1] != self.z_dim:
                raise ShapeError(f"mapping: z must be [B, {self.z_dim}], got "
                                 f"{None if z is None else tuple(z.shape)}; draw it e.g. with torch.randn(B, "
                                 f"{self.z_dim}).")
            x = ops.normalize_2nd_moment(z.to(dtype))  # [B, z_dim]
        if self.c_dim > 0:
            if c is None or c.ndim != 2 or c.shape[1] != self.c_dim:
                raise ShapeError(f"mapping: this generator is conditional; c must be [B, {self.c_dim}] (e.g. one-hot "
                                 f"labels), got {None if c is None else tuple(c.shape)}.")
            y = ops.normalize_2nd_moment(self.embed(c.to(dtype)))  # [B, embed]
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)  # [B, w_dim]
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])  # [B, num_ws, w_dim]
        if truncation_psi != 1:
            if not hasattr(self, "w_avg"):
                raise CheckpointFormatError("mapping: truncation needs w_avg, which this network does not have "
                                            "(built with w_avg_beta=None); use truncation_psi=1.")
            w_avg = self.w_avg.to(x.dtype)
            if self.num_ws is None or truncation_cutoff is None:
                x = w_avg.lerp(x, truncation_psi)
            else:
                x = x.clone()
                x[:, :truncation_cutoff] = w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x


# ----------------------------------------------------------------------------------------------------------------------
# Synthesis

_BLOCK_KWARGS = {"architecture", "resample_filter", "conv_clamp", "fp16_channels_last", "use_noise", "activation",
                 "kernel_size", "channels_last"}


def _channels_table(block_resolutions, channel_base, channel_max, channels):
    table = {res: min(channel_base // res, channel_max) for res in block_resolutions}
    if channels:
        explicit = {int(k): int(v) for k, v in dict(channels).items()}
        missing = [r for r in block_resolutions if r not in explicit]
        if missing:
            raise CheckpointFormatError(f"synthesis_kwargs['channels'] must give a width for every block resolution "
                                        f"{block_resolutions}; missing {missing}.")
        table = {res: explicit[res] for res in block_resolutions}
    bad = {res: c for res, c in table.items() if c < 1}
    if bad:
        raise CheckpointFormatError(f"synthesis: every block needs >= 1 channel, got {bad} (channel_base="
                                    f"{channel_base}, channel_max={channel_max}); raise channel_base.")
    return table


class SynthesisNetwork(torch.nn.Module):
    """ws ``[B, num_ws, w_dim]`` -> image ``[B, img_channels, R, R]`` (NVIDIA ``SynthesisNetwork``).

    Args:
        w_dim: W dimensionality.
        img_resolution: Output resolution R, a power of two >= 4.
        img_channels: Output channels (3 for RGB).
        channel_base, channel_max: Width of block ``res`` is ``min(channel_base // res, channel_max)``.
        num_fp16_res: The N highest resolutions may run in fp16 (only when called with ``force_fp32=False``).
        channels: Optional ``{res: width}`` for every block resolution; overrides channel_base/channel_max (our
            extension, for checkpoints with non-standard width tables).
        fused_modconv_default: Accepted for stylegan3-repo configs; ``False`` / ``"disable"`` turns fusing off.
        device, dtype: Of the parameters.
        **block_kwargs: ``architecture`` (skip | orig | resnet), ``conv_clamp``, ``resample_filter``, ...
    """

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_fp16_res=0,
                 channels=None, fused_modconv_default=None, device=None, dtype=None, **block_kwargs):
        super().__init__()
        if not isinstance(img_resolution, int) or img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise CheckpointFormatError(f"img_resolution must be a power of two >= 4, got {img_resolution!r}.")
        unknown = set(block_kwargs) - _BLOCK_KWARGS
        if unknown:
            known = sorted(_BLOCK_KWARGS | {"channel_base", "channel_max", "num_fp16_res", "channels",
                                            "fused_modconv_default"})
            raise CheckpointFormatError(f"synthesis_kwargs has keys this StyleGAN2 implementation does not know: "
                                        f"{sorted(unknown)}; supported: {known}.")
        block_kwargs.pop("channels_last", None)
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(math.log2(img_resolution))
        self.img_channels = img_channels
        self.num_fp16_res = num_fp16_res
        self.fused_modconv_default = fused_modconv_default
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        self.channels = _channels_table(self.block_resolutions, channel_base, channel_max, channels)
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        self.noise_names = []
        for res in self.block_resolutions:
            in_channels = self.channels[res // 2] if res > 4 else 0
            is_last = res == img_resolution
            block = SynthesisBlock(in_channels, self.channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=is_last, use_fp16=res >= fp16_resolution,
                                   device=device, dtype=dtype, **block_kwargs)
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)
            for k in ("conv0", "conv1"):
                if hasattr(block, k) and getattr(block, k).use_noise:
                    self.noise_names.append(f"b{res}.{k}")
        self._inr_holder = (None,)  # the Generator's INR head (not a submodule here: its keys live under ``inr.*``)

    # -- helpers -------------------------------------------------------------------------------------------------------
    def noise_buffers(self):
        """``{layer_name: noise_const [res, res]}`` for every noise input (the buffers themselves, not copies)."""
        return {name: self.get_submodule(name).noise_const for name in self.noise_names}

    def noise_resolution(self, name):
        """Spatial size of the noise map of layer ``name`` (e.g. ``"b8.conv0"`` -> 8)."""
        return int(name.split(".")[0][1:])

    def _check_ws(self, ws):
        if not torch.is_tensor(ws) or ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            got = tuple(ws.shape) if torch.is_tensor(ws) else type(ws).__name__
            raise ShapeError(f"synthesis: ws must be [B, {self.num_ws}, {self.w_dim}] (W+), got {got}; for a single w "
                             f"[B, {self.w_dim}] use w.unsqueeze(1).repeat(1, {self.num_ws}, 1).")

    def _split_noise(self, noise, batch):
        per_block = {}
        for name, t in (noise or {}).items():
            if name not in self.noise_names:
                raise ShapeError(f"synthesis: unknown noise layer {name!r}; expected names from "
                                 f"G.synthesis.noise_names = {self.noise_names}.")
            if t is None:
                continue
            res = self.noise_resolution(name)
            want = (batch, 1, res, res)
            try:
                ok = torch.is_tensor(t) and t.ndim <= 4 and torch.broadcast_shapes(tuple(t.shape), want) == want
            except RuntimeError:
                ok = False
            if not ok:
                got = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
                raise ShapeError(f"synthesis: noise[{name!r}] must broadcast to {list(want)}, got {got}.")
            block, layer = name.split(".")
            per_block.setdefault(block, {})[layer] = t
        return per_block

    def forward_features(self, ws, noise_mode="const", noise=None, force_fp32=True, fused_modconv=None,
                         generator=None):
        """Run the trunk and return ``(x, img)``: last block features ``[B, C, R, R]`` and image ``[B, 3, R, R]``."""
        self._check_ws(ws)
        if noise_mode not in NOISE_MODES:
            raise ShapeError(f"synthesis: noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}.")
        if fused_modconv is None and self.fused_modconv_default in (False, "disable"):
            fused_modconv = False
        per_block = self._split_noise(noise, ws.shape[0])
        ws = ws.to(self.b4.conv1.weight.dtype)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            cur = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)  # [B, n, w_dim]
            w_idx += block.num_conv
            x, img = block(x, img, cur, force_fp32=force_fp32, fused_modconv=fused_modconv, noise_mode=noise_mode,
                           noise=per_block.get(f"b{res}"), generator=generator)
        return x, img

    def forward(self, ws, noise_mode="const", noise=None, shape=None, force_fp32=True, fused_modconv=None,
                generator=None, render_tile=None):
        """Synthesize images.

        Args:
            ws: ``[B, num_ws, w_dim]``.
            noise_mode: ``const`` (the stored noise_const maps), ``random`` (fresh N(0, 1), from ``generator`` when
                given) or ``none``.
            noise: Optional ``{layer_name: tensor}`` (names from :attr:`noise_names`, tensors broadcastable to
                ``[B, 1, res, res]``); overrides ``noise_mode`` for those layers. Scaled by ``noise_strength``.
            shape: ``(H, W)`` renders through the INR head at any size (needs ``G.inr``; see
                :func:`hrinv.generator.inr.fit_inr_head`).
            force_fp32: ``False`` lets the ``num_fp16_res`` highest blocks run in fp16 (for GPUs).
            fused_modconv: ``None`` = automatic (fused unless fp16 with batch > 1).
            generator: ``torch.Generator`` for ``noise_mode="random"``.
            render_tile: with ``shape``: render the INR head in checkpointed pieces of this many pixels (see
                :meth:`hrinv.generator.inr.INRHead.forward`); ``None`` = one piece.

        Returns:
            Image ``[B, img_channels, R, R]`` (or ``[B, img_channels, H, W]`` with ``shape``), about [-1, 1].
        """
        x, img = self.forward_features(ws, noise_mode=noise_mode, noise=noise, force_fp32=force_fp32,
                                       fused_modconv=fused_modconv, generator=generator)
        if shape is None:
            return img
        head = self._inr_holder[0]
        if head is None:
            raise ShapeError(f"synthesis: shape={tuple(shape)} needs an INR head, and this generator has none "
                             f"(G.inr is None). Distil one with hrinv.fit_inr_head(G) or `hrinv fit-inr SRC DST`, or "
                             f"use hrinv.render(G, ws, H, W, mode='resize') for a plain resize.")
        return head(x, img, shape, tile=render_tile)


# ----------------------------------------------------------------------------------------------------------------------
# Generator


class Generator(torch.nn.Module):
    """StyleGAN2 generator: ``mapping`` (z -> ws) + ``synthesis`` (ws -> image), optional INR head ``inr``.

    Args:
        z_dim, c_dim, w_dim, img_resolution, img_channels: As NVIDIA ``Generator``.
        mapping_kwargs: ``num_layers``, ``embed_features``, ``layer_features``, ``activation``, ``lr_multiplier``,
            ``w_avg_beta``.
        synthesis_kwargs: See :class:`SynthesisNetwork`.
        device, dtype: Of the parameters (default CPU / float32).
    """

    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs=None, synthesis_kwargs=None,
                 *, device=None, dtype=None):
        super().__init__()
        mapping_kwargs = _plain(dict(mapping_kwargs or {}))
        synthesis_kwargs = _plain(dict(synthesis_kwargs or {}))
        if synthesis_kwargs.get("channels"):
            synthesis_kwargs["channels"] = {str(int(k)): int(v) for k, v in synthesis_kwargs["channels"].items()}
        self._init_kwargs = {"z_dim": int(z_dim), "c_dim": int(c_dim), "w_dim": int(w_dim),
                             "img_resolution": int(img_resolution), "img_channels": int(img_channels),
                             "mapping_kwargs": mapping_kwargs, "synthesis_kwargs": synthesis_kwargs}
        self.z_dim = int(z_dim)
        self.c_dim = int(c_dim)
        self.w_dim = int(w_dim)
        self.img_resolution = int(img_resolution)
        self.img_channels = int(img_channels)
        self.synthesis = SynthesisNetwork(w_dim=self.w_dim, img_resolution=self.img_resolution,
                                          img_channels=self.img_channels, device=device, dtype=dtype,
                                          **copy.deepcopy(synthesis_kwargs))
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=self.z_dim, c_dim=self.c_dim, w_dim=self.w_dim, num_ws=self.num_ws,
                                      device=device, dtype=dtype, **copy.deepcopy(mapping_kwargs))
        self.inr = None
        self.meta = {}
        self.eval()

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "inr" and "synthesis" in self._modules:
            self.synthesis._inr_holder = (value,)

    @property
    def init_kwargs(self):
        """The constructor arguments (a JSON-able deep copy; NVIDIA's ``init_kwargs`` layout)."""
        return copy.deepcopy(self._init_kwargs)

    def attach_inr(self, head):
        """Attach (or with ``None`` remove) an :class:`~hrinv.generator.inr.INRHead`; its keys live under ``inr.*``.

        Returns:
            ``self``.
        """
        if head is not None:
            from .inr import INRHead  # local import: inr imports this module
            if not isinstance(head, INRHead):
                raise ShapeError(f"attach_inr: expected an INRHead or None, got {type(head).__name__}.")
            head.check_compatible(self)
        self.inr = head
        return self

    def fingerprint(self):
        """Short stable hash of the configuration and of the trunk weights (``mapping.*``, ``synthesis.*``).

        Values are hashed after rounding to float16 on the CPU, so the same weights give the same fingerprint on
        any device and in fp32/fp16. The INR head is not included (a latent stays valid when a head is attached).

        Returns:
            16 hex characters.
        """
        h = hashlib.sha256()
        h.update(json.dumps(self._init_kwargs, sort_keys=True).encode())
        for key, t in sorted(self.state_dict().items()):
            if key.startswith("inr."):
                continue
            h.update(key.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().to("cpu", torch.float32).to(torch.float16).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, noise_mode="const", shape=None,
                **synthesis_kwargs):
        """``mapping`` then ``synthesis``: ``z [B, z_dim]`` (+ ``c [B, c_dim]``) -> image ``[B, C, R, R]`` (or at
        ``shape=(H, W)`` through the INR head)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, shape=shape, **synthesis_kwargs)

    def extra_repr(self):
        return (f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, img_resolution={self.img_resolution}, "
                f"num_ws={self.num_ws}, inr={'yes' if self.inr is not None else 'no'}")
