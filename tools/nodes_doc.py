"""Regenerate the node tables of docs/nodes.md from the node schemas (``python tools/nodes_doc.py``).

The text between ``<!-- nodes:begin -->`` and ``<!-- nodes:end -->`` is replaced; everything else is hand-written.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "nodes.md"
ORDER = ["HRInv_LoadStyleINRGAN", "HRInv_LoadVGG16", "HRInv_LoadFaceEmbedder", "HRInv_Invert", "HRInv_LerpGenerators",
         "HRInv_LerpLatents", "HRInv_LocalStyleOptimize", "HRInv_RenderAnyResolution", "HRInv_IDRetrievalScore",
         "HRInv_SaveLatent", "HRInv_LoadLatent"]
ORDER += ["HRInv_Finetune"]  # few-shot G_t (own line: branches merge cleanly)
ORDER += ["HRInv_AlignFaces", "HRInv_PasteFaces", "HRInv_StylizeFaces"]  # faces in photos
ORDER += ["HRInv_LoadDemoImage"]  # the bundled demo pictures
BEGIN, END = "<!-- nodes:begin -->", "<!-- nodes:end -->"


def tables() -> str:
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from nodes_harness import stubbed_pack
    finally:
        sys.path.pop(0)
    out = []
    with tempfile.TemporaryDirectory() as tmp, stubbed_pack(tmp) as h:
        for nid in ORDER:
            s = h.nodes[nid].GET_SCHEMA()
            out += [f"### `{nid}` — {s.display_name}", "", s.description, "",
                    "| input | type | default | what it does |", "|---|---|---|---|"]
            for i in s.inputs:
                t = i.get_io_type()
                if t == "COMBO":
                    files = i.id.endswith("_name") or i.id == "inr_head"
                    t = "COMBO" + (" (files)" if files else f" ({' / '.join(map(str, i.options))})")
                rng = f" [{i.min}, {i.max}]" if getattr(i, "min", None) is not None else ""
                d = getattr(i, "default", None)
                opt = " (optional)" if i.optional else ""
                out.append(f"| `{i.id}`{opt} | {t}{rng} | {'' if d is None else f'`{d}`'} | {i.tooltip} |")
            out += ["", "| output | type | what it is |", "|---|---|---|"]
            out += [f"| `{o.display_name}` | {o.io_type} | {o.tooltip} |" for o in s.outputs]
            out.append("")
    return "\n".join(out)


def render_doc(text: str) -> str:
    a, b = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:a] + "\n" + tables() + "\n" + text[b:]


if __name__ == "__main__":
    DOC.write_text(render_doc(DOC.read_text()))
    print("updated", DOC)
