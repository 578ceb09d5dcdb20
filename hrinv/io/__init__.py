"""Checkpoint I/O: load StyleGAN2 generators from NVIDIA ``.pkl``, rosinality ``.pt``, legacy TensorFlow ``.pkl``
and our ``.safetensors`` without ever executing code from a file. See docs/checkpoints.md.

Public API (imported lazily): :func:`load_generator`, :func:`save_generator`, :func:`inspect_checkpoint`,
:func:`read_checkpoint`.
"""

from importlib import import_module as _import_module

_LAZY = {
    "load_generator": "hrinv.io.checkpoints",
    "save_generator": "hrinv.io.checkpoints",
    "inspect_checkpoint": "hrinv.io.checkpoints",
    "read_checkpoint": "hrinv.io.checkpoints",
    "sniff_format": "hrinv.io.checkpoints",
}

__all__ = ["inspect_checkpoint", "load_generator", "read_checkpoint", "save_generator", "sniff_format"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(_import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hrinv.io' has no attribute {name!r}")


def __dir__():
    return __all__
