"""ComfyUI entry point of the HRInversion node pack (V3 schema). The nodes live in ``nodes/``.

ComfyUI finds ``comfy_entrypoint`` here and awaits it while loading custom nodes; only then is ``nodes/`` imported.
Importing this package therefore needs no ComfyUI and costs nothing (test runners and tools import it too).
Only ``comfy_entrypoint`` is exported: a module with ``NODE_CLASS_MAPPINGS`` would make ComfyUI ignore it.
"""


async def comfy_entrypoint():
    """The pack's ``ComfyExtension`` (see ``nodes/__init__.py``)."""
    from .nodes import comfy_entrypoint as entrypoint

    return await entrypoint()


__all__ = ["comfy_entrypoint"]
