"""HRInv_Finetune: a target generator G_t from 1-10 style images (JoJoGAN's recipe with the HRInversion loss)."""

from __future__ import annotations

from comfy_api.latest import io

from . import _comfy
from ._common import CATEGORY, fit_to_resolution, guarded, parse_int_list, to_comfy, to_lib
from .invert import VGG_BYTES_PER_PIXEL, preview_every
from .types import GENERATOR, VGG, GeneratorHandle


class HRInvFinetune(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HRInv_Finetune",
            display_name="HRInversion: Fine-tune Generator (few-shot style)",
            category=CATEGORY,
            description="Make a target generator G_t in the style of 1-10 reference images (JoJoGAN's recipe with "
                        "HRInversion's VGG16 loss): each reference is inverted into the source generator, its code "
                        "is mixed with random codes on the finer rows, and a copy of the generator is trained so "
                        "that all of them draw the reference. G_t keeps the source's architecture, so it plugs into "
                        "Interpolate Generators / the stylisation pipeline. Shows a live preview; Cancel stops "
                        "within one step.",
            inputs=[
                GENERATOR.Input("generator", tooltip="Source generator G_s (e.g. a face model) to start from. It "
                                                     "is not changed."),
                io.Image.Input("style_images", tooltip="1-10 style references, aligned like the generator's faces "
                                                       "(centre-cropped and resized to its resolution)."),
                VGG.Input("vgg", tooltip="VGG16 network for the perceptual loss (from Load VGG16)."),
                io.Int.Input("steps", default=300, min=1, max=5000,
                             tooltip="Fine-tuning steps. 300 is JoJoGAN's order of magnitude; fewer keeps more of "
                                     "the source's look, more copies the references more closely."),
                io.Boolean.Input("preserve_color", default=False,
                                 tooltip="Keep the face's own colours: only the texture/shape style is learnt (mixes "
                                         "fewer rows, JoJoGAN's preserve-colour layout)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=False,
                             tooltip="Seed of the inversion, the random codes and the reference order. Same seed + "
                                     "same inputs = same G_t."),
                io.Float.Input("lr", default=0.002, min=0.00001, max=0.1, step=0.0001,
                               tooltip="Advanced: Adam learning rate of the synthesis weights (JoJoGAN 2e-3)."),
                io.Int.Input("invert_steps", default=500, min=1, max=5000,
                             tooltip="Advanced: inversion steps per reference into the source generator (W+ only)."),
                io.Int.Input("batch_size", default=4, min=1, max=32,
                             tooltip="Advanced: training codes per step (references are used round-robin)."),
                io.Float.Input("alpha", default=1.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Advanced: how far the mixed rows move to random codes (1 = replaced). "
                                       "Lower = G_t generalises less beyond the references' own faces."),
                io.String.Input("mix_rows", default="",
                                tooltip="Advanced: explicit W+ rows to mix with random codes, e.g. '4,5,6,7,8,9'. "
                                        "Empty = automatic (JoJoGAN's layout scaled to this generator)."),
                io.Float.Input("lambda_mse", default=0.0, min=0.0, max=100.0, step=0.01,
                               tooltip="Advanced: weight of an extra pixel MSE term (images in [-1, 1])."),
            ],
            outputs=[
                GENERATOR.Output(display_name="generator", tooltip="The fine-tuned target generator G_t, with "
                                                                   "the source's architecture (for Interpolate "
                                                                   "Generators and Invert)."),
                io.Image.Output(display_name="references_in_G_t",
                                tooltip="The references' codes rendered by G_t (how well it learnt them)."),
            ],
        )

    @classmethod
    @guarded("HRInversion: Fine-tune Generator")
    def execute(cls, generator, style_images, vgg, steps=300, preserve_color=False, seed=0, lr=0.002,
                invert_steps=500, batch_size=4, alpha=1.0, mix_rows="", lambda_mse=0.0) -> io.NodeOutput:
        import torch

        from hrinv.finetuning import FinetuneConfig, finetune
        from hrinv.inversion import InversionConfig, invert

        from .invert import w_stats

        G = generator.model
        rows = parse_int_list(mix_rows, "mix_rows") if str(mix_rows).strip() else "auto"
        config = FinetuneConfig(steps=int(steps), lr=float(lr), preserve_color=bool(preserve_color),
                                seed=int(seed), invert_steps=int(invert_steps), batch_size=int(batch_size),
                                alpha=float(alpha), mix_rows=rows, lambda_mse=float(lambda_mse),
                                preview_every=preview_every(int(steps)))
        target = fit_to_resolution(to_lib(style_images, name="style_images"), G.img_resolution, "center crop")
        k, _, h, w = target.shape
        total = int(invert_steps) + int(steps)
        cb = _comfy.progress(total)
        with _comfy.device_session(G, vgg.model, working_bytes=max(k, batch_size) * h * w * VGG_BYTES_PER_PIXEL) \
                as device:
            stats = w_stats(G, InversionConfig())
            inv_cfg = InversionConfig.preset("cross_domain", steps=int(invert_steps), seed=int(seed),
                                             preview_every=preview_every(int(invert_steps)))
            inv = invert(G, target, vgg.model, inv_cfg, device=device, callback=cb, w_stats=stats)
            done = int(invert_steps)
            G_t = finetune(G, target, vgg.model, config, device=device, w_stats=stats, style_latents=inv.latent.ws,
                           callback=lambda s, t, p: cb(done + s, total, p))
            with torch.no_grad():
                shown = G_t.synthesis(inv.latent.ws.to(device), noise_mode="const").float().clamp(-1, 1)
            G_t = G_t.to(_comfy.offload_device())
        G_t.meta["finetune"]["reference_inversion_psnr"] = [float(x) for x in inv.metrics["psnr"]]
        label = f"finetune({generator.label}, {k} style image{'s' if k > 1 else ''})"
        info = {"parent_fingerprint": G_t.meta["parent_fingerprint"], "mixed_rows": G_t.meta["finetune"]["mixed_rows"]}
        return io.NodeOutput(GeneratorHandle(G_t, label, info), to_comfy(shown.cpu()))


NODES = [HRInvFinetune]
