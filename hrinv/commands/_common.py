"""Small helpers shared by the ``hrinv`` commands: device/dtype options, image loading/saving, progress output.

Images follow the library convention (``[B, 3, H, W]`` float in [-1, 1]). Loading mirrors the reference projector:
PIL, RGB, centre-crop to a square of the shorter side, LANCZOS resize to the generator's resolution; ``keep_aspect``
instead scales the longer side to the resolution and keeps the aspect ratio (the library pads and masks it).
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

from ..errors import ShapeError

__all__ = [
    "Progress",
    "add_device_arguments",
    "fit_image",
    "load_image",
    "resolve_device",
    "resolve_dtype",
    "save_image",
    "write_json",
]

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def add_device_arguments(parser):
    """Add ``--device`` and ``--dtype`` to an argparse parser."""
    parser.add_argument("--device", default="auto",
                        help="torch device: auto (cuda if available, else mps, else cpu), cpu, cuda, cuda:1, mps")
    parser.add_argument("--dtype", default="fp32", choices=sorted(set(_DTYPES)),
                        help="generator precision (default fp32; fp16/bf16 only make sense on a GPU)")


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> cuda / mps / cpu, else ``torch.device(name)`` with a clear error if it is unavailable."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"--device {name!r} is not a torch device ({e}); use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this torch build has no CUDA device; use --device cpu")
    return dev


def resolve_dtype(name: str = "fp32") -> torch.dtype:
    """``fp32`` / ``fp16`` / ``bf16`` (and the long spellings) -> torch dtype."""
    try:
        return _DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"--dtype {name!r}: expected one of {sorted(set(_DTYPES))}") from None


def _read_rgb(path):
    """PIL RGB image of ``path`` (any mode, EXIF orientation applied), via hrinv.imageio when available."""
    from PIL import Image

    try:
        from ..imageio import read_image
    except ImportError:  # pragma: no cover - imageio is part of the package
        read_image = None
    if read_image is not None:
        t = read_image(path)  # [3, H, W] in [0, 1]
        arr = (t.permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)  # [H, W, 3]
        return Image.fromarray(arr, "RGB")
    with Image.open(path) as img:
        return img.convert("RGB")


def fit_image(img, size: int, keep_aspect: bool = False):
    """Fit a PIL image to a generator of resolution ``size``.

    Args:
        img: PIL image.
        size: generator resolution.
        keep_aspect: False: centre-crop to a square (shorter side) then LANCZOS-resize to ``size × size`` (reference
            projector). True: LANCZOS-resize so the longer side is ``size``, keeping the aspect ratio.

    Returns:
        PIL image.
    """
    from PIL import Image

    w, h = img.size
    if keep_aspect:
        scale = size / max(w, h)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        return img if new == (w, h) else img.resize(new, Image.LANCZOS)
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = img.crop((left, top, left + s, top + s))
    return img if s == size else img.resize((size, size), Image.LANCZOS)


def load_image(path, size=None, keep_aspect: bool = False) -> torch.Tensor:
    """Load an image file as ``[1, 3, H, W]`` float in [-1, 1], fitted to ``size`` (see :func:`fit_image`) if given."""
    img = _read_rgb(path)
    if size is not None:
        img = fit_image(img, int(size), keep_aspect)
    arr = np.asarray(img, dtype=np.float32)  # [H, W, 3] in 0..255
    return torch.from_numpy(arr).permute(2, 0, 1)[None] / 127.5 - 1.0  # [1, 3, H, W]


def save_image(img: torch.Tensor, path) -> Path:
    """Save ``[3, H, W]`` or ``[1, 3, H, W]`` in [-1, 1] as an 8-bit PNG/JPEG (by extension)."""
    from PIL import Image

    if img.ndim == 4:
        if img.shape[0] != 1:
            raise ShapeError(f"save_image takes one image, got a batch of {img.shape[0]}")
        img = img[0]
    if img.ndim != 3 or img.shape[0] != 3:
        raise ShapeError(f"save_image expects [3, H, W] in [-1, 1], got {tuple(img.shape)}")
    arr = ((img.detach().float().cpu().clamp(-1, 1) + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.permute(1, 2, 0).numpy(), "RGB").save(path)
    return path


def write_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON (tuples/paths/numpy scalars converted)."""
    def default(o):
        if isinstance(o, (np.generic,)):
            return o.item()
        if isinstance(o, (Path, torch.device, torch.dtype)):
            return str(o)
        if isinstance(o, (set, tuple)):
            return list(o)
        raise TypeError(f"{type(o).__name__} is not JSON serialisable")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=default) + "\n")
    return path


class Progress:
    """A ``callback(step, total, preview)`` that shows a ``tqdm`` progress bar (``label``, steps, elapsed, ETA) on
    stderr. ``quiet`` shows nothing. (``every`` is kept for callers; tqdm decides how often to redraw.)"""

    def __init__(self, label: str = "", every: int = 0, stream=None, quiet: bool = False):
        self.label = label
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.bar = None

    def __call__(self, step, total, preview=None):
        if self.quiet:
            return
        if self.bar is None or self.bar.total != total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.label, file=self.stream, unit="step", dynamic_ncols=True)
        self.bar.update(step - self.bar.n)
        if step >= total:
            self.bar.close()
            self.bar = None
