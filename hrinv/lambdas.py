"""λ schedules of the generator / latent interpolation (HRInversion Eq. 6 and 7): one λ per synthesis block, and how
W+ rows map onto blocks. Used by :mod:`hrinv.interpolate` (which re-exports every name) and :mod:`hrinv.lso`.

A schedule is ``"paper"``, ``"swap:bN"``, ``"source"``, ``"target"``, a float, a per-block list (b4 first) or a dict
keyed by block; see :func:`block_lambdas`. W+ rows take the λ of a block by the ``"authors"`` or ``"nvidia"`` scheme
(:func:`row_blocks`; the module docstring of :mod:`hrinv.interpolate` describes both).
"""

from __future__ import annotations

import logging
import math
import re
from typing import Mapping, Sequence, Union

import torch

from .errors import InvalidSettingError, ShapeError

__all__ = ["PAPER_LAMBDA", "block_lambdas", "block_of_key", "parse_lambda", "row_blocks", "row_lambdas"]

logger = logging.getLogger(__name__)

LambdaSpec = Union[str, float, int, Sequence[float], Mapping]

# Paper default (Sec. III-C): λ = 0.2 for b4–b64, 0.7 for b128–b1024.
PAPER_LAMBDA = {"low": 0.2, "high": 0.7, "split_res": 128}

_BLOCK_KEY = re.compile(r"^synthesis\.b(\d+)\.")


# ----------------------------------------------------------------------------------------------------------------------
# λ schedules


def _block_resolutions_for(num_ws: int) -> list[int]:
    """NVIDIA block resolutions for a W+ with ``num_ws`` rows (num_ws = 2·log2(res) − 2)."""
    if num_ws < 2 or num_ws % 2:
        raise ShapeError(f"a StyleGAN2 W+ code has an even number of rows >= 2 (2*log2(resolution) - 2); got "
                         f"{num_ws}. Pass generator=G so the block layout is read from the generator.")
    return [4 * 2 ** i for i in range(num_ws // 2)]


def _check_lam(value, where: str) -> float:
    try:
        lam = float(value)
    except (TypeError, ValueError):
        raise InvalidSettingError(f"λ for {where} must be a number in [0, 1]; got {value!r}.") from None
    if not math.isfinite(lam):
        raise InvalidSettingError(f"λ for {where} must be finite; got {value!r}.")
    if lam < 0.0 or lam > 1.0:
        logger.warning("λ=%g for %s is outside [0, 1]: this extrapolates beyond the two generators/codes.", lam, where)
    return lam


def _parse_block_name(name, block_resolutions: Sequence[int]) -> int:
    text = str(name).strip().lower()
    if text.startswith("b"):
        text = text[1:]
    try:
        res = int(text)
    except ValueError:
        raise InvalidSettingError(f"expected a block name like 'b64' or 64; got {name!r}.") from None
    if res not in block_resolutions:
        raise InvalidSettingError(f"block b{res} does not exist in this generator; its blocks are "
                                  f"{', '.join(f'b{r}' for r in block_resolutions)}.")
    return res


def parse_lambda(text: str) -> LambdaSpec:
    """Turn a command-line λ (``paper``, ``swap:b64``, ``0.5``, ``0.2,0.2,0.7``) into a :func:`block_lambdas` spec.

    Args:
        text: the user's string.

    Returns:
        A string preset, a float, or a list of floats.
    """
    s = str(text).strip()
    low = s.lower()
    if low in ("paper", "source", "target") or low.startswith("swap:"):
        return low
    if "," in s:
        parts = [p for p in s.split(",") if p.strip()]
        try:
            return [float(p) for p in parts]
        except ValueError:
            raise InvalidSettingError(f"a λ list is comma-separated numbers, one per block (b4 first); got {text!r}.")
    try:
        return float(s)
    except ValueError:
        raise InvalidSettingError(f"λ must be 'paper', 'source', 'target', 'swap:bN', a number or a comma-separated "
                                  f"list of numbers (one per block); got {text!r}.") from None


def block_lambdas(lam: LambdaSpec, block_resolutions: Sequence[int]) -> dict[int, float]:
    """Resolve a λ schedule into one λ per synthesis block.

    Args:
        lam: ``"paper"``, ``"swap:bN"``, ``"source"``, ``"target"``, a float, a list (one per block, b4 first) or a
            dict keyed by block (``4`` or ``"b4"``). See the module docstring.
        block_resolutions: the generator's blocks, e.g. ``[4, 8, ..., 1024]``.

    Returns:
        ``{resolution: λ}`` for every block, in block order.

    Raises:
        InvalidSettingError: malformed schedule, wrong length, unknown or missing block.
    """
    blocks = [int(r) for r in block_resolutions]
    if isinstance(lam, str):
        s = lam.strip().lower()
        if s == "paper":
            return {r: (PAPER_LAMBDA["low"] if r < PAPER_LAMBDA["split_res"] else PAPER_LAMBDA["high"]) for r in blocks}
        if s == "source":
            return {r: 0.0 for r in blocks}
        if s == "target":
            return {r: 1.0 for r in blocks}
        if s.startswith("swap:"):
            start = _parse_block_name(s[5:], blocks)
            return {r: (1.0 if r >= start else 0.0) for r in blocks}
        return block_lambdas(parse_lambda(lam), blocks)
    if isinstance(lam, bool):
        raise InvalidSettingError(f"λ must be a number, preset or per-block list; got {lam!r}.")
    if isinstance(lam, (int, float)) or (torch.is_tensor(lam) and lam.ndim == 0):
        value = _check_lam(float(lam), "every block")
        return {r: value for r in blocks}
    if isinstance(lam, Mapping):
        out = {}
        for key, value in lam.items():
            res = _parse_block_name(key, blocks)
            out[res] = _check_lam(value, f"b{res}")
        missing = [f"b{r}" for r in blocks if r not in out]
        if missing:
            raise InvalidSettingError(f"a λ dict must give every block; missing {', '.join(missing)}.")
        return {r: out[r] for r in blocks}
    if isinstance(lam, Sequence) or torch.is_tensor(lam):
        values = [float(v) for v in lam]
        if len(values) != len(blocks):
            raise InvalidSettingError(f"a λ list needs one value per block ({len(blocks)}: "
                                      f"{', '.join(f'b{r}' for r in blocks)}); got {len(values)} values.")
        return {r: _check_lam(v, f"b{r}") for r, v in zip(blocks, values)}
    raise InvalidSettingError(f"λ must be 'paper', 'swap:bN', a number, a list or a dict; got {type(lam).__name__}.")


def block_of_key(key: str) -> str:
    """Which part of a generator owns a state-dict key: ``"b{R}"``, ``"mapping"``, ``"inr"`` or ``"other"``."""
    m = _BLOCK_KEY.match(key)
    if m:
        return f"b{m.group(1)}"
    if key.startswith("mapping."):
        return "mapping"
    if key.startswith("inr."):
        return "inr"
    return "other"


def row_blocks(num_ws: int, scheme: str = "authors", block_resolutions: Sequence[int] | None = None) -> list[int]:
    """The block (resolution) whose λ each W+ row takes.

    Args:
        num_ws: rows of the W+ code.
        scheme: ``"authors"`` (chunks of two rows per block) or ``"nvidia"`` (exact conv usage; a shared row follows
            the block whose conv0 it feeds).
        block_resolutions: the generator's blocks (default: derived from ``num_ws``).

    Returns:
        A list of ``num_ws`` block resolutions.
    """
    blocks = list(block_resolutions) if block_resolutions is not None else _block_resolutions_for(num_ws)
    if 2 * len(blocks) != num_ws:
        raise ShapeError(f"a W+ code with {num_ws} rows does not belong to a generator with blocks "
                         f"{blocks} (which has {2 * len(blocks)} rows).")
    if scheme == "authors":
        return [blocks[r // 2] for r in range(num_ws)]
    if scheme == "nvidia":
        out = []
        for r in range(num_ws):
            if r == 0:
                idx = 0                         # b4.conv1
            elif r == num_ws - 1:
                idx = len(blocks) - 1           # torgb of the last block only
            elif r % 2:
                idx = (r + 1) // 2              # conv0 of block idx (= torgb of block idx-1)
            else:
                idx = r // 2                    # conv1 of block idx
            out.append(blocks[idx])
        return out
    raise InvalidSettingError(f"the W+ row scheme is 'authors' or 'nvidia'; got {scheme!r}.")


def row_lambdas(lam: LambdaSpec, num_ws: int, scheme: str = "authors",
                block_resolutions: Sequence[int] | None = None) -> torch.Tensor:
    """λ per W+ row.

    Returns:
        float64 tensor, shape ``[num_ws]``.
    """
    blocks = list(block_resolutions) if block_resolutions is not None else _block_resolutions_for(num_ws)
    per_block = block_lambdas(lam, blocks)
    return torch.tensor([per_block[b] for b in row_blocks(num_ws, scheme, blocks)], dtype=torch.float64)
