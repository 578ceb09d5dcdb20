"""The example workflows only use existing nodes, inputs and types; UI and API copies agree; files are current."""

import json

import pytest
from nodes_harness import REPO

from tools import hrinv_workflows as wf

UI_FILES = sorted((REPO / "workflows").glob("*.json"))
API_DIR = REPO / "workflows" / "api"


@pytest.fixture(scope="module")
def info():
    return wf.pack_object_info()


def test_there_are_the_five_workflows():
    names = {p.stem for p in UI_FILES}
    assert names == set(wf.WORKFLOW_SPECS)
    assert {p.stem for p in API_DIR.glob("*.json")} == names


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_is_valid(path, info):
    ui = json.loads(path.read_text())
    assert wf.check_ui(ui, info) == []
    thumb = path.with_suffix(".jpg")                       # the template browser shows <name>.jpg
    assert thumb.exists() and thumb.stat().st_size < 200_000


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_api_copy_matches_ui(path, info):
    ui = json.loads(path.read_text())
    api = json.loads((API_DIR / path.name).read_text())
    assert wf.check_api(api, info) == []
    strip = lambda g: {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in g.items()}
    assert strip(wf.ui_to_api(ui, info)) == strip(api)


def test_files_are_up_to_date(info):
    for name, (_, fn) in wf.WORKFLOW_SPECS.items():
        graph = fn()
        assert json.loads((API_DIR / f"{name}.json").read_text()) == graph, f"run tools/hrinv_workflows.py ({name})"
        assert json.loads((REPO / "workflows" / f"{name}.json").read_text()) == wf.api_to_ui(graph, info, name)


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
