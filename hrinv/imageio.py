"""Small, generic image-reading helpers shared by the library and the CLI.

``read_image(path)`` turns any image file PIL can open into a float RGB tensor ``[3, H, W]`` in ``[0, 1]``:

- greyscale (``L``, ``1``, ``I;16``, ``I``, ``F``) is replicated to three channels;
- 16-bit and 32-bit integer images are scaled by their real bit depth (``I;16`` by 65535), not clipped at 255;
- palette (``P``) images are expanded through their palette (transparency included);
- alpha (``RGBA``, ``LA``, ``PA``) is composited over a background colour (white by default) instead of being dropped;
- CMYK / YCbCr / LAB are converted by PIL;
- the EXIF orientation tag is applied, so a phone photo comes out upright.

Every failure is an :class:`hrinv.errors.ImageReadError` that names the file and says what to do.
"""

import logging
from pathlib import Path

import numpy as np
import torch

from .errors import ImageReadError

__all__ = ["IMAGE_EXTENSIONS", "list_images", "pil_to_tensor", "read_image"]

log = logging.getLogger(__name__)

# Extensions collected by list_images (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


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
    elif mode == "RGB":
        rgb, alpha = np.asarray(img, dtype=np.float32) / 255.0, None
    else:  # L, 1, CMYK, YCbCr, LAB, HSV, ...
        rgb, alpha = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0, None
    if alpha is not None:
        rgb = _composite(rgb, alpha, background)
    rgb = np.clip(rgb, 0.0, 1.0)
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))  # [3, H, W]


def read_image(path, background=(1.0, 1.0, 1.0)):
    """Read an image file as float RGB in [0, 1], whatever its mode, bit depth or EXIF orientation.

    Args:
        path: file path (str or Path).
        background: RGB in [0, 1] that transparent pixels are composited over (default white).

    Returns:
        ``torch.float32`` tensor in [0, 1].

    Shape:
        ``[3, H, W]``.

    Raises:
        ImageReadError: the file is missing, is not an image, or is truncated/corrupt.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"Cannot read image {path}: expected an existing image file, found "
                             f"{'a directory' if path.is_dir() else 'nothing'} there. Check the path.")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return pil_to_tensor(img, background)
    except UnidentifiedImageError as e:
        raise ImageReadError(f"Cannot read image {path}: it is not an image format PIL understands ({e}). "
                             f"Use PNG/JPEG/WebP/TIFF/BMP, or remove the file from the folder.") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"Cannot read image {path}: the file looks truncated or corrupt ({e}). "
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
