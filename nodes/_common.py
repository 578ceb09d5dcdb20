"""Helpers shared by the node modules: IMAGE/MASK conversion at the node boundary and error wrapping.

ComfyUI's IMAGE is ``[B, H, W, C]`` float in 0..1 and MASK is ``[B, H, W]`` (or ``[H, W]``); hrinv works on
``[B, 3, H, W]`` in [-1, 1]. Conversions always build new tensors (inputs are cached and shared by the host, and
arrive as inference tensors), outside inference mode so that the results can take part in autograd.
"""

from __future__ import annotations

import functools
import inspect
import logging
import traceback

import torch
import torch.nn.functional as F

from . import _comfy

log = logging.getLogger(__name__)

CATEGORY = "HRInversion"


class NodeError(RuntimeError):
    """An unexpected failure inside a node, re-raised with the node's name and what to try."""


def guarded(title: str):
    """Decorator for ``execute``: Cancel and hrinv's typed errors pass unchanged (their messages are written for
    users); any other exception is re-raised as :class:`NodeError` naming the node, with a hint for out-of-memory."""
    def translate(exc):
        from hrinv.errors import HRInvError

        if isinstance(exc, (_comfy.InterruptProcessingException, HRInvError, NodeError, FileNotFoundError)):
            return None
        if _comfy.is_oom(exc):
            return NodeError(f"{title}: out of memory on {_comfy.compute_device()}. Try a smaller batch, fewer "
                             f"pixels, tiling, or the memory-saving option; other models were asked to unload first.")
        return NodeError(f"{title} failed: {type(exc).__name__}: {exc}")

    def wrap(fn):
        if inspect.iscoroutinefunction(fn):             # async nodes stay async (ComfyUI runs ready async nodes first)
            @functools.wraps(fn)
            async def inner_async(*args, **kwargs):
                try:
                    return await fn(*args, **kwargs)
                except Exception as exc:
                    new = translate(exc)
                    if new is None:
                        raise
                    raise new from exc
            return inner_async

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except BaseException as exc:
                # The host keeps the exception (and so the traceback's frames and their tensors) after a Cancel or
                # a failure; drop the node's locals now, file/line information stays in the report.
                traceback.clear_frames(exc.__traceback__)
                if not isinstance(exc, Exception):
                    raise
                new = translate(exc)
                if new is None:
                    raise
                raise new from exc
        return inner
    return wrap


def _raise_for_node(title, exc):
    from hrinv.errors import HRInvError

    if isinstance(exc, (HRInvError, NodeError, FileNotFoundError)):
        raise exc
    if _comfy.is_oom(exc):
        raise NodeError(f"{title}: out of memory on {_comfy.compute_device()}. Try a smaller batch, fewer pixels, "
                        f"tiling, or the memory-saving option; other models were asked to unload first.") from exc
    raise NodeError(f"{title} failed: {type(exc).__name__}: {exc}") from exc


def check_image(image: torch.Tensor, name: str = "image") -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise NodeError(f"'{name}' must be a ComfyUI IMAGE [batch, height, width, channels] with 1, 3 or 4 "
                        f"channels; got {got}. Connect an image output (Load Image, VAE Decode, ...).")


def to_lib(image: torch.Tensor, device=None, name: str = "image") -> torch.Tensor:
    """IMAGE ``[B, H, W, C]`` 0..1 -> ``[B, 3, H, W]`` in [-1, 1] (a new, normal tensor; alpha dropped, grey
    repeated)."""
    check_image(image, name)
    with torch.inference_mode(False):
        x = image.detach().to(device=device, dtype=torch.float32).clone()   # [B, H, W, C]
        x = x[..., :3] if x.shape[-1] >= 3 else x.expand(-1, -1, -1, 3)
        return x.permute(0, 3, 1, 2).mul(2).sub(1).contiguous()            # [B, 3, H, W]


def to_comfy(img: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` in about [-1, 1] -> IMAGE ``[B, H, W, 3]`` float32 in 0..1 on the host's intermediate
    device."""
    with torch.inference_mode(False):
        out = img.detach().float().add(1).mul(0.5).clamp(0, 1)               # [B, 3, H, W]
        return out.permute(0, 2, 3, 1).contiguous().to(_comfy.intermediate_device())   # [B, H, W, 3]


def mask_to_lib(mask: torch.Tensor | None, batch: int, height: int, width: int, device=None):
    """MASK ``[B, H, W]`` / ``[H, W]`` in 0..1 -> ``[batch, 1, height, width]`` (resized, batch of 1 repeated), or
    None."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise NodeError(f"'mask' must be a ComfyUI MASK [batch, height, width]; got {got}.")
    with torch.inference_mode(False):
        m = mask.detach().to(device=device, dtype=torch.float32).clone()
        m = m.reshape(-1, 1, m.shape[-2], m.shape[-1])                       # [Bm, 1, h, w]
        if m.shape[0] not in (1, batch):
            raise NodeError(f"'mask' has {m.shape[0]} masks for {batch} images; give one mask or one per image.")
        if m.shape[-2:] != (height, width):
            m = F.interpolate(m, size=(height, width), mode="bilinear", align_corners=False)
        return m.expand(batch, -1, -1, -1).clamp(0, 1).contiguous()         # [B, 1, H, W]


def fit_to_resolution(x: torch.Tensor, res: int, mode: str) -> torch.Tensor:
    """Make ``[B, C, H, W]`` square at ``res``: ``resize`` (stretch), ``center crop`` (crop to square then resize)
    or ``error`` (refuse anything else than res x res)."""
    h, w = x.shape[-2:]
    if (h, w) == (res, res):
        return x
    if mode == "error":
        raise NodeError(f"the image is {w}x{h} but the generator makes {res}x{res} images. Resize/crop it to "
                        f"{res}x{res} first, or set 'fit' to 'center crop' or 'resize'.")
    if mode == "center crop" and h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        x = x[..., top:top + s, left:left + s]
    return F.interpolate(x, size=(res, res), mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)


def parse_int_list(text: str, name: str) -> list[int]:
    """``"0, 0, 1"`` -> ``[0, 0, 1]``; empty -> ``[]``."""
    s = (text or "").replace(";", ",").strip()
    if not s:
        return []
    try:
        return [int(p) for p in s.split(",") if p.strip()]
    except ValueError:
        raise NodeError(f"'{name}' must be comma-separated whole numbers like '0, 0, 1, 1'; got {text!r}.") from None


# ----------------------------------------------------------------------------------------------------------------
# Checks in the words of the editor (node, input and widget names), made before the library is called, so that a
# node user never reads a library argument, a tensor shape recipe or a command-line flag.

MIN_IMAGE_SIDE = 32          # VGG16 pools 4-5 times before its deepest tap; anything this small holds no face


def describe_generator(handle) -> str:
    """``'ffhq.pkl' (1024 px, 18 W+ rows of 512)`` for a GeneratorHandle."""
    G = handle.model
    return (f"'{handle.label}' ({getattr(G, 'img_resolution', '?')} px, {getattr(G, 'num_ws', '?')} W+ rows of "
            f"{getattr(G, 'w_dim', '?')})")


def check_image_size(image: torch.Tensor, name: str, generator_handle) -> None:
    """Refuse images too small to hold a face (a 1x1 or 8x8 image would otherwise be stretched to the generator's
    size and 'inverted' into a meaningless face without a word)."""
    check_image(image, name)
    h, w = int(image.shape[1]), int(image.shape[2])
    if min(h, w) < MIN_IMAGE_SIDE:
        res = getattr(generator_handle.model, "img_resolution", 1024)
        raise NodeError(f"'{name}' is {w}x{h} px: too small to invert, there is no face to find in it. Connect a "
                        f"photo of at least {MIN_IMAGE_SIDE} px on its shorter side; the generator makes {res}x{res} "
                        f"images, so a {res} px aligned face works best.")


def check_generator_renders_enough(generator_handle, node_title: str) -> None:
    """The VGG16 loss needs more than 32 px; a generator that renders 32 px or less cannot be used for it, whatever
    the image (without an INR head, the generator's own size is what the loss sees)."""
    G = generator_handle.model
    if getattr(G, "inr", None) is None and G.img_resolution <= MIN_IMAGE_SIDE:
        raise NodeError(f"{node_title}: the generator {describe_generator(generator_handle)} renders "
                        f"{G.img_resolution}x{G.img_resolution} images, but the VGG16 loss needs more than "
                        f"{MIN_IMAGE_SIDE} px. Resizing the photo does not help: load a generator of 64 px or more "
                        f"(or one with a Style-INR-GAN head).")


def check_latent_fits(latent_handle, generator_handle, node_title: str, latent_input: str = "latent") -> None:
    """A latent made with another generator (different W+ layout) cannot be rendered or refined by this one."""
    G, ws = generator_handle.model, latent_handle.latent.ws
    if tuple(ws.shape[1:]) == (G.num_ws, G.w_dim):
        return
    made_with = getattr(latent_handle, "generator", "") or "another generator"
    raise NodeError(f"{node_title}: the '{latent_input}' input was made with {made_with} ({ws.shape[1]} W+ rows of "
                    f"{ws.shape[2]}), but the connected generator is {describe_generator(generator_handle)}. "
                    f"A latent only works with the generator it was found in, a generator fine-tuned from it, or a "
                    f"mix of those: connect that generator, or invert the image again with this one.")


def check_batches(n_a: int, what_a: str, n_b: int, what_b: str, node_title: str) -> None:
    """Two batches that are combined item by item: equal sizes, or one of them 1 (used for all)."""
    if n_a == n_b or 1 in (n_a, n_b):
        return
    raise NodeError(f"{node_title}: {what_a} has {n_a} items and {what_b} has {n_b}; they are combined item by item, "
                    f"so give both the same number, or just one of either (one is used for all). For example, "
                    f"batch {min(n_a, n_b)} references with {min(n_a, n_b)} contents, or use a single content photo.")
