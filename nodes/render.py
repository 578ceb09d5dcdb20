"""RenderAnyResolution: render a latent at any width x height (Style-INR-GAN head, or tiled / resampled StyleGAN2)."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from . import _comfy
from ._common import CATEGORY, check_latent_fits, guarded, to_comfy
from .types import GENERATOR, LATENT

NOISE_MODES = ["latent", "const", "random", "none"]
RENDER_BYTES_PER_PIXEL = 1200     # synthesis activations per output pixel, fp32 (rough, for the host's memory planner)


class RenderAnyResolution(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HRInv_RenderAnyResolution",
            display_name="HRInversion: Render at Any Resolution",
            category=CATEGORY,
            description="Render a latent batch with a generator at the size you ask for. With a Style-INR-GAN head "
                        "any width and height (also non-square, e.g. panoramas) are rendered natively; a plain "
                        "StyleGAN2 renders at its own resolution and the result is resampled. Large outputs can be "
                        "rendered in tiles to save memory.",
            inputs=[
                GENERATOR.Input("generator", tooltip="Generator to render with (e.g. the mixed generator)."),
                LATENT.Input("latent", tooltip="Latent batch to render (e.g. the LSO result)."),
                io.Int.Input("width", default=1024, min=16, max=16384, step=8, tooltip="Output width in pixels."),
                io.Int.Input("height", default=1024, min=16, max=16384, step=8, tooltip="Output height in pixels."),
                io.Combo.Input("noise_mode", options=NOISE_MODES, default="latent",
                               tooltip="Per-layer noise: latent = the noise maps stored in the latent (if any, "
                                       "else the generator's constants); const = the generator's constant maps; "
                                       "random = fresh noise from 'seed'; none = no noise."),
                io.Int.Input("tile", default=0, min=0, max=16384, step=8,
                             tooltip="INR head only: render in tiles of this many pixels (0 = one piece); lowers "
                                     "peak memory for very large outputs, seamless. Cancel works between tiles."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=False,
                             tooltip="Seed of the random noise mode."),
                io.Combo.Input("mode", options=["auto", "inr", "resize"], default="auto",
                               tooltip="Advanced: inr = render through the Style-INR-GAN head (needs one); resize = "
                                       "render at the generator's size and resample (a fallback, not the paper's "
                                       "INR); auto = inr when the generator has a head."),
                io.Combo.Input("fit", options=["stretch", "crop", "pad"], default="stretch",
                               tooltip="Advanced: for non-square sizes, stretch the square image, crop it, or pad "
                                       "it."),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="Rendered images, [B, height, width, 3] in "
                                                                   "0..1.")],
        )

    @classmethod
    @guarded("HRInversion: Render at Any Resolution")
    def execute(cls, generator, latent, width=1024, height=1024, noise_mode="latent", tile=0, seed=0, mode="auto",
                fit="stretch") -> io.NodeOutput:
        from hrinv.rendering import render

        G, lat = generator.model, latent.latent
        check_latent_fits(latent, generator, "HRInversion: Render at Any Resolution")
        b = lat.batch_size
        px = b * (int(tile) ** 2 if tile else int(width) * int(height))
        with _comfy.device_session(G, working_bytes=px * RENDER_BYTES_PER_PIXEL) as device, \
                _comfy.no_inference_mode():
            noise = lat.noise if noise_mode == "latent" else None
            rng = torch.Generator(device=device).manual_seed(int(seed))
            mode_ = "const" if noise_mode == "latent" else noise_mode
            img = render(G, lat.ws, int(height), int(width), noise_mode=mode_, noise=noise, mode=mode, fit=fit,
                         tile=int(tile) or None, device=device, callback=_comfy.progress(1),
                         generator=rng)                                                    # [B, 3, H, W] on cpu
        return io.NodeOutput(to_comfy(img))


NODES = [RenderAnyResolution]
