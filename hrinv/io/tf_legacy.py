"""Legacy TensorFlow StyleGAN2 pickles (``stylegan2-ffhq-config-f.pkl``, toonify, ukiyo-e, ...) -> NVIDIA names.

Such a file is a pickle of ``(G, D, Gs)``, three ``dnnlib.tflib.network.Network`` objects. The restricted unpickler
(:mod:`hrinv.io.safe_unpickle`) reads each as a :class:`TFNetworkStub` holding the pickled state only:
``version``, ``static_kwargs``, ``components`` (``mapping``, ``synthesis``) and ``variables`` (name, numpy array).
TensorFlow is not needed and ``build_module_src`` is never executed.

Conversion rules (those of stylegan2-ada-pytorch ``legacy.py``; TF version >= 4 required):

* Dense ``[in, out]`` -> ``fc.weight [out, in]`` (transposed); ``mod_weight`` likewise -> ``affine.weight``.
* conv ``[kh, kw, in, out]`` -> ``[out, in, kh, kw]``; ``Conv0_up`` (and ``Skip``) kernels are also flipped
  spatially (TF runs the transposed convolution with the kernel the other way round).
* ``mod_bias + 1`` -> ``affine.bias`` (TF adds the 1 at run time).
* ``synthesis/4x4/Const/const [1, C, 4, 4]`` -> ``synthesis.b4.const [C, 4, 4]``.
* ``synthesis/noise{i} [1, 1, r, r]`` -> ``noise_const [r, r]`` (i = 0 for b4.conv1, 2k-5 / 2k-4 for b{2^k}).
* ``dlatent_avg`` -> ``mapping.w_avg``.
* ``fmap_base`` x 2 -> ``channel_base`` (TF's width formula is ``fmap_base / (res / 2)``).
"""

import logging
import math

import numpy as np
import torch

from ..errors import CheckpointFormatError
from .nvidia_pkl import plain_config
from .rosinality import resample_filter
from .safe_unpickle import EMBEDDED_SOURCE_WARNING, TFNetworkStub, describe_module_source

__all__ = ["TF_CONVERT_HINT", "collect_tf_params", "convert_tf_generator", "convert_tf_pickle"]

log = logging.getLogger(__name__)

TF_CONVERT_HINT = ("Alternatively convert it once with NVIDIA's stylegan2-ada-pytorch (python legacy.py or "
                   "`legacy.load_network_pkl` in an environment you trust, then pickle the result), and run "
                   "`hrinv convert network.pkl network.safetensors`.")

# TF static_kwargs that do not change the network (legacy.py accepts and ignores them)
_IGNORED_KWARGS = {"truncation_psi", "truncation_cutoff", "style_mixing_prob", "structure"}


def collect_tf_params(net, prefix=""):
    """Flatten a :class:`TFNetworkStub` tree into ``{"mapping/Dense0/weight": ndarray, ...}``."""
    params = {}
    for item in getattr(net, "variables", None) or []:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
            raise CheckpointFormatError("TensorFlow pickle: 'variables' is not a list of (name, array) pairs")
        name, value = item
        params[prefix + name] = np.asarray(value)
    for name, comp in (getattr(net, "components", None) or {}).items():
        if not isinstance(comp, TFNetworkStub):
            raise CheckpointFormatError(f"TensorFlow pickle: component {name!r} is not a Network record")
        params.update(collect_tf_params(comp, prefix + name + "/"))
    return params


def _kwargs(tf_kwargs):
    known = set(_IGNORED_KWARGS)

    def kw(name, default=None, none=None):
        known.add(name)
        val = tf_kwargs.get(name, default)
        return val if val is not None else none

    init = {
        "z_dim": kw("latent_size", 512),
        "c_dim": kw("label_size", 0),
        "w_dim": kw("dlatent_size", 512),
        "img_resolution": kw("resolution", 1024),
        "img_channels": kw("num_channels", 3),
        "mapping_kwargs": {
            "num_layers": kw("mapping_layers", 8),
            "embed_features": kw("label_fmaps", None),
            "layer_features": kw("mapping_fmaps", None),
            "activation": kw("mapping_nonlinearity", "lrelu"),
            "lr_multiplier": kw("mapping_lrmul", 0.01),
            "w_avg_beta": kw("w_avg_beta", 0.995, none=1),
        },
        "synthesis_kwargs": {
            "channel_base": kw("fmap_base", 16384) * 2,
            "channel_max": kw("fmap_max", 512),
            "num_fp16_res": kw("num_fp16_res", 0),
            "conv_clamp": kw("conv_clamp", None),
            "architecture": kw("architecture", "skip"),
            "resample_filter": kw("resample_kernel", [1, 3, 3, 1]),
            "use_noise": kw("use_noise", True),
            "activation": kw("nonlinearity", "lrelu"),
        },
    }
    unknown = sorted(set(tf_kwargs) - known)
    if unknown:
        raise CheckpointFormatError(f"TensorFlow pickle: unknown generator option(s) {unknown[:5]}; this is a "
                                    f"variant of StyleGAN2 we do not convert. {TF_CONVERT_HINT}")
    return plain_config(init)


def convert_tf_generator(tf_G, what="the file"):
    """Convert one TF generator record (``Gs`` or ``G``) into ``(init_kwargs, state_dict, extras)``."""
    version = getattr(tf_G, "version", None)
    if not isinstance(version, int) or version < 4:
        raise CheckpointFormatError(f"{what}: TensorFlow network pickle version {version!r} is too old (need >= 4, "
                                    f"i.e. StyleGAN2). StyleGAN1 pickles are not supported. {TF_CONVERT_HINT}")
    tf_kwargs = getattr(tf_G, "static_kwargs", None)
    if not isinstance(tf_kwargs, dict):
        raise CheckpointFormatError(f"{what}: TensorFlow network record has no static_kwargs")
    init = _kwargs(tf_kwargs)
    p = collect_tf_params(tf_G)
    if any(k.startswith("synthesis/ToRGB_lod") or "/ToRGB_lod" in k for k in p):
        raise CheckpointFormatError(f"{what}: TensorFlow pickle with the 'orig' (progressive ToRGB_lod) layout is not "
                                    f"supported. {TF_CONVERT_HINT}")
    sk = init["synthesis_kwargs"]
    arch = sk["architecture"]
    res_top = int(init["img_resolution"])
    taps = sk["resample_filter"]
    used = set()

    def get(name):
        if name not in p:
            raise CheckpointFormatError(f"{what}: TensorFlow variable {name!r} is missing; the generator is not a "
                                        f"standard StyleGAN2. {TF_CONVERT_HINT}")
        used.add(name)
        return p[name]

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    def conv_w(a, flip=False):  # [kh, kw, in, out] -> [out, in, kh, kw]
        a = np.asarray(a)
        if a.ndim != 4:
            raise CheckpointFormatError(f"{what}: a TensorFlow conv kernel has shape {list(a.shape)}, expected 4-D")
        if flip:
            a = a[::-1, ::-1]
        return t(a.transpose(3, 2, 0, 1))

    def filt():
        return resample_filter(taps)

    sd = {}
    if init["mapping_kwargs"]["w_avg_beta"] is not None:
        sd["mapping.w_avg"] = t(get("dlatent_avg"))
    if init["c_dim"]:
        sd["mapping.embed.weight"] = t(get("mapping/LabelEmbed/weight").T)
        sd["mapping.embed.bias"] = t(get("mapping/LabelEmbed/bias"))
    for i in range(int(init["mapping_kwargs"]["num_layers"])):
        sd[f"mapping.fc{i}.weight"] = t(get(f"mapping/Dense{i}/weight").T)
        sd[f"mapping.fc{i}.bias"] = t(get(f"mapping/Dense{i}/bias"))

    def layer(dst, src, noise_idx, flip=False):
        sd[f"{dst}.weight"] = conv_w(get(f"{src}/weight"), flip)
        sd[f"{dst}.bias"] = t(get(f"{src}/bias"))
        sd[f"{dst}.affine.weight"] = t(get(f"{src}/mod_weight").T)
        sd[f"{dst}.affine.bias"] = t(get(f"{src}/mod_bias") + 1)
        if noise_idx is not None:
            if sk["use_noise"]:
                sd[f"{dst}.noise_const"] = t(get(f"synthesis/noise{noise_idx}")[0, 0])
                sd[f"{dst}.noise_strength"] = t(get(f"{src}/noise_strength")).reshape(())
            sd[f"{dst}.resample_filter"] = filt()

    log_top = int(math.log2(res_top))
    for k in range(2, log_top + 1):
        r = 2 ** k
        b = f"synthesis.b{r}"
        sd[f"{b}.resample_filter"] = filt()
        if r == 4:
            sd[f"{b}.const"] = t(get("synthesis/4x4/Const/const")[0])
            layer(f"{b}.conv1", "synthesis/4x4/Conv", 0)
        else:
            layer(f"{b}.conv0", f"synthesis/{r}x{r}/Conv0_up", 2 * k - 5, flip=True)
            layer(f"{b}.conv1", f"synthesis/{r}x{r}/Conv1", 2 * k - 4)
            if arch == "resnet":
                sd[f"{b}.skip.weight"] = conv_w(get(f"synthesis/{r}x{r}/Skip/weight"), flip=True)
        if arch == "skip" or r == res_top:
            layer(f"{b}.torgb", f"synthesis/{r}x{r}/ToRGB", None)
    leftover = sorted(set(p) - used)
    if leftover:
        log.debug("%s: TF variables not used by the generator: %s", what, leftover[:10])
    extras = {"format": "tf-legacy", "tf_version": version, "tf_name": getattr(tf_G, "name", None)}
    srcs = _build_sources(tf_G)
    if srcs:
        infos = [describe_module_source(x) for x in srcs[:8]]
        extras["embedded_source"] = infos
        log.warning(EMBEDDED_SOURCE_WARNING.format(what=what, n=len(srcs), chars=infos[0]["chars"],
                                                   imports=", ".join(infos[0]["imports"][:8]) or "nothing"))
    return init, sd, extras


def _build_sources(net, depth=0):
    """Distinct non-empty ``build_module_src`` strings of a TF network record and its components (never run)."""
    out = []
    src = getattr(net, "build_module_src", None)
    if isinstance(src, str) and src.strip():
        out.append(src)
    comps = getattr(net, "components", None)
    if isinstance(comps, dict) and depth < 4:
        for comp in comps.values():
            if isinstance(comp, TFNetworkStub):
                out += [x for x in _build_sources(comp, depth + 1) if x not in out]
    return out


def convert_tf_pickle(obj, which="G_ema", what="the file"):
    """Convert the unpickled TF object (``(G, D, Gs)`` tuple, or a single network) for ``which``."""
    if isinstance(obj, TFNetworkStub):
        net = obj
    elif isinstance(obj, tuple) and len(obj) == 3:
        net = obj[2] if which == "G_ema" else obj[0]
    else:
        raise CheckpointFormatError(f"{what}: a TensorFlow pickle with {len(obj) if isinstance(obj, tuple) else 1} "
                                    f"networks; expected (G, D, Gs). {TF_CONVERT_HINT}")
    init, sd, extras = convert_tf_generator(net, what=what)
    extras["which"] = which
    log.info("Converted legacy TensorFlow generator %r from %s.", extras.get("tf_name"), what)
    return init, sd, extras
