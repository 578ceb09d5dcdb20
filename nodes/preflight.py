"""Checks on the whole graph that an inversion node makes before its long optimisation starts.

ComfyUI validates each node on its own widget values; linked inputs are not known then. So a batch mismatch between
the content and the style references (which only Lerp Latents / Local Style Optimisation would meet, after both
1000-step inversions) is looked for here, from the graph the user queued (the hidden PROMPT input): the batch of the
other inversion feeding the same Lerp Latents is counted from the graph where it can be (Load Image = 1 picture,
Image Batch = the sum of its two inputs, Repeat Image Batch = its amount); where it cannot, nothing is said.
"""

from __future__ import annotations

from ._common import NodeError

INVERT = "HRInv_Invert"
LERP_LATENTS = "HRInv_LerpLatents"
LSO = "HRInv_LocalStyleOptimize"


def image_count(graph: dict, link, depth: int = 0):
    """Number of images that a link to an IMAGE output carries, when the graph alone tells (else None)."""
    if not isinstance(link, list) or depth > 50:
        return None
    node = graph.get(str(link[0]))
    if node is None:
        return None
    ct, inp = node.get("class_type"), node.get("inputs", {})
    if ct == "LoadImage" and link[1] == 0:
        return 1          # a still picture; a multi-frame file (GIF) would give more, so only check equal-or-one
    if ct == "ImageBatch":
        a, b = image_count(graph, inp.get("image1"), depth + 1), image_count(graph, inp.get("image2"), depth + 1)
        return None if a is None or b is None else a + b
    if ct == "RepeatImageBatch":
        n = image_count(graph, inp.get("image"), depth + 1)
        amount = inp.get("amount")
        return n * amount if isinstance(n, int) and isinstance(amount, int) else None
    if ct == INVERT and link[1] == 1:
        return image_count(graph, inp.get("image"), depth + 1)
    return None


def _title(graph: dict, nid: str) -> str:
    node = graph[nid]
    return f"'{node.get('_meta', {}).get('title') or node['class_type']}' (node {nid})"


def check_style_batches(prompt, unique_id, own_batch: int) -> None:
    """Raise NodeError before the inversion when its latents are to be mixed with a batch they cannot pair with."""
    if not isinstance(prompt, dict) or unique_id is None or str(unique_id) not in prompt:
        return
    me = str(unique_id)
    for nid, node in prompt.items():
        if not isinstance(node, dict) or node.get("class_type") != LERP_LATENTS:
            continue
        inp = node.get("inputs", {})
        for mine, other in (("source", "target"), ("target", "source")):
            link, other_link = inp.get(mine), inp.get(other)
            if not (isinstance(link, list) and str(link[0]) == me and link[1] == 0 and isinstance(other_link, list)):
                continue
            src = prompt.get(str(other_link[0]), {})
            if src.get("class_type") != INVERT:
                continue
            n_other = image_count(prompt, src.get("inputs", {}).get("image"))
            if n_other is None or n_other == own_batch or 1 in (n_other, own_batch):
                continue
            raise NodeError(
                f"HRInversion: Invert Image: stopped before optimising. This node inverts {own_batch} images, and "
                f"{_title(prompt, nid)} will mix them item by item with the {n_other} images inverted by "
                f"{_title(prompt, str(other_link[0]))}; {own_batch} and {n_other} do not pair up. Give both "
                f"inversions the same number of images, or give one of them a single image (it is then used for "
                f"all).")
