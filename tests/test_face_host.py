"""Real ComfyUI (``pytest -m comfyui``, needs COMFYUI_ROOT): the face templates on a photo with two faces.

The generic host tests (tests/test_comfyui_host.py) run every template on random pictures, where Align Faces falls
back to the whole image. Here the content is a real two-face photo from ../shared with ``if_no_face="error"``, so
the detector, the alignment socket and the paste-back run for real inside the host.
"""

import json

import pytest
from conftest import shared_path
from test_comfyui_host import comfy  # noqa: F401  (the module-scoped real-host fixture)

from tools import hrinv_workflows as wf

pytestmark = pytest.mark.comfyui


def _photo_input(comfy_server):  # noqa: F811
    from PIL import Image

    src = shared_path("data", "faces", "id-photos", "couple.jpg")
    with Image.open(src) as im:
        im.convert("RGB").resize((760, 529)).save(comfy_server.root / "input" / "two_faces.jpg")
    return "two_faces.jpg"


def _saved(comfy_server, h, node_id):  # noqa: F811
    from PIL import Image

    out = []
    for img in h["outputs"].get(node_id, {}).get("images", []):
        p = comfy_server.root / "output" / img.get("subfolder", "") / img["filename"]
        with Image.open(p) as im:
            out.append(im.size)
    return out


@pytest.mark.parametrize("name", ["hrinv_stylize_photo", "hrinv_paper_pipeline"])
def test_face_template_on_two_faces(comfy, name):  # noqa: F811
    graph = wf.substitute(json.loads((wf.WORKFLOWS / "api" / f"{name}.json").read_text()), comfy.files,
                          steps=2, size=64, lso_steps=2)
    image = _photo_input(comfy)
    for node in graph.values():
        if node["class_type"] == "LoadImage" and node["inputs"]["image"] == wf.CONTENT_IMAGE:
            node["inputs"]["image"] = image
        if node["class_type"] in ("HRInv_AlignFaces", "HRInv_StylizeFaces"):
            node["inputs"]["if_no_face"] = "error"  # a real detection, no fallback
    h = comfy.wait(comfy.queue(graph))
    errors = [m for m in h["status"]["messages"] if m[0] == "execution_error"]
    assert h["status"]["status_str"] == "success", json.dumps(errors, indent=1)[:4000]
    if name == "hrinv_stylize_photo":
        photo, faces = _saved(comfy, h, "13"), _saved(comfy, h, "14")
    else:
        photo, faces = _saved(comfy, h, "27"), _saved(comfy, h, "24")
    assert photo == [(760, 529)], photo            # the full photo, at its own resolution
    assert faces == [(64, 64), (64, 64)], faces    # both faces found and stylised
    print(f"\n{name}: two faces found, stylised and pasted back into the 760x529 photo")
