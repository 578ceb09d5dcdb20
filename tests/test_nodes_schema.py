"""The pack's V3 schemas: ids, types, tooltips, descriptions, execute signatures; cheap import; folder merging."""

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nodes_harness import REPO, object_info, stubbed_pack

EXPECTED = {"HRInv_LoadStyleINRGAN", "HRInv_Invert", "HRInv_LerpGenerators", "HRInv_LerpLatents",
            "HRInv_LocalStyleOptimize", "HRInv_RenderAnyResolution", "HRInv_IDRetrievalScore", "HRInv_SaveLatent",
            "HRInv_LoadLatent", "HRInv_LoadVGG16", "HRInv_LoadFaceEmbedder"}
EXPECTED |= {"HRInv_Finetune"}  # issue 9 (own line: branches merge cleanly)
EXPECTED |= {"HRInv_AlignFaces", "HRInv_PasteFaces", "HRInv_StylizeFaces"}  # issue 8
EXPECTED |= {"HRInv_LoadDemoImage"}  # issue 9: bundled demo pictures
CORE_TYPES = {"IMAGE", "MASK", "INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    with stubbed_pack(tmp_path_factory.mktemp("comfy")) as ns:
        yield ns


def test_every_node_is_there(h):
    assert set(h.nodes) == EXPECTED


@pytest.mark.parametrize("node_id", sorted(EXPECTED))
def test_schema_is_complete(h, node_id):
    cls = h.nodes[node_id]
    s = cls.GET_SCHEMA()
    assert s.node_id.startswith("HRInv_") and s.display_name and s.category.startswith("HRInversion")
    assert len(s.description) > 40, "every node needs a real description"
    for i in s.inputs:
        assert i.tooltip and len(i.tooltip) > 10, f"{node_id}.{i.id} has no tooltip"
        t = i.get_io_type()
        assert t in CORE_TYPES or t.startswith("HRINV_"), f"{node_id}.{i.id}: type {t} is neither core nor ours"
    for o in s.outputs:
        assert o.tooltip and o.display_name
        assert o.io_type in CORE_TYPES or o.io_type.startswith("HRINV_")
    # execute takes exactly the declared inputs (ComfyUI passes them by name)
    params = [p for p in inspect.signature(cls.execute).parameters if p != "cls"]
    assert params == [i.id for i in s.inputs]
    # optional inputs come last and have defaults in execute
    sig = inspect.signature(cls.execute).parameters
    for i in s.inputs:
        if i.optional:
            assert sig[i.id].default is None


def test_widget_defaults_are_valid(h):
    for node_id, cls in h.nodes.items():
        for i in cls.GET_SCHEMA().inputs:
            d = getattr(i, "default", None)
            if d is None:
                continue
            if getattr(i, "min", None) is not None:
                assert i.min <= d <= i.max, f"{node_id}.{i.id}"
            if getattr(i, "options", None) and not i.id.endswith("_name"):
                assert d in i.options, f"{node_id}.{i.id}"


def test_object_info_is_json(h):
    info = object_info(h.nodes)
    assert info["HRInv_Invert"]["output"] == ["HRINV_LATENT", "IMAGE"]
    assert info["HRInv_Invert"]["input"]["optional"]["mask"][0] == "MASK"
    assert info["HRInv_SaveLatent"]["output_node"] is True
    json.dumps(info)


def test_model_folders_merge_with_extra_model_paths(tmp_path):
    """ComfyUI applies extra_model_paths.yaml before packs load; registering must keep those folders (pitfall P6)."""
    yaml_dir = str(tmp_path / "from_yaml")
    with stubbed_pack(tmp_path / "comfy") as h:
        fp, glue = h.folder_paths, h.node_module._comfy
        fp.folder_names_and_paths["hrinv_stylegan"] = ([yaml_dir], set())      # what the YAML loader leaves
        glue.register_model_folders()
        paths, exts = fp.folder_names_and_paths["hrinv_stylegan"]
        assert paths[0] == yaml_dir and paths[1].endswith(os.path.join("models", "stylegan2"))
        assert {".pkl", ".pt", ".safetensors"} <= exts
        glue.register_model_folders()                                            # idempotent
        assert fp.folder_names_and_paths["hrinv_stylegan"][0] == paths
        os.makedirs(yaml_dir)
        open(os.path.join(yaml_dir, "extra.pkl"), "wb").close()
        open(os.path.join(yaml_dir, "notes.txt"), "w").close()
        assert [f for f in glue.list_files("hrinv_stylegan") if not f.startswith("bundled/")] == ["extra.pkl"]
        msg = glue.not_found_message("hrinv_stylegan", "ffhq.pkl", "Generator checkpoint")
        assert yaml_dir in msg and "(does not exist)" in msg and "extra.pkl" in msg
        assert "python -m hrinv download ffhq.pkl --comfyui" in msg           # says how to fetch it, fetches nothing
        assert "hrinv download" not in glue.not_found_message("hrinv_stylegan", "mine.pkl", "Generator checkpoint")


def test_stubs_are_removed_after_use(tmp_path):
    before = dict(sys.modules)
    with stubbed_pack(tmp_path):
        assert "folder_paths" in sys.modules and sys.modules.get("folder_paths") is not before.get("folder_paths")
    after = dict(sys.modules)
    ours = [k for k in set(before) | set(after) if k.split(".")[0] in ("comfy", "comfy_api", "folder_paths")]
    assert all(before.get(k) is after.get(k) for k in ours)                   # restored exactly as they were


def test_import_is_cheap_and_builds_nothing(tmp_path):
    """Importing the pack (and listing its nodes) must not import the heavy hrinv modules or build a network."""
    code = (
        "import sys, time; sys.path.insert(0, 'tests'); import torch\n"
        "from nodes_harness import stubbed_pack\n"
        f"t = time.perf_counter()\n"
        f"with stubbed_pack({str(tmp_path)!r}) as h:\n"
        "    dt = time.perf_counter() - t\n"
        "    heavy = [m for m in ('hrinv.inversion', 'hrinv.lso', 'hrinv.generator.stylegan2', 'hrinv.losses.vgg',\n"
        "             'hrinv.faceid', 'hrinv.rendering', 'hrinv.io.checkpoints') if m in sys.modules]\n"
        "    print(len(h.nodes), heavy, dt)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    n, heavy, dt = out.stdout.split(" ", 1)[0], out.stdout.split("[", 1)[1].split("]")[0], out.stdout.split()[-1]
    assert int(n) == len(EXPECTED) and heavy == "", out.stdout
    assert float(dt) < 5.0


def test_nodes_doc_is_current():
    from tools import nodes_doc

    text = nodes_doc.DOC.read_text()
    assert nodes_doc.render_doc(text) == text, "run python tools/nodes_doc.py"


def test_pack_uses_its_bundled_hrinv_over_an_installed_one(tmp_path):
    """A different ``hrinv`` installed in site-packages must not replace the copy the nodes were written against."""
    site = tmp_path / "site" / "hrinv"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("__version__ = '0.0.0-other'\n")
    code = (
        "import sys\n"
        f"sys.path[:0] = [{str(tmp_path / 'site')!r}, {str(REPO / 'tests')!r}]\n"
        "from nodes_harness import stubbed_pack\n"
        f"with stubbed_pack({str(tmp_path / 'base')!r}):\n"
        "    import hrinv\n"
        "    print(hrinv.__file__)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).resolve() == (REPO / "hrinv" / "__init__.py").resolve(), out.stdout


def test_pack_says_which_copy_it_loaded(tmp_path, caplog):
    import logging

    import hrinv

    saved = list(getattr(hrinv, "_comfy_pack_dirs", []))
    try:
        with caplog.at_level(logging.INFO), stubbed_pack(tmp_path):
            pass
        recs = [r for r in caplog.records if "nodes from" in r.getMessage()]
        assert recs and f"nodes from {REPO / 'nodes'}, hrinv from {REPO / 'hrinv'}" in recs[-1].getMessage()
        assert recs[-1].name.endswith(".nodes"), recs[-1].name  # a module-named logger (the package's __name__)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "another copy" in r.getMessage()]
        caplog.clear()
        hrinv._comfy_pack_dirs = [Path("/somewhere/else/custom_nodes/hrinversion/nodes")]
        with caplog.at_level(logging.INFO), stubbed_pack(tmp_path):
            pass
        warn = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert any("another copy of this pack was already loaded from /somewhere/else" in m for m in warn), warn
    finally:
        hrinv._comfy_pack_dirs = saved


def test_display_names_have_one_style(h):
    """'HRInversion: <Title Case words>' for every node, so they sort and read alike in search and the library."""
    import re

    for node_id, cls in h.nodes.items():
        name = cls.GET_SCHEMA().display_name
        assert re.fullmatch(r"HRInversion: [A-Z0-9][^:]*", name), (node_id, name)
        assert "(HRInv)" not in name
