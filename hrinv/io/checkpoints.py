"""Load, save and inspect StyleGAN2 generators: format detection by content and one entry point for every format.

=====================  ==================================================  =========================================
format                 recognised by                                        read with
=====================  ==================================================  =========================================
``safetensors``        8-byte header length + ``{``                         :mod:`safetensors` (ours: metadata
                                                                            ``hrinv``; plain NVIDIA/rosinality state
                                                                            dicts with a sidecar ``.json`` or shapes)
``torch-zip``          ``PK`` zip holding ``*/data.pkl``                    ``torch.load(weights_only=True)``
``torch-legacy``       pickle of torch's legacy magic number                ``torch.load(weights_only=True)``
``pickle``             pickle ``PROTO`` opcode                              :mod:`hrinv.io.safe_unpickle` (NVIDIA
                                                                            snapshot or legacy TensorFlow)
=====================  ==================================================  =========================================

Readers return ``(init_kwargs, state_dict, extras)`` with NVIDIA key names; :func:`load_generator` builds the
:class:`~hrinv.generator.stylegan2.Generator` and loads the weights strictly (key sets and shapes compared first,
with a message listing what differs).
"""

import json
import logging
import re
import struct
import zipfile
from pathlib import Path

import torch

from .._files import atomic_write
from ..errors import CheckpointCorruptError, CheckpointFormatError, HRInvError, WeightsNotFoundError
from .nvidia_pkl import WHICH, plain_config, read_nvidia_pickle
from .rosinality import (
    ROSINALITY_SAFE_GLOBALS,
    convert_rosinality_state_dict,
    fit_channel_table,
    looks_like_rosinality,
    read_rosinality,
)
from .safe_unpickle import torch_load_safe

__all__ = [
    "HRINV_FORMAT",
    "HRINV_VERSION",
    "estimate_w_avg",
    "infer_nvidia_config",
    "validate_config",
    "inspect_checkpoint",
    "load_generator",
    "read_checkpoint",
    "save_generator",
    "sniff_format",
]

log = logging.getLogger(__name__)

HRINV_FORMAT = "hrinv.generator"
HRINV_VERSION = 1
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_CKPT_SUFFIXES = (".pkl", ".pt", ".pth", ".ckpt", ".safetensors", ".bin")
_W_AVG_SAMPLES = 10000
_W_AVG_SEED = 0


# ----------------------------------------------------------------------------------------------------------------------
# Format detection

def _check_path(path):
    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsNotFoundError(f"checkpoint not found: {path} (expected a .pkl, .pt or .safetensors StyleGAN2 "
                                   f"file; check the path, or put the file in models/stylegan2/)")
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in _CKPT_SUFFIXES)[:8]
        hint = f"; it contains {inside}" if inside else ""
        raise CheckpointFormatError(f"{path} is a directory, expected a checkpoint file{hint}. Pass the file itself")
    return path


def sniff_format(path):
    """Detect a checkpoint's container from its first bytes (the extension is not trusted).

    Returns:
        ``"safetensors"``, ``"torch-zip"``, ``"torch-legacy"`` or ``"pickle"``.

    Raises:
        WeightsNotFoundError: missing path. CheckpointCorruptError: empty or truncated container.
        CheckpointFormatError: a directory, or bytes of no supported format.
    """
    path = _check_path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
        head_line = head + f.read(240)
    if size == 0:
        raise CheckpointCorruptError(f"{path} is empty (0 bytes); the download or copy failed. Get the file again")
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise CheckpointCorruptError(f"{path} is a zip archive that cannot be opened ({e}); it is truncated or "
                                         f"damaged. Get the file again") from None
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "torch-zip"
        what = "a numpy .npz archive" if names and all(n.endswith(".npy") for n in names) else "a zip archive"
        raise CheckpointFormatError(f"{path} is {what} but not a torch checkpoint (no data.pkl inside; entries: "
                                    f"{names[:5]}). Expected a StyleGAN2 .pkl, .pt or .safetensors file")
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return "torch-legacy"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{":
            if 8 + n > size:
                raise CheckpointCorruptError(f"{path} is a truncated .safetensors file (header says {n} bytes, file "
                                             f"has {size}). Get the file again")
            return "safetensors"
    if head[:1] in (b"(", b"}", b"]") or re.match(rb"c[\w.]+\n[\w.]+\n", head_line):
        return "pickle"  # protocol 0/1 (``c`` = GLOBAL: refused by the restricted unpickler, with its name)
    if size < 16:
        raise CheckpointCorruptError(f"{path} has only {size} bytes, too few for any checkpoint; it is truncated. Get "
                                     f"the file again")
    if head[:4] == b"\x89HDF":
        raise CheckpointFormatError(f"{path} is an HDF5 file (a Keras/TF checkpoint?); expected a StyleGAN2 .pkl, "
                                    f".pt or .safetensors file")
    raise CheckpointFormatError(f"{path} is not a checkpoint format we know (first bytes {head[:8]!r}); expected an "
                                f"NVIDIA .pkl, a rosinality .pt or a .safetensors file")


# ----------------------------------------------------------------------------------------------------------------------
# Readers

def _is_nvidia_sd(sd):
    return isinstance(sd, dict) and any(isinstance(k, str) and k.startswith("synthesis.b4.") for k in sd)


def infer_nvidia_config(sd):
    """Infer NVIDIA ``init_kwargs`` from the shapes of an NVIDIA-named generator state dict.

    ``conv_clamp`` and ``num_fp16_res`` leave no trace in the weights; they are set to ``None`` / 0 (ship a sidecar
    ``.json`` with the real ``init_kwargs`` when that matters).
    """
    try:
        fcs = sorted(int(m.group(1)) for k in sd for m in [re.fullmatch(r"mapping\.fc(\d+)\.weight", k)] if m)
        res = sorted({int(m.group(1)) for k in sd for m in [re.match(r"synthesis\.b(\d+)\.", k)] if m})
        if not fcs or not res or res[0] != 4:
            raise KeyError("mapping.fc*/synthesis.b4")
        last = f"mapping.fc{fcs[-1]}.weight"
        w_dim = sd[last].shape[0]
        fc0_in = sd["mapping.fc0.weight"].shape[1]
        mapping = {"num_layers": len(fcs)}
        c_dim, z_dim = 0, fc0_in
        if "mapping.embed.weight" in sd:
            embed = sd["mapping.embed.weight"]
            c_dim, z_dim = embed.shape[1], fc0_in - embed.shape[0]
            mapping["embed_features"] = int(embed.shape[0])
        if len(fcs) > 1 and sd["mapping.fc0.weight"].shape[0] != w_dim:
            mapping["layer_features"] = int(sd["mapping.fc0.weight"].shape[0])
        if "mapping.w_avg" not in sd:
            mapping["w_avg_beta"] = None
        top = res[-1]
        img_channels = sd[f"synthesis.b{top}.torgb.weight"].shape[0]
        channels = {4: sd["synthesis.b4.const"].shape[0]}
        for r in res[1:]:
            channels[r] = sd[f"synthesis.b{r}.conv1.weight"].shape[0]
    except (KeyError, IndexError, AttributeError) as e:
        raise CheckpointFormatError(f"the state dict has NVIDIA-style names but not the keys of a StyleGAN2 "
                                    f"generator (missing {e}); expected mapping.fc*, synthesis.b4.const, ...") from None
    if any(k.endswith(".skip.weight") for k in sd):
        arch = "resnet"
    elif all(f"synthesis.b{r}.torgb.weight" in sd for r in res):
        arch = "skip"
    else:
        arch = "orig"
    synthesis = {"num_fp16_res": 0, "conv_clamp": None, "architecture": arch}
    fit = fit_channel_table(channels, top)
    if fit is not None:
        synthesis = {"channel_base": fit[0], "channel_max": fit[1], **synthesis}
    else:
        synthesis["channels"] = {str(r): int(c) for r, c in channels.items()}
    return {"z_dim": int(z_dim), "c_dim": int(c_dim), "w_dim": int(w_dim), "img_resolution": int(top),
            "img_channels": int(img_channels), "mapping_kwargs": mapping, "synthesis_kwargs": synthesis}


_INIT_KEYS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs")


def _sidecar_config(path):
    """``<stem>.json`` or ``config.json`` next to ``path`` holding NVIDIA ``init_kwargs`` (top level or under
    ``"init_kwargs"``), or ``None``."""
    path = Path(path)
    for cand in (path.with_suffix(".json"), path.parent / "config.json"):
        if not cand.is_file():
            continue
        if cand.stat().st_size > 1 << 20:
            log.warning("Ignoring sidecar %s: %d bytes, far more than any init_kwargs.", cand, cand.stat().st_size)
            continue
        try:
            cfg = json.loads(cand.read_text())
        except (OSError, ValueError, RecursionError) as e:
            log.warning("Ignoring sidecar %s: not valid JSON (%s).", cand, e)
            continue
        cfg = cfg.get("init_kwargs", cfg) if isinstance(cfg, dict) else None
        if isinstance(cfg, dict) and all(k in cfg for k in _INIT_KEYS[:5]):
            return {k: cfg[k] for k in _INIT_KEYS if k in cfg}, str(cand)
    return None


def _from_plain_sd(sd, path, fmt):
    """A flat state dict: NVIDIA names (config from sidecar or shapes) or rosinality names (converted)."""
    if looks_like_rosinality(sd):
        init_kwargs, out, info = convert_rosinality_state_dict(sd)
        return init_kwargs, out, {"format": f"{fmt}:rosinality-state-dict", **info}
    if not _is_nvidia_sd(sd):
        raise CheckpointFormatError(f"{path} holds tensors that are not a StyleGAN2 generator (no synthesis.b4.* or "
                                    f"rosinality input.input keys; e.g. {sorted(map(str, sd))[:5]})")
    side = _sidecar_config(path)
    if side is not None:
        init_kwargs, source = side
        extras = {"format": f"{fmt}:nvidia-state-dict", "config_from": source}
    else:
        init_kwargs = infer_nvidia_config(sd)
        extras = {"format": f"{fmt}:nvidia-state-dict", "config_from": "shapes"}
        log.warning("%s has no configuration; inferred it from the tensor shapes (conv_clamp=None assumed). Put the "
                    "generator's init_kwargs in %s to be exact.", path, Path(path).with_suffix(".json").name)
    return plain_config(init_kwargs), sd, extras


def _read_safetensors(path):
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointCorruptError(f"{path} could not be read as .safetensors ({e}); it is truncated or damaged. "
                                     f"Get the file again") from None
    if "hrinv" not in meta:
        return _from_plain_sd(sd, path, "safetensors")
    try:
        info = json.loads(meta["hrinv"])
    except ValueError as e:
        raise CheckpointCorruptError(f"{path}: the 'hrinv' metadata is not valid JSON ({e})") from None
    if not isinstance(info, dict) or info.get("format") != HRINV_FORMAT:
        got = info.get("format") if isinstance(info, dict) else info
        raise CheckpointFormatError(f"{path}: 'hrinv' metadata of format {got!r}, expected {HRINV_FORMAT!r} (is this "
                                    f"a latent file? use hrinv.Latent.load)")
    if int(info.get("version", 0)) > HRINV_VERSION:
        raise CheckpointFormatError(f"{path} was written by a newer hrinv (format version {info.get('version')}, we "
                                    f"read up to {HRINV_VERSION}); update hrinv")
    init_kwargs = info.get("init_kwargs")
    if not isinstance(init_kwargs, dict) or any(k not in init_kwargs for k in _INIT_KEYS[:5]):
        raise CheckpointFormatError(f"{path}: the 'hrinv' metadata lacks init_kwargs ({_INIT_KEYS[:5]})")
    extras = {"format": "hrinv-safetensors", "inr": info.get("inr"), "source": info.get("source"),
              "w_avg": info.get("w_avg")}
    return init_kwargs, sd, extras


def _read_torch(path, which, fmt):
    obj = torch_load_safe(str(path), what=str(path), extra_safe_globals=ROSINALITY_SAFE_GLOBALS)
    if isinstance(obj, dict):
        if all(isinstance(v, torch.Tensor) for v in obj.values()) and (_is_nvidia_sd(obj) or
                                                                       looks_like_rosinality(obj)):
            return _from_plain_sd(obj, path, fmt)
        key = {"G_ema": ("G_ema", "g_ema"), "G": ("G", "g")}.get(which, ())
        for k in key:
            if _is_nvidia_sd(obj.get(k)):
                return _from_plain_sd(obj[k], path, fmt)
    init_kwargs, sd, extras = read_rosinality(obj, which=which, what=str(path))
    extras["container"] = fmt
    return init_kwargs, sd, extras


def read_checkpoint(path, which="G_ema"):
    """Read any supported checkpoint into ``(init_kwargs, state_dict, extras)`` without building a network.

    Args:
        path: the checkpoint file.
        which: ``"G_ema"`` (default) or ``"G"`` (the non-averaged training generator, where the file has one).

    Returns:
        ``init_kwargs`` (NVIDIA layout, JSON-able), ``state_dict`` (NVIDIA names, CPU tensors, INR head under
        ``inr.*`` if any), ``extras`` (``format``, and per format: ``w_avg_missing``, ``inr`` config, ...).

    Raises:
        WeightsNotFoundError, CheckpointFormatError, CheckpointCorruptError, UnsafeCheckpointError.
    """
    if which not in WHICH:
        raise ValueError(f"which must be one of {sorted(WHICH)}, got {which!r}")
    path = _check_path(path)
    try:
        return _read_checkpoint(path, which)
    except HRInvError:
        raise
    except (KeyError, TypeError, AttributeError, IndexError, ValueError, AssertionError, OverflowError,
            RecursionError, MemoryError) as e:
        # untrusted content with a structure no reader anticipated: a typed error, never a crash
        raise CheckpointFormatError(f"{path} has an unexpected structure for its format ({type(e).__name__}: "
                                    f"{str(e)[:200]}); it is damaged or a variant we do not read") from None


def _read_checkpoint(path, which):
    fmt = sniff_format(path)
    if fmt == "safetensors":
        if which != "G_ema":
            log.info("%s holds a single generator; which=%r ignored.", path, which)
        return _read_safetensors(path)
    if fmt in ("torch-zip", "torch-legacy"):
        return _read_torch(path, which, fmt)
    with open(path, "rb") as f:
        init_kwargs, sd, extras = read_nvidia_pickle(f, which=which, what=str(path))
    if extras.get("format") == "pickle-state-dict":
        return _from_plain_sd(sd, path, "pickle")
    if extras.get("format") == "tf-legacy":
        from .tf_legacy import convert_tf_pickle
        return convert_tf_pickle(extras["tf"], which=which, what=str(path))
    return init_kwargs, sd, extras


# ----------------------------------------------------------------------------------------------------------------------
# Building the generator

@torch.no_grad()
def estimate_w_avg(G, num_samples=_W_AVG_SAMPLES, seed=_W_AVG_SEED, batch=1000):
    """Mean of ``G.mapping`` over ``num_samples`` z ~ N(0, I) drawn from a local ``torch.Generator(seed)``.

    Returns:
        ``[w_dim]`` float32 tensor on CPU (deterministic for a given network, seed and count).
    """
    if G.c_dim:
        raise CheckpointFormatError("cannot estimate w_avg of a conditional generator (c_dim > 0) without labels")
    gen = torch.Generator().manual_seed(seed)
    dev = G.mapping.fc0.weight.device
    total = torch.zeros(G.w_dim, dtype=torch.float64)
    done = 0
    while done < num_samples:
        n = min(batch, num_samples - done)
        z = torch.randn(n, G.z_dim, generator=gen)  # [n, z_dim]
        ws = G.mapping(z.to(dev, G.mapping.fc0.weight.dtype), None)  # [n, num_ws, w_dim]
        total += ws[:, 0].double().sum(0).cpu()
        done += n
    return (total / num_samples).float()


def _compare_keys(G, sd, path):
    want = G.state_dict()
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    if missing or unexpected:
        raise CheckpointFormatError(
            f"{path}: the weights do not match the generator its configuration describes (missing {len(missing)}: "
            f"{missing[:5]}; unexpected {len(unexpected)}: {unexpected[:5]}). The file is inconsistent or of a "
            f"variant we do not support")
    wrong = [(k, list(sd[k].shape), list(want[k].shape)) for k in want if tuple(sd[k].shape) != tuple(want[k].shape)]
    if wrong:
        raise CheckpointFormatError(f"{path}: {len(wrong)} tensors have the wrong shape for the configuration, e.g. "
                                    f"{wrong[:3]} (name, file, expected). The file is inconsistent")


# Bounds no real StyleGAN2 comes near (stock: 512-d, 8 mapping layers, 1024 px, 3 channels); they only exist so that a
# tiny file cannot declare a network that takes minutes or gigabytes to build before its weights are compared.
_BOUNDS = {"z_dim": (0, 16384), "c_dim": (0, 1 << 20), "w_dim": (1, 16384), "img_resolution": (4, 1 << 14),
           "img_channels": (1, 16)}
_MAPPING_BOUNDS = {"num_layers": (0, 64), "embed_features": (0, 16384), "layer_features": (1, 16384)}
_SYNTH_BOUNDS = {"channel_base": (1, 1 << 26), "channel_max": (1, 16384), "num_fp16_res": (0, 32)}
_MAX_INR_HIDDEN = 4096


def _bounded_int(value, name, lo, hi, source):
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise CheckpointFormatError(f"{source}: the stored configuration has {name} = {str(value)[:40]}, expected an "
                                    f"integer in [{lo}, {hi}]; the file is damaged or crafted")
    return value


def validate_config(init_kwargs, state_dict, extras=None, source=None):
    """Check a declared generator configuration against sane bounds and against the tensors actually in the file.

    Runs before anything is built, in microseconds: a file that declares ``z_dim = 20000`` over small tensors, 10^7
    mapping layers or a 2^30-pixel generator is refused here instead of allocating or looping. The full per-tensor
    shape comparison follows in :func:`build_generator` on the ``meta`` device (no memory).

    Raises:
        CheckpointFormatError: a value out of bounds or contradicting the tensors (what and where is named).
    """
    if not isinstance(init_kwargs, dict):
        raise CheckpointFormatError(f"{source}: the stored configuration is a {type(init_kwargs).__name__}, not a dict")
    if not isinstance(state_dict, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                   for k, v in state_dict.items()):
        raise CheckpointFormatError(f"{source}: the weights are not a dict of named tensors")
    for name, (lo, hi) in _BOUNDS.items():
        _bounded_int(init_kwargs.get(name), name, lo, hi, source)
    res = init_kwargs["img_resolution"]
    if res & (res - 1):
        raise CheckpointFormatError(f"{source}: img_resolution = {res} is not a power of two")
    for key, bounds in (("mapping_kwargs", _MAPPING_BOUNDS), ("synthesis_kwargs", _SYNTH_BOUNDS)):
        sub = init_kwargs.get(key) or {}
        if not isinstance(sub, dict):
            raise CheckpointFormatError(f"{source}: {key} must be a dict, got {type(sub).__name__}")
        for name, (lo, hi) in bounds.items():
            if sub.get(name) is not None:
                _bounded_int(sub[name], f"{key}.{name}", lo, hi, source)
    synth = init_kwargs.get("synthesis_kwargs") or {}
    rf = synth.get("resample_filter")
    if rf is not None and (not isinstance(rf, (list, tuple)) or not 1 <= len(rf) <= 16):
        raise CheckpointFormatError(f"{source}: synthesis_kwargs.resample_filter must be a short list of taps")
    chans = synth.get("channels")
    if chans is not None and (not isinstance(chans, dict) or len(chans) > 16):
        raise CheckpointFormatError(f"{source}: synthesis_kwargs.channels must be a table of at most 16 widths")
    # declared vs actual: the loops of the constructor are bounded by what the file really holds
    mapping = init_kwargs.get("mapping_kwargs") or {}
    n_layers = mapping.get("num_layers", 8)
    n_fc = sum(1 for k in state_dict if re.fullmatch(r"mapping\.fc\d+\.weight", k))
    if n_layers != n_fc:
        raise CheckpointFormatError(f"{source}: the configuration declares {n_layers} mapping layers but the file "
                                    f"holds {n_fc} (mapping.fc*.weight); the file is inconsistent")
    top = f"synthesis.b{res}.conv1.weight"
    blocks = sorted({int(m.group(1)) for k in state_dict for m in [re.match(r"synthesis\.b(\d+)\.", k)] if m})
    if top not in state_dict or (blocks and blocks[-1] != res):
        raise CheckpointFormatError(f"{source}: the configuration declares a {res} px generator but the file's "
                                    f"synthesis blocks go up to {blocks[-1] if blocks else 'none'} px; the file is "
                                    f"inconsistent")
    fc0 = state_dict.get("mapping.fc0.weight")
    if fc0 is not None and fc0.ndim == 2:
        want_in = init_kwargs["z_dim"] + (mapping.get("embed_features") or init_kwargs["w_dim"]
                                          if init_kwargs["c_dim"] else 0)
        if fc0.shape[1] != want_in:
            raise CheckpointFormatError(f"{source}: the configuration declares z_dim={init_kwargs['z_dim']} "
                                        f"(c_dim={init_kwargs['c_dim']}) but mapping.fc0.weight is {list(fc0.shape)}; "
                                        f"the file is inconsistent")
    inr = (extras or {}).get("inr")
    if inr:
        if not isinstance(inr, dict):
            raise CheckpointFormatError(f"{source}: the stored INR head configuration is not a dict")
        _bounded_int(inr.get("hidden", 64), "inr.hidden", 1, _MAX_INR_HIDDEN, source)
        _bounded_int(inr.get("in_channels"), "inr.in_channels", 1, 16384, source)
        if _json_depth(inr) > 32:
            raise CheckpointFormatError(f"{source}: the stored INR head configuration (fit_info) nests more than 32 "
                                        f"levels; the file is damaged or crafted")
    bad = sorted(k for k, v in state_dict.items() if not v.is_floating_point())
    if bad:
        raise CheckpointFormatError(f"{source}: tensors {bad[:4]} are {state_dict[bad[0]].dtype}, not floating point; "
                                    f"a generator's weights are float16/32/64")


def _json_depth(obj, limit=64):
    stack, deepest = [(obj, 1)], 0
    while stack:
        x, d = stack.pop()
        deepest = max(deepest, d)
        if deepest >= limit:
            break
        if isinstance(x, dict):
            stack.extend((v, d + 1) for v in x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend((v, d + 1) for v in x)
    return deepest


def build_generator(init_kwargs, state_dict, extras=None, device="cpu", dtype=torch.float32, source=None):
    """Build a :class:`~hrinv.generator.stylegan2.Generator` from reader output and load it strictly.

    The configuration is validated first (:func:`validate_config`), the network is built on the ``meta`` device (no
    memory, no random initialisation), key sets and shapes are compared, and the file's tensors are assigned as the
    parameters. A malformed file therefore fails in milliseconds and without allocating what it declares.

    Args:
        init_kwargs, state_dict, extras: as returned by :func:`read_checkpoint`.
        device, dtype: where the returned network lives.
        source: path recorded in ``G.meta``.

    Returns:
        The generator, in eval mode, parameters frozen (``requires_grad=False``; re-enable to train).
    """
    from ..generator.stylegan2 import Generator
    extras = dict(extras or {})
    validate_config(init_kwargs, state_dict, extras, source)
    try:
        G = Generator(**init_kwargs, device="meta", dtype=torch.float32)
    except HRInvError:
        raise
    except (TypeError, ValueError, KeyError, AssertionError, ZeroDivisionError, OverflowError, RuntimeError,
            RecursionError) as e:
        raise CheckpointFormatError(f"{source}: the stored configuration is not one our Generator accepts ({e}); "
                                    f"init_kwargs={json.dumps(init_kwargs, default=str)[:300]}") from None
    inr_cfg = extras.get("inr")
    if inr_cfg:
        from ..generator.inr import INRHead
        try:
            G.attach_inr(INRHead.from_config(inr_cfg, device="meta"))
        except HRInvError as e:
            raise CheckpointFormatError(f"{source}: the stored INR head does not fit the generator ({e})") from None
        except (TypeError, ValueError, KeyError, RuntimeError, RecursionError) as e:
            raise CheckpointFormatError(f"{source}: the stored INR head configuration is invalid ({e})") from None
    elif any(k.startswith("inr.") for k in state_dict):
        raise CheckpointFormatError(f"{source}: the file has inr.* weights but no INR head configuration")
    _compare_keys(G, state_dict, source)
    try:
        G.load_state_dict({k: v.detach().to(torch.float32) for k, v in state_dict.items()}, strict=True,
                          assign=True)
    except RuntimeError as e:
        raise CheckpointFormatError(f"{source}: the weights could not be loaded ({str(e)[:300]})") from None
    left = [n for n, t in list(G.named_parameters()) + list(G.named_buffers()) if t.is_meta]
    if left:  # pragma: no cover - every tensor is persistent; a guard against future non-persistent buffers
        raise CheckpointFormatError(f"{source}: tensors {left[:4]} were not in the file")
    meta = {"source": str(source) if source is not None else None, "format": extras.get("format")}
    for k in ("which", "key", "class_name", "config_from", "dualstylegan", "container"):
        if extras.get(k) is not None:
            meta[k] = extras[k]
    if extras.get("w_avg_missing"):
        G.mapping.w_avg.copy_(estimate_w_avg(G))
        meta["w_avg"] = f"estimated: mean of {_W_AVG_SAMPLES} mapped z (seed {_W_AVG_SEED}); the file has none"
        log.info("%s has no w_avg/latent_avg; estimated it from %d samples.", source, _W_AVG_SAMPLES)
    elif extras.get("w_avg"):
        meta["w_avg"] = extras["w_avg"]
    if isinstance(extras.get("source"), dict):
        meta["converted_from"] = extras["source"]
        for k in ("parent_fingerprint", "finetune"):  # a fine-tuned G_t keeps its lineage (hrinv.finetune)
            if extras["source"].get(k) is not None:
                meta[k] = extras["source"][k]
    G.meta = meta
    G.requires_grad_(False)
    return G.eval().to(device=device, dtype=dtype)


def load_generator(path, device="cpu", dtype=torch.float32, *, which="G_ema"):
    """Load a StyleGAN2 generator from any supported file, safely (nothing from the file is executed).

    Args:
        path: NVIDIA ``.pkl`` (stylegan2-ada-pytorch snapshot, or legacy TensorFlow), rosinality ``.pt``/``.pth``,
            or ``.safetensors`` (ours, or a plain NVIDIA/rosinality state dict). The format is detected from the
            content, not the extension.
        device: target device.
        dtype: parameter dtype (float32 recommended).
        which: ``"G_ema"`` (default) or ``"G"`` (the non-EMA training generator, for files that have both).

    Returns:
        :class:`~hrinv.generator.stylegan2.Generator` in eval mode with ``G.meta`` describing the source.

    Raises:
        WeightsNotFoundError: missing file. CheckpointCorruptError: empty/truncated/damaged.
        CheckpointFormatError: unknown layout. UnsafeCheckpointError: the file tries to run code.
    """
    init_kwargs, sd, extras = read_checkpoint(path, which=which)
    return build_generator(init_kwargs, sd, extras, device=device, dtype=dtype, source=path)


# ----------------------------------------------------------------------------------------------------------------------
# Saving and inspection

def save_generator(G, path, *, extra_meta=None):
    """Write ``G`` (INR head included) to our ``.safetensors`` format: weights + JSON metadata ``hrinv``.

    The metadata is ``{"format": "hrinv.generator", "version": 1, "init_kwargs": {...}, "inr": {...} | null,
    "source": G.meta, "fingerprint": ...}``. The file is written next to ``path`` and renamed into place.

    Args:
        G: a :class:`~hrinv.generator.stylegan2.Generator`.
        path: destination (conventionally ``*.safetensors``).
        extra_meta: optional JSON-able dict stored under ``"extra"``.

    Returns:
        ``Path`` of the written file.
    """
    from safetensors.torch import save_file
    path = Path(path)
    seen = set()
    tensors = {}
    for k, t in G.state_dict().items():
        t = t.detach().to("cpu").contiguous()
        if t.untyped_storage().data_ptr() in seen:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        tensors[k] = t
    inr = getattr(G, "inr", None)
    info = {"format": HRINV_FORMAT, "version": HRINV_VERSION, "init_kwargs": G.init_kwargs,
            "inr": inr.config if inr is not None else None,
            "source": json.loads(json.dumps(getattr(G, "meta", {}) or {}, default=str)),
            "fingerprint": G.fingerprint() if hasattr(G, "fingerprint") else None}
    if getattr(G, "meta", {}).get("w_avg"):
        info["w_avg"] = G.meta["w_avg"]
    if extra_meta:
        info["extra"] = json.loads(json.dumps(extra_meta, default=str))
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={"hrinv": json.dumps(info)})
    return path


_BUFFER_SUFFIXES = ("w_avg", "noise_const", "resample_filter")


def inspect_checkpoint(path, which="G_ema"):
    """Describe a checkpoint without building the network.

    Returns:
        dict with ``path``, ``format``, ``init_kwargs``, ``img_resolution``, ``w_dim``, ``num_ws``, ``num_params``
        (learned parameters, buffers excluded), ``num_tensors``, ``has_inr``, ``w_avg`` (``"stored"`` or
        ``"missing"``) and ``extras``.
    """
    init_kwargs, sd, extras = read_checkpoint(path, which=which)
    res = int(init_kwargs["img_resolution"])
    extras = {k: v for k, v in extras.items() if k not in ("tf",)}
    return {
        "path": str(path),
        "format": extras.get("format"),
        "init_kwargs": init_kwargs,
        "img_resolution": res,
        "w_dim": int(init_kwargs["w_dim"]),
        "num_ws": 2 * (res.bit_length() - 1) - 2,
        "num_params": int(sum(t.numel() for k, t in sd.items() if not k.endswith(_BUFFER_SUFFIXES))),
        "num_tensors": len(sd),
        "has_inr": bool(extras.get("inr")),
        "w_avg": "missing" if extras.get("w_avg_missing") or "mapping.w_avg" not in sd else "stored",
        "extras": json.loads(json.dumps(extras, default=str)),
    }
