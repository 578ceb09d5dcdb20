"""rosinality/stylegan2-pytorch checkpoints (``.pt``) -> NVIDIA names and ``init_kwargs``.

Covers converted official models (``{"g_ema", "latent_avg"}``), training checkpoints (``{"g", "d", "g_ema",
"g_optim", "d_optim", "args", ...}``, ``args`` being an ``argparse.Namespace``), JoJoGAN fine-tunes (``{"g"}``),
StyleGAN-NADA (``{"g_ema", "g_optim"}``), bare state dicts, and DualStyleGAN generators (the inner StyleGAN2 under
``generator.*`` is extracted). The file is read with ``torch.load(weights_only=True)``; only ``argparse.Namespace``
is added to the allow-list, for that one call.

Key mapping (k = log2(res)):

=======================================  ===============================================  ================
NVIDIA                                   rosinality                                       transform
=======================================  ===============================================  ================
``mapping.fc{i}.weight/bias``            ``style.{i+1}.weight/bias``                      identity
``mapping.w_avg``                        top-level ``latent_avg``                         identity
``synthesis.b4.const``                   ``input.input`` [1,C,4,4]                        squeeze(0)
``synthesis.b4.conv1.*``                 ``conv1.*``                                      see below
``synthesis.b{r}.conv0.*``               ``convs.{2k-6}.*``                               see below
``synthesis.b{r}.conv1.*``               ``convs.{2k-5}.*``                               see below
``synthesis.b4.torgb.*``                 ``to_rgb1.*``                                    see below
``synthesis.b{r}.torgb.*``               ``to_rgbs.{k-3}.*``                              see below
``<conv>.noise_const`` [r,r]             ``noises.noise_{n}`` [1,1,r,r], n = 0, 2k-5, 2k-4  reshape
``<layer>.weight``                       ``<layer>.conv.weight`` [1,O,I,k,k]              squeeze(0)
``<layer>.affine.weight/bias``           ``<layer>.conv.modulation.weight/bias``          identity
``<conv>.bias``                          ``<conv>.activate.bias``                         identity
``<conv>.noise_strength`` []             ``<conv>.noise.weight`` [1]                      reshape
``<torgb>.bias`` [3]                     ``<torgb>.bias`` [1,3,1,1]                       reshape
``*.resample_filter``                    ``*.blur.kernel``, ``*.upsample.kernel``         regenerated
=======================================  ===============================================  ================

Both sides store the up-sampling conv kernel in the same (flipped) orientation, so no flip is applied.
"""

import argparse
import logging
import math
import re

import torch

from ..errors import CheckpointFormatError
from .nvidia_pkl import plain_config

__all__ = [
    "ROSINALITY_SAFE_GLOBALS",
    "convert_rosinality_state_dict",
    "fit_channel_table",
    "looks_like_rosinality",
    "read_rosinality",
    "rosinality_noise_names",
]

log = logging.getLogger(__name__)

# Classes torch.load(weights_only=True) may build for a rosinality training checkpoint (the "args" entry).
ROSINALITY_SAFE_GLOBALS = (argparse.Namespace,)

_STYLE_RE = re.compile(r"style\.(\d+)\.(weight|bias)$")


def resample_filter(taps=(1, 3, 3, 1), dtype=torch.float32):
    """NVIDIA's ``upfirdn2d.setup_filter(taps)``: the separable filter's outer product, normalised to sum 1 [4, 4]."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)  # [4, 4]
    return (f / f.sum()).to(dtype)


def rosinality_noise_names(size):
    """rosinality noise index i -> NVIDIA layer name: ``noise_0 -> "b4.conv1"``, then ``b{r}.conv0``/``conv1``.

    Args:
        size: output resolution of the generator.

    Returns:
        list of layer names (index = rosinality ``noises.noise_{i}`` / ``noise=[...]`` position).
    """
    names = ["b4.conv1"]
    for k in range(3, int(math.log2(size)) + 1):
        names += [f"b{2 ** k}.conv0", f"b{2 ** k}.conv1"]
    return names


def looks_like_rosinality(sd):
    """Whether a flat dict of tensors has rosinality generator keys."""
    return isinstance(sd, dict) and "input.input" in sd and "conv1.conv.weight" in sd


def fit_channel_table(table, img_resolution):
    """Find NVIDIA ``(channel_base, channel_max)`` that reproduce ``table = {res: width}``, or ``None``.

    NVIDIA's widths are ``min(channel_base // res, channel_max)``. Stock rosinality tables are matched by
    ``channel_base`` 32768 (channel_multiplier 2) or 16384 (1) with ``channel_max`` 512; narrowed tables by the
    smallest base that fits.
    """
    resolutions = sorted(table)

    def ok(base, cmax):
        return all(min(base // r, cmax) == table[r] for r in resolutions)

    cmax = max(table.values())
    candidates = [(32768, 512), (16384, 512)] if cmax == 512 else []
    below = [r for r in resolutions if table[r] < cmax]
    candidates.append((table[below[0]] * below[0], cmax) if below else (cmax * img_resolution, cmax))
    for base, cm in candidates:
        if ok(base, cm):
            return base, cm
    return None


def _expected_keys(size, n_mlp):
    keys = set()
    for i in range(1, n_mlp + 1):
        keys |= {f"style.{i}.weight", f"style.{i}.bias"}
    keys.add("input.input")
    conv = ["conv.weight", "conv.modulation.weight", "conv.modulation.bias", "noise.weight", "activate.bias"]
    rgb = ["bias", "conv.weight", "conv.modulation.weight", "conv.modulation.bias"]
    keys |= {f"conv1.{s}" for s in conv} | {f"to_rgb1.{s}" for s in rgb}
    n_blocks = int(math.log2(size)) - 2
    for j in range(n_blocks):
        keys |= {f"convs.{2 * j}.{s}" for s in conv + ["conv.blur.kernel"]}
        keys |= {f"convs.{2 * j + 1}.{s}" for s in conv}
        keys |= {f"to_rgbs.{j}.{s}" for s in rgb + ["upsample.kernel"]}
    keys |= {f"noises.noise_{i}" for i in range(2 * n_blocks + 1)}
    return keys


def _shape_error(key, got, want):
    return CheckpointFormatError(f"rosinality checkpoint: {key!r} has shape {list(got)}, expected {want}; the file "
                                 f"is not a StyleGAN2 generator we understand")


def convert_rosinality_state_dict(sd, latent_avg=None):
    """Map a rosinality ``Generator`` state dict to NVIDIA names and infer NVIDIA ``init_kwargs`` from shapes.

    Args:
        sd: rosinality ``g_ema``/``g`` state dict (``style.*``, ``input.input``, ``conv1.*``, ``convs.*``, ...).
        latent_avg: optional ``[style_dim]`` mean w (becomes ``mapping.w_avg``).

    Returns:
        ``(init_kwargs, state_dict, info)``; ``info["w_avg_missing"]`` is True when ``latent_avg`` was not given
        (``mapping.w_avg`` is then zeros and must be estimated, see :func:`hrinv.io.checkpoints.load_generator`).

    Raises:
        CheckpointFormatError: unexpected/missing keys or shapes (listed in the message).
    """
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointFormatError(f"rosinality checkpoint: entries {bad[:5]} are not tensors")
    styles = sorted({int(m.group(1)) for k in sd for m in [_STYLE_RE.match(k)] if m})
    if not styles or styles != list(range(1, len(styles) + 1)):
        raise CheckpointFormatError(f"rosinality checkpoint: expected mapping layers style.1..style.N, found "
                                    f"{styles[:10]}")
    n_mlp = len(styles)
    n_rgbs = len({k.split(".")[1] for k in sd if k.startswith("to_rgbs.")})
    size = 2 ** (n_rgbs + 2)
    expected = _expected_keys(size, n_mlp)
    missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
    if missing or unexpected:
        raise CheckpointFormatError(
            f"rosinality checkpoint: the keys do not form a StyleGAN2 generator of size {size} with {n_mlp} mapping "
            f"layers (missing {len(missing)}: {missing[:6]}; unexpected {len(unexpected)}: {unexpected[:6]}). "
            f"Expected the state dict of rosinality model.Generator (g_ema or g)")
    style_dim = sd["style.1.weight"].shape[0]
    for i in styles:
        if tuple(sd[f"style.{i}.weight"].shape) != (style_dim, style_dim):
            raise _shape_error(f"style.{i}.weight", sd[f"style.{i}.weight"].shape, [style_dim, style_dim])
    const = sd["input.input"]
    if const.ndim != 4 or const.shape[0] != 1 or tuple(const.shape[2:]) != (4, 4):
        raise _shape_error("input.input", const.shape, "[1, C, 4, 4]")
    channels = {4: const.shape[1]}
    for j in range(n_rgbs):
        channels[2 ** (j + 3)] = sd[f"convs.{2 * j}.conv.weight"].shape[1]
    img_channels = sd["to_rgb1.conv.weight"].shape[1]

    kernel = resample_filter() * 4  # rosinality stores the blur kernel times factor**2
    for k, v in sd.items():
        if k.endswith(("blur.kernel", "upsample.kernel")) and (
                tuple(v.shape) != (4, 4) or not torch.allclose(v.float(), kernel, atol=1e-6)):
            raise CheckpointFormatError(f"rosinality checkpoint: {k!r} is not the standard [1,3,3,1] blur kernel; "
                                        f"generators with other resample filters are not supported")

    out = {}

    def put(name, t, shape):
        # rosinality adds singleton dims ([1,O,I,k,k], [1,3,1,1], [1]); everything else must match exactly
        if [d for d in t.shape if d != 1] != [d for d in shape if d != 1]:
            raise _shape_error(name, t.shape, list(shape))
        out[name_map[name]] = t.reshape(shape).contiguous()

    name_map = {}

    def conv_layer(src, dst, cin, cout, res, noise_idx, ksize=3):
        for s, d in [("conv.weight", "weight"), ("conv.modulation.weight", "affine.weight"),
                     ("conv.modulation.bias", "affine.bias"), ("noise.weight", "noise_strength"),
                     ("activate.bias", "bias")]:
            name_map[f"{src}.{s}"] = f"synthesis.{dst}.{d}"
        put(f"{src}.conv.weight", sd[f"{src}.conv.weight"], (cout, cin, ksize, ksize))
        put(f"{src}.conv.modulation.weight", sd[f"{src}.conv.modulation.weight"], (cin, style_dim))
        put(f"{src}.conv.modulation.bias", sd[f"{src}.conv.modulation.bias"], (cin,))
        put(f"{src}.noise.weight", sd[f"{src}.noise.weight"], ())
        put(f"{src}.activate.bias", sd[f"{src}.activate.bias"], (cout,))
        name_map[f"noises.noise_{noise_idx}"] = f"synthesis.{dst}.noise_const"
        put(f"noises.noise_{noise_idx}", sd[f"noises.noise_{noise_idx}"], (res, res))
        out[f"synthesis.{dst}.resample_filter"] = resample_filter(dtype=sd[f"{src}.conv.weight"].dtype)

    def rgb_layer(src, dst, cin):
        for s, d in [("conv.weight", "weight"), ("conv.modulation.weight", "affine.weight"),
                     ("conv.modulation.bias", "affine.bias"), ("bias", "bias")]:
            name_map[f"{src}.{s}"] = f"synthesis.{dst}.{d}"
        put(f"{src}.conv.weight", sd[f"{src}.conv.weight"], (img_channels, cin, 1, 1))
        put(f"{src}.conv.modulation.weight", sd[f"{src}.conv.modulation.weight"], (cin, style_dim))
        put(f"{src}.conv.modulation.bias", sd[f"{src}.conv.modulation.bias"], (cin,))
        put(f"{src}.bias", sd[f"{src}.bias"], (img_channels,))

    for i in styles:
        name_map[f"style.{i}.weight"] = f"mapping.fc{i - 1}.weight"
        name_map[f"style.{i}.bias"] = f"mapping.fc{i - 1}.bias"
        put(f"style.{i}.weight", sd[f"style.{i}.weight"], (style_dim, style_dim))
        put(f"style.{i}.bias", sd[f"style.{i}.bias"], (style_dim,))
    w_avg_missing = latent_avg is None
    if latent_avg is not None:
        if not isinstance(latent_avg, torch.Tensor) or latent_avg.numel() != style_dim:
            raise CheckpointFormatError(f"rosinality checkpoint: 'latent_avg' should be a [{style_dim}] tensor, got "
                                        f"{getattr(latent_avg, 'shape', type(latent_avg).__name__)}")
        out["mapping.w_avg"] = latent_avg.reshape(style_dim).to(sd["style.1.weight"].dtype).contiguous()
    else:
        out["mapping.w_avg"] = torch.zeros(style_dim, dtype=sd["style.1.weight"].dtype)

    name_map["input.input"] = "synthesis.b4.const"
    put("input.input", const, (channels[4], 4, 4))
    out["synthesis.b4.resample_filter"] = resample_filter(dtype=const.dtype)
    conv_layer("conv1", "b4.conv1", channels[4], channels[4], 4, 0)
    rgb_layer("to_rgb1", "b4.torgb", channels[4])
    for j in range(n_rgbs):
        k = j + 3
        res = 2 ** k
        cin, cout = channels[res // 2], channels[res]
        out[f"synthesis.b{res}.resample_filter"] = resample_filter(dtype=const.dtype)
        conv_layer(f"convs.{2 * j}", f"b{res}.conv0", cin, cout, res, 2 * k - 5)
        conv_layer(f"convs.{2 * j + 1}", f"b{res}.conv1", cout, cout, res, 2 * k - 4)
        rgb_layer(f"to_rgbs.{j}", f"b{res}.torgb", cout)

    synthesis_kwargs = {"num_fp16_res": 0, "conv_clamp": None, "architecture": "skip"}
    fit = fit_channel_table(channels, size)
    if fit is not None:
        synthesis_kwargs = {"channel_base": fit[0], "channel_max": fit[1], **synthesis_kwargs}
    else:
        synthesis_kwargs["channels"] = {str(r): int(c) for r, c in sorted(channels.items())}
    init_kwargs = {"z_dim": int(style_dim), "c_dim": 0, "w_dim": int(style_dim), "img_resolution": int(size),
                   "img_channels": int(img_channels),
                   "mapping_kwargs": {"num_layers": n_mlp, "lr_multiplier": 0.01},
                   "synthesis_kwargs": synthesis_kwargs}
    info = {"w_avg_missing": w_avg_missing, "channels": {str(r): int(c) for r, c in sorted(channels.items())}}
    return init_kwargs, out, info


def _strip_prefix(sd, prefix):
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def read_rosinality(ckpt, which="G_ema", what="the file"):
    """Pick the generator from a loaded rosinality-style checkpoint and convert it (see module docstring).

    Args:
        ckpt: the object ``torch.load`` returned (a dict).
        which: ``"G_ema"`` (uses ``g_ema``, falling back to ``g`` for JoJoGAN files) or ``"G"`` (``g``).
        what: the file's name for messages.

    Returns:
        ``(init_kwargs, state_dict, extras)``.
    """
    if not isinstance(ckpt, dict):
        raise CheckpointFormatError(f"{what} holds a {type(ckpt).__name__}; expected a dict with 'g_ema' or 'g' "
                                    f"(rosinality stylegan2-pytorch checkpoint)")
    extras = {"format": "rosinality", "checkpoint_keys": [str(k) for k in ckpt]}
    if looks_like_rosinality(ckpt):
        sd, key = ckpt, None
    else:
        order = {"G_ema": ["g_ema", "g"], "G": ["g"]}.get(which)
        if order is None:
            raise ValueError(f"which must be 'G_ema' or 'G', got {which!r}")
        key = next((k for k in order if isinstance(ckpt.get(k), dict)), None)
        if key is None:
            raise CheckpointFormatError(
                f"{what} has no {' or '.join(repr(k) for k in order)} generator state dict (keys: "
                f"{extras['checkpoint_keys'][:12]}); expected a rosinality stylegan2-pytorch checkpoint")
        if which == "G_ema" and key == "g":
            log.info("%s has no 'g_ema'; using 'g' (JoJoGAN-style fine-tune).", what)
        sd = ckpt[key]
    extras["key"] = key
    if any(k.startswith("module.") for k in sd):
        sd = _strip_prefix(sd, "module.")
    if not looks_like_rosinality(sd) and any(k.startswith("generator.") for k in sd):
        log.info("%s is a DualStyleGAN checkpoint; using its inner StyleGAN2 ('generator.*'), ignoring the "
                 "extrinsic style path.", what)
        sd = _strip_prefix(sd, "generator.")
        extras["dualstylegan"] = True
    if not looks_like_rosinality(sd):
        raise CheckpointFormatError(f"{what}: {key or 'the state dict'} does not hold rosinality generator keys "
                                    f"(input.input, conv1.conv.weight, ...); got e.g. {sorted(sd)[:6]}")
    latent_avg = ckpt.get("latent_avg") if key is not None else None
    init_kwargs, out, info = convert_rosinality_state_dict(sd, latent_avg)
    extras.update(info)
    args = ckpt.get("args")
    if isinstance(args, argparse.Namespace):
        try:
            extras["args"] = plain_config(vars(args))
        except CheckpointFormatError:
            extras["args"] = {k: str(v) for k, v in vars(args).items()}
    return init_kwargs, out, extras
