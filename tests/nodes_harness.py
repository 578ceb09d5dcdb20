"""Load the node pack against the ComfyUI stubs in tests/comfy_stubs, temporarily.

``stubbed_pack(base_dir)`` puts the stub modules into ``sys.modules`` under their ComfyUI names, imports the
repository root as a package the way ComfyUI does (by file location, under a path-like module name), yields a small
namespace with the node classes and the stubs, and afterwards removes every module it added, so no other test sees
a fake ``comfy`` or a pack bound to it. Also: tiny generators / VGG files for the tests, and the workflow checker.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_WEIGHTS = Path(os.environ.get("HRINV_SHARED", REPO.parent / "shared")).resolve() / "weights"
STUBS = Path(__file__).resolve().parent / "comfy_stubs"
STUB_MODULES = {
    "folder_paths": STUBS / "folder_paths.py",
    "comfy": STUBS / "comfy" / "__init__.py",
    "comfy.utils": STUBS / "comfy" / "utils.py",
    "comfy.model_management": STUBS / "comfy" / "model_management.py",
    "comfy.model_patcher": STUBS / "comfy" / "model_patcher.py",
    "comfy_api": STUBS / "comfy_api" / "__init__.py",
    "comfy_api.latest": STUBS / "comfy_api" / "latest" / "__init__.py",
}
PACK_MODULE = str(REPO / "custom_nodes_under_test").replace(".", "_x_")


def _load(name: str, path: Path):
    pkg = path.name == "__init__.py"
    spec = importlib.util.spec_from_file_location(name, path,
                                                  submodule_search_locations=[str(path.parent)] if pkg else None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module


def _ours(name: str) -> bool:
    return name.split(".")[0] in ("comfy", "comfy_api", "folder_paths") or name.startswith(PACK_MODULE)


@contextlib.contextmanager
def stubbed_pack(base_dir):
    """Yield ``SimpleNamespace(pack, nodes, folder_paths, mm, utils, io, node_module)`` with the pack loaded over
    stubs whose folders live under ``base_dir``. Nests: an outer stubbed pack is set aside and restored."""
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if _ours(k)}
    try:
        for name, path in STUB_MODULES.items():
            _load(name, path)
        fp = sys.modules["folder_paths"]
        fp._reset(str(base_dir))
        mm = sys.modules["comfy.model_management"]
        mm.interrupt_current_processing(False)
        pack = _load(PACK_MODULE, REPO / "__init__.py")
        ext = asyncio.run(_node_list(pack))
        nodes = {cls.GET_SCHEMA().node_id: cls for cls in ext}
        yield SimpleNamespace(pack=pack, nodes=nodes, folder_paths=fp, mm=mm, utils=sys.modules["comfy.utils"],
                              io=sys.modules["comfy_api.latest"].io, node_module=sys.modules[PACK_MODULE + ".nodes"])
    finally:
        for name in [k for k in sys.modules if _ours(k)]:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


async def _node_list(pack):
    ext = await pack.comfy_entrypoint()
    return await ext.get_node_list()


def run_node(cls, _hidden=None, **inputs):
    """Call a node the way the host does (under ``torch.inference_mode()``, on a per-run class clone carrying the
    hidden inputs ``_hidden`` such as ``{"prompt": graph, "unique_id": "12"}``, through ``EXECUTE_NORMALIZED`` or,
    for an async execute, ``EXECUTE_NORMALIZED_ASYNC``) and return the outputs tuple."""
    import inspect

    clone = cls.PREPARE_CLASS_CLONE(_hidden or {})
    with torch.inference_mode():
        if inspect.iscoroutinefunction(cls.execute):
            out = asyncio.run(clone.EXECUTE_NORMALIZED_ASYNC(**inputs))
        else:
            out = clone.EXECUTE_NORMALIZED(**inputs)
    return out.args


def object_info(nodes: dict) -> dict:
    """``/object_info``-shaped dict of the pack's nodes (what the workflow checker validates against)."""
    return {nid: json.loads(json.dumps(cls.GET_NODE_INFO_V1(), default=str)) for nid, cls in nodes.items()}


# ----------------------------------------------------------------------------------------------------------------
# Tiny models for the tests (built by our code, seeded; nothing downloaded)

# The seeded random generators / VGG live in conftest.py (shared by every test); re-exported here.
from conftest import TINY_KWARGS, random_vgg, tiny_generators  # noqa: E402,F401


class TinyFaceNet(torch.nn.Module):
    """Stand-in face network for CI without the dlib weights: a fixed random projection of a 16x16 thumbnail."""

    dim = 64
    input_size = (112, 112)

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.proj = torch.nn.Parameter(torch.randn(3 * 16 * 16, self.dim, generator=g), requires_grad=False)

    def forward(self, x):
        x = torch.nn.functional.adaptive_avg_pool2d(x, 16).flatten(1)      # [B, 768]
        return torch.nn.functional.normalize(x @ self.proj, dim=1)          # [B, 64]


def tiny_face_embedder():
    from hrinv.faceid import FaceEmbedder

    return FaceEmbedder(TinyFaceNet(), "irse50", preprocess="paper").eval().requires_grad_(False)


def face_images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """``n`` distinct smooth random pictures as a ComfyUI IMAGE [n, size, size, 3] in 0..1 (not faces: no face
    photos live in the repository)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    img = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    return img.clamp(0, 1).permute(0, 2, 3, 1).contiguous()
