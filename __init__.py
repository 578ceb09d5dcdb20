"""ComfyUI entry point of the HRInversion node pack (V3 schema). The nodes live in ``nodes/``.

Only ``comfy_entrypoint`` is exported: a module with ``NODE_CLASS_MAPPINGS`` would make ComfyUI ignore it.
"""

from .nodes import comfy_entrypoint

__all__ = ["comfy_entrypoint"]
