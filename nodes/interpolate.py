"""LerpGenerators / LerpLatents: the per-block generator and latent interpolation of HRInversion (Eq. 6 / 7)."""

from __future__ import annotations

from comfy_api.latest import io

from . import _comfy
from ._common import CATEGORY, NodeError, check_batches, check_latent_fits, describe_generator, guarded
from .types import GENERATOR, LATENT, GeneratorHandle, LatentHandle

PRESETS = ["paper", "constant", "custom list", "source", "target"]


def schedule_inputs(what: str) -> list:
    """The λ inputs shared by both nodes (same names, so one schedule can drive both)."""
    return [
        io.Combo.Input("schedule", options=PRESETS, default="paper",
                       tooltip=f"λ per synthesis block, the weight of the target {what}. paper: 0.2 for blocks up "
                               f"to 128 px, 0.7 above (the paper's setting). constant: the 'constant_lambda' value for "
                               f"every block. custom list: the 'lambdas' text. source / target: λ = 0 / 1 everywhere."),
        io.Float.Input("constant_lambda", default=0.5, min=0.0, max=1.0, step=0.01,
                       tooltip="λ for every block when schedule = constant (0 = source, 1 = target)."),
        io.String.Input("lambdas", default="0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.7, 0.7, 0.7", multiline=False,
                        tooltip="For schedule = custom list: one λ per block, lowest resolution (b4) first, "
                                "comma-separated; a 1024 px generator has 9 blocks (4 ... 1024)."),
    ]


def lambda_spec(schedule: str, lam: float, lambdas: str):
    from hrinv.interpolate import parse_lambda

    if schedule == "paper" or schedule in ("source", "target"):
        return schedule
    if schedule == "constant":
        return float(lam)
    if schedule == "custom list":
        return parse_lambda(lambdas)
    raise NodeError(f"unknown λ schedule {schedule!r}; choose one of {PRESETS}.")


class LerpGenerators(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HRInv_LerpGenerators",
            display_name="HRInversion: Lerp Generators",
            category=CATEGORY,
            description="Blend a source generator (e.g. FFHQ) with a target generator fine-tuned from it (e.g. "
                        "MetFaces, cartoons): G_m = G_s + λ (G_t − G_s) with one λ per synthesis block (paper Eq. 6). "
                        "Low λ in coarse blocks keeps the face shape, high λ in fine blocks brings the target "
                        "style. The inputs are not changed.",
            inputs=[GENERATOR.Input("source", tooltip="Source-domain generator G_s (e.g. ffhq.pkl)."),
                    GENERATOR.Input("target", tooltip="Target-domain generator G_t, fine-tuned from G_s (e.g. "
                                                      "metfaces.pkl).")]
            + schedule_inputs("generator"),
            outputs=[GENERATOR.Output(display_name="mixed_generator", tooltip="The blended generator G_m.")],
        )

    @classmethod
    @guarded("HRInversion: Lerp Generators")
    async def execute(cls, source, target, schedule="paper", constant_lambda=0.5, lambdas="") -> io.NodeOutput:
        # async although it never awaits: ComfyUI 0.3.64 runs ready async nodes first, so a pair of generators that
        # cannot be mixed is reported right after loading, before the (long) inversions start.
        from hrinv.errors import IncompatibleGeneratorsError
        from hrinv.interpolate import lerp_generators

        spec = lambda_spec(schedule, constant_lambda, lambdas)
        try:
            with _comfy.no_inference_mode():
                G_m = lerp_generators(source.model, target.model, spec)
                G_m.requires_grad_(False).eval()
        except IncompatibleGeneratorsError as exc:
            raise NodeError(f"HRInversion: Lerp Generators: the source {describe_generator(source)} and the target "
                            f"{describe_generator(target)} cannot be mixed: the target must be a generator "
                            f"fine-tuned from the source (same architecture and size). Load such a pair. Details: "
                            f"{exc}") from exc
        label = f"lerp({source.label}, {target.label}, {schedule})"
        return io.NodeOutput(GeneratorHandle(G_m, label, {"schedule": str(spec)}))


class LerpLatents(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HRInv_LerpLatents",
            display_name="HRInversion: Lerp Latents",
            category=CATEGORY,
            description="Blend two latents row by row with the per-block λ schedule of Lerp Generators (paper "
                        "Eq. 7): w_m = w_s + λ (w_t − w_s). Use the content's latent from G_s as source and the "
                        "reference's latent from G_t as target. A batch of 1 is broadcast against a batch of N.",
            inputs=[LATENT.Input("source", tooltip="Latent found in the source generator (the content image)."),
                    LATENT.Input("target", tooltip="Latent found in the target generator (the style reference).")]
            + schedule_inputs("latent")
            + [io.Combo.Input("row_scheme", options=["authors", "nvidia"], default="authors",
                              tooltip="Advanced: how W+ rows map to blocks. authors = the released code (pairs "
                                      "of rows); nvidia = each row follows the block that consumes it."),
               GENERATOR.Input("generator", optional=True,
                               tooltip="Optional: the mixed generator, to check the layout and tag the result "
                                       "with its fingerprint.")],
            outputs=[LATENT.Output(display_name="mixed_latent", tooltip="The blended latent w_m.")],
        )

    @classmethod
    @guarded("HRInversion: Lerp Latents")
    def execute(cls, source, target, schedule="paper", constant_lambda=0.5, lambdas="", row_scheme="authors",
                generator=None) -> io.NodeOutput:
        from hrinv.interpolate import lerp_latents

        title = "HRInversion: Lerp Latents"
        ws_s, ws_t = source.latent.ws, target.latent.ws
        if tuple(ws_s.shape[1:]) != tuple(ws_t.shape[1:]):
            raise NodeError(f"{title}: the source latent was made with {source.generator or 'one generator'} "
                            f"({ws_s.shape[1]} W+ rows of {ws_s.shape[2]}) and the target latent with "
                            f"{target.generator or 'another'} ({ws_t.shape[1]} rows of {ws_t.shape[2]}). Invert the "
                            f"content in the source generator and the reference in a generator fine-tuned from it.")
        check_batches(int(ws_s.shape[0]), "the source latent (content)", int(ws_t.shape[0]),
                      "the target latent (references)", title)
        if generator is not None:
            check_latent_fits(source, generator, title, "source")
        spec = lambda_spec(schedule, constant_lambda, lambdas)
        with _comfy.no_inference_mode():
            out = lerp_latents(source.latent, target.latent, spec, scheme=row_scheme,
                               generator=generator.model if generator is not None else None)
        made_with = describe_generator(generator) if generator is not None else source.generator
        return io.NodeOutput(LatentHandle(out, f"lerp({source.label}, {target.label})", made_with))


NODES = [LerpGenerators, LerpLatents]
