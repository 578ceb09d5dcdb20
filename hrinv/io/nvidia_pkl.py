"""NVIDIA stylegan2-ada-pytorch snapshot pickles (``network-snapshot-*.pkl``, ``ffhq.pkl``, ...), read safely.

The file is a plain pickle of ``{'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'}`` whose networks are
``torch_utils.persistence`` objects. :mod:`hrinv.io.safe_unpickle` turns each into a :class:`PersistentObject`
(class name + ``__dict__``) without importing NVIDIA code or running the embedded source; here we walk
``_parameters`` / ``_buffers`` / ``_modules`` to get exactly ``G_ema.state_dict()`` (NVIDIA names) and take the
configuration from ``_init_kwargs``.
"""

import logging

import numpy as np
import torch

from ..errors import CheckpointFormatError
from .safe_unpickle import (
    EMBEDDED_SOURCE_WARNING,
    PersistentObject,
    TFNetworkStub,
    describe_module_source,
    safe_load_pickle,
)

__all__ = ["WHICH", "embedded_sources", "persistent_state_dict", "plain_config", "read_nvidia_pickle"]

log = logging.getLogger(__name__)

# which= value -> snapshot key
WHICH = {"G_ema": "G_ema", "G": "G"}


_MAX_CONFIG_NODES = 100_000
_MAX_CONFIG_DEPTH = 32


def plain_config(x, where="init_kwargs", _budget=None, _depth=0):
    """Turn an unpickled config tree (EasyDicts, numpy scalars, tuples) into JSON-able Python values.

    Bounded: at most 100000 values and 32 levels (a real ``init_kwargs`` has ~30 values, 3 levels), so a tree of
    shared references cannot expand exponentially.
    """
    budget = [_MAX_CONFIG_NODES] if _budget is None else _budget
    budget[0] -= 1
    if budget[0] < 0 or _depth > _MAX_CONFIG_DEPTH:
        raise CheckpointFormatError(f"the network configuration ({where.split('.')[0]}) is larger or deeper than any "
                                    f"real one (> {_MAX_CONFIG_NODES} values or > {_MAX_CONFIG_DEPTH} levels); the "
                                    f"file is damaged or crafted")
    if isinstance(x, dict):
        return {str(k)[:200]: plain_config(v, f"{where}.{str(k)[:40]}", budget, _depth + 1) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain_config(v, where, budget, _depth + 1) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, torch.Tensor) and x.numel() <= 64:
        return x.tolist()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    raise CheckpointFormatError(f"the network configuration holds a {type(x).__name__} at {where}; only plain values "
                                f"are expected there")


def embedded_sources(obj, max_nodes=100_000):
    """The distinct ``module_src`` strings of a tree of :class:`PersistentObject` (identity-deduplicated)."""
    out, seen, stack = {}, set(), [obj]
    while stack and len(seen) < max_nodes:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, PersistentObject):
            if isinstance(x.source, str) and x.source.strip():
                out.setdefault(id(x.source), x.source)
            stack.append(x.state)
        elif isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
    return list(out.values())


def persistent_state_dict(obj, prefix="", _seen=None):
    """Collect ``state_dict()``-style tensors from a tree of :class:`PersistentObject` modules.

    Args:
        obj: the persistent record of an ``nn.Module``.
        prefix: name prefix (used in recursion).

    Returns:
        dict name -> tensor, in module order; persistent buffers only (like ``nn.Module.state_dict``).
    """
    seen = set() if _seen is None else _seen
    if id(obj) in seen or len(seen) > 100_000:
        raise CheckpointFormatError(f"the network's module tree repeats module {prefix or 'root'!r} (a cycle or a "
                                    f"shared sub-module) or is larger than any StyleGAN2; the file is damaged or "
                                    f"crafted")
    seen.add(id(obj))
    out = {}
    state = obj.state
    if not isinstance(state, dict):
        raise CheckpointFormatError(f"module {prefix or 'root'!r} of the network has no state dict")
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for name, p in (state.get("_parameters") or {}).items():
        if p is not None:
            out[prefix + name] = _tensor(p, prefix + name)
    for name, b in (state.get("_buffers") or {}).items():
        if b is not None and name not in non_persistent:
            out[prefix + name] = _tensor(b, prefix + name)
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise CheckpointFormatError(
                f"sub-module {prefix + name!r} of the network is a {type(child).__name__}, not a persistent StyleGAN "
                f"module; this snapshot uses classes we cannot read without running its code")
        out.update(persistent_state_dict(child, prefix + name + ".", seen))
    return out


def _tensor(t, name):
    if not isinstance(t, torch.Tensor):
        raise CheckpointFormatError(f"{name!r} in the snapshot is a {type(t).__name__}, not a tensor")
    return t.detach()


def read_nvidia_pickle(data, which="G_ema", what="the file"):
    """Read a stylegan2-ada-pytorch snapshot pickle into ``(init_kwargs, state_dict, extras)``.

    Args:
        data: pickle bytes or a binary file object.
        which: ``"G_ema"`` (default, the averaged generator everybody uses) or ``"G"`` (the raw training copy).
        what: the file's name for messages.

    Returns:
        ``init_kwargs`` (plain dict, exactly ``G.init_kwargs``), ``state_dict`` (NVIDIA names, CPU tensors),
        ``extras`` (``{"format": "nvidia-pkl", "class_name", "snapshot_keys", "tf": obj}``). A legacy TensorFlow
        pickle is returned as ``extras["tf"]`` (the unpickled tuple) with empty config/state for
        :mod:`hrinv.io.tf_legacy` to convert; a pickled flat dict of tensors as ``({}, dict, {"format":
        "pickle-state-dict"})``.

    Raises:
        UnsafeCheckpointError, CheckpointCorruptError, CheckpointFormatError (see :mod:`hrinv.io.safe_unpickle`).
    """
    obj = safe_load_pickle(data, what=what)
    srcs = embedded_sources(obj)
    infos = [describe_module_source(src) for src in srcs[:8]]
    if infos:  # reported before any validation, so a user learns it even when the file is then refused
        log.warning(EMBEDDED_SOURCE_WARNING.format(what=what, n=len(srcs), chars=infos[0]["chars"],
                                                   imports=", ".join(infos[0]["imports"][:8]) or "nothing"))
    if isinstance(obj, TFNetworkStub) or (isinstance(obj, tuple) and obj and
                                          all(isinstance(n, TFNetworkStub) for n in obj)):
        return {}, {}, {"format": "tf-legacy", "tf": obj}
    if which not in WHICH:
        raise ValueError(f"which must be one of {sorted(WHICH)}, got {which!r}")
    if not isinstance(obj, dict):
        raise CheckpointFormatError(f"{what} is a pickle of a {type(obj).__name__}, not a stylegan2-ada-pytorch "
                                    f"snapshot (a dict with 'G_ema'). Expected a network-snapshot-*.pkl")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {}, obj, {"format": "pickle-state-dict"}  # a pickled plain state dict; the caller maps it
    key = WHICH[which]
    net = obj.get(key)
    if net is None:
        found = sorted(str(k) for k in obj)[:12]
        raise CheckpointFormatError(f"{what} is a pickled dict without {key!r} (keys: {found}); expected a "
                                    f"stylegan2-ada-pytorch snapshot with 'G_ema' (and 'G')")
    if not isinstance(net, PersistentObject):
        raise CheckpointFormatError(f"{key!r} in {what} is a {type(net).__name__}, not a persistent StyleGAN network")
    if net.class_name != "Generator":
        raise CheckpointFormatError(f"{key!r} in {what} is a {net.class_name!r}, expected a 'Generator'")
    init_kwargs = net.state.get("_init_kwargs")
    if not isinstance(init_kwargs, dict) or net.state.get("_init_args"):
        raise CheckpointFormatError(f"{key!r} in {what} has no keyword-only constructor arguments (_init_kwargs); "
                                    f"it was not saved by stylegan2-ada-pytorch")
    init_kwargs = plain_config(init_kwargs)
    state_dict = persistent_state_dict(net)
    synth = (net.state.get("_modules") or {}).get("synthesis")
    sub = sorted((synth.state.get("_modules") or {}).keys()) if isinstance(synth, PersistentObject) else []
    if "input" in sub or any(s.startswith("L") and "_" in s for s in sub):
        raise CheckpointFormatError(f"{what} holds a StyleGAN3 generator (synthesis layers {sub[:3]}...); only "
                                    f"StyleGAN2 / StyleGAN2-ADA networks are supported")
    extras = {"format": "nvidia-pkl", "class_name": net.class_name, "which": which,
              "snapshot_keys": [str(k)[:80] for k in list(obj)[:20]]}
    if infos:
        extras["embedded_source"] = infos
    log.debug("Read %s from %s: %d tensors", key, what, len(state_dict))
    return init_kwargs, state_dict, extras
