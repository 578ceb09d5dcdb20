"""Writing files: all-or-nothing writes and the JSON conversions every writer in the library shares."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["TMP_TAG", "atomic_write", "json_default"]

# Marks the temporary files of :func:`atomic_write` (a batch run deletes stale ones and never counts them as items).
TMP_TAG = ".hrinv-tmp"


def _tmp_path(final: Path) -> Path:
    # Same folder (so os.replace is a rename on one file system), same extension (PIL/safetensors pick formats by it).
    return final.with_name(f".{final.stem}{TMP_TAG}-{os.getpid()}{final.suffix}")


@contextlib.contextmanager
def atomic_write(final):
    """``with atomic_write(path) as tmp: write(tmp)``: the data lands at ``path`` complete or not at all.

    ``tmp`` is a hidden file in the same folder; on success it is flushed to disk and renamed over ``path``; on an
    exception it is removed.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(final)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"atomic_write: nothing was written to {tmp}")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def json_default(obj):
    """``json.dumps(default=...)`` for what results and settings hold: numpy scalars, one-element tensors, paths,
    devices, dtypes, tuples and sets."""
    import numpy as np
    import torch

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if isinstance(obj, (Path, torch.device, torch.dtype)):
        return str(obj)
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
