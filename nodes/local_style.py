"""LocalStyleOptimize (LSO, paper Eq. 8): pull the mixed latent's early layers towards the content image."""

from __future__ import annotations

from comfy_api.latest import io

from . import _comfy
from ._common import (CATEGORY, check_batches, check_generator_renders_enough, check_image_size,
                      check_latent_fits, describe_generator, fit_to_resolution, guarded, to_comfy, to_lib)
from .invert import VGG_BYTES_PER_PIXEL, preview_every, w_stats
from .types import GENERATOR, LATENT, VGG, LatentHandle


class LocalStyleOptimize(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HRInv_LocalStyleOptimize",
            display_name="HRInversion: Local Style Optimisation",
            category=CATEGORY,
            description="Local Style Optimisation (paper Eq. 8): keeps the mixed latent and adds a small offset to "
                        "its early (coarse) layers only, optimised so that the mixed generator's output matches the "
                        "content image in VGG's deep features, with an L2 penalty on the offset. Restores the "
                        "content's identity and layout while the fine layers keep the target style. 50 steps.",
            inputs=[
                GENERATOR.Input("generator", tooltip="The mixed generator G_m (from Lerp Generators)."),
                LATENT.Input("latent", tooltip="The mixed latent w_m (from Lerp Latents)."),
                io.Image.Input("content", tooltip="The content images x_s (the photos that were inverted); one "
                                                  "per latent, or one for all. Alpha is dropped."),
                VGG.Input("vgg", tooltip="VGG16 network for the deep-feature loss (from Load VGG16)."),
                io.Int.Input("steps", default=50, min=1, max=5000, tooltip="Optimisation steps (paper: 50)."),
                io.String.Input("rows", default="auto",
                                tooltip="W+ rows that get an offset: auto = the convolutions of blocks up to 16 px "
                                        "(rows 0-4 at 1024 px, the paper's choice); bN = blocks up to N px; a count "
                                        "n (rows 0..n-1); a list like '0-4' or '0,1,2'; all = every row (the "
                                        "ablation: the result turns back into the photo)."),
                io.Float.Input("reg_weight", default=0.5, min=0.0, max=1000.0, step=0.01,
                               tooltip="λ_reg, the weight of the L2 penalty on the offset, relative to the loss "
                                       "before LSO. Higher = closer to the pure mixed result (more style), lower = "
                                       "closer to the content (more identity). 0 = the paper's no-L2 ablation."),
                io.Float.Input("lr", default=0.2, min=0.0001, max=100.0, step=0.001,
                               tooltip="Adam learning rate, in units of the generator's W spread."),
                io.Boolean.Input("noise_maps", default=False,
                                 tooltip="Also optimise the noise maps (the paper does; their effect is "
                                         "negligible and it costs time)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=False,
                             tooltip="Seed of the offset init and jitter; image i uses seed + i."),
            ],
            outputs=[LATENT.Output(display_name="latent", tooltip="The refined latent (w_m + offset, noise maps)."),
                     io.Image.Output(display_name="image", tooltip="The mixed generator's rendering of the refined "
                                                                   "latent.")],
        )

    @classmethod
    @guarded("HRInversion: Local Style Optimisation")
    def execute(cls, generator, latent, content, vgg, steps=50, rows="auto", reg_weight=0.5, lr=0.2,
                noise_maps=False, seed=0) -> io.NodeOutput:
        from hrinv.lso import LSOConfig, local_style_optimize, parse_rows

        G, lat = generator.model, latent.latent
        title = "HRInversion: Local Style Optimisation"
        check_latent_fits(latent, generator, title)
        check_image_size(content, "content", generator)
        check_generator_renders_enough(generator, title)
        check_batches(lat.batch_size, "the latent", int(content.shape[0]), "'content'", title)
        target = to_lib(content, name="content")                                         # [B or 1, 3, H, W]
        if G.inr is None:
            target = fit_to_resolution(target, G.img_resolution, "center crop")
        config = LSOConfig(steps=int(steps), rows=parse_rows(rows), reg_weight=float(reg_weight),
                           lr=float(lr), noise_maps=bool(noise_maps), seed=int(seed),
                           preview_every=preview_every(int(steps)))
        b, _, h, w = target.shape
        b = max(b, lat.batch_size)
        with _comfy.device_session(G, vgg.model, working_bytes=b * h * w * VGG_BYTES_PER_PIXEL) as device:
            stats = w_stats(G, config)
            result = local_style_optimize(G, lat, target, vgg.model, config, device=device,
                                          callback=_comfy.progress(steps), w_stats=stats)
        return io.NodeOutput(LatentHandle(result.latent.to(device="cpu"), f"lso({latent.label})",
                                          describe_generator(generator)),
                             to_comfy(result.image))


NODES = [LocalStyleOptimize]
