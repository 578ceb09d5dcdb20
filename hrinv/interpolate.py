"""Generator and latent interpolation (HRInversion Eq. 6 and 7), with a λ per synthesis block.

``G_m = G_s + λ (G_t − G_s)`` over every parameter (Eq. 6) and ``w_m = w_s + λ (w_t − w_s)`` over the W+ rows (Eq. 7).
λ is the weight of the **target** (fine-tuned) generator: 0 gives the source, 1 the target. The paper uses 0.2 for
blocks b4–b64 and 0.7 for b128 and up, and "the same setting applies to the λ of w".

A λ schedule is given as:

- ``"paper"``: 0.2 for b4–b64, 0.7 for b128 and up (absolute block resolutions, so a 64-px generator is all 0.2);
- ``"swap:bN"`` (or ``"swap:N"``): layer swapping, λ = 0 below block bN and 1 from bN up;
- ``"source"`` / ``"target"``: λ = 0 / 1 everywhere;
- a float (or a string holding one): the same λ for every block;
- a list/tuple (or a comma-separated string) with one λ per block, b4 first;
- a dict ``{4: 0.2, "b8": 0.3, ...}`` covering every block.

Parameter ownership: ``synthesis.b{R}.*`` → block bR; ``mapping.*`` (incl. ``w_avg``) → ``mapping_lam`` (default: λ of
the first block, ``"source"`` keeps G_s's mapping); ``inr.*`` → ``inr_lam`` (default: λ of the last block). Only
floating-point tensors are interpolated; ``torch.lerp`` makes the endpoints exact (λ = 0 returns G_s bit for bit).

W+ rows → blocks (``scheme``):

- ``"authors"`` (default, the released HRInversion ``w_swapping``): chunks of two rows per block, rows 2j and 2j+1 →
  block j (b4, b8, ...). At 1024² rows 0–9 get 0.2 and rows 10–17 get 0.7.
- ``"nvidia"``: the exact NVIDIA usage. b4 uses rows 0 (conv1) and 1 (torgb); b_{2^k} uses rows 2k−5 (conv0), 2k−4
  (conv1), 2k−3 (torgb). A row shared by the torgb of one block and the conv0 of the next takes the λ of the **next**
  block (the block whose convolution it modulates); the last row (the last torgb only) belongs to the last block. At
  1024² rows 0–8 get 0.2 and rows 9–17 get 0.7.

See docs/interpolation-and-lso.md for the rationale and the fine-tuning heuristic used by :func:`generator_relation`.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import math
import re
import warnings
from typing import Mapping, Sequence

import torch

from .errors import IncompatibleGeneratorsError, ShapeError
from .lambdas import (  # noqa: F401  (re-exported: the λ schedules are part of this module's API)
    PAPER_LAMBDA,
    LambdaSpec,
    _block_resolutions_for,
    _check_lam,
    block_lambdas,
    block_of_key,
    parse_lambda,
    row_blocks,
    row_lambdas,
)

__all__ = [
    "PAPER_LAMBDA",
    "block_lambdas",
    "parse_lambda",
    "block_of_key",
    "row_blocks",
    "row_lambdas",
    "check_compatible",
    "generator_relation",
    "lerp_generators",
    "lerp_latents",
]

logger = logging.getLogger(__name__)

# init_kwargs that only change how a network runs (precision, activation clamping), not what its weights mean. They
# may differ between G_s and G_t (a TF-converted FFHQ model next to an ADA fine-tune, say); G_m takes G_s's.
_RUNTIME_KWARGS = {"synthesis_kwargs.num_fp16_res", "synthesis_kwargs.conv_clamp"}

# Heuristic thresholds for "G_t looks fine-tuned from G_s" (see generator_relation and the docs).
FINETUNE_MIN_MEDIAN_COSINE = 0.5
FINETUNE_MAX_RELATIVE_DISTANCE = 1.0

_NOISE_NAME = re.compile(r"^(?:synthesis\.)?b(\d+)\.")


# ----------------------------------------------------------------------------------------------------------------------
# Generators


def _flatten(d, prefix=""):
    out = {}
    for k, v in (d or {}).items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def _kwargs_of(G) -> dict:
    kw = getattr(G, "init_kwargs", None)
    return json.loads(json.dumps(kw, default=str)) if kw is not None else {}


def _kwarg_defaults(G) -> dict:
    """Constructor defaults of the mapping / synthesis / block classes, so an absent kwarg equals its default."""
    out = {}
    parts = [("mapping_kwargs", getattr(G, "mapping", None)), ("synthesis_kwargs", getattr(G, "synthesis", None))]
    syn = getattr(G, "synthesis", None)
    blocks = getattr(syn, "block_resolutions", None) or []
    if blocks:
        parts.append(("synthesis_kwargs", getattr(syn, f"b{blocks[-1]}", None)))
    for section, module in parts:
        if module is None:
            continue
        try:
            params = inspect.signature(type(module).__init__).parameters.values()
        except (TypeError, ValueError):  # pragma: no cover
            continue
        for p in params:
            if p.default is not inspect.Parameter.empty and p.name not in ("device", "dtype"):
                value = json.loads(json.dumps(p.default, default=str))
                out.setdefault(f"{section}.{p.name}", value)
    return out


def check_compatible(G_s, G_t, *, max_listed: int = 8) -> list[str]:
    """Refuse generators that cannot be interpolated; return the tolerated (runtime-only) differences.

    Two generators are compatible when they are the same class, have the same ``init_kwargs`` (except
    ``num_fp16_res`` and ``conv_clamp``, which only change how the network runs), the same state-dict keys and the same
    shapes.

    Returns:
        Human-readable notes on the tolerated differences (empty when none).

    Raises:
        IncompatibleGeneratorsError: listing the first differences.
    """
    problems, tolerated = [], []
    if type(G_s) is not type(G_t):
        problems.append(f"class: {type(G_s).__name__} vs {type(G_t).__name__}")
    ks, kt = _flatten(_kwargs_of(G_s)), _flatten(_kwargs_of(G_t))
    defaults = _kwarg_defaults(G_s)
    for name in sorted(set(ks) | set(kt)):
        a = ks.get(name, defaults.get(name, "<absent>"))
        b = kt.get(name, defaults.get(name, "<absent>"))
        if a != b:
            (tolerated if name in _RUNTIME_KWARGS else problems).append(f"init_kwargs.{name}: {a!r} vs {b!r}")
    sd_s, sd_t = G_s.state_dict(), G_t.state_dict()
    only_s = sorted(set(sd_s) - set(sd_t))
    only_t = sorted(set(sd_t) - set(sd_s))
    if only_s:
        problems.append(f"{len(only_s)} keys only in G_s (e.g. {', '.join(only_s[:3])})")
    if only_t:
        problems.append(f"{len(only_t)} keys only in G_t (e.g. {', '.join(only_t[:3])})")
    if any(k.startswith("inr.") for k in only_s + only_t):
        problems.append("only one generator has an INR head: give both one (hrinv fit-inr) or use neither")
    for key in sd_s:
        if key in sd_t and tuple(sd_s[key].shape) != tuple(sd_t[key].shape):
            problems.append(f"{key}: shape {tuple(sd_s[key].shape)} vs {tuple(sd_t[key].shape)}")
        elif key in sd_t and key.endswith("resample_filter") and not torch.equal(sd_s[key].float().cpu(),
                                                                                  sd_t[key].float().cpu()):
            problems.append(f"{key}: different resampling filters")
    if problems:
        shown = problems[:max_listed]
        more = f" (and {len(problems) - max_listed} more)" if len(problems) > max_listed else ""
        raise IncompatibleGeneratorsError(
            "the source and target generators do not share one architecture, so their weights cannot be "
            "interpolated. Expected the same class, init_kwargs, state-dict keys and shapes (G_t fine-tuned from "
            f"G_s); differences: {'; '.join(shown)}{more}. Use a target generator fine-tuned from this source.")
    return tolerated


def generator_relation(G_s, G_t) -> dict:
    """How far G_t's weights are from G_s's: the "is G_t fine-tuned from G_s?" heuristic.

    Over the weight tensors (floating point, at least 2-D: conv, affine, fc and the constant input; biases, noise
    strengths, noise_const, w_avg and filters are left out) it measures

    - ``median_cosine``: the median cosine similarity between matching tensors. Fine-tuning moves weights a little
      from where they were, so it stays close to 1 (above 0.9 in practice); independently trained or random networks
      give about 0;
    - ``relative_distance``: the median over those tensors of ``||θ_t − θ_s|| / ||θ_s||`` (about √2 for unrelated
      networks of equal scale, small for a fine-tune; a median, because the mapping network's stored weights are
      100× larger than the rest and would dominate a global norm);
    - ``per_block``: the relative distance per part (``b4``, ..., ``mapping``, ``inr``).

    ``looks_finetuned`` is ``median_cosine >= 0.5 and relative_distance <= 1.0``.

    Returns:
        dict with the figures above (plain floats; JSON-able).
    """
    sd_s, sd_t = G_s.state_dict(), G_t.state_dict()
    cosines, rels, num = [], [], 0.0
    part_num: dict[str, float] = {}
    part_den: dict[str, float] = {}
    for key, a in sd_s.items():
        b = sd_t.get(key)
        if b is None or not a.is_floating_point() or a.ndim < 2 or key.endswith(("resample_filter", "noise_const")):
            continue
        a64 = a.detach().to("cpu", torch.float64).flatten()
        b64 = b.detach().to("cpu", torch.float64).flatten()
        na, nb = float(a64.norm()), float(b64.norm())
        if na == 0.0 and nb == 0.0:
            cos = 1.0
        elif na == 0.0 or nb == 0.0:
            cos = 0.0
        else:
            cos = float(torch.dot(a64, b64)) / (na * nb)
        cosines.append(cos)
        d2 = float((a64 - b64).square().sum())
        num += d2
        rels.append(math.sqrt(d2) / na if na > 0 else (0.0 if d2 == 0 else math.inf))
        part = block_of_key(key)
        part_num[part] = part_num.get(part, 0.0) + d2
        part_den[part] = part_den.get(part, 0.0) + na * na
    if not cosines:
        return {"median_cosine": 1.0, "relative_distance": 0.0, "per_block": {}, "identical": True,
                "looks_finetuned": True, "tensors_compared": 0}
    median = float(torch.tensor(cosines).median())
    rel = float(torch.tensor(rels, dtype=torch.float64).median())
    per_block = {p: (math.sqrt(part_num[p] / part_den[p]) if part_den[p] > 0 else 0.0) for p in part_num}
    return {
        "median_cosine": median,
        "relative_distance": rel,
        "per_block": per_block,
        "identical": num == 0.0,
        "looks_finetuned": median >= FINETUNE_MIN_MEDIAN_COSINE and rel <= FINETUNE_MAX_RELATIVE_DISTANCE,
        "tensors_compared": len(cosines),
    }


def _resolve_part_lambda(value, default: float, where: str) -> float:
    if value is None:
        return default
    if isinstance(value, str):
        v = value.strip().lower()
        if v == "source":
            return 0.0
        if v == "target":
            return 1.0
        if v in ("first", "b4"):
            return default
    return _check_lam(value, where)


def lerp_generators(G_s, G_t, lam: LambdaSpec = "paper", *, mapping_lam=None, inr_lam=None,
                    check_finetuned: bool = True):
    """Eq. 6: a new generator ``G_m = G_s + λ (G_t − G_s)`` with a λ per synthesis block. Inputs are untouched.

    Args:
        G_s: source generator (e.g. FFHQ).
        G_t: target generator, fine-tuned from G_s (e.g. a cartoon domain).
        lam: λ schedule (see :func:`block_lambdas`); λ is the weight of G_t.
        mapping_lam: λ for ``mapping.*`` (incl. ``w_avg``): ``None``/``"first"`` = λ of the first block (b4),
            ``"source"`` = keep G_s's mapping, ``"target"``, or a float. The mapping network is not used when working
            from W+ codes; it only matters for sampling from z and for truncation.
        inr_lam: λ for the INR head (``inr.*``) when both have one: ``None`` = λ of the last block, or a float.
        check_finetuned: warn (logger and :mod:`warnings`) when G_t does not look fine-tuned from G_s
            (:func:`generator_relation`).

    Returns:
        G_m, a new generator of G_s's class, on G_s's device and dtype, in eval mode and frozen
        (``requires_grad=False``), with ``G_m.meta["lerp"]``
        describing the blend (λ per block, relation figures, fingerprints of the inputs).

    Raises:
        IncompatibleGeneratorsError: the generators do not share one architecture.
        InvalidSettingError: malformed λ.
    """
    tolerated = check_compatible(G_s, G_t)
    for note in tolerated:
        logger.warning("lerp_generators: runtime setting differs between G_s and G_t, G_m uses G_s's: %s", note)
    blocks = [int(r) for r in G_s.synthesis.block_resolutions]
    per_block = block_lambdas(lam, blocks)
    lam_map = _resolve_part_lambda(mapping_lam, per_block[blocks[0]], "the mapping network")
    lam_inr = _resolve_part_lambda(inr_lam, per_block[blocks[-1]], "the INR head")

    relation = generator_relation(G_s, G_t)
    if check_finetuned and not relation["looks_finetuned"]:
        msg = (f"G_t does not look fine-tuned from G_s (median weight cosine similarity "
               f"{relation['median_cosine']:.3f}, expected >= {FINETUNE_MIN_MEDIAN_COSINE}; relative weight distance "
               f"{relation['relative_distance']:.3f}, expected <= {FINETUNE_MAX_RELATIVE_DISTANCE}). Interpolating "
               f"unrelated generators gives meaningless images; use a target generator fine-tuned from this source.")
        logger.warning(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)

    sd_s, sd_t = G_s.state_dict(), G_t.state_dict()
    unowned = []
    merged = {}
    for key, a in sd_s.items():
        b = sd_t[key]
        if not a.is_floating_point():
            merged[key] = a.clone()
            continue
        part = block_of_key(key)
        if part == "mapping":
            w = lam_map
        elif part == "inr":
            w = lam_inr
        elif part.startswith("b") and int(part[1:]) in per_block:
            w = per_block[int(part[1:])]
        else:
            unowned.append(key)
            w = per_block[blocks[0]]
        if key.endswith("resample_filter") or w == 0.0:
            merged[key] = a.detach().clone()    # constants / untouched parts: exactly G_s's
        elif w == 1.0:
            merged[key] = b.detach().to(device=a.device, dtype=a.dtype).clone()
        else:
            bb = b.detach().to(device=a.device)
            compute = torch.promote_types(a.dtype, torch.float32)
            merged[key] = torch.lerp(a.detach().to(compute), bb.to(compute), w).to(a.dtype)
    if unowned:
        logger.warning("lerp_generators: %d state-dict keys belong to no block (e.g. %s); they get λ of b%d.",
                       len(unowned), unowned[0], blocks[0])

    G_m = copy.deepcopy(G_s)
    G_m.load_state_dict(merged, strict=True)
    G_m.eval().requires_grad_(False)
    info = {
        "lambda_per_block": {f"b{r}": v for r, v in per_block.items()},
        "lambda_mapping": lam_map,
        "lambda_inr": lam_inr if getattr(G_s, "inr", None) is not None else None,
        "schedule": lam if isinstance(lam, (str, float, int)) else list(per_block.values()),
        "relation": relation,
        "tolerated_differences": tolerated,
        "source_fingerprint": _fingerprint(G_s),
        "target_fingerprint": _fingerprint(G_t),
    }
    meta = dict(getattr(G_s, "meta", None) or {})
    meta["lerp"] = info
    try:
        G_m.meta = meta
    except AttributeError:  # pragma: no cover - a generator class without a settable meta
        pass
    return G_m


def _fingerprint(G):
    fp = getattr(G, "fingerprint", None)
    try:
        return fp() if callable(fp) else None
    except Exception:  # pragma: no cover - a fingerprint is informative only
        return None


# ----------------------------------------------------------------------------------------------------------------------
# Latents


def _lerp_rows(ws_s: torch.Tensor, ws_t: torch.Tensor, lam_rows: torch.Tensor) -> torch.Tensor:
    """Row-wise lerp of two codes of the same shape ``[B, N, D]``; ``lam_rows`` ``[N]``."""
    compute = torch.promote_types(torch.promote_types(ws_s.dtype, ws_t.dtype), torch.float32)
    a = ws_s.detach().to(compute)
    b = ws_t.detach().to(device=ws_s.device, dtype=compute)
    weight = lam_rows.to(device=ws_s.device, dtype=compute)[:, None]              # [N, 1]
    return torch.lerp(a, b, weight).to(ws_s.dtype)                                 # [B, N, D]


def lerp_latents(w_s, w_t, lam: LambdaSpec = "paper", *, num_ws: int | None = None, generator=None,
                 scheme: str = "authors"):
    """Eq. 7: ``w_m = w_s + λ (w_t − w_s)`` with the per-block λ mapped onto the W+ rows (and noise maps).

    Args:
        w_s: source code(s): a :class:`hrinv.latent.Latent` or a tensor ``[B, num_ws, w_dim]`` / ``[num_ws, w_dim]``.
        w_t: target code(s), same kind; a batch of 1 broadcasts against a batch of B.
        lam: λ schedule (see :func:`block_lambdas`), or a **per-row** list: one λ for each of the ``num_ws`` W+ rows
            (``scheme`` is then unused). A per-row list expresses what a per-block schedule cannot, e.g. the authors'
            style mixing with a crossover at row 7: ``[0.0] * 7 + [1.0] * (num_ws - 7)``.
        num_ws: rows of W+ (checked against the codes); default from the codes.
        generator: optional generator (G_m or G_s): gives the block layout, and with Latent inputs the fingerprint of
            the result.
        scheme: ``"authors"`` (default; the released code's chunks of two rows) or ``"nvidia"`` (see module doc).

    Returns:
        Same kind as ``w_s``: a tensor of the broadcast shape, or a Latent whose noise maps (when both inputs have
        them) are lerped per layer with the λ of the layer's block (with a per-row list: the λ of the row that
        modulates the layer's convolution).

    Raises:
        ShapeError: codes of different layouts or a row count that does not fit the generator.
        IncompatibleGeneratorsError: one latent has noise maps and the other has not, or different noise layers.
    """
    is_latent = hasattr(w_s, "ws") and not torch.is_tensor(w_s)
    if is_latent != (hasattr(w_t, "ws") and not torch.is_tensor(w_t)):
        raise ShapeError("lerp_latents needs two Latent objects or two tensors; got one of each.")
    ws_s = w_s.ws if is_latent else w_s
    ws_t = w_t.ws if is_latent else w_t
    for name, t in (("w_s", ws_s), ("w_t", ws_t)):
        if not torch.is_tensor(t) or t.ndim not in (2, 3) or not t.is_floating_point():
            raise ShapeError(f"{name} must be a float W+ tensor [B, num_ws, w_dim] or [num_ws, w_dim]; got "
                             f"{getattr(t, 'shape', type(t).__name__)}.")
    if ws_s.shape[-2:] != ws_t.shape[-2:]:
        raise ShapeError(f"w_s and w_t have different W+ layouts: {tuple(ws_s.shape)} vs {tuple(ws_t.shape)}.")
    unbatched = ws_s.ndim == 2 and ws_t.ndim == 2
    a = ws_s if ws_s.ndim == 3 else ws_s[None]                                     # [B, N, D]
    b = ws_t if ws_t.ndim == 3 else ws_t[None]                                     # [B, N, D]
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ShapeError(f"w_s holds {a.shape[0]} codes but w_t holds {b.shape[0]}: they pair up one to one, or one "
                         f"side holds a single code used for all. Invert the same number of images for both, or "
                         f"pass a single code on one side.")
    n = a.shape[1]
    if num_ws is not None and int(num_ws) != n:
        raise ShapeError(f"num_ws={num_ws} but the codes have {n} rows.")
    blocks = None
    if generator is not None:
        blocks = [int(r) for r in generator.synthesis.block_resolutions]
        if getattr(generator, "num_ws", n) != n:
            raise ShapeError(f"the codes have {n} W+ rows but the generator uses {generator.num_ws}.")
    else:
        blocks = _block_resolutions_for(n)
    per_row = _per_row_lambdas(lam, n)
    lam_rows = per_row if per_row is not None else row_lambdas(lam, n, scheme, blocks)  # [N]
    a, b = torch.broadcast_tensors(a, b.to(a.device))
    out = _lerp_rows(a, b, lam_rows)                                               # [B, N, D]
    if unbatched:
        out = out[0]
    if not is_latent:
        return out

    if per_row is None:
        per_block = block_lambdas(lam, blocks)
        layer_lam = None
    else:
        per_block, layer_lam = None, _noise_layer_row_lambdas(per_row, blocks)
    noise = _lerp_noise(getattr(w_s, "noise", None), getattr(w_t, "noise", None), per_block, layer_lam)
    settings = {
        "op": "lerp_latents",
        "lambda_per_block": {f"b{r}": v for r, v in per_block.items()} if per_block is not None else None,
        "lambda_per_row": [float(v) for v in lam_rows],
        "scheme": scheme if per_row is None else "per-row",
        "source": {"fingerprint": getattr(w_s, "generator_fingerprint", None),
                   "settings": getattr(w_s, "settings", None)},
        "target": {"fingerprint": getattr(w_t, "generator_fingerprint", None),
                   "settings": getattr(w_t, "settings", None)},
    }
    fingerprint = (_fingerprint(generator) if generator is not None else None) or ""
    return _make_latent(type(w_s), out, noise, fingerprint, settings)


def _per_row_lambdas(lam, num_ws: int):
    """``lam`` as a per-row λ tensor ``[num_ws]`` when it is a list/tuple/1-D tensor of ``num_ws`` values, else None.
    (A per-block list has ``num_ws / 2`` values, so the two cannot be confused.)"""
    if isinstance(lam, (str, bytes, Mapping)) or not (isinstance(lam, Sequence) or torch.is_tensor(lam)):
        return None
    if torch.is_tensor(lam) and lam.ndim != 1:
        return None
    if len(lam) != num_ws:
        return None
    return torch.tensor([_check_lam(v, f"W+ row {i}") for i, v in enumerate(lam)], dtype=torch.float64)


def _noise_layer_row_lambdas(lam_rows: torch.Tensor, blocks: Sequence[int]) -> dict[str, float]:
    """λ of each noise layer under a per-row schedule: the λ of the W+ row that modulates the layer's convolution
    (NVIDIA layout: b4.conv1 uses row 0; block b_{2^k} uses rows 2k-5 (conv0) and 2k-4 (conv1))."""
    out = {"b4.conv1": float(lam_rows[0])} if blocks and blocks[0] == 4 else {}
    for r in blocks:
        if r == 4:
            continue
        k = int(math.log2(r))
        out[f"b{r}.conv0"], out[f"b{r}.conv1"] = float(lam_rows[2 * k - 5]), float(lam_rows[2 * k - 4])
    return out


def _lerp_noise(ns, nt, per_block, layer_lam=None):
    if ns is None and nt is None:
        return None
    if (ns is None) != (nt is None):
        raise IncompatibleGeneratorsError("one latent has noise maps and the other has none, so they cannot be "
                                          "interpolated layer by layer. Drop the noise maps of both (W+ only, as in "
                                          "the paper's Eq. 5) or give both.")
    if set(ns) != set(nt):
        raise IncompatibleGeneratorsError(f"the latents have different noise layers: {sorted(ns)} vs {sorted(nt)}.")
    out = {}
    for name in ns:
        if layer_lam is not None:
            key = name[len("synthesis."):] if name.startswith("synthesis.") else name
            if key not in layer_lam:
                raise IncompatibleGeneratorsError(f"noise layer {name!r} belongs to no layer of this generator.")
            lam = layer_lam[key]
        else:
            m = _NOISE_NAME.match(name)
            if not m or int(m.group(1)) not in per_block:
                raise IncompatibleGeneratorsError(f"noise layer {name!r} belongs to no block of this generator.")
            lam = per_block[int(m.group(1))]
        a, b = torch.broadcast_tensors(ns[name], nt[name].to(ns[name].device))
        compute = torch.promote_types(a.dtype, torch.float32)
        out[name] = torch.lerp(a.detach().to(compute), b.detach().to(compute), lam).to(ns[name].dtype)
    return out


def _make_latent(cls, ws, noise, fingerprint, settings):
    try:
        return cls(ws=ws, noise=noise, generator_fingerprint=fingerprint, settings=settings, metrics={})
    except TypeError:
        from .latent import Latent
        return Latent(ws=ws, noise=noise, generator_fingerprint=fingerprint, settings=settings, metrics={})
