"""Small helpers shared by the ``hrinv`` commands: device/dtype options, image loading/saving, progress output.

Images follow the library convention (``[B, 3, H, W]`` float in [-1, 1]). Loading mirrors the reference projector:
PIL, RGB, centre-crop to a square of the shorter side, LANCZOS resize to the generator's resolution; ``keep_aspect``
instead scales the longer side to the resolution and keeps the aspect ratio (the library pads and masks it).
"""

import contextlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from .._files import atomic_write, json_default
from ..errors import ImageReadError, InvalidSettingError, ShapeError

__all__ = [
    "Progress",
    "add_device_arguments",
    "check_image_suffix",
    "fit_image",
    "load_image",
    "output_dir",
    "require_files",
    "resolve_device",
    "resolve_dtype",
    "save_image",
    "torch_threads",
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
        raise InvalidSettingError(f"--device {name!r} is not a torch device ({str(e).splitlines()[0][:120]}); use "
                                  f"auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidSettingError(f"--device {name}: this torch build has no CUDA device; use --device cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InvalidSettingError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA device(s)")
    mps = getattr(torch.backends, "mps", None)
    if dev.type == "mps" and not (mps is not None and mps.is_available()):
        raise InvalidSettingError(f"--device {name}: MPS is not available here; use --device cpu or auto")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise InvalidSettingError(f"--device {name}: only cpu, cuda[:N] and mps are supported")
    return dev


@contextlib.contextmanager
def device_or_torchrun(args):
    """``(device, ctx)`` for a command that also runs under ``torchrun``: there, this rank's process group and device
    (``ctx`` is closed on exit, and ranks other than 0 are made quiet); otherwise ``resolve_device(args.device)`` and
    ``None``."""
    from ..distributed import in_torchrun, init_distributed

    if not in_torchrun():
        yield resolve_device(args.device), None
        return
    ctx = init_distributed(args.device)
    if not ctx.is_main and hasattr(args, "quiet"):
        args.quiet = True
    try:
        yield ctx.device, ctx
    finally:
        ctx.close()


@contextlib.contextmanager
def torch_threads(n):
    """Run the block with ``torch.set_num_threads(n)`` (None or 0: torch's own choice), then restore the count."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_dtype(name: str = "fp32") -> torch.dtype:
    """``fp32`` / ``fp16`` / ``bf16`` (and the long spellings) -> torch dtype."""
    try:
        return _DTYPES[name.lower()]
    except KeyError:
        raise InvalidSettingError(f"--dtype {name!r}: expected one of {sorted(set(_DTYPES))}") from None


def _read_rgb(path, draft_size=None):
    """PIL RGB image of ``path`` (any mode, EXIF orientation applied), via hrinv.imageio when available."""
    from PIL import Image

    try:
        from ..imageio import read_image
    except ImportError:  # pragma: no cover - imageio is part of the package
        read_image = None
    if read_image is not None:
        fast = _read_rgb8(path, draft_size)
        if fast is not None:
            return fast
        t = read_image(path, draft_size=draft_size)  # [3, H, W] in [0, 1]
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


def require_files(paths, what: str = "image") -> None:
    """Raise :class:`ImageReadError` naming every input in ``paths`` (``None`` entries skipped) that is not a file.

    A missing input is a library error like any other: ``hrinv`` prints it on stderr and exits with 1 (exit 2 stays
    for what argparse itself refuses)."""
    missing = [str(p) for p in paths if p is not None and not Path(p).is_file()]
    if missing:
        raise ImageReadError(f"{what} file(s) not found: {', '.join(missing)}. Check the path(s).")


def output_dir(path) -> Path:
    """Create the output folder ``path`` (and its parents); a typed error when a file is in the way."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InvalidSettingError(f"--out {path} is an existing file, expected a folder; pick another path or remove "
                                  f"the file")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidSettingError(f"cannot create the output folder {path} ({e.strerror or e}); check the path and "
                                  f"its permissions") from None
    return path


def check_image_suffix(path) -> Path:
    """An output image path whose extension PIL can write (checked before any long computation)."""
    from PIL import Image

    path = Path(path)
    suffix = (path.suffix or ".png").lower()
    if suffix not in Image.registered_extensions() or Image.registered_extensions()[suffix] not in Image.SAVE:
        raise InvalidSettingError(f"cannot write images as {suffix!r} ({path}); use .png, .jpg or .webp")
    if path.exists() and path.is_dir():
        raise InvalidSettingError(f"--out {path} is a folder, expected an image file name such as {path / 'out.png'}")
    return path


def _read_rgb8(path, draft_size):
    """8-bit RGB / greyscale files straight to a PIL RGB image (no float round trip: the same pixels as
    read_image, ~4x less RAM); ``None`` for every other mode (alpha, 16-bit, palette, ...) or any problem."""
    from PIL import Image, ImageOps

    from ..imageio import MAX_IMAGE_PIXELS
    try:
        with Image.open(path) as img:
            if img.mode not in ("RGB", "L") or img.size[0] * img.size[1] > MAX_IMAGE_PIXELS:
                return None
            if draft_size is not None and img.format == "JPEG":
                img.draft(img.mode, draft_size)
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            return img.convert("RGB") if img.mode != "RGB" else img.copy()
    except Exception:  # noqa: BLE001 - read_image then reports the problem with a typed error
        return None


def _draft_size(path, size, keep_aspect):
    """The smallest (w, h) a JPEG may be decoded at so that fit_image still gets >= ``size`` px where it needs them."""
    if size is None:
        return None
    try:
        from PIL import Image
        with Image.open(path) as img:
            w, h = img.size
    except Exception:  # noqa: BLE001 - read_image reports unreadable files properly
        return None
    side = max(w, h) if keep_aspect else min(w, h)
    scale = size / max(side, 1)
    return (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale)))


def load_image(path, size=None, keep_aspect: bool = False) -> torch.Tensor:
    """Load an image file as ``[1, 3, H, W]`` float in [-1, 1], fitted to ``size`` (see :func:`fit_image`) if given."""
    img = _read_rgb(path, draft_size=_draft_size(path, size, keep_aspect))
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
    """Write ``obj`` as indented JSON (tuples/paths/numpy scalars converted), all or nothing."""
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=json_default) + "\n", encoding="utf-8")
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
