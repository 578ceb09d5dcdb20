"""Small, generic image-reading helpers shared by the library and the CLI.

``read_image(path)`` turns any image file PIL can open into a float RGB tensor ``[3, H, W]`` in ``[0, 1]``:

- greyscale (``L``, ``1``, ``I;16``, ``I``, ``F``) is replicated to three channels;
- 16-bit and 32-bit integer images are scaled by their real bit depth (``I;16`` by 65535), not clipped at 255;
- palette (``P``) images are expanded through their palette (transparency included);
- alpha (``RGBA``, ``LA``, ``PA``) is composited over a background colour (white by default) instead of being dropped;
- CMYK / YCbCr / LAB are converted by PIL;
- the EXIF orientation tag is applied, so a phone photo comes out upright.

Every failure is an :class:`hrinv.errors.ImageReadError` that names the file and says what to do.

Large files: the pixel count is read from the header and checked against ``max_pixels`` (default
:data:`MAX_IMAGE_PIXELS`, 160 MP, e.g. 12600 x 12600) before anything is decoded; a bigger (or lying) header is refused
with a clear error, never PIL's ``DecompressionBombError``. ``draft_size`` lets JPEG decode at 1/2, 1/4 or 1/8 scale
when the caller needs less (what :func:`hrinv.commands._common.load_image` does). 8-bit images are converted to
float in one pass (15 bytes of RAM per pixel at peak, down from 32: benchmarks/bench_read_image_memory.py).
"""

import logging
import re
import struct
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import ImageReadError

__all__ = ["IMAGE_EXTENSIONS", "MAX_IMAGE_PIXELS", "list_images", "pil_to_tensor", "read_image"]

log = logging.getLogger(__name__)

# Extensions collected by list_images (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# Largest image read_image decodes by default: 160 megapixels (2.4 GB as float RGB). Below PIL's own hard limit
# (2 x Image.MAX_IMAGE_PIXELS = 179 MP), so our message is the one users see; pass max_pixels= to lower it.
MAX_IMAGE_PIXELS = 160_000_000


def _uint8_to_tensor(img):
    """8-bit PIL image or array (``RGB`` or ``L``) -> float ``[3, H, W]`` in [0, 1], with one float allocation."""
    a = np.asarray(img)  # [H, W, 3] or [H, W] uint8; read-only when it is a view of PIL's buffer
    with warnings.catch_warnings():
        # torch warns that a read-only array gives a tensor that must not be written; it is only read from here.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        arr = torch.from_numpy(a)
    if arr.ndim == 2:
        arr = arr[None].expand(3, -1, -1)  # [3, H, W] view
    else:
        arr = arr.permute(2, 0, 1)  # [3, H, W] view
    out = torch.empty(arr.shape, dtype=torch.float32)
    out.copy_(arr)
    return out.div_(255.0)


def _composite(rgb, alpha, background):
    """Alpha-composite ``rgb`` [H, W, 3] over a constant ``background`` (both float in [0, 1])."""
    bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3)
    return rgb * alpha[..., None] + bg * (1.0 - alpha[..., None])


def pil_to_tensor(img, background=(1.0, 1.0, 1.0)):
    """Convert a PIL image of any mode to a float RGB tensor.

    Args:
        img: a ``PIL.Image.Image`` (any mode).
        background: RGB in [0, 1] that transparent pixels are composited over.

    Returns:
        ``torch.float32`` tensor in [0, 1].

    Shape:
        ``[3, H, W]``.
    """
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        arr = np.asarray(img, dtype=np.float32) / 65535.0  # [H, W]
        rgb, alpha = np.repeat(arr[..., None], 3, axis=2), None
    elif mode == "I":
        arr = np.asarray(img, dtype=np.float64)  # [H, W]; 32-bit ints, in practice 16-bit data stored as I
        peak = 65535.0 if arr.max(initial=0) > 255 else 255.0
        rgb, alpha = np.repeat((arr / peak).astype(np.float32)[..., None], 3, axis=2), None
    elif mode == "F":
        arr = np.asarray(img, dtype=np.float32)  # [H, W]; float images: assume [0, 1] if so, else [0, 255]
        arr = arr if arr.max(initial=0) <= 1.0 else arr / 255.0
        rgb, alpha = np.repeat(arr[..., None], 3, axis=2), None
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0  # [H, W, 4]
        rgb, alpha = rgba[..., :3], rgba[..., 3]
    elif mode in ("RGB", "L"):
        return _uint8_to_tensor(img)  # fast path: no float intermediate, values already in [0, 1]
    else:  # L, 1, CMYK, YCbCr, LAB, HSV, ...
        rgb, alpha = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0, None
    if alpha is not None:
        rgb = _composite(rgb, alpha, background)
    rgb = np.clip(rgb, 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))  # [3, H, W]


def read_image(path, background=(1.0, 1.0, 1.0), *, max_pixels=MAX_IMAGE_PIXELS, draft_size=None):
    """Read an image file as float RGB in [0, 1], whatever its mode, bit depth or EXIF orientation.

    Args:
        path: file path (str or Path).
        background: RGB in [0, 1] that transparent pixels are composited over (default white).
        max_pixels: refuse images with more pixels than this (checked from the header, before decoding; default
            :data:`MAX_IMAGE_PIXELS`).
        draft_size: optional ``(width, height)`` the caller needs at least; JPEG files are then decoded at the
            smallest 1/2, 1/4 or 1/8 scale that still covers it (other formats are decoded in full).

    Returns:
        ``torch.float32`` tensor in [0, 1].

    Shape:
        ``[3, H, W]``.

    Raises:
        ImageReadError: the file is missing, is not an image, is larger than ``max_pixels``, or is truncated/corrupt.
    """
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"Cannot read image {path}: expected an existing image file, found "
                             f"{'a directory' if path.is_dir() else 'nothing'} there. Check the path.")

    def too_big(w, h):
        return ImageReadError(f"Cannot read image {path}: it is {w}x{h} = {w * h / 1e6:.0f} megapixels, more than "
                              f"the {max_pixels / 1e6:.0f} MP limit (about {w * h * 15 / 2**30:.1f} GiB of RAM to "
                              f"decode). Downscale it first (e.g. to 4096 px on the longer side), or raise max_pixels "
                              f"if you really need it (PIL refuses more than 179 MP anyway).")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise too_big(w, h)
                if draft_size is not None and img.format == "JPEG":
                    img.draft(img.mode if img.mode in ("RGB", "L") else None,
                              (max(1, int(draft_size[0])), max(1, int(draft_size[1]))))
                img.load()
                ImageOps.exif_transpose(img, in_place=True)
                if img.mode in ("RGB", "L"):  # 8-bit: keep only the uint8 array, then one float allocation
                    arr = np.asarray(img)
                    img.close()
                    return _uint8_to_tensor(arr)
                return pil_to_tensor(img, background)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as e:
        m = re.search(r"\((\d+) pixels\)", str(e))
        raise ImageReadError(f"Cannot read image {path}: {m.group(1) + ' pixels' if m else 'its size'} is more than "
                             f"PIL decodes (and more than the {max_pixels / 1e6:.0f} MP limit). Downscale it "
                             f"first.") from None
    except UnidentifiedImageError as e:
        raise ImageReadError(f"Cannot read image {path}: it is not an image format PIL understands ({e}). "
                             f"Use PNG/JPEG/WebP/TIFF/BMP, or remove the file from the folder.") from None
    except MemoryError:
        raise ImageReadError(f"Cannot read image {path}: not enough memory to decode it. Downscale it first.") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as e:
        raise ImageReadError(f"Cannot read image {path}: the file looks truncated or corrupt ({str(e)[:200]}). "
                             f"Re-export or re-download it.") from None


def list_images(folder, recursive=False):
    """Image files in ``folder`` with a known extension, sorted by file name (then by full path).

    Args:
        folder: directory to scan.
        recursive: also scan sub-folders.

    Returns:
        list of ``Path``.
    """
    folder = Path(folder)
    it = folder.rglob("*") if recursive else folder.iterdir()
    files = [p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
    return sorted(files, key=lambda p: (p.name, str(p)))
