"""What the Comfy registry and ComfyUI-Manager read from pyproject.toml: the icon and the pack's identity."""

import re
import tomllib
import xml.etree.ElementTree as ET

from nodes_harness import REPO

META = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_icon_is_set_and_is_ours():
    comfy = META["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    icon = comfy["Icon"]
    repo_url = META["project"]["urls"]["Repository"]
    owner_name = repo_url.rstrip("/").split("github.com/")[1]
    m = re.fullmatch(rf"https://raw\.githubusercontent\.com/{re.escape(owner_name)}/main/(.+)", icon)
    assert m, f"Icon should point at a file of this repository ({repo_url}): {icon}"
    path = REPO / m.group(1)
    assert path.exists(), path
    root = ET.parse(path).getroot()                          # the registry wants a square picture, <= 400 px
    w, h = int(root.get("width")), int(root.get("height"))
    assert w == h <= 400
    assert root.get("viewBox") == f"0 0 {w} {h}"


def test_templates_folder_is_published():
    ignored = (REPO / ".comfyignore").read_text().split()
    assert not any(p.strip("/") in ("example_workflows", "docs") for p in ignored)
