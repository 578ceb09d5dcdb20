"""Save / load latents as .safetensors, so an expensive inversion is computed once and reused by other workflows."""

from __future__ import annotations

import os

from comfy_api.latest import io

from . import _comfy
from ._common import CATEGORY, NodeError, guarded
from .types import LATENT, LatentHandle


class SaveLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HRInv_SaveLatent",
            display_name="HRInversion: Save Latent",
            category=f"{CATEGORY}/latents",
            description="Save a latent batch (W+ codes, noise maps, the generator's fingerprint and the settings "
                        "that produced it) to output/hrinv_latents/<prefix>_NNNNN_.safetensors. Load it back with "
                        "Load Latent in any workflow (files in input/hrinv_latents are listed too).",
            inputs=[LATENT.Input("latent", tooltip="The latent to save."),
                    io.String.Input("filename_prefix", default="hrinv",
                                    tooltip="File name prefix; may contain sub-folders (e.g. faces/alice). A "
                                            "counter is appended so nothing is overwritten.")],
            outputs=[io.String.Output(display_name="file", tooltip="The saved file, relative to the output "
                                                                   "folder.")],
            is_output_node=True,
        )

    @classmethod
    @guarded("HRInversion: Save Latent")
    def execute(cls, latent, filename_prefix="hrinv") -> io.NodeOutput:
        try:
            full, rel = _comfy.latent_save_path(filename_prefix or "hrinv")
        except Exception as exc:  # noqa: BLE001 (the host raises a bare Exception for paths outside output/)
            raise NodeError(f"cannot save under the prefix {filename_prefix!r}: {exc}. Use a plain name or a "
                            f"sub-folder inside the output folder.") from None
        latent.latent.save(full)
        return io.NodeOutput(rel, ui={"text": [rel]})


class LoadLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HRInv_LoadLatent",
            display_name="HRInversion: Load Latent",
            category=f"{CATEGORY}/latents",
            description="Load a latent saved by Save Latent (or an NVIDIA projected_w.npz / HRInversion *_w.npz) "
                        "from output/hrinv_latents or input/hrinv_latents.",
            inputs=[io.Combo.Input("latent_name", options=_comfy.list_files(_comfy.LATENT_FOLDER),
                                   tooltip="Latent file (.safetensors or .npz) from output/hrinv_latents or "
                                           "input/hrinv_latents.")],
            outputs=[LATENT.Output(display_name="latent", tooltip="The loaded latent batch.")],
        )

    @classmethod
    def validate_inputs(cls, latent_name):
        if latent_name and latent_name in _comfy.list_files(_comfy.LATENT_FOLDER):
            return True
        return _comfy.not_found_message(_comfy.LATENT_FOLDER, latent_name, "Latent file")

    @classmethod
    def fingerprint_inputs(cls, latent_name):
        return _comfy.file_signature(_comfy.LATENT_FOLDER, latent_name)

    @classmethod
    @guarded("HRInversion: Load Latent")
    def execute(cls, latent_name) -> io.NodeOutput:
        from hrinv.latent import Latent

        path = _comfy.resolve(_comfy.LATENT_FOLDER, latent_name, "Latent file")
        with _comfy.no_inference_mode():
            latent = Latent.load(path)
        fp = getattr(latent, "generator_fingerprint", "") or ""
        made_with = f"the generator whose fingerprint starts {fp[:12]} (as saved in {os.path.basename(latent_name)})" \
            if fp else f"the generator it was saved from ({os.path.basename(latent_name)})"
        return io.NodeOutput(LatentHandle(latent, os.path.basename(latent_name), made_with))


NODES = [SaveLatent, LoadLatent]
