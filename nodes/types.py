"""Custom socket types of the pack and the small handle objects that travel on them.

ComfyUI passes any Python object between nodes; the socket type is only a string both ends must agree on. We wrap
our objects in frozen handles so that (1) the host's error reports, which ``str()`` every input, show one short line
instead of a whole ``nn.Module`` or tensor dump, and (2) nobody is tempted to mutate a cached, shared object.

Handles are read-only by contract: a node that needs a changed generator or latent builds a new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from comfy_api.latest import io

__all__ = [
    "FACE_EMBEDDER",
    "GENERATOR",
    "LATENT",
    "VGG",
    "FaceEmbedderHandle",
    "GeneratorHandle",
    "LatentHandle",
    "VGGHandle",
]

# Socket types. Prefixed so they never collide with core (LATENT is Comfy's {"samples": ...}) or other packs.
GENERATOR = io.Custom("HRINV_GENERATOR")
LATENT = io.Custom("HRINV_LATENT")
VGG = io.Custom("HRINV_VGG")
FACE_EMBEDDER = io.Custom("HRINV_FACE_EMBEDDER")


@dataclass(frozen=True, eq=False)
class GeneratorHandle:
    """A loaded (or mixed) generator. ``model`` is an ``hrinv.generator.stylegan2.Generator`` kept on the offload
    device; nodes move it to the compute device for the duration of their work and back."""

    model: Any
    label: str
    info: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        m = self.model
        res = getattr(m, "img_resolution", "?")
        inr = " +INR" if getattr(m, "inr", None) is not None else ""
        return f"HRInvGenerator({self.label!r}, {res}px{inr})"


@dataclass(frozen=True, eq=False)
class LatentHandle:
    """An ``hrinv.latent.Latent`` (W+ codes, optional noise maps, generator fingerprint, settings, metrics)."""

    latent: Any
    label: str = "latent"
    generator: str = ""      # the generator it was found in, as the user knows it (e.g. "'ffhq.pkl' (1024 px, …)")

    def __repr__(self) -> str:
        ws = getattr(self.latent, "ws", None)
        shape = "x".join(str(s) for s in ws.shape) if ws is not None else "?"
        noise = " +noise" if getattr(self.latent, "noise", None) else ""
        return f"HRInvLatent({self.label!r}, ws {shape}{noise})"


@dataclass(frozen=True, eq=False)
class VGGHandle:
    """A VGG16 conv trunk (``hrinv.losses.vgg``) for the perceptual loss."""

    model: Any
    label: str

    def __repr__(self) -> str:
        return f"HRInvVGG16({self.label!r})"


@dataclass(frozen=True, eq=False)
class FaceEmbedderHandle:
    """A face-embedding network (``hrinv.faceid``) used by the ID-retrieval metric."""

    model: Any
    label: str

    def __repr__(self) -> str:
        return f"HRInvFaceEmbedder({self.label!r})"
