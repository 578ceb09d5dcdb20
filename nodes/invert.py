"""HRInvert: optimise W / W+ (and noise maps) so the generator reproduces the input images (paper Eq. 1 / 5)."""

from __future__ import annotations

import weakref

from comfy_api.latest import io

from . import _comfy
from ._common import (CATEGORY, NodeError, check_generator_renders_enough, check_image_size, describe_generator,
                      fit_to_resolution, guarded, mask_to_lib, to_comfy, to_lib)
from .preflight import check_style_batches
from .types import GENERATOR, LATENT, VGG, LatentHandle

FIT_MODES = ["crop & resize", "resize", "as is"]
PRECISIONS = ("fp32", "bf16", "fp16", "auto")  # hrinv.perf.PRECISIONS, the CLI's --precision (no hrinv import here)
CALIBRATIONS = ("auto", "rms", "global", "none")  # hrinv.losses.perceptual.CALIBRATIONS (no hrinv import here)
_W_STATS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()     # generator module -> (w_avg, w_std)
VGG_BYTES_PER_PIXEL = 5600       # full-resolution VGG16 loss + generator activations (paper Table I: 5.9 GB at 1024²)


def preview_every(steps: int) -> int:
    """About 25 live previews per run, at most one per step."""
    return max(1, steps // 25)


def w_stats(G, config):
    """w̄ / w_std of a generator, computed once per loaded generator (10 000 mapping samples, on the generator's
    own device: the shared input is never moved) and reused; hrinv moves w̄ to the compute device."""
    from hrinv.inversion import compute_w_stats

    key = (config.w_avg_samples, config.w_stats_seed)
    cached = _W_STATS.get(G)
    if cached is not None and cached[0] == key:
        return cached[1]
    stats = compute_w_stats(G, num_samples=config.w_avg_samples, seed=config.w_stats_seed)
    _W_STATS[G] = (key, stats)
    return stats


class HRInvert(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HRInv_Invert",
            display_name="HRInversion: Invert Image",
            category=CATEGORY,
            description="Find the latent code (W+ or W, optionally with noise maps) for which the generator "
                        "reproduces each input image, with HRInversion's full-resolution VGG16 conv-feature loss "
                        "(paper Eq. 1; Eq. 5 with noise maps off, as used for the stylisation pipeline). A batch of "
                        "images gives a batch of latents. Shows a live preview; Cancel stops within one step.",
            inputs=[
                GENERATOR.Input("generator", tooltip="Generator to invert into (from Load Generator)."),
                io.Image.Input("image", tooltip="Images to invert, ideally FFHQ-aligned faces (at least 32 px). "
                                                "Each image of the batch is inverted on its own. The alpha channel "
                                                "of RGBA images is dropped: use 'mask' to leave areas out."),
                VGG.Input("vgg", tooltip="VGG16 network for the perceptual loss (from Load VGG16)."),
                io.Int.Input("steps", default=1000, min=1, max=20000,
                             tooltip="Optimisation steps. The paper uses 1000; 200-300 already gives a fair "
                                     "likeness."),
                io.Combo.Input("latent_space", options=["W+", "W"], default="W+",
                               tooltip="W+: one code per layer (HRInversion, closer fit). W: a single code "
                                       "repeated (NVIDIA projector, more editable, less faithful)."),
                io.Boolean.Input("noise_maps", default=True,
                                 tooltip="Also optimise the per-layer noise maps (Eq. 1, best reconstruction). Turn "
                                         "off for the stylisation pipeline (Eq. 5): noise maps of one domain do not "
                                         "transfer to another."),
                io.Float.Input("lambda_mse", default=0.0, min=0.0, max=100.0, step=0.01,
                               tooltip="Weight of an extra pixel MSE term (images in [-1, 1]). 0 = perceptual "
                                       "loss only, as in the paper."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=False,
                             tooltip="Seed of the noise-map init and the latent jitter; image i of the batch uses "
                                     "seed + i. Same seed + same inputs = same result."),
                io.Float.Input("lr", default=0.1, min=0.0001, max=10.0, step=0.001,
                               tooltip="Advanced: Adam base learning rate (reference 0.1), with the reference "
                                       "warm-up and cool-down ramps."),
                io.Combo.Input("loss_layers", options=["conv", "high"], default="conv",
                               tooltip="Advanced: VGG16 layers of the loss. conv = the five conv taps conv1_2…conv5_3 "
                                       "(d_conv, the paper's choice); high = only deep layers (d_h, ablation)."),
                io.Int.Input("downsample", default=0, min=0, max=4096,
                             tooltip="Advanced: 0 = loss at full resolution (HRInversion). A size like 256 "
                                     "computes the loss at that size instead (the baseline the paper improves on; "
                                     "less memory). Sizes 1-32 are refused: VGG16 needs more than 32 px."),
                io.Float.Input("noise_regularize", default=0.0, min=0.0, max=1e6, step=1.0,
                               tooltip="Advanced: weight of the noise-map regulariser (NVIDIA projector: 1e5; "
                                       "HRInversion: 0)."),
                io.Combo.Input("fit", options=FIT_MODES, default=FIT_MODES[0],
                               tooltip="Advanced: images that are not generator-sized are centre-cropped to a "
                                       "square and resized (crop & resize), stretched (resize), or passed as they "
                                       "are (as is: a Style-INR-GAN head or padding handles other sizes)."),
                io.Combo.Input("precision", options=list(PRECISIONS), default="fp32", optional=True,
                               tooltip="Advanced: compute precision of the generator and the loss. fp32 = exact "
                                       "(default). bf16 = 3-4x faster on CPUs with AMX (GPUs not measured; emulated "
                                       "and slower on CPUs without it), about 0.5 dB under fp32 after 1000 "
                                       "steps, same identity. fp16 = GPUs, with loss scaling. auto = bf16 (or "
                                       "fp16) on a GPU, fp32 on the CPU."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Optional: where the loss counts (1) and where it is ignored (0), e.g. to "
                                      "skip a watermark or background. One mask or one per image."),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],
            outputs=[
                LATENT.Output(display_name="latent", tooltip="The optimised latent batch (save it with Save "
                                                             "Latent to reuse it)."),
                io.Image.Output(display_name="reconstruction", tooltip="The generator's rendering of the latent "
                                                                       "(without noise jitter)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, downsample=0):
        """Refuse, before anything runs, the loss sizes the tooltip forbids. ComfyUI leaves the range check of an
        input named here to us, and of every input if this took ``**kwargs``: so it names only this one."""
        if downsample is None:
            return True
        v = int(downsample)
        if not 0 <= v <= 4096:
            return f"downsample is {v}; use 0 (full resolution) or a size from 33 to 4096."
        if 0 < v <= 32:
            return (f"downsample is {v}, but VGG16 needs more than 32 px: use 0 (full resolution, "
                    f"HRInversion) or a size above 32, e.g. 256.")
        return True

    @classmethod
    @guarded("HRInversion: Invert Image")
    def execute(cls, generator, image, vgg, steps=1000, latent_space="W+", noise_maps=True, lambda_mse=0.0, seed=0,
                lr=0.1, loss_layers="conv", downsample=0, noise_regularize=0.0, fit=FIT_MODES[0],
                precision=None, mask=None) -> io.NodeOutput:
        from hrinv.inversion import InversionConfig, invert

        G = generator.model
        title = "HRInversion: Invert Image"
        check_image_size(image, "image", generator)
        check_generator_renders_enough(generator, title)
        h0, w0 = int(image.shape[1]), int(image.shape[2])
        res = G.img_resolution
        if fit == "as is" and G.inr is None and (h0, w0) != (res, res) and max(h0, w0) != res:
            raise NodeError(f"{title}: the image is {w0}x{h0} px and 'fit' is 'as is', but the generator "
                            f"{describe_generator(generator)} makes {res}x{res} images and has no Style-INR-GAN head. "
                            f"Set 'fit' to 'crop & resize' (or 'resize'), or scale the image so its longer side is "
                            f"{res} px (the rest is then padded and left out of the loss).")
        check_style_batches(cls.hidden.prompt if cls.hidden else None, cls.hidden.unique_id if cls.hidden else None,
                            int(image.shape[0]))
        config = InversionConfig(steps=int(steps), lr=float(lr), latent_space=latent_space.lower(),
                                 noise_maps=bool(noise_maps), lambda_mse=float(lambda_mse), seed=int(seed),
                                 loss_layers=loss_layers, downsample=int(downsample) or None,
                                 noise_regularize=float(noise_regularize), preview_every=preview_every(int(steps)),
                                 precision=precision or "fp32")
        target = to_lib(image)                                                         # [B, 3, H, W]
        if fit != "as is":
            target = fit_to_resolution(target, G.img_resolution, "center crop" if fit == "crop & resize" else fit)
        b, _, h, w = target.shape
        m = mask_to_lib(mask, b, h, w)                                                  # [B, 1, H, W] or None
        with _comfy.device_session(G, vgg.model, working_bytes=b * h * w * VGG_BYTES_PER_PIXEL) as device:
            stats = w_stats(G, config)
            result = invert(G, target, vgg.model, config, device=device, mask=m, callback=_comfy.progress(steps),
                            w_stats=stats)
        latent = result.latent.to(device="cpu")
        return io.NodeOutput(LatentHandle(latent, f"inverted in {generator.label}", describe_generator(generator)),
                             to_comfy(result.image))


NODES = [HRInvert]
