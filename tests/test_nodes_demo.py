"""The bundled demo pictures as a node, and the template that runs as shipped with the bundled models: every file it
names is in the loaders' lists of a fresh install (no downloads, no editing), and the graph, executed node by node
over the comfy stubs (fewer steps), turns the bundled photo into a photo of the same size whose face changed and
whose pixels outside the replaced area are the photo's."""

import pytest
import torch
from nodes_harness import run_node, stubbed_pack

from hrinv import bundled
from tools import hrinv_workflows as wf

NEEDED = ["stylegan2_face64.safetensors", "stylegan2_face64_demo_style.safetensors", "demo_photo.png",
          "demo_style.png", "vgg16_caffe_conv_fp16.safetensors", "mtcnn.safetensors"]
pytestmark = pytest.mark.skipif(any(n not in bundled.names() for n in NEEDED),
                                reason="the bundled demo models are not all in this checkout")


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    with stubbed_pack(tmp_path_factory.mktemp("comfy")) as ns:     # empty model folders: a fresh install
        yield ns


def test_load_demo_image_gives_the_bundled_pictures(h):
    from hrinv.imageio import read_image

    node = h.nodes["HRInv_LoadDemoImage"]
    opts = node.GET_SCHEMA().inputs[0].options
    assert opts == ["demo_photo.png", "demo_style.png"]
    for name in opts:
        (img,) = run_node(node, image=name)
        ref = read_image(bundled.path(name))                                 # [3, H, W] in [0, 1]
        assert img.shape == (1, *ref.shape[1:], 3) and img.dtype == torch.float32
        assert not img.is_inference()
        assert torch.allclose(img[0].permute(2, 0, 1), ref, atol=1e-6)
    msg = node.validate_inputs(image="my_photo.png")
    assert msg is not True and "demo_photo.png" in msg and "Load Image" in msg
    assert node.validate_inputs(image="demo_photo.png") is True


def test_bundled_template_names_only_files_of_a_fresh_install(h):
    """check_files: every combo value, model files included, is one of the options a fresh install lists."""
    info = {**wf.CORE_NODES, **wf.pack_object_info()}
    graph = wf.wf_demo_bundled()
    assert wf.check_api(graph, info, check_files=True) == []
    other = wf.wf_stylize_photo()                                            # the real-model templates do not
    assert any("is not one of" in e for e in wf.check_api(other, info, check_files=True))
    kinds = {n["class_type"] for n in graph.values()}
    assert "LoadImage" not in kinds and {"HRInv_LoadDemoImage", "HRInv_StylizeFaces"} <= kinds


def test_bundled_template_uses_the_demo_loss_calibration():
    """The template of the bundled pair stylises with the loss ``hrinv demo`` uses (DemoConfig.calibration, rms: the
    loss the bundled generators were made with), in the API copy and in the editor file; the templates that name
    torchvision's VGG16 (no calibration constants) keep auto."""
    import json

    from hrinv.demo import DemoConfig

    demo = DemoConfig().calibration
    assert demo == "rms"
    stylize = [(name, nid, n) for name, g in wf.api_graphs().items() for nid, n in g.items()
               if n["class_type"] == "HRInv_StylizeFaces"]
    assert {name for name, _, _ in stylize} == {"hrinv_demo_bundled", "hrinv_stylize_photo"}
    for name, nid, node in stylize:
        graph = wf.api_graphs()[name]
        bundled_pair = {graph[node["inputs"][k][0]]["inputs"]["ckpt_name"] for k in ("source", "target")}
        expect = demo if bundled_pair == {wf.BUNDLED_G_S, wf.BUNDLED_G_T} else "auto"
        assert node["inputs"]["calibration"] == expect, name
        shipped = json.loads((wf.API_DIR / f"{name}.json").read_text())
        assert shipped[nid]["inputs"]["calibration"] == expect, name
        ui = json.loads((wf.WORKFLOWS / f"{wf.template_stem(name)}.json").read_text())
        ui_node = next(n for n in ui["nodes"] if str(n["id"]) == nid)
        assert ui_node["widgets_values"][-1] == expect, name            # the last widget of the node
    assert wf.wf_demo_bundled()["3"]["inputs"]["vgg_name"] == wf.BUNDLED_VGG  # the VGG16 that carries constants


def _run_graph(h, graph):
    """Execute an API graph in dependency order with run_node (what the host does, minus caching and the UI)."""
    out, order, seen = {}, [], set()

    def visit(nid):
        if nid in seen:
            return
        seen.add(nid)
        for v in graph[nid]["inputs"].values():
            if isinstance(v, list):
                visit(str(v[0]))
        order.append(nid)

    for nid in graph:
        visit(nid)
    saved = {}
    for nid in order:
        node = graph[nid]
        if node["class_type"] == "SaveImage":
            saved[node["inputs"]["filename_prefix"]] = out[node["inputs"]["images"][0]][node["inputs"]["images"][1]]
            continue
        kwargs = {k: (out[str(v[0])][v[1]] if isinstance(v, list) else v) for k, v in node["inputs"].items()}
        out[nid] = run_node(h.nodes[node["class_type"]], **kwargs)
    return out, saved


def test_bundled_template_runs_and_stylises_the_face(h, monkeypatch):
    import hrinv.pipeline
    from hrinv.demo import DemoConfig
    from hrinv.imageio import read_image

    calibrations, real = [], hrinv.pipeline.stylize
    monkeypatch.setattr(hrinv.pipeline, "stylize",
                        lambda *a, **k: calibrations.append(k["config"].calibration) or real(*a, **k))
    graph = wf.substitute(wf.wf_demo_bundled(), {}, steps=3, lso_steps=2)
    out, saved = _run_graph(h, graph)
    assert calibrations == [DemoConfig().calibration]                        # the demo's loss, as the demo runs it
    photo = read_image(bundled.path("demo_photo.png")).permute(1, 2, 0)      # [H, W, 3]
    result = saved["hrinv/demo_stylised_photo"]
    assert result.shape == (1, *photo.shape)
    mask = out["12"][2][0]                                                   # [H, W] what was replaced
    assert 0.01 < float((mask > 0).float().mean()) < 0.5                     # one face, not the whole photo
    outside = mask == 0
    assert torch.allclose(result[0][outside], photo[outside], atol=1 / 255)
    inside = mask > 0.5
    assert float((result[0][inside] - photo[inside]).abs().mean()) > 0.02   # the face changed
    face = saved["hrinv/demo_stylised_face"]
    assert face.shape == (1, 64, 64, 3)
