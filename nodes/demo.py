"""LoadDemoImage: the pictures bundled with hrinv (the public-domain demo photo, the project's demo style) as IMAGE.

ComfyUI's Load Image lists only the user's input folder, so a template that must run with no setup cannot reach the
bundled pictures through it. This node reads them from ``hrinv/bundled`` (sha256-checked, like the bundled models).
"""

from __future__ import annotations

from comfy_api.latest import io

from ._common import CATEGORY, guarded, to_comfy

# file -> what it is (for the tooltip); the options are the manifest's "image" entries that exist in this install
DESCRIBED = {
    "demo_photo.png": "NASA's public-domain portrait of astronaut Eileen Collins (512 px)",
    "demo_style.png": "the demo style: a flat-colour cartoon face made by the project (64 px, aligned)",
}


def _options() -> list:
    from hrinv import bundled

    return bundled.names("image")


class LoadDemoImage(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        options = _options()
        return io.Schema(
            node_id="HRInv_LoadDemoImage",
            display_name="HRInversion: Load Bundled Demo Image",
            category=f"{CATEGORY}/loaders",
            description="A picture that ships with the pack (hrinv/bundled, sha256-checked): the demo photo or the "
                        "demo style reference, as IMAGE. Used by the template that runs with the bundled models; "
                        "for your own pictures use Load Image.",
            inputs=[io.Combo.Input("image", options=options, default=options[0] if options else None,
                                   tooltip="; ".join(f"{k}: {v}" for k, v in DESCRIBED.items() if k in options)
                                   or "A bundled picture.")],
            outputs=[io.Image.Output(display_name="image", tooltip="The picture, [1, H, W, 3] in 0..1.")],
        )

    @classmethod
    def validate_inputs(cls, image):
        options = _options()
        if image in options:
            return True
        return (f"Bundled demo image {image!r} is not part of this install (it has: {', '.join(options) or 'none'}). "
                f"Pick one of those, or use Load Image for your own picture.")

    @classmethod
    @guarded("HRInversion: Load Bundled Demo Image")
    def execute(cls, image) -> io.NodeOutput:
        from hrinv import bundled
        from hrinv.imageio import read_image

        img = read_image(bundled.path(image))                   # [3, H, W] in [0, 1], sha256 checked
        return io.NodeOutput(to_comfy(img[None] * 2 - 1))


NODES = [LoadDemoImage]
