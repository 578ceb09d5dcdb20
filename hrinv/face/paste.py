"""Paste aligned (stylised) faces back into the photo they came from, at the photo's resolution.

Each face is warped back with the inverse of its alignment transform, only over the quad's bounding box (the rest
of the photo is copied untouched), and blended with a feathered mask that is 1 inside the crop and falls to 0 over
``feather`` x crop side at the crop's edges. Optional colour/tone matching moves the mean and spread (in CIE Lab)
of the stylised face's centre onto those of the original face's centre before pasting.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from ..errors import InvalidSettingError, ShapeError
from .align import FaceAlignment, warp_face
from .detect import as_photo

__all__ = ["face_region_mask", "feather_mask", "match_color", "paste_back", "rgb_to_lab", "lab_to_rgb"]

log = logging.getLogger(__name__)


def feather_mask(u: torch.Tensor, v: torch.Tensor, size: int, feather: float, shape: str = "square"):
    """Blend weight at continuous crop coordinates (u, v) of a crop of side ``size``: 1 inside, a smoothstep ramp of
    width ``feather * size`` at the edges (``shape="square"``) or around an ellipse inscribed in the crop
    (``"ellipse"``), 0 outside the crop."""
    if shape == "square":
        d = torch.minimum(torch.minimum(u, size - u), torch.minimum(v, size - v))  # distance to the crop edge
    elif shape == "ellipse":
        # distance (approximately, in pixels) inside an ellipse of half-axes 0.5 size x 0.5 size centred in the crop
        r = torch.sqrt(((u - size / 2) / (size / 2)) ** 2 + ((v - size / 2) / (size / 2)) ** 2)
        d = (1 - r) * size / 2
    else:
        raise InvalidSettingError(f"mask shape: expected 'square' or 'ellipse', got {shape!r}")
    w = max(float(feather) * size, 1e-6)
    t = (d / w).clamp(0, 1)
    m = t * t * (3 - 2 * t)
    return torch.where(m < 1e-6, torch.zeros_like(m), m)  # exactly 0 where nothing visible changes


def face_region_mask(size: int, device=None) -> torch.Tensor:
    """``[size, size]`` bool: the central face area of an FFHQ-aligned crop (cheeks, nose, forehead, mouth), used for
    colour statistics. An ellipse centred at (0.5, 0.56) of the crop with half-axes 0.19 x 0.24."""
    c = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
    return (((c[None, :] - 0.5) / 0.19) ** 2 + ((c[:, None] - 0.56) / 0.24) ** 2) <= 1.0


# --- CIE Lab (D65), input/output sRGB in [0, 1]

def _srgb_to_linear(x):
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055).clamp(min=0) ** 2.4)


def _linear_to_srgb(x):
    return torch.where(x <= 0.0031308, x * 12.92, 1.055 * x.clamp(min=1e-12) ** (1 / 2.4) - 0.055)


_M = torch.tensor([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                   [0.0193339, 0.1191920, 0.9503041]])
_WHITE = torch.tensor([0.95047, 1.0, 1.08883])


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """``[..., 3, H, W]`` sRGB in [0, 1] -> CIE Lab (L in 0..100)."""
    lin = _srgb_to_linear(rgb.clamp(0, 1))
    M = _M.to(rgb)
    xyz = torch.einsum("ij,...jhw->...ihw", M, lin) / _WHITE.to(rgb).view(3, 1, 1)
    eps = 216 / 24389
    f = torch.where(xyz > eps, xyz.clamp(min=1e-12) ** (1 / 3), (24389 / 27 * xyz + 16) / 116)
    L = 116 * f[..., 1, :, :] - 16
    a = 500 * (f[..., 0, :, :] - f[..., 1, :, :])
    b = 200 * (f[..., 1, :, :] - f[..., 2, :, :])
    return torch.stack([L, a, b], -3)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_lab` (clamped to [0, 1])."""
    L, a, b = lab.unbind(-3)
    fy = (L + 16) / 116
    fx = fy + a / 500
    fz = fy - b / 200
    f = torch.stack([fx, fy, fz], -3)
    eps = 6 / 29
    xyz = torch.where(f > eps, f ** 3, (116 * f - 16) * 27 / 24389) * _WHITE.to(lab).view(3, 1, 1)
    lin = torch.einsum("ij,...jhw->...ihw", torch.linalg.inv(_M).to(lab), xyz)
    return _linear_to_srgb(lin).clamp(0, 1)


def match_color(src: torch.Tensor, ref: torch.Tensor, region: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Move the Lab mean and standard deviation of ``src`` [3, S, S] (in [0, 1]) inside ``region`` [S, S] onto those
    of ``ref`` in the same region; ``strength`` in [0, 1] blends between no change and a full match."""
    ls, lr = rgb_to_lab(src), rgb_to_lab(ref)
    ms, mr = ls[:, region], lr[:, region]
    mu_s, sd_s = ms.mean(1).view(3, 1, 1), ms.std(1).view(3, 1, 1).clamp(min=1e-3)
    mu_r, sd_r = mr.mean(1).view(3, 1, 1), mr.std(1).view(3, 1, 1).clamp(min=1e-3)
    ratio = (sd_r / sd_s).clamp(0.25, 4.0)
    out = (ls - mu_s) * ratio + mu_r
    return lab_to_rgb(ls + (out - ls) * float(strength))


def paste_back(photo, crops, alignment: FaceAlignment, *, feather: float = 0.1, color_match=False,
               mask_shape: str = "square", faces=None, device=None):
    """Warp faces back into their photo.

    Args:
        photo: the original photo, ``[3, H, W]`` in [0, 1] (or a PIL image); never modified.
        crops: ``[N, 3, S, S]`` faces in [-1, 1] (the library's convention), one per face of ``alignment`` (any S:
            a stylised face rendered at another size is fine). ``[3, S, S]`` for one face.
        alignment: the :class:`FaceAlignment` that produced the crops (or rebuilt with ``FaceAlignment.from_json``).
        feather: width of the soft edge, as a fraction of the crop side (0 = hard edge; 0.1 = 10 %).
        color_match: False, True, or a strength in [0, 1]: match the Lab mean/spread of each face's centre to the
            original face before pasting.
        mask_shape: ``"square"`` (the whole aligned square) or ``"ellipse"`` (the inscribed ellipse).
        faces: indices into ``alignment.faces`` that ``crops`` belong to (default: all, in order).
        device: torch device (default: the photo's).

    Returns:
        ``(image [3, H, W] in [0, 1], mask [H, W] in [0, 1])``: the photo with the faces pasted in, and how much of
        each pixel was replaced.
    """
    photo = as_photo(photo, "photo")
    device = torch.device(device) if device is not None else photo.device
    H, W = photo.shape[-2:]
    if tuple(alignment.photo_size) != (H, W):
        raise ShapeError(f"paste_back: the alignment was made on a {alignment.photo_size[1]}x"
                         f"{alignment.photo_size[0]} photo but this photo is {W}x{H}. Pass the same photo that was "
                         f"aligned.")
    if not isinstance(crops, torch.Tensor):
        raise ShapeError(f"paste_back: crops must be a tensor [N, 3, S, S] in [-1, 1], got {type(crops).__name__}")
    if crops.ndim == 3:
        crops = crops[None]
    idx = list(range(len(alignment.faces))) if faces is None else [int(i) for i in faces]
    if crops.ndim != 4 or crops.shape[1] != 3 or crops.shape[2] != crops.shape[3]:
        raise ShapeError(f"paste_back: crops must be square RGB [N, 3, S, S], got {tuple(crops.shape)}")
    if crops.shape[0] != len(idx):
        raise ShapeError(f"paste_back: got {crops.shape[0]} crop(s) for {len(idx)} face(s) of the alignment. Pass one "
                         f"crop per aligned face, in the same order (or faces=[...] to say which).")
    if not 0.0 <= float(feather) <= 0.5:
        raise InvalidSettingError(f"feather: expected a fraction of the crop side in [0, 0.5], got {feather}")
    strength = float(color_match) if not isinstance(color_match, bool) else (1.0 if color_match else 0.0)
    if not 0.0 <= strength <= 1.0:
        raise InvalidSettingError(f"color_match: expected False, True or a strength in [0, 1], got {color_match}")
    out = photo.to(device=device, dtype=torch.float32, copy=True)
    keep = torch.ones(H, W, device=device)  # product of (1 - mask_k)
    for crop, k in zip(crops, idx):
        t = alignment.faces[k]
        S = crop.shape[-1]
        face = ((crop.detach().to(device=device, dtype=torch.float32) + 1) / 2).clamp(0, 1)
        if strength > 0:
            orig, _ = warp_face(photo, t, S, padding="reflect", device=device)
            face = match_color(face, orig, face_region_mask(S, device), strength)
        s = t.size / S  # photo pixels per crop pixel
        quad = t.quad.double()
        x0 = max(int(math.floor(float(quad[:, 0].min()))), 0)
        y0 = max(int(math.floor(float(quad[:, 1].min()))), 0)
        x1 = min(int(math.ceil(float(quad[:, 0].max()))), W)
        y1 = min(int(math.ceil(float(quad[:, 1].max()))), H)
        if x1 <= x0 or y1 <= y0:
            continue
        if s < 0.8:  # the crop has more pixels than the photo area it covers: antialias it down first
            n = max(2, int(round(S * s)))
            face = F.interpolate(face[None], size=(n, n), mode="bilinear", antialias=True, align_corners=False)[0]
        Mi = t.photo_to_crop(S).to(device)
        ys = torch.arange(y0, y1, device=device, dtype=torch.float64) + 0.5
        xs = torch.arange(x0, x1, device=device, dtype=torch.float64) + 0.5
        u = Mi[0, 0] * xs[None, :] + Mi[0, 1] * ys[:, None] + Mi[0, 2]
        v = Mi[1, 0] * xs[None, :] + Mi[1, 1] * ys[:, None] + Mi[1, 2]
        grid = torch.stack([u / S * 2 - 1, v / S * 2 - 1], -1).float()[None]
        warped = F.grid_sample(face[None], grid, mode="bicubic", padding_mode="border", align_corners=False)[0]
        m = feather_mask(u, v, S, feather, mask_shape).float()
        inside = (u >= 0) & (u <= S) & (v >= 0) & (v <= S)
        m = m * inside
        region = out[:, y0:y1, x0:x1]
        out[:, y0:y1, x0:x1] = region + (warped.clamp(0, 1) - region) * m
        keep[y0:y1, x0:x1] = keep[y0:y1, x0:x1] * (1 - m)
    return out, 1 - keep
