"""ComfyUI entry point of the HRInversion node pack (V3 schema). The nodes live in ``nodes/``."""
