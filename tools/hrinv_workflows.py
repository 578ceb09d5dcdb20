"""The pack's example workflows: their API graphs, the editor (UI) format derived from them, a checker, previews.

Run ``python tools/hrinv_workflows.py`` to (re)write ``example_workflows/<title>.json`` (editor format, shown by
ComfyUI as templates; the template browser shows the file name as the card's title, so the file is named after the
workflow's title), ``example_workflows/<title>.jpg`` (template thumbnail: title, description and a schematic of the
graph, drawn here) and ``example_workflows/api/<name>.json`` (API format for ``POST /prompt``, named by the short
id). It needs no ComfyUI: the node definitions come from the pack loaded over the test stubs
(tests/nodes_harness.py) plus the small description of the core nodes below, which ``pytest -m comfyui`` compares
with a real ComfyUI's ``/object_info``.

The checker (:func:`check_api`, :func:`check_ui`) is used by the CI tests and by the real-host test. The editor
layout (:func:`node_size`, :func:`_layout`) stacks nodes by the height the editor gives them, so no node hides
another.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "example_workflows"          # the folder name current ComfyUI recommends
API_DIR = WORKFLOWS / "api"                      # not listed as templates by ComfyUI (checked in the real host)

# The checkpoint files users will have and what the tests put in their place.
SOURCE_CKPT = "ffhq.pkl"
TARGET_CKPT = "metfaces.pkl"
VGG_FILE = "vgg16-397923af.pth"
FACE_FILE = "dlib_face_recognition_resnet_model_v1.dat"
CONTENT_IMAGE = "example.png"       # ComfyUI ships input/example.png; users pick their own photo
REFERENCE_IMAGES = ["reference_1.png", "reference_2.png", "reference_3.png"]

# Core ComfyUI nodes the workflows use, as /object_info (ComfyUI 0.3.64) describes them (only what we rely on).
CORE_NODES = {
    "LoadImage": {"input": {"required": {"image": [["example.png"], {"image_upload": True}]}},
                  "input_order": {"required": ["image"]}, "output": ["IMAGE", "MASK"],
                  "output_name": ["IMAGE", "MASK"], "output_node": False},
    "ImageBatch": {"input": {"required": {"image1": ["IMAGE"], "image2": ["IMAGE"]}},
                   "input_order": {"required": ["image1", "image2"]}, "output": ["IMAGE"], "output_name": ["IMAGE"],
                   "output_node": False},
    "SaveImage": {"input": {"required": {"images": ["IMAGE", {}],
                                         "filename_prefix": ["STRING", {"default": "ComfyUI"}]},
                            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}},
                  "input_order": {"required": ["images", "filename_prefix"], "hidden": ["prompt", "extra_pnginfo"]},
                  "output": [], "output_name": [], "output_node": True},
    "PreviewImage": {"input": {"required": {"images": ["IMAGE"]},
                               "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}},
                     "input_order": {"required": ["images"], "hidden": ["prompt", "extra_pnginfo"]},
                     "output": [], "output_name": [], "output_node": True},
    "MaskToImage": {"input": {"required": {"mask": ["MASK"]}}, "input_order": {"required": ["mask"]},
                    "output": ["IMAGE"], "output_name": ["IMAGE"], "output_node": False},
    "PreviewAny": {"input": {"required": {"source": ["*", {}]}}, "input_order": {"required": ["source"]},
                   "output": [], "output_name": [], "output_node": True},
}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


# ----------------------------------------------------------------------------------------------------------------
# The workflows (API format). Node ids are strings; a link is [node_id, output_index].


def _node(class_type, title, **inputs):
    return {"class_type": class_type, "inputs": inputs, "_meta": {"title": title}}


def _loaders(g, source=True, target=True, vgg=True, face=False):
    if source:
        g["1"] = _node("HRInv_LoadStyleINRGAN", "Source generator G_s (FFHQ)", ckpt_name=SOURCE_CKPT,
                       inr_head="from checkpoint", which="G_ema", dtype="float32")
    if target:
        g["2"] = _node("HRInv_LoadStyleINRGAN", "Target generator G_t (MetFaces)", ckpt_name=TARGET_CKPT,
                       inr_head="from checkpoint", which="G_ema", dtype="float32")
    if vgg:
        g["3"] = _node("HRInv_LoadVGG16", "VGG16 (perceptual loss)", vgg_name=VGG_FILE)
    if face:
        g["4"] = _node("HRInv_LoadFaceEmbedder", "Face embedder (ID retrieval)", model_name=FACE_FILE)


def _invert(gen, image, title, steps=1000, noise_maps=True, seed=0):
    return _node("HRInv_Invert", title, generator=gen, image=image, vgg=["3", 0], steps=steps, latent_space="W+",
                 noise_maps=noise_maps, lambda_mse=0.0, seed=seed, lr=0.1, loss_layers="conv",
                 downsample=0, noise_regularize=0.0, fit="crop & resize", precision="fp32")


def _lerp_g(title="Mix generators (Eq. 6)"):
    return _node("HRInv_LerpGenerators", title, source=["1", 0], target=["2", 0], schedule="paper",
                 constant_lambda=0.5, lambdas="0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.7, 0.7, 0.7")


def _lerp_w(source, target, title="Mix latents (Eq. 7)"):
    return _node("HRInv_LerpLatents", title, source=source, target=target, schedule="paper", constant_lambda=0.5,
                 lambdas="0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.7, 0.7, 0.7", row_scheme="authors", generator=["20", 0])


def _lso(latent, content, title="Local Style Optimisation (Eq. 8)"):
    return _node("HRInv_LocalStyleOptimize", title, generator=["20", 0], latent=latent, content=content,
                 vgg=["3", 0], steps=50, rows="auto", reg_weight=0.5, lr=0.2, noise_maps=False, seed=0)


def _render(latent, title="Render at the chosen size", size=1024):
    return _node("HRInv_RenderAnyResolution", title, generator=["20", 0], latent=latent, width=size, height=size,
                 noise_mode="latent", tile=0, seed=0, mode="auto", fit="stretch")


def wf_invert_face():
    g = {}
    _loaders(g, target=False)
    g["10"] = _node("LoadImage", "Face photo (aligned)", image=CONTENT_IMAGE)
    g["11"] = _invert(["1", 0], ["10", 0], "Invert (W+ and noise, Eq. 1)")
    g["12"] = _node("SaveImage", "Reconstruction", images=["11", 1], filename_prefix="hrinv/reconstruction")
    g["13"] = _node("HRInv_SaveLatent", "Save latent for reuse", latent=["11", 0], filename_prefix="face")
    return g


def _align(image, title="Align every face (FFHQ)", size=1024):
    return _node("HRInv_AlignFaces", title, image=image, size=size, faces="all", face_index=0, min_face=32,
                 padding="reflect", if_no_face="use whole image", detect_max_side=1280)


def _paste(photo, faces, alignment, title="Paste the stylised faces back"):
    return _node("HRInv_PasteFaces", title, photo=photo, faces=faces, alignment=alignment, feather=0.1,
                 color_match=0.0, mask_shape="square")


def wf_paper_pipeline():
    g = {}
    _loaders(g)
    g["10"] = _node("LoadImage", "Content photo x_s", image=CONTENT_IMAGE)
    g["11"] = _node("LoadImage", "Style reference x_t", image=REFERENCE_IMAGES[0])
    g["14"] = _align(["10", 0])
    g["12"] = _invert(["1", 0], ["14", 0], "Invert content in G_s (Eq. 5)", noise_maps=False)
    g["13"] = _invert(["2", 0], ["11", 0], "Invert reference in G_t (Eq. 5)", noise_maps=False)
    g["20"] = _lerp_g()
    g["21"] = _lerp_w(["12", 0], ["13", 0])
    g["22"] = _lso(["21", 0], ["14", 0])
    g["23"] = _render(["22", 0])
    g["24"] = _node("SaveImage", "Stylised faces", images=["23", 0], filename_prefix="hrinv/stylised")
    g["26"] = _paste(["10", 0], ["23", 0], ["14", 1])
    g["27"] = _node("SaveImage", "Stylised photo", images=["26", 0], filename_prefix="hrinv/stylised_photo")
    return g


def wf_stylize_photo():
    g = {}
    _loaders(g)
    g["10"] = _node("LoadImage", "Photo (any number of faces)", image=CONTENT_IMAGE)
    g["11"] = _node("LoadImage", "Style reference (aligned)", image=REFERENCE_IMAGES[0])
    g["12"] = _node("HRInv_StylizeFaces", "Stylise every face (align, invert, mix, LSO, paste back)",
                    photo=["10", 0], reference=["11", 0], source=["1", 0], target=["2", 0], vgg=["3", 0], steps=1000,
                    lso_steps=50, lambdas="paper", faces="all", min_face=32, if_no_face="use whole image",
                    feather=0.1, color_match=0.0, seed=0, precision="fp32", calibration="auto")
    g["13"] = _node("SaveImage", "Stylised photo", images=["12", 0], filename_prefix="hrinv/stylised_photo")
    g["14"] = _node("SaveImage", "Stylised faces", images=["12", 1], filename_prefix="hrinv/stylised_faces")
    g["15"] = _node("PreviewImage", "Replaced area", images=["16", 0])
    g["16"] = _node("MaskToImage", "Mask as image", mask=["12", 2])
    return g


def wf_style_gallery():
    g = {}
    _loaders(g)
    g["10"] = _node("LoadImage", "Content photo", image=CONTENT_IMAGE)
    for i, name in enumerate(REFERENCE_IMAGES):
        g[str(30 + i)] = _node("LoadImage", f"Reference {i + 1}", image=name)
    g["33"] = _node("ImageBatch", "References 1+2", image1=["30", 0], image2=["31", 0])
    g["34"] = _node("ImageBatch", "References 1+2+3", image1=["33", 0], image2=["32", 0])
    g["12"] = _invert(["1", 0], ["10", 0], "Invert content in G_s (once)", noise_maps=False)
    g["13"] = _invert(["2", 0], ["34", 0], "Invert the references in G_t (a batch)", noise_maps=False)
    g["20"] = _lerp_g()
    g["21"] = _lerp_w(["12", 0], ["13", 0], "Mix content with each reference")
    g["22"] = _lso(["21", 0], ["10", 0])
    g["23"] = _render(["22", 0])
    g["24"] = _node("SaveImage", "Gallery", images=["23", 0], filename_prefix="hrinv/gallery")
    return g


def wf_id_retrieval():
    g = {}
    _loaders(g, face=True)
    g["10"] = _node("LoadImage", "Content 1", image=CONTENT_IMAGE)
    g["11"] = _node("LoadImage", "Content 2", image=REFERENCE_IMAGES[1])
    g["14"] = _node("ImageBatch", "Content batch", image1=["10", 0], image2=["11", 0])
    g["15"] = _node("LoadImage", "Style reference", image=REFERENCE_IMAGES[0])
    g["12"] = _invert(["1", 0], ["14", 0], "Invert contents in G_s", noise_maps=False)
    g["13"] = _invert(["2", 0], ["15", 0], "Invert reference in G_t", noise_maps=False)
    g["20"] = _lerp_g()
    g["21"] = _lerp_w(["12", 0], ["13", 0], "Mix each content with the reference")
    g["22"] = _lso(["21", 0], ["14", 0])
    g["23"] = _render(["22", 0], size=256)
    g["40"] = _node("HRInv_IDRetrievalScore", "ID retrieval", content=["14", 0], stylised=["23", 0],
                    face_embedder=["4", 0], content_index="", threshold=0.0)
    g["41"] = _node("PreviewAny", "Score (top-1)", source=["40", 0])
    g["42"] = _node("PreviewAny", "Report", source=["40", 1])
    g["43"] = _node("SaveImage", "Stylised | own content | nearest match", images=["40", 2],
                    filename_prefix="hrinv/id_matches")
    return g


def wf_finetune_face():
    """One style image + a face -> G_t fine-tuned from G_s on the fly, then the paper pipeline."""
    g = {}
    _loaders(g, target=False)
    g["10"] = _node("LoadImage", "Content face x_s", image=CONTENT_IMAGE)
    g["11"] = _node("LoadImage", "Style reference (one picture)", image=REFERENCE_IMAGES[0])
    g["2"] = _node("HRInv_Finetune", "Fine-tune G_t from the style image", generator=["1", 0], style_images=["11", 0],
                   vgg=["3", 0], steps=300, preserve_color=False, seed=0, lr=0.002, invert_steps=500,
                   batch_size=4, alpha=1.0, mix_rows="", lambda_mse=0.0)
    g["14"] = _node("PreviewImage", "Reference as G_t draws it", images=["2", 1])
    g["12"] = _invert(["1", 0], ["10", 0], "Invert content in G_s (Eq. 5)", noise_maps=False)
    g["13"] = _invert(["2", 0], ["11", 0], "Invert reference in G_t (Eq. 5)", noise_maps=False)
    g["20"] = _lerp_g()
    g["21"] = _lerp_w(["12", 0], ["13", 0])
    g["22"] = _lso(["21", 0], ["10", 0])
    g["23"] = _render(["22", 0])
    g["24"] = _node("SaveImage", "Stylised face", images=["23", 0], filename_prefix="hrinv/finetuned_style")
    return g


# The models and pictures that ship with the pack (hrinv/bundled): the loaders list them as "bundled/<file>".
BUNDLED_G_S = "bundled/stylegan2_face64.safetensors"
BUNDLED_G_T = "bundled/stylegan2_face64_demo_style.safetensors"
BUNDLED_VGG = "bundled/vgg16_caffe_conv_fp16.safetensors"
# λ of the bundled 64 px pair (hrinv demo's default): the paper's coarse/fine split moved down to b32/b64.
BUNDLED_LAMBDAS = "0.2, 0.2, 0.2, 0.7, 0.7"
# Step counts of the out-of-the-box template: a few minutes on a CPU (see docs/bundled.md for the timing).
BUNDLED_STEPS, BUNDLED_LSO_STEPS = 150, 30


def bundled_calibration() -> str:
    """Perceptual-loss calibration of the bundled pair's template: the one ``hrinv demo`` uses (``DemoConfig``), the
    loss the bundled G_s and G_t were made with (docs/bundled.md). The other templates name torchvision's VGG16,
    which carries no constants, and keep ``auto``."""
    from hrinv.demo import DemoConfig

    return DemoConfig.calibration


def wf_demo_bundled():
    """Runs as shipped: the bundled G_s, G_t (fine-tuned on the demo style), VGG16 and face detector, the bundled
    demo photo and style picture. No downloads, no editing."""
    g = {}
    g["1"] = _node("HRInv_LoadStyleINRGAN", "Source G_s (bundled 64 px face model)", ckpt_name=BUNDLED_G_S,
                   inr_head="from checkpoint", which="G_ema", dtype="float32")
    g["2"] = _node("HRInv_LoadStyleINRGAN", "Target G_t (bundled, demo style)", ckpt_name=BUNDLED_G_T,
                   inr_head="from checkpoint", which="G_ema", dtype="float32")
    g["3"] = _node("HRInv_LoadVGG16", "VGG16 (bundled, perceptual loss)", vgg_name=BUNDLED_VGG)
    g["10"] = _node("HRInv_LoadDemoImage", "Demo photo (public domain)", image="demo_photo.png")
    g["11"] = _node("HRInv_LoadDemoImage", "Demo style reference", image="demo_style.png")
    g["12"] = _node("HRInv_StylizeFaces", "Stylise every face (align, invert, mix, LSO, paste back)",
                    photo=["10", 0], reference=["11", 0], source=["1", 0], target=["2", 0], vgg=["3", 0],
                    steps=BUNDLED_STEPS, lso_steps=BUNDLED_LSO_STEPS, lambdas=BUNDLED_LAMBDAS, faces="all",
                    min_face=32, if_no_face="use whole image", feather=0.1, color_match=0.0, seed=0, precision="fp32",
                    calibration=bundled_calibration())
    g["13"] = _node("SaveImage", "Stylised photo", images=["12", 0], filename_prefix="hrinv/demo_stylised_photo")
    g["14"] = _node("SaveImage", "Stylised face", images=["12", 1], filename_prefix="hrinv/demo_stylised_face")
    return g


# name (API file, id) -> (title: the template card's title and file name, function building the API graph)
WORKFLOW_SPECS = {
    "hrinv_invert_face": ("Invert a face photo into StyleGAN2", wf_invert_face),
    "hrinv_paper_pipeline": ("Stylise a face - the full HRInversion pipeline", wf_paper_pipeline),
    "hrinv_style_gallery": ("Style gallery - one face, three references", wf_style_gallery),
    "hrinv_id_retrieval": ("Identity check - ID retrieval score", wf_id_retrieval),
    "hrinv_finetune_face": ("Fine-tune a style from one picture and stylise a face", wf_finetune_face),
    "hrinv_stylize_photo": ("Stylise every face in a photo and paste them back", wf_stylize_photo),
    "hrinv_demo_bundled": ("Stylise the demo photo - bundled models, no downloads", wf_demo_bundled),
}
# Templates that name only bundled files: they run as shipped (the others name the user's real models).
RUNS_AS_SHIPPED = ("hrinv_demo_bundled",)
# A line under the title in the thumbnail (the 0.3.64 template browser has no other place for a description).
DESCRIPTIONS = {
    "hrinv_invert_face": "Find the W+ code and noise maps that reproduce a face (Eq. 1); save the reconstruction "
                         "and the latent.",
    "hrinv_paper_pipeline": "Invert content and style reference (Eq. 5), mix generators and latents (Eq. 6, 7), "
                            "Local Style Optimisation (Eq. 8), render.",
    "hrinv_style_gallery": "Invert one content photo once and three style references as a batch: three "
                           "stylisations.",
    "hrinv_id_retrieval": "Stylise two faces with one reference and measure how well identity is kept "
                          "(top-1 ID retrieval).",
    "hrinv_finetune_face": "Fine-tune G_t from G_s on one style picture (few-shot), then invert, lerp, LSO and "
                           "render a face in that style.",
    "hrinv_stylize_photo": "Find every face in a photo, align it, stylise it (invert, mix, LSO) and paste it back "
                           "into the photo; also saves the faces and shows the replaced area.",
    "hrinv_demo_bundled": "Runs as shipped, on a CPU in minutes: the bundled 64 px models stylise the bundled "
                          "public-domain photo in the bundled demo style.",
}


def template_stem(name: str) -> str:
    """The editor-format file's name (without .json) for workflow ``name``: its title, with only characters that
    are safe in a URL path and a file name (the template browser shows it as the card's title, and as the
    description with '-' and '_' turned into spaces)."""
    title = WORKFLOW_SPECS[name][0]
    safe = "".join(c if c.isalnum() or c in " -,.()'" else " " for c in title)
    return " ".join(safe.split())


def template_names() -> dict:
    """{template file stem: workflow name}."""
    return {template_stem(n): n for n in WORKFLOW_SPECS}


def api_graphs() -> dict:
    return {name: fn() for name, (_, fn) in WORKFLOW_SPECS.items()}


MODEL_LOADER_PREFIX = "HRInv_Load"


def outputs_without_models(graph: dict, object_info: dict) -> list:
    """Output nodes of an API graph that could run with one of the graph's files (models, latents) missing: those
    that do not depend on every one of our loaders in the graph. ComfyUI runs every output whose inputs validate and
    shows the queue item as a success, so such an output would let a template 'succeed' (even after a 1000-step
    inversion) while the "not found, looked in ..." message of the missing file never reaches the user. A template
    must have none: then a missing file makes /prompt refuse the whole graph."""
    ups = {}

    def upstream(nid):
        if nid not in ups:
            ups[nid] = set()
            for v in graph[nid]["inputs"].values():
                if isinstance(v, list) and str(v[0]) in graph:
                    ups[nid] |= {str(v[0])} | upstream(str(v[0]))
        return ups[nid]

    loaders = {nid for nid, n in graph.items() if n["class_type"].startswith(MODEL_LOADER_PREFIX)}
    return sorted((nid for nid, n in graph.items()
                   if object_info.get(n["class_type"], {}).get("output_node") and not loaders <= upstream(nid)),
                  key=lambda k: (len(k), k))


# ----------------------------------------------------------------------------------------------------------------
# Checking


def _widget_inputs(info: dict) -> list:
    """(name, type, options, category) of the widget inputs, in the order the editor stores widgets_values."""
    out = []
    for cat in ("required", "optional"):
        for name in info.get("input_order", {}).get(cat, list(info["input"].get(cat, {}))):
            spec = info["input"][cat][name]
            t = spec[0]
            opts = spec[1] if len(spec) > 1 else {}
            if isinstance(t, list) or t in WIDGET_TYPES:
                out.append((name, "COMBO" if isinstance(t, list) else t, opts, cat, t))
    return out


def extra_widget_values(name: str, kind: str, opts: dict) -> list:
    """Values the editor stores after a widget's own value: the image-upload button of LoadImage, and the
    'control after generate' widget it adds to INT inputs that ask for it or are named seed / noise_seed (unless the
    input says control_after_generate=False). Saved as 'fixed' so that a loaded template re-runs from the cache."""
    extra = []
    if opts.get("image_upload"):
        extra.append("image")
    if kind == "INT" and opts.get("control_after_generate", name in ("seed", "noise_seed")):
        extra.append("fixed")
    return extra


def _types_match(out_type: str, in_type) -> bool:
    if isinstance(in_type, list):
        return False
    return out_type == in_type or in_type == "*" or out_type == "*"


def check_api(graph: dict, object_info: dict, check_files: bool = False) -> list:
    """Problems of an API graph against ``object_info`` (empty list = valid): unknown nodes, unknown or missing
    inputs, dangling links, socket-type mismatches, widget values of the wrong type / out of range / not an option.
    Combo values of file lists (model files, images) are only checked when ``check_files``."""
    errors = []
    has_output = False
    for nid, node in graph.items():
        ct = node.get("class_type")
        info = object_info.get(ct)
        if info is None:
            errors.append(f"node {nid}: unknown node type {ct!r}")
            continue
        has_output |= bool(info.get("output_node"))
        declared = {}
        for cat in ("required", "optional"):
            for name, spec in info["input"].get(cat, {}).items():
                declared[name] = (cat, spec)
        for name, value in node["inputs"].items():
            if name not in declared:
                errors.append(f"node {nid} ({ct}): unknown input {name!r}")
                continue
            cat, spec = declared[name]
            t = spec[0]
            opts = spec[1] if len(spec) > 1 else {}
            if isinstance(value, list):
                src = graph.get(str(value[0]))
                if src is None:
                    errors.append(f"node {nid} ({ct}): input {name!r} links to missing node {value[0]!r}")
                    continue
                src_info = object_info.get(src["class_type"])
                if src_info is None:
                    continue
                if not 0 <= value[1] < len(src_info["output"]):
                    errors.append(f"node {nid} ({ct}): input {name!r} links to output {value[1]} of "
                                  f"{src['class_type']}, which has {len(src_info['output'])} outputs")
                    continue
                out_t = src_info["output"][value[1]]
                if not _types_match(out_t, t):
                    errors.append(f"node {nid} ({ct}): input {name!r} wants {t}, gets {out_t} from node {value[0]}")
                continue
            kind = "COMBO" if isinstance(t, list) else t
            if kind == "COMBO":
                options = t if isinstance(t, list) else opts.get("options", [])
                is_file_list = isinstance(t, list) or opts.get("image_upload") or name.endswith("_name") or (
                    name == "inr_head")
                if value not in options and (check_files or not is_file_list):
                    errors.append(f"node {nid} ({ct}): {name}={value!r} is not one of {options}")
            elif kind == "INT" and (not isinstance(value, int) or isinstance(value, bool)):
                errors.append(f"node {nid} ({ct}): {name}={value!r} is not an integer")
            elif kind == "FLOAT" and (not isinstance(value, (int, float)) or isinstance(value, bool)):
                errors.append(f"node {nid} ({ct}): {name}={value!r} is not a number")
            elif kind == "BOOLEAN" and not isinstance(value, bool):
                errors.append(f"node {nid} ({ct}): {name}={value!r} is not a boolean")
            elif kind == "STRING" and not isinstance(value, str):
                errors.append(f"node {nid} ({ct}): {name}={value!r} is not a string")
            if kind in ("INT", "FLOAT") and isinstance(value, (int, float)) and (
                    "min" in opts and value < opts["min"] or "max" in opts and value > opts["max"]):
                    errors.append(f"node {nid} ({ct}): {name}={value} outside [{opts.get('min')}, {opts.get('max')}]")
        for name, (cat, _) in declared.items():
            if cat == "required" and name not in node["inputs"]:
                errors.append(f"node {nid} ({ct}): required input {name!r} is missing")
    if not has_output:
        errors.append("the graph has no output node")
    return errors


# ----------------------------------------------------------------------------------------------------------------
# Editor (UI) format


# How the editor (ComfyUI frontend 1.27, LiteGraph) sizes a node, measured with node.computeSize() in the real editor
# for every node the workflows use: height = 20 per socket row + 24 per widget + 14 (6 with no widget), title bar
# (30) above. Multi-line text widgets need more; Load Image and image outputs get room for the picture they show.
TITLE_H, SLOT_H, WIDGET_H, WIDGETS_PAD, NO_WIDGETS_PAD = 30, 20, 24, 14, 6
MULTILINE_H = 90
IMAGE_PREVIEW_H = 240
NODE_W, COL_GAP, ROW_GAP, MARGIN = 340, 60, 40, 40
# Widgets the frontend adds that /object_info does not describe: (class_type -> number of text areas)
DISPLAY_TEXT_WIDGETS = {"PreviewAny": 1}


def node_size(info: dict, class_type: str = "") -> list:
    """[width, height] (body, without the title bar) the editor gives a node of this /object_info entry."""
    sockets, widgets, multiline = 0, 0, 0
    for cat in ("required", "optional"):
        for iname in info.get("input_order", {}).get(cat, list(info["input"].get(cat, {}))):
            spec = info["input"][cat][iname]
            t, opts = spec[0], (spec[1] if len(spec) > 1 else {})
            if isinstance(t, list) or t in WIDGET_TYPES:
                if t == "STRING" and opts.get("multiline"):
                    multiline += 1
                else:
                    widgets += 1 + len(extra_widget_values(iname, "COMBO" if isinstance(t, list) else t, opts))
            else:
                sockets += 1
    multiline += DISPLAY_TEXT_WIDGETS.get(class_type, 0)
    rows = max(sockets, len(info.get("output", [])), 1)
    h = rows * SLOT_H + widgets * WIDGET_H + multiline * MULTILINE_H
    h += WIDGETS_PAD if widgets or multiline else NO_WIDGETS_PAD
    shows_image = any(spec[0] == "IMAGE" or (len(spec) > 1 and isinstance(spec[1], dict)
                                             and spec[1].get("image_upload"))
                      for c in ("required", "optional") for spec in info["input"].get(c, {}).values())
    if shows_image and (info.get("output_node") or class_type == "LoadImage"):
        h += IMAGE_PREVIEW_H           # the picture it shows (Load Image: the chosen file; outputs: after a run)
    return [NODE_W, h]


def _layout(graph: dict, sizes: dict) -> dict:
    """Column = longest distance from a source node; in a column, nodes are ordered by where their inputs come from
    (then by id) and stacked by their real heights (``sizes``: {node_id: [w, h]} without the title bar), so no node
    overlaps another. Returns {node_id: (x, y)} (y is the top of the body; the title bar sits above it)."""
    depth = {}

    def d(nid):
        if nid not in depth:
            depth[nid] = 0
            ups = [str(v[0]) for v in graph[nid]["inputs"].values() if isinstance(v, list)]
            depth[nid] = 1 + max((d(u) for u in ups), default=-1)
        return depth[nid]

    for nid in graph:
        d(nid)
    columns = {}
    for nid in graph:
        columns.setdefault(depth[nid], []).append(nid)
    pos, x = {}, MARGIN
    for col in sorted(columns):
        def key(nid):
            ups = [pos[str(v[0])][1] for v in graph[nid]["inputs"].values() if isinstance(v, list)
                   and str(v[0]) in pos]
            return (min(ups) if ups else 0.0, int(nid) if str(nid).isdigit() else 0, str(nid))

        y = MARGIN
        for nid in sorted(columns[col], key=key):
            pos[nid] = (x, y + TITLE_H)
            y += TITLE_H + sizes[nid][1] + ROW_GAP
        x += max(sizes[n][0] for n in columns[col]) + COL_GAP
    return pos


def overlaps(ui: dict) -> list:
    """Pairs of nodes of an editor-format workflow whose rectangles (title bar included) intersect."""
    boxes = [(n["id"], n["pos"][0], n["pos"][1] - TITLE_H, n["size"][0], n["size"][1] + TITLE_H) for n in ui["nodes"]]
    return [(a[0], b[0]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if a[1] < b[1] + b[3] and b[1] < a[1] + a[3] and a[2] < b[2] + b[4] and b[2] < a[2] + a[4]]


def api_to_ui(graph: dict, object_info: dict, name: str) -> dict:
    """The editor's saved-workflow format (litegraph, version 0.4) for an API graph."""
    ids = {nid: int(nid) for nid in graph}
    sizes = {nid: node_size(object_info[node["class_type"]], node["class_type"]) for nid, node in graph.items()}
    pos = _layout(graph, sizes)
    links, nodes = [], []
    out_links = {}
    for nid, node in graph.items():
        info = object_info[node["class_type"]]
        for cat in ("required", "optional"):
            for iname in info.get("input_order", {}).get(cat, []):
                v = node["inputs"].get(iname)
                if isinstance(v, list):
                    lid = len(links) + 1
                    links.append([lid, ids[str(v[0])], v[1], ids[nid], None, None, iname])
                    out_links.setdefault((str(v[0]), v[1]), []).append(lid)
    order = {nid: i for i, nid in enumerate(sorted(graph, key=lambda n: (pos[n][0], pos[n][1])))}
    link_by_target = {(l[3], l[6]): l for l in links}
    for nid, node in graph.items():
        info = object_info[node["class_type"]]
        inputs, widgets = [], []
        slot = 0
        for cat in ("required", "optional"):
            for iname in info.get("input_order", {}).get(cat, []):
                spec = info["input"][cat][iname]
                t = spec[0]
                opts = spec[1] if len(spec) > 1 else {}
                is_widget = isinstance(t, list) or t in WIDGET_TYPES
                v = node["inputs"].get(iname)
                if is_widget:
                    widgets.append(v if v is not None else opts.get("default"))
                    widgets.extend(extra_widget_values(iname, "COMBO" if isinstance(t, list) else t, opts))
                    continue
                entry = {"name": iname, "type": t, "link": None}
                if cat == "optional":
                    entry["shape"] = 7
                tl = link_by_target.get((ids[nid], iname))
                if tl is not None:
                    entry["link"] = tl[0]
                    tl[4] = slot
                    src = graph[str(node["inputs"][iname][0])]
                    tl[5] = object_info[src["class_type"]]["output"][node["inputs"][iname][1]]
                inputs.append(entry)
                slot += 1
        outputs = []
        for i, (t, oname) in enumerate(zip(info["output"], info.get("output_name", info["output"]))):
            lk = out_links.get((nid, i))
            outputs.append({"name": oname, "type": t, "links": lk or None, **({"slot_index": i} if lk else {})})
        nodes.append({"id": ids[nid], "type": node["class_type"], "pos": list(pos[nid]),
                      "size": sizes[nid], "flags": {}, "order": order[nid],
                      "mode": 0, "inputs": inputs, "outputs": outputs,
                      "properties": {"Node name for S&R": node["class_type"]},
                      "widgets_values": widgets, "title": node.get("_meta", {}).get("title", node["class_type"])})
    ui_links = [[l[0], l[1], l[2], l[3], l[4], l[5]] for l in links]
    return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"hrinv/{name}")), "revision": 0,
            "last_node_id": max(ids.values()), "last_link_id": len(links),
            "nodes": sorted(nodes, key=lambda n: n["id"]),
            "links": ui_links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
            "version": 0.4}


def ui_to_api(ui: dict, object_info: dict) -> dict:
    """Back from the editor format to an API graph (what the editor's 'Export (API)' does for plain graphs)."""
    links = {l[0]: l for l in ui["links"]}
    graph = {}
    for n in ui["nodes"]:
        info = object_info[n["type"]]
        inputs = {}
        for entry in n.get("inputs", []):
            if entry.get("link") is not None:
                l = links[entry["link"]]
                inputs[entry["name"]] = [str(l[1]), l[2]]
        values = list(n.get("widgets_values", []))
        for (wname, kind, opts, cat, t) in _widget_inputs(info):
            if not values:
                break
            inputs[wname] = values.pop(0)
            del values[:len(extra_widget_values(wname, kind, opts))]
        graph[str(n["id"])] = {"class_type": n["type"], "inputs": inputs, "_meta": {"title": n.get("title", "")}}
    return graph


def check_ui(ui: dict, object_info: dict) -> list:
    """Problems of an editor-format workflow: unknown nodes, link endpoints/types that disagree with the node
    definitions, widgets_values count; then the API graph it stands for is checked with :func:`check_api`."""
    errors = []
    if ui.get("version") != 0.4 or not isinstance(ui.get("nodes"), list) or not isinstance(ui.get("links"), list):
        return ["not an editor-format workflow (version 0.4 with nodes and links)"]
    nodes = {n["id"]: n for n in ui["nodes"]}
    for n in ui["nodes"]:
        info = object_info.get(n["type"])
        if info is None:
            errors.append(f"node {n['id']}: unknown node type {n['type']!r}")
            continue
        n_w = sum(1 + len(extra_widget_values(name, kind, opts)) for (name, kind, opts, _, _) in _widget_inputs(info))
        if len(n.get("widgets_values", [])) != n_w:
            errors.append(f"node {n['id']} ({n['type']}): {len(n.get('widgets_values', []))} widget values, "
                          f"expected {n_w}")
    for lid, src, sslot, dst, dslot, t in ui["links"]:
        if src not in nodes or dst not in nodes:
            errors.append(f"link {lid}: missing endpoint")
            continue
        s_info = object_info.get(nodes[src]["type"])
        if s_info is not None and (sslot >= len(s_info["output"]) or s_info["output"][sslot] != t):
            errors.append(f"link {lid}: output {sslot} of {nodes[src]['type']} is not {t}")
        d_inputs = nodes[dst].get("inputs", [])
        if dslot >= len(d_inputs) or d_inputs[dslot].get("link") != lid:
            errors.append(f"link {lid}: input slot {dslot} of node {dst} does not refer back to it")
    if not errors:
        errors += check_api(ui_to_api(ui, object_info), object_info)
    return errors


def substitute(graph: dict, files: dict, steps: int = 2, size: int = 64, lso_steps: int = 2) -> dict:
    """A copy of ``graph`` for tests: file names replaced by ``files`` (old -> new), step counts and render sizes
    made small."""
    g = json.loads(json.dumps(graph))
    for node in g.values():
        inp = node["inputs"]
        for k, v in list(inp.items()):
            if isinstance(v, str) and v in files:
                inp[k] = files[v]
        if node["class_type"] == "HRInv_Invert":
            inp["steps"] = steps
        if node["class_type"] == "HRInv_LocalStyleOptimize":
            inp["steps"] = lso_steps
        if node["class_type"] == "HRInv_RenderAnyResolution":
            inp["width"] = inp["height"] = size
        if node["class_type"] == "HRInv_AlignFaces":
            inp["size"] = size
        if node["class_type"] == "HRInv_StylizeFaces":
            inp["steps"], inp["lso_steps"] = steps, lso_steps
        if node["class_type"] == "HRInv_Finetune":
            inp["steps"], inp["invert_steps"], inp["batch_size"] = steps, steps, 1
    return g


# ----------------------------------------------------------------------------------------------------------------
# Thumbnails


COLOURS = {"HRInv_": (52, 78, 120), "LoadImage": (60, 95, 60), "Save": (110, 70, 45), "Preview": (110, 70, 45)}


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)          # Pillow >= 10.1: scalable built-in font
    except TypeError:
        return ImageFont.load_default()


def _wrap(dr, text: str, font, width: float) -> list:
    lines, line = [], ""
    for word in text.split():
        cand = f"{line} {word}".strip()
        if line and dr.textlength(cand, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = cand
    return lines + ([line] if line else [])


def draw_schematic(ui: dict, title: str, path: Path, description: str = "", size=(800, 600)) -> None:
    """The template card's thumbnail (JPEG): the title and a short description on top, then the graph as the
    editor lays it out (one box per node with its real height, links coloured by kind: ours gold, images blue).
    Our own drawing from the workflow itself; no pictures from anywhere else."""
    from PIL import Image, ImageDraw

    W, H = size
    img = Image.new("RGB", (W, H), (30, 31, 36))
    dr = ImageDraw.Draw(img)
    f_head, f_desc = _font(34), _font(22)
    y = 16
    for line in _wrap(dr, title, f_head, W - 32)[:2]:
        dr.text((16, y), line, fill=(245, 245, 245), font=f_head)
        y += 42
    for line in _wrap(dr, description, f_desc, W - 32)[:3]:
        dr.text((16, y), line, fill=(190, 196, 210), font=f_desc)
        y += 28
    top = y + 14
    boxes = {n["id"]: (n["pos"][0], n["pos"][1] - TITLE_H, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in ui["nodes"]}
    x0 = min(b[0] for b in boxes.values())
    y0 = min(b[1] for b in boxes.values())
    x1 = max(b[2] for b in boxes.values())
    y1 = max(b[3] for b in boxes.values())
    scale = min((W - 32) / (x1 - x0), (H - top - 12) / (y1 - y0))
    ox = 16 + ((W - 32) - (x1 - x0) * scale) / 2

    def box(nid):
        a, b, c, d = boxes[nid]
        return (ox + (a - x0) * scale, top + (b - y0) * scale, ox + (c - x0) * scale, top + (d - y0) * scale)

    f_title, f_type = _font(max(10, int(34 * scale))), _font(max(9, int(26 * scale)))
    for _, src, _, dst, _, t in ui["links"]:
        a, b = box(src), box(dst)
        p, q = (a[2], a[1] + 30 * scale), (b[0], b[1] + 30 * scale)
        colour = (214, 178, 84) if t.startswith("HRINV") else (112, 168, 224)
        mid = (p[0] + q[0]) / 2 if q[0] > p[0] else p[0] + 8
        dr.line([p, (mid, p[1]), (mid, q[1]), q], fill=colour, width=2)
    for n in ui["nodes"]:
        colour = next((c for k, c in COLOURS.items() if n["type"].startswith(k) or k in n["type"]), (70, 70, 80))
        bx0, by0, bx1, by1 = box(n["id"])
        dr.rounded_rectangle((bx0, by0, bx1, by1), radius=5, fill=colour, outline=(210, 210, 220))
        name = n.get("title", n["type"])
        while dr.textlength(name, font=f_title) > (bx1 - bx0) - 8 and len(name) > 4:
            name = name.rstrip("…")[:-1] + "…"
        dr.text((bx0 + 4, by0 + 3), name, fill=(255, 255, 255), font=f_title)
        if by1 - by0 > 40 * scale + 12:
            dr.text((bx0 + 4, by0 + 6 + 36 * scale), n["type"].replace("HRInv_", ""), fill=(205, 205, 210),
                    font=f_type)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=85)


def pack_object_info() -> dict:
    """Our nodes' /object_info (from the pack over the test stubs) plus CORE_NODES."""
    import tempfile

    sys.path.insert(0, str(REPO / "tests"))
    try:
        from nodes_harness import object_info, stubbed_pack
    finally:
        sys.path.pop(0)
    with tempfile.TemporaryDirectory() as tmp, stubbed_pack(tmp) as h:
        info = object_info(h.nodes)
    return {**CORE_NODES, **info}


def write_all() -> list:
    info = pack_object_info()
    written = []
    for name, (title, fn) in WORKFLOW_SPECS.items():
        graph = fn()
        problems = check_api(graph, info)
        if problems:
            raise SystemExit(f"{name}: " + "; ".join(problems))
        ui = api_to_ui(graph, info, name)
        stem = template_stem(name)
        API_DIR.mkdir(parents=True, exist_ok=True)
        (WORKFLOWS / f"{stem}.json").write_text(json.dumps(ui, indent=1) + "\n")
        (API_DIR / f"{name}.json").write_text(json.dumps(graph, indent=1) + "\n")
        draw_schematic(ui, title, WORKFLOWS / f"{stem}.jpg", DESCRIPTIONS.get(name, ""))
        written.append(name)
    return written


if __name__ == "__main__":
    print("wrote", ", ".join(write_all()))
