"""The example workflows only use existing nodes, inputs and types; UI and API copies agree; files are current."""

import json

import pytest
from nodes_harness import REPO

from tools import hrinv_workflows as wf

UI_FILES = sorted(wf.WORKFLOWS.glob("*.json"))
API_DIR = wf.API_DIR
NAME = wf.template_names()                                  # template file stem -> workflow name


@pytest.fixture(scope="module")
def info():
    return wf.pack_object_info()


def test_there_are_the_workflows():
    assert wf.WORKFLOWS.name == "example_workflows"         # the folder name ComfyUI's docs recommend
    assert not (REPO / "workflows").exists()
    names = {NAME[p.stem] for p in UI_FILES}
    assert names == set(wf.WORKFLOW_SPECS)
    assert {p.stem for p in API_DIR.glob("*.json")} == names


def test_template_cards_have_titles():
    """The template browser shows the file name as the card's title: a readable title, not an identifier."""
    for p in UI_FILES:
        assert p.stem == wf.WORKFLOW_SPECS[NAME[p.stem]][0] and " " in p.stem and "_" not in p.stem
        assert all(c.isalnum() or c in " -,.()'" for c in p.stem), p.stem
        assert len(wf.DESCRIPTIONS[NAME[p.stem]]) > 40


def test_templates_fail_loudly_without_their_models(info):
    """Every output depends on every model loader: with any model missing, ComfyUI rejects the whole prompt instead
    of running what it can (a lone preview, or a 1000-step inversion) and reporting success."""
    for name, graph in wf.api_graphs().items():
        assert wf.outputs_without_models(graph, info) == [], name
    g = wf.wf_invert_face()
    g["99"] = {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}}      # a preview of the input alone
    assert wf.outputs_without_models(g, info) == ["99"]
    g = wf.wf_paper_pipeline()
    g["98"] = {"class_type": "HRInv_SaveLatent", "inputs": {"latent": ["12", 0], "filename_prefix": "c"}}
    assert wf.outputs_without_models(g, info) == ["98"]                           # would run without G_t


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_no_node_hides_another(path, info):
    ui = json.loads(path.read_text())
    assert wf.overlaps(ui) == []
    for n in ui["nodes"]:                                   # saved sizes are at least what the editor needs
        assert n["size"][1] >= wf.node_size(info[n["type"]], n["type"])[1]


def test_layout_uses_real_heights(info):
    """A tall node (Invert, ~330 px) pushes the next one in its column down; any graph, not only ours."""
    g = {"1": {"class_type": "HRInv_LoadVGG16", "inputs": {"vgg_name": "v"}},
         "2": {"class_type": "HRInv_LoadStyleINRGAN", "inputs": {}},
         "3": {"class_type": "LoadImage", "inputs": {"image": "a.png"}}}
    for i in range(4, 8):
        g[str(i)] = {"class_type": "HRInv_Invert", "inputs": {"generator": ["2", 0], "image": ["3", 0],
                                                                "vgg": ["1", 0]}}
    sizes = {k: wf.node_size(info[v["class_type"]], v["class_type"]) for k, v in g.items()}
    assert sizes["4"][1] >= 330 > wf.node_size(info["HRInv_LoadVGG16"])[1]
    pos = wf._layout(g, sizes)
    ys = sorted(pos[k][1] for k in ("4", "5", "6", "7"))
    assert all(b - a >= sizes["4"][1] + wf.TITLE_H for a, b in zip(ys, ys[1:]))
    ui = {"nodes": [{"id": k, "pos": list(pos[k]), "size": sizes[k]} for k in g]}
    assert wf.overlaps(ui) == []
    ui["nodes"][4]["pos"][1] = ui["nodes"][3]["pos"][1] + 100
    assert wf.overlaps(ui)


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_is_valid(path, info):
    ui = json.loads(path.read_text())
    assert wf.check_ui(ui, info) == []
    thumb = path.with_suffix(".jpg")                       # the template browser shows <name>.jpg
    assert thumb.exists() and thumb.stat().st_size < 200_000


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_api_copy_matches_ui(path, info):
    ui = json.loads(path.read_text())
    api = json.loads((API_DIR / f"{NAME[path.stem]}.json").read_text())
    assert wf.check_api(api, info) == []
    strip = lambda g: {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in g.items()}
    assert strip(wf.ui_to_api(ui, info)) == strip(api)


def test_files_are_up_to_date(info):
    for name, (_, fn) in wf.WORKFLOW_SPECS.items():
        graph = fn()
        assert json.loads((API_DIR / f"{name}.json").read_text()) == graph, f"run tools/hrinv_workflows.py ({name})"
        ui = json.loads((wf.WORKFLOWS / f"{wf.template_stem(name)}.json").read_text())
        assert ui == wf.api_to_ui(graph, info, name)


def test_workflows_name_the_files_users_have():
    text = " ".join(p.read_text() for p in API_DIR.glob("*.json"))
    for f in ("ffhq.pkl", "metfaces.pkl", "vgg16-397923af.pth", "dlib_face_recognition_resnet_model_v1.dat"):
        assert f in text


def test_pipeline_covers_the_paper(info):
    kinds = {n["class_type"] for n in wf.wf_paper_pipeline().values()}
    assert {"HRInv_Invert", "HRInv_LerpGenerators", "HRInv_LerpLatents", "HRInv_LocalStyleOptimize",
            "HRInv_RenderAnyResolution", "SaveImage", "HRInv_AlignFaces", "HRInv_PasteFaces"} <= kinds


def test_checker_catches_mistakes(info):
    g = wf.wf_invert_face()
    assert wf.check_api(g, info) == []
    bad = json.loads(json.dumps(g))
    bad["11"]["class_type"] = "HRInv_NoSuchNode"
    assert any("unknown node type" in e for e in wf.check_api(bad, info))
    bad = json.loads(json.dumps(g))
    bad["11"]["inputs"]["generator"] = ["3", 0]               # a VGG where a generator belongs
    assert any("wants HRINV_GENERATOR, gets HRINV_VGG" in e for e in wf.check_api(bad, info))
    bad = json.loads(json.dumps(g))
    del bad["11"]["inputs"]["vgg"]
    assert any("required input 'vgg' is missing" in e for e in wf.check_api(bad, info))
    bad = json.loads(json.dumps(g))
    bad["11"]["inputs"]["steps"] = 0
    assert any("outside" in e for e in wf.check_api(bad, info))
    bad = json.loads(json.dumps(g))
    bad["11"]["inputs"]["latent_space"] = "Z"
    assert any("not one of" in e for e in wf.check_api(bad, info))
    bad = json.loads(json.dumps(g))
    bad["11"]["inputs"]["speed"] = 3
    assert any("unknown input 'speed'" in e for e in wf.check_api(bad, info))
    ui = wf.api_to_ui(g, info, "x")
    ui["nodes"][0]["widgets_values"].append(1)
    assert any("widget values" in e for e in wf.check_ui(ui, info))


def test_substitute_shrinks_work():
    g = wf.substitute(wf.wf_paper_pipeline(), {"ffhq.pkl": "a.safetensors"}, steps=2, size=64)
    assert g["1"]["inputs"]["ckpt_name"] == "a.safetensors"
    assert g["12"]["inputs"]["steps"] == 2 and g["23"]["inputs"]["width"] == 64
    assert wf.wf_paper_pipeline()["12"]["inputs"]["steps"] == 1000          # the original is untouched


def test_editor_widget_conventions():
    # the editor adds a 'control after generate' value after INT inputs named seed (unless told not to) and an
    # upload value after LoadImage's image; our nodes opt out of the seed control so templates re-run from cache
    assert wf.extra_widget_values("seed", "INT", {}) == ["fixed"]
    assert wf.extra_widget_values("seed", "INT", {"control_after_generate": False}) == []
    assert wf.extra_widget_values("steps", "INT", {"control_after_generate": True}) == ["fixed"]
    assert wf.extra_widget_values("image", "COMBO", {"image_upload": True}) == ["image"]
