"""The pack's example workflows: their API graphs, the editor (UI) format derived from them, a checker, previews.

Run ``python tools/hrinv_workflows.py`` to (re)write ``workflows/<name>.json`` (editor format, shown by ComfyUI as
templates), ``workflows/<name>.jpg`` (template thumbnail: a schematic of the graph drawn here) and
``workflows/api/<name>.json`` (API format for ``POST /prompt``). It needs no ComfyUI: the node definitions come from
the pack loaded over the test stubs (tests/nodes_harness.py) plus the small description of the core nodes below,
which ``pytest -m comfyui`` compares with a real ComfyUI's ``/object_info``.

The checker (:func:`check_api`, :func:`check_ui`) is used by the CI tests and by the real-host test.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"

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
                 downsample=0, noise_regularize=0.0, fit="crop & resize")


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
    g["14"] = _node("PreviewImage", "Input", images=["10", 0])
    return g


def wf_paper_pipeline():
    g = {}
    _loaders(g)
    g["10"] = _node("LoadImage", "Content photo x_s", image=CONTENT_IMAGE)
    g["11"] = _node("LoadImage", "Style reference x_t", image=REFERENCE_IMAGES[0])
    g["12"] = _invert(["1", 0], ["10", 0], "Invert content in G_s (Eq. 5)", noise_maps=False)
    g["13"] = _invert(["2", 0], ["11", 0], "Invert reference in G_t (Eq. 5)", noise_maps=False)
    g["20"] = _lerp_g()
    g["21"] = _lerp_w(["12", 0], ["13", 0])
    g["22"] = _lso(["21", 0], ["10", 0])
    g["23"] = _render(["22", 0])
    g["24"] = _node("SaveImage", "Stylised result", images=["23", 0], filename_prefix="hrinv/stylised")
    g["25"] = _node("HRInv_SaveLatent", "Save content latent", latent=["12", 0], filename_prefix="content")
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
    g["43"] = _node("SaveImage", "Nearest matches", images=["40", 2], filename_prefix="hrinv/id_matches")
    g["44"] = _node("SaveImage", "Stylised", images=["23", 0], filename_prefix="hrinv/id_stylised")
    return g


WORKFLOW_SPECS = {
    "hrinv_invert_face": ("Invert and reconstruct a face", wf_invert_face),
    "hrinv_paper_pipeline": ("Full HRInversion pipeline (paper Fig. 2)", wf_paper_pipeline),
    "hrinv_style_gallery": ("One content x several references", wf_style_gallery),
    "hrinv_id_retrieval": ("ID-retrieval evaluation", wf_id_retrieval),
}


def api_graphs() -> dict:
    return {name: fn() for name, (_, fn) in WORKFLOW_SPECS.items()}


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


def _layout(graph: dict) -> dict:
    """Column = longest distance from a source node; rows in id order. Returns {node_id: (x, y)}."""
    depth = {}

    def d(nid):
        if nid not in depth:
            depth[nid] = 0
            ups = [v[0] for v in graph[nid]["inputs"].values() if isinstance(v, list)]
            depth[nid] = 1 + max((d(u) for u in ups), default=-1)
        return depth[nid]

    for nid in graph:
        d(nid)
    pos, rows = {}, {}
    for nid in sorted(graph, key=lambda n: (depth[n], int(n))):
        col = depth[nid]
        rows[col] = rows.get(col, 0) + 1
        pos[nid] = (40 + col * 380, 40 + (rows[col] - 1) * 300)
    return pos


def api_to_ui(graph: dict, object_info: dict, name: str) -> dict:
    """The editor's saved-workflow format (litegraph, version 0.4) for an API graph."""
    ids = {nid: int(nid) for nid in graph}
    pos = _layout(graph)
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
        n_slots = max(len(inputs), len(outputs))
        nodes.append({"id": ids[nid], "type": node["class_type"], "pos": list(pos[nid]),
                      "size": [340, 60 + 22 * (n_slots + len(widgets))], "flags": {}, "order": order[nid],
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


def draw_schematic(ui: dict, title: str, path: Path, width: int = 960) -> None:
    """A JPEG of the graph: one box per node (title + node type), links coloured by kind (ours gold, images blue).
    Our own drawing from the workflow itself; no pictures from anywhere else."""
    from PIL import Image, ImageDraw

    xs = [n["pos"][0] for n in ui["nodes"]]
    ys = [n["pos"][1] for n in ui["nodes"]]
    bw, bh, top = 340, 150, 90
    W, H = max(xs) + bw + 40, max(ys) + bh + 40 + top
    scale = width / W
    img = Image.new("RGB", (width, max(int(H * scale), int(width * 0.45))), (30, 31, 36))
    dr = ImageDraw.Draw(img)
    dr.text((14, 10), title, fill=(240, 240, 240), font=_font(22))
    f_title, f_type = _font(max(10, int(30 * scale))), _font(max(9, int(24 * scale)))

    def box(n):
        x, y = n["pos"]
        return (x * scale, (y + top) * scale, (x + bw) * scale, (y + top + bh) * scale)

    nodes = {n["id"]: n for n in ui["nodes"]}
    for _, src, _, dst, _, t in ui["links"]:
        a, b = box(nodes[src]), box(nodes[dst])
        p, q = (a[2], (a[1] + a[3]) / 2), (b[0], (b[1] + b[3]) / 2)
        colour = (214, 178, 84) if t.startswith("HRINV") else (112, 168, 224)
        mid = (p[0] + q[0]) / 2 if q[0] > p[0] else p[0] + 8
        dr.line([p, (mid, p[1]), (mid, q[1]), q], fill=colour, width=2)
    for n in ui["nodes"]:
        colour = next((c for k, c in COLOURS.items() if n["type"].startswith(k) or k in n["type"]), (70, 70, 80))
        x0, y0, x1, y1 = box(n)
        dr.rounded_rectangle((x0, y0, x1, y1), radius=7, fill=colour, outline=(210, 210, 220))
        name = n.get("title", n["type"])
        while dr.textlength(name, font=f_title) > (x1 - x0) - 10 and len(name) > 4:
            name = name.rstrip("…")[:-1] + "…"
        dr.text((x0 + 6, y0 + 5), name, fill=(255, 255, 255), font=f_title)
        dr.text((x0 + 6, y0 + 8 + 34 * scale), n["type"].replace("HRInv_", ""), fill=(205, 205, 210), font=f_type)
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
        (WORKFLOWS / "api").mkdir(parents=True, exist_ok=True)
        (WORKFLOWS / f"{name}.json").write_text(json.dumps(ui, indent=1) + "\n")
        (WORKFLOWS / "api" / f"{name}.json").write_text(json.dumps(graph, indent=1) + "\n")
        draw_schematic(ui, title, WORKFLOWS / f"{name}.jpg")
        written.append(name)
    return written


if __name__ == "__main__":
    print("wrote", ", ".join(write_all()))
