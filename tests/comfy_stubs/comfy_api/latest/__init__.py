"""Stub of ``comfy_api.latest``: ``ComfyExtension``, ``io`` and ``ui`` as the pack uses them (ComfyUI 0.3.64)."""

from abc import ABC, abstractmethod

from . import _io as io
from . import _ui as ui


class ComfyExtension(ABC):
    async def on_load(self) -> None:
        """Not called by the 0.3.64 loader; kept for signature parity."""

    @abstractmethod
    async def get_node_list(self) -> list:
        """Return the node classes of the extension."""


__all__ = ["ComfyExtension", "io", "ui"]
