"""Render W+ latents at any width x height: through the INR head (tiled) or, without one, by resizing.

``render`` is the output path (no gradients). Inversion at a non-square size calls ``G.synthesis(ws, shape=(H, W))``
directly, which is differentiable. See docs/generator.md ("Rendering").
"""

import copy
import logging

import torch
import torch.nn.functional as F

from . import _checks
from .errors import ShapeError

__all__ = ["canvas_layout", "render"]

log = logging.getLogger(__name__)

MODES = ("auto", "inr", "resize")
FITS = ("stretch", "crop", "pad")


def canvas_layout(height, width, fit):
    """Where the generator's (square) picture goes in an ``height x width`` output.

    Args:
        height, width: Output size.
        fit: ``stretch`` (the square is stretched to H x W), ``crop`` (scaled to cover, centre-cropped) or ``pad``
            (scaled to fit inside, centred, the rest filled with the pad value).

    Returns:
        ``(canvas_hw, rows, cols, dst)``: render the canvas of size ``canvas_hw``, keep canvas rows ``rows = (r0, r1)``
        and columns ``cols = (c0, c1)``, and write them at output offset ``dst = (y, x)``.
    """
    H, W = int(height), int(width)
    if fit == "stretch":
        return (H, W), (0, H), (0, W), (0, 0)
    if fit == "crop":
        S = max(H, W)
        r0, c0 = (S - H) // 2, (S - W) // 2
        return (S, S), (r0, r0 + H), (c0, c0 + W), (0, 0)
    if fit == "pad":
        S = min(H, W)
        return (S, S), (0, S), (0, S), ((H - S) // 2, (W - S) // 2)
    raise ShapeError(f"render: fit must be one of {FITS}, got {fit!r}.")


def _tiles(rows, cols, tile):
    r0, r1 = rows
    c0, c1 = cols
    if tile is None:
        return [((r0, r1), (c0, c1))]
    return [((y, min(y + tile, r1)), (x, min(x + tile, c1))) for y in range(r0, r1, tile) for x in range(c0, c1, tile)]


def render(G, ws, height, width, *, noise_mode="const", noise=None, mode="auto", fit="stretch", tile=None,
           out_dtype=torch.float32, device=None, callback=None, generator=None, clamp=True, pad_value=-1.0,
           force_fp32=True):
    """Render ``ws`` at ``height x width``.

    Args:
        G: :class:`~hrinv.generator.stylegan2.Generator`.
        ws: ``[B, num_ws, w_dim]``.
        height, width: Output size in pixels (any, >= 1).
        noise_mode, noise, generator, force_fp32: As ``G.synthesis``.
        mode: ``inr`` (through ``G.inr``), ``resize`` (native render, then antialiased bicubic resampling: a fallback,
            NOT the paper's INR) or ``auto`` (``inr`` when G has a head, else ``resize``).
        fit: Aspect policy when the output is not square: ``stretch`` | ``crop`` | ``pad`` (see :func:`canvas_layout`).
        tile: INR mode: evaluate the head on ``tile x tile`` pieces, each written straight into the CPU output, so the
            full-size image never exists on the compute device. ``None`` = one piece. Ignored in resize mode.
        out_dtype: dtype of the returned CPU tensor.
        device: Compute device (default: G's). G is never moved; a copy is made when the devices differ.
        callback: ``callback(done, total, None)`` after each tile; raising from it cancels.
        clamp: Clamp to [-1, 1]. pad_value: Fill value for ``fit="pad"``.

    Returns:
        CPU tensor ``[B, img_channels, height, width]`` of ``out_dtype``.
    """
    if mode not in MODES:
        raise ShapeError(f"render: mode must be one of {MODES}, got {mode!r}.")
    _checks.check_render_size(height, width)  # <= 16384 a side, <= 2^28 px: a typo, not an allocation
    _checks.check_finite_tensor(ws, "render: ws", "check the latent (hrinv.Latent.load refuses non-finite files)")
    try:
        H, W = int(height), int(width)
    except (TypeError, ValueError):
        raise ShapeError(f"render: height and width must be integers, got {height!r} x {width!r}.") from None
    if H < 1 or W < 1:
        raise ShapeError(f"render: height and width must be >= 1, got {H} x {W}.")
    if tile is not None and (int(tile) < 1):
        raise ShapeError(f"render: tile must be None or >= 1, got {tile!r}.")
    tile = None if tile is None else int(tile)
    canvas, rows, cols, dst = canvas_layout(H, W, fit)
    if mode == "auto":
        mode = "inr" if G.inr is not None else "resize"
    if mode == "inr" and G.inr is None:
        raise ShapeError("render: mode='inr' needs an INR head and this generator has none (G.inr is None). Fit one "
                         "with hrinv.fit_inr_head(G) or `hrinv fit-inr SRC DST.safetensors`, or use mode='resize' "
                         "(native render + antialiased bicubic resampling).")

    param = next(G.parameters())
    device = torch.device(device) if device is not None else param.device
    if device != param.device:
        log.debug("render: copying the generator to %s", device)
        G = copy.deepcopy(G).to(device)
    ws = ws.to(device)
    if noise is not None:
        noise = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in noise.items()}
    B, C = ws.shape[0], G.img_channels

    out = torch.full((B, C, H, W), float(pad_value), dtype=out_dtype)  # preallocated CPU output
    oy, ox = dst
    with torch.no_grad():
        x, img = G.synthesis.forward_features(ws, noise_mode=noise_mode, noise=noise, force_fp32=force_fp32,
                                              generator=generator)
        if mode == "resize":
            pic = _resize(img.float(), canvas)[:, :, rows[0]:rows[1], cols[0]:cols[1]]
            if clamp:
                pic = pic.clamp(-1, 1)
            out[:, :, oy:oy + pic.shape[2], ox:ox + pic.shape[3]] = pic.to("cpu", out_dtype)
            if callback is not None:
                callback(1, 1, None)
            return out
        head = G.inr
        proj, rgb = head.prepare(x, img, canvas)  # native-size maps (features projected to the MLP width)
        pieces = _tiles(rows, cols, tile)
        for i, ((r0, r1), (c0, c1)) in enumerate(pieces):
            piece = head.render_region(proj, rgb, canvas, (r0, r1), (c0, c1))  # [B, C, r1 - r0, c1 - c0]
            if clamp:
                piece = piece.clamp(-1, 1)
            y, xo = oy + r0 - rows[0], ox + c0 - cols[0]
            out[:, :, y:y + (r1 - r0), xo:xo + (c1 - c0)] = piece.to("cpu", out_dtype)
            del piece
            if callback is not None:
                callback(i + 1, len(pieces), None)
    return out


def _resize(img, size):
    """Antialiased bicubic resampling of ``img [B, C, R, R]`` to ``size = (h, w)``."""
    if tuple(img.shape[2:]) == tuple(size):
        return img
    return F.interpolate(img, size=size, mode="bicubic", align_corners=False, antialias=True)

