"""Per-network preprocessing: from an aligned face image ``[B, 3, H, W]`` in [0, 1] to the network's input.

Inputs are assumed FFHQ/CelebA-HQ-aligned portraits (square, eyes at about 0.4 of the height), as in the paper.
Detection and alignment of arbitrary photos is a separate capability and is not done here.

Conventions (``PREPROCESS[name]`` holds the one-line description that is reported with every result). This module
does the geometry only; values stay in [0, 1] and the embedder maps them to the network's range ([-1, 1] for
IR-SE50, dlib's ``(255 x - mean) / 256`` inside the dlib network).

``paper`` (IR-SE50, the HRInversion evaluator): the **whole** image resized to 112x112 (bilinear, antialias),
    mapped to [-1, 1]. No crop. This is what reproduces the paper's numbers.
``psp`` (IR-SE50, the pSp/e4e ID loss): the image reduced to 256x256 (adaptive average pooling, as pSp; bilinear
    upsampling if smaller), cropped to rows 35:223, columns 32:220, pooled to 112x112, mapped to [-1, 1]. Scores are
    not comparable with ``paper``.
``dlib`` (dlib ResNet): the square box of side 0.698 W centred at (0.502 W, 0.617 H), which is where dlib's
    ``get_face_chip(size=150, padding=0.25)`` lands on FFHQ/CelebA-HQ-aligned faces (fitted on 12 CelebA-HQ faces,
    std 0.03 W in size and < 0.01 W in position), resized to 150x150 (bilinear, antialias); the box is clipped
    to the image with edge replication. Input stays in [0, 1] (the network subtracts dlib's mean itself).
``chip`` (dlib ResNet): the input already is a dlib face chip; only resized to 150x150 if needed.
``none``: no change; the image must already have the network's input size (values in [0, 1]).
"""

import torch.nn.functional as F

from ..errors import ShapeError

__all__ = ["DLIB_CHIP_BOX", "PREPROCESS", "crop_box", "preprocess", "resize"]

# (centre x, centre y, side), as fractions of the image width/height.
DLIB_CHIP_BOX = (0.502, 0.617, 0.698)

PREPROCESS = {
    "paper": "whole aligned image -> 112x112 bilinear (antialias) -> [-1, 1] (HRInversion ID_retrieval evaluator)",
    "psp": "aligned image -> 256x256 -> crop [35:223, 32:220] -> 112x112 adaptive avg pool -> [-1, 1] (pSp/e4e ID loss)",
    "dlib": "FFHQ-aligned image -> dlib chip box (centre 0.502,0.617, side 0.698) -> 150x150 bilinear (antialias)",
    "chip": "input already a dlib 150x150 face chip (resized to 150x150 if not)",
    "none": "no preprocessing; input must already be the network's size",
}

# Smallest side accepted per convention (below this, a face is too small to be identified reliably).
MIN_SIZE = {"paper": 64, "psp": 64, "dlib": 64, "chip": 32, "none": 1}


def resize(x, size):
    """Bilinear resize with antialiasing when shrinking (``align_corners=False``).

    Shape:
        ``[B, C, H, W] -> [B, C, size[0], size[1]]``.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def crop_box(x, cx, cy, side):
    """Square crop given in fractions of the image (``side`` of the width), clipped with edge replication.

    Shape:
        ``[B, C, H, W] -> [B, C, S, S]`` with ``S = round(side * W)``.
    """
    _, _, h, w = x.shape
    s = max(1, round(side * w))
    x0, y0 = round(cx * w - s / 2), round(cy * h - s / 2)
    pad = (max(0, -x0), max(0, x0 + s - w), max(0, -y0), max(0, y0 + s - h))
    if any(pad):
        x = F.pad(x, pad, mode="replicate")  # [B, C, H + pt + pb, W + pl + pr]
        x0, y0 = x0 + pad[0], y0 + pad[2]
    return x[:, :, y0:y0 + s, x0:x0 + s]


def preprocess(images, mode, size):
    """Turn aligned face images into network inputs according to ``mode`` (see the module doc).

    Args:
        images: RGB in [0, 1].
        mode: one of ``PREPROCESS``.
        size: the network input size ``(H, W)``.

    Returns:
        the resized/cropped images, still in [0, 1] (the embedder maps them to the network's value range).

    Shape:
        ``[B, 3, H, W] -> [B, 3, size[0], size[1]]``.
    """
    if mode not in PREPROCESS:
        raise ValueError(f"unknown preprocessing {mode!r}; expected one of {sorted(PREPROCESS)}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ShapeError(f"face images must be [B, 3, H, W] RGB in [0, 1], got shape {tuple(images.shape)}.")
    h, w = images.shape[-2:]
    if min(h, w) < MIN_SIZE[mode]:
        raise ShapeError(f"face images of {h}x{w} are too small for identity embedding (need at least "
                         f"{MIN_SIZE[mode]} px per side with preprocessing {mode!r}); use larger aligned faces.")
    if mode == "none":
        if tuple(images.shape[-2:]) != tuple(size):
            raise ShapeError(f"preprocessing 'none' needs images of exactly {size[0]}x{size[1]}, got {h}x{w}.")
        return images
    if mode == "paper":
        return resize(images, size)  # [B, 3, 112, 112]
    if mode == "psp":
        x = F.adaptive_avg_pool2d(images, (256, 256)) if min(h, w) >= 256 else resize(images, (256, 256))
        x = x[:, :, 35:223, 32:220]  # [B, 3, 188, 188]
        return F.adaptive_avg_pool2d(x, tuple(size))  # [B, 3, 112, 112]
    if mode == "dlib":
        return resize(crop_box(images, *DLIB_CHIP_BOX), size)  # [B, 3, 150, 150]
    return resize(images, size)  # chip
