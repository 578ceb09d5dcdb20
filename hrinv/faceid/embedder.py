"""``FaceEmbedder``: a face-embedding network + its preprocessing, with one tensor-friendly ``embed()`` call."""

import logging
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import ShapeError, WeightsNotFoundError
from .preprocess import PREPROCESS
from .preprocess import preprocess as _preprocess

__all__ = ["KNOWN_WEIGHTS", "FaceEmbedder", "default_search_dirs", "load_face_embedder"]

log = logging.getLogger(__name__)

# name -> (file name, network kind)
KNOWN_WEIGHTS = {
    "dlib": ("dlib_face_recognition_resnet_model_v1.dat", "dlib"),
    "arcface": ("model_ir_se50.pth", "irse50"),
}
_ALIASES = {"dlib": "dlib", "dlib-resnet": "dlib", "dlib_resnet": "dlib", "arcface": "arcface", "ir_se50": "arcface",
            "irse50": "arcface", "ir-se50": "arcface", "model_ir_se50": "arcface"}

# Default thresholded-retrieval threshold on the SQUARED Euclidean distance between unit embeddings.
# ArcFace: the paper's 1.5 (cos < 0.25). dlib: its own same-person rule ||d1 - d2|| < 0.6 on raw descriptors,
# expressed on unit vectors with the typical raw-descriptor norm of aligned faces (about 1.5, see docs/id-retrieval.md):
# (0.6 / 1.5)**2 = 0.16 (cos > 0.92).
DEFAULT_THRESHOLD = {"irse50": 1.5, "dlib": 0.16}
DEFAULT_PREPROCESS = {"irse50": "paper", "dlib": "dlib"}
ALLOWED_PREPROCESS = {"irse50": ("paper", "psp", "none"), "dlib": ("dlib", "chip", "none")}


def default_search_dirs():
    """Folders searched for weights given by name: ``$HRINV_FACEID_DIR`` (os.pathsep-separated), then
    ``$HRINV_MODELS_DIR/faceid``, then ``~/.cache/hrinv/faceid``."""
    dirs = [Path(p) for p in os.environ.get("HRINV_FACEID_DIR", "").split(os.pathsep) if p]
    if os.environ.get("HRINV_MODELS_DIR"):
        dirs.append(Path(os.environ["HRINV_MODELS_DIR"]) / "faceid")
    dirs.append(Path.home() / ".cache" / "hrinv" / "faceid")
    return dirs


class FaceEmbedder(nn.Module):
    """A face-embedding network with its documented preprocessing.

    Attributes:
        name: ``"dlib"`` or ``"arcface"`` (IR-SE50).
        dim: embedding size (128 or 512).
        preprocess: the preprocessing convention name (see :mod:`hrinv.faceid.preprocess`).
        preprocess_description: one line describing it (reported with every result).
        threshold: default threshold of thresholded ID retrieval, on the squared distance of unit embeddings.
        input_size: the network's input size ``(H, W)``.
        meta: where the weights came from.
    """

    def __init__(self, net, kind, preprocess=None, threshold=None, batch_size=32):
        super().__init__()
        preprocess = preprocess or DEFAULT_PREPROCESS[kind]
        if preprocess not in ALLOWED_PREPROCESS[kind]:
            raise ValueError(f"preprocessing {preprocess!r} does not apply to the {kind} network; choose one of "
                             f"{ALLOWED_PREPROCESS[kind]}")
        self.net = net
        self.kind = kind
        self.name = "dlib" if kind == "dlib" else "arcface"
        self.dim = net.dim
        self.input_size = tuple(net.input_size)
        self.preprocess = preprocess
        self.preprocess_description = PREPROCESS[preprocess]
        self.threshold = float(DEFAULT_THRESHOLD[kind] if threshold is None else threshold)
        self.batch_size = int(batch_size)
        self.meta = dict(getattr(net, "meta", {}))

    def extra_repr(self):
        return f"name={self.name}, dim={self.dim}, preprocess={self.preprocess}, threshold={self.threshold}"

    @property
    def device(self):
        return next(self.net.parameters()).device

    @property
    def dtype(self):
        return next(self.net.parameters()).dtype

    def describe(self):
        """JSON-able description: network, weights file, preprocessing, threshold."""
        return {"network": "dlib ResNet-29 (dlib_face_recognition_resnet_model_v1)" if self.kind == "dlib" else
                "ArcFace IR-SE50 (model_ir_se50)", "name": self.name, "dim": self.dim,
                "weights": self.meta.get("path"), "preprocess": self.preprocess,
                "preprocess_description": self.preprocess_description, "threshold": self.threshold}

    def forward(self, images, normalize=True):
        """Differentiable embedding of one batch (no batching, no input checks beyond shape).

        Args:
            images: aligned faces, RGB in [0, 1].
            normalize: L2-normalise (default). ``False`` on dlib gives dlib's raw descriptors.

        Shape:
            ``[B, 3, H, W] -> [B, dim]``.
        """
        work = torch.float64 if self.dtype == torch.float64 else torch.float32  # resampling in >= fp32 (no fp16 aa)
        x = _preprocess(images.to(device=self.device, dtype=work), self.preprocess, self.input_size).to(self.dtype)
        if self.kind == "irse50":
            return self.net(x * 2 - 1)  # already unit-norm
        out = self.net(x)  # [B, 128] raw dlib descriptors
        return torch.nn.functional.normalize(out, dim=1) if normalize else out

    @torch.no_grad()
    def embed(self, images, batch_size=None, normalize=True):
        """Embeddings of aligned face images, batched, on the embedder's device.

        Args:
            images: a tensor ``[B, 3, H, W]`` or ``[3, H, W]`` (float in [0, 1], or uint8 in 0..255), or a list of
                ``[3, H, W]`` tensors of any sizes.
            batch_size: images per forward pass (default ``self.batch_size``).
            normalize: unit-norm output (default); ``False`` on dlib returns dlib's raw descriptors.

        Returns:
            float32 embeddings on the embedder's device, unit L2 norm when ``normalize``.

        Shape:
            ``[B, dim]``.
        """
        items = _as_batches(images)
        bs = int(batch_size or self.batch_size)
        out = []
        for group in items:
            for i in range(0, group.shape[0], bs):
                out.append(self.forward(group[i:i + bs], normalize=normalize).float())
        if not out:
            return torch.zeros(0, self.dim, device=self.device)
        return torch.cat(out)


def _check_image(t, where):
    if not torch.is_tensor(t):
        raise ShapeError(f"{where}: expected a torch tensor image, got {type(t).__name__}.")
    if t.ndim == 4 and t.shape[1] in (1, 2, 4) and t.shape[-1] not in (1, 2, 3, 4):
        t = _to_rgb(t)  # greyscale (+alpha) or RGBA tensors are converted, like hrinv.imageio does for files
    if t.ndim != 4 or t.shape[1] != 3:
        hint = " (ComfyUI IMAGE is [B, H, W, 3]: use images.movedim(-1, 1))" if t.ndim == 4 and t.shape[-1] == 3 \
            else ""
        raise ShapeError(f"{where}: expected RGB images [B, 3, H, W], got shape {tuple(t.shape)}{hint}.")
    if t.dtype == torch.uint8:
        return t.float() / 255.0
    if not t.is_floating_point():
        raise ShapeError(f"{where}: expected float images in [0, 1] or uint8, got dtype {t.dtype}.")
    if t.numel():
        lo, hi = float(t.min()), float(t.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            hint = " They look like [-1, 1] images: pass (x + 1) / 2." if lo >= -1.001 and hi <= 1.001 else ""
            raise ShapeError(f"{where}: expected values in [0, 1], got [{lo:.3g}, {hi:.3g}].{hint}")
    return t


def _to_rgb(t):
    """[B, 1|2|4, H, W] -> [B, 3, H, W]: replicate grey, composite alpha over white."""
    scale = 255.0 if t.dtype == torch.uint8 else 1.0
    t = t.float() / scale
    colour, alpha = (t[:, :-1], t[:, -1:]) if t.shape[1] in (2, 4) else (t, None)
    colour = colour.expand(-1, 3, -1, -1) if colour.shape[1] == 1 else colour
    if alpha is not None:
        colour = colour * alpha + (1.0 - alpha)
    return colour


def _as_batches(images):
    """Normalise the accepted inputs to a list of ``[B, 3, H, W]`` float tensors (same size within each)."""
    if torch.is_tensor(images):
        if images.ndim == 3:
            images = images[None]
        return [_check_image(images, "embed")]
    if isinstance(images, (list, tuple)):
        groups = []
        for k, t in enumerate(images):
            t = t[None] if torch.is_tensor(t) and t.ndim == 3 else t
            t = _check_image(t, f"embed: image {k}")
            if groups and groups[-1].shape[1:] == t.shape[1:]:
                groups[-1] = torch.cat([groups[-1], t])
            else:
                groups.append(t)
        return groups
    raise ShapeError(f"embed: expected a tensor [B, 3, H, W] or a list of [3, H, W] tensors, got "
                     f"{type(images).__name__}.")


def _resolve(name_or_path, search_dirs):
    """(path, kind) for a known name or a file path."""
    key = _ALIASES.get(str(name_or_path).lower())
    if key is not None:
        fname, kind = KNOWN_WEIGHTS[key]
        dirs = list(search_dirs) if search_dirs is not None else default_search_dirs()
        for d in dirs:
            if (Path(d) / fname).is_file():
                return Path(d) / fname, kind
        raise WeightsNotFoundError(f"face-embedding weights {name_or_path!r} not found: looked for {fname} in "
                                   f"{', '.join(str(d) for d in dirs) or '(no folders)'}. Put the file in one of them "
                                   f"(or set HRINV_FACEID_DIR), or pass its path.")
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise WeightsNotFoundError(f"face-embedding weights not found at {path}: expected a file path, or one of the "
                                   f"names {sorted(_ALIASES)}.")
    kind = "dlib" if path.suffix.lower() == ".dat" else "irse50"
    return path, kind


def load_face_embedder(name_or_path="dlib", device=None, dtype=None, *, preprocess=None, threshold=None,
                       search_dirs=None, batch_size=32):
    """Load a face-embedding network as a :class:`FaceEmbedder`.

    Args:
        name_or_path: ``"dlib"`` (dlib ResNet, ``dlib_face_recognition_resnet_model_v1.dat``, CC0; the default),
            ``"arcface"`` (IR-SE50, ``model_ir_se50.pth``, the paper's network), or a path to either file
            (``.dat`` -> dlib; ``.pth``/``.pt``/``.safetensors`` -> IR-SE50). Names are looked up in
            ``search_dirs`` (default :func:`default_search_dirs`).
        device: torch device (default CPU).
        dtype: network dtype (default float32).
        preprocess: ``"paper"`` (default) / ``"psp"`` / ``"none"`` for IR-SE50; ``"dlib"`` (default) / ``"chip"`` /
            ``"none"`` for dlib. See :mod:`hrinv.faceid.preprocess`.
        threshold: squared-distance threshold of thresholded retrieval (default 1.5 for ArcFace, 0.16 for dlib).
        search_dirs: folders to look in for named weights.
        batch_size: default images per forward pass in ``embed``.

    Returns:
        FaceEmbedder (eval mode, no gradients on its parameters).
    """
    path, kind = _resolve(name_or_path, search_dirs)
    if kind == "dlib":
        from .dlib_resnet import load_dlib_resnet
        net = load_dlib_resnet(path, device=device, dtype=dtype)
    else:
        from .irse50 import load_irse50
        net = load_irse50(path, device=device, dtype=dtype)
    emb = FaceEmbedder(net, kind, preprocess=preprocess, threshold=threshold, batch_size=batch_size)
    log.debug("loaded face embedder %s from %s", emb.name, path)
    return emb.eval().requires_grad_(False)
