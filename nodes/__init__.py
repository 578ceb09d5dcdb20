"""The HRInversion node pack (ComfyUI V3 schema).

Nodes are thin: they convert ComfyUI types at the boundary, pick the device, wire progress/preview/Cancel, and call
:mod:`hrinv`, where the work happens. ``_comfy.py`` is the only module that touches ComfyUI internals. Importing the
pack is cheap: no network is built and no weights are read until a node runs.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def _ensure_hrinv() -> None:
    """Make the ``hrinv`` library next to this pack importable under its own name, without touching sys.path.

    ComfyUI imports a pack by file location, so the repository root is not on sys.path. The bundled copy is the one
    these nodes were written against, so it is registered as the ``hrinv`` package even when another ``hrinv`` is
    pip-installed. Only when something imported ``hrinv`` before the pack is that module kept (it cannot be swapped
    under its users); a warning says so when it is not the bundled copy and its version differs.
    """
    bundled = Path(__file__).resolve().parents[1] / "hrinv"
    loaded = sys.modules.get("hrinv")
    if loaded is not None:
        origin = Path(getattr(loaded, "__file__", "") or "").resolve().parent
        if origin != bundled and getattr(loaded, "__version__", None) != _bundled_version(bundled):
            log.warning("HRInversion: using the already imported hrinv %s from %s, not the bundled %s from %s; "
                        "nodes may fail if the two differ", getattr(loaded, "__version__", "?"), origin,
                        _bundled_version(bundled), bundled)
        return
    spec = importlib.util.spec_from_file_location("hrinv", bundled / "__init__.py",
                                                  submodule_search_locations=[str(bundled)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["hrinv"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop("hrinv", None)
        raise


def _bundled_version(bundled: Path) -> str | None:
    for line in (bundled / "__init__.py").read_text(encoding="utf-8").splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return None


_ensure_hrinv()


def _announce() -> None:
    """Say which copy of the pack and of the library this ComfyUI loaded (one INFO line), and warn when another
    copy of the pack was already loaded into the same process (e.g. one in custom_nodes/ and one added through
    extra_model_paths.yaml): both register the same node ids, and only one of them can win."""
    hrinv = sys.modules["hrinv"]
    here = Path(__file__).resolve().parent
    lib = Path(getattr(hrinv, "__file__", "") or "").resolve().parent
    others = [p for p in getattr(hrinv, "_comfy_pack_dirs", []) if p != here]
    hrinv._comfy_pack_dirs = [*getattr(hrinv, "_comfy_pack_dirs", []), here]
    log.info("HRInversion %s: nodes from %s, hrinv from %s", getattr(hrinv, "__version__", "?"), here, lib)
    if others:
        log.warning("HRInversion: another copy of this pack was already loaded from %s; the two register the same "
                    "nodes. Keep one copy in custom_nodes/ (or run ComfyUI with --base-directory pointing elsewhere).",
                    ", ".join(map(str, others)))


_announce()

from comfy_api.latest import ComfyExtension

from . import _comfy

_comfy.register_model_folders()

_MODULES = ("loaders", "invert", "interpolate", "local_style", "render", "metrics", "latents")
_MODULES += ("finetune",)  # few-shot G_t (kept on its own line so branches merge cleanly)
_MODULES += ("faces",)  # faces in photos
_MODULES += ("demo",)  # the bundled demo pictures (template with no setup)


def node_list() -> list:
    """Every node class of the pack. A node module that fails to import is logged and skipped, so one broken
    optional part never takes the whole pack down."""
    out = []
    for name in _MODULES:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except Exception:
            log.warning("HRInversion: could not load the nodes in %s.py; they are skipped", name, exc_info=True)
            continue
        out.extend(module.NODES)
    return out


class HRInvExtension(ComfyExtension):
    async def get_node_list(self) -> list:
        return node_list()


async def comfy_entrypoint() -> HRInvExtension:
    return HRInvExtension()
