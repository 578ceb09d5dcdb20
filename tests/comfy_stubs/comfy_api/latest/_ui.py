"""Stub of ``comfy_api.latest.ui`` (the pack returns plain ``ui`` dicts; nothing here is needed yet)."""
