"""hrinv: high-resolution GAN inversion and cross-domain stylisation (HRInversion, Zhou et al., TCSVT 2022).

The public API is re-exported here lazily, so ``import hrinv`` stays cheap (no model is built or loaded at import).
See README.md for a tour and docs/ for the design notes of each part.
"""

from importlib import import_module as _import_module

__version__ = "0.1.0"

# name -> module that defines it. Resolved on first attribute access (PEP 562).
_LAZY = {
    # generator
    "Generator": "hrinv.generator.stylegan2",
    "INRHead": "hrinv.generator.inr",
    "load_generator": "hrinv.io.checkpoints",
    "save_generator": "hrinv.io.checkpoints",
    "fit_inr_head": "hrinv.generator.inr",
    "render": "hrinv.rendering",
    # perceptual loss
    "load_vgg16": "hrinv.losses.vgg",
    "PerceptualLoss": "hrinv.losses.perceptual",
    # inversion, interpolation, LSO
    "invert": "hrinv.inversion",
    "InversionConfig": "hrinv.inversion",
    "Latent": "hrinv.latent",
    "lerp_generators": "hrinv.interpolate",
    "lerp_latents": "hrinv.interpolate",
    "local_style_optimize": "hrinv.lso",
    "LSOConfig": "hrinv.lso",
    # identity metric
    "load_face_embedder": "hrinv.faceid",
    "id_retrieval": "hrinv.metrics.id_retrieval",
    # faces in photos: detection, FFHQ alignment, paste-back
    "detect_faces": "hrinv.face",
    "align_faces": "hrinv.face",
    "paste_back": "hrinv.face",
    "FaceAlignment": "hrinv.face",
    "FaceDetection": "hrinv.face",
    "FaceTransform": "hrinv.face",
    # the whole pipeline, photo in, photo out
    "stylize": "hrinv.pipeline",
    "StylizeConfig": "hrinv.pipeline",
    "StylizeResult": "hrinv.pipeline",
    # dataset-scale jobs
    "run_batch": "hrinv.batch",
    "collect_items": "hrinv.batch",
    "InvertJob": "hrinv.batch",
    "StylizeJob": "hrinv.batch",
    "init_distributed": "hrinv.distributed",
    "evaluate_results": "hrinv.metrics.evaluate",
    # few-shot fine-tuning (module finetuning.py, so hrinv.finetune stays the function)
    "finetune": "hrinv.finetuning",
    "FinetuneConfig": "hrinv.finetuning",
}

__all__ = sorted(_LAZY) + ["__version__", "errors"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(_import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name == "errors":
        return _import_module("hrinv.errors")
    raise AttributeError(f"module 'hrinv' has no attribute {name!r}")


def __dir__():
    return __all__
