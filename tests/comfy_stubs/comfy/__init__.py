"""Stub of the ``comfy`` package (only ``comfy.utils`` and ``comfy.model_management`` are used by the pack)."""
