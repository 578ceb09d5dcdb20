"""IDRetrievalScore: does each stylised face still look most like its own content face? (the paper's ID metric)"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from . import _comfy
from ._common import CATEGORY, NodeError, check_image, guarded, parse_int_list
from .types import FACE_EMBEDDER

THUMB = 128


def content_labels(text: str, n_content: int, n_stylised: int) -> list:
    """Which content image each stylised image came from. Explicit list, or by default: one-to-one when the
    batches are equal, else consecutive groups (content 0's stylisations first), else round-robin."""
    labels = parse_int_list(text, "content_index")
    if labels:
        if len(labels) != n_stylised:
            raise NodeError(f"'content_index' lists {len(labels)} entries for {n_stylised} stylised images; give one "
                            f"content number (0-based) per stylised image, e.g. '0, 0, 1, 1'.")
        bad = [i for i in labels if not 0 <= i < n_content]
        if bad:
            raise NodeError(f"'content_index' has {bad}, but there are only {n_content} content images (0.."
                            f"{n_content - 1}).")
        return labels
    from hrinv.metrics.id_retrieval import default_labels

    return default_labels(n_content, n_stylised)


class IDRetrievalScore(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HRInv_IDRetrievalScore",
            display_name="HRInversion: ID Retrieval Score",
            category=f"{CATEGORY}/metrics",
            description="The paper's identity metric: embed the content faces and the stylised faces with a "
                        "face-recognition network; a stylised face is a hit when its nearest content face is the one "
                        "it was made from. Outputs the hit rate (top-1), a per-image report, and a picture of each "
                        "stylised face next to its own content and its nearest match (green = hit, red = miss).",
            inputs=[
                io.Image.Input("content", tooltip="The content faces (aligned), one per identity."),
                io.Image.Input("stylised", tooltip="The stylised faces made from them (any number per content)."),
                FACE_EMBEDDER.Input("face_embedder", tooltip="Face-embedding network (from Load Face Embedder)."),
                io.String.Input("content_index", default="",
                                tooltip="Which content (0-based) each stylised image came from, e.g. '0, 0, 1, 1'. "
                                        "Empty: one-to-one when both batches have the same size, else consecutive "
                                        "groups (all of content 0 first)."),
                io.Float.Input("threshold", default=0.0, min=0.0, max=4.0, step=0.01,
                               tooltip="Also report the thresholded score: a nearest match farther than this "
                                       "squared distance counts as a miss (paper: 1.5 for ArcFace). 0 = the "
                                       "network's default (1.5 ArcFace, 0.16 dlib)."),
            ],
            outputs=[io.Float.Output(display_name="top1", tooltip="Fraction of stylised faces whose nearest content "
                                                                  "is their own (1.0 = all)."),
                     io.String.Output(display_name="report", tooltip="Per-image table: own content, nearest "
                                                                     "content, distances, hit."),
                     io.Image.Output(display_name="matches", tooltip="One row per stylised face: stylised | own "
                                                                     "content | nearest content.")],
        )

    @classmethod
    @guarded("HRInversion: ID Retrieval Score")
    def execute(cls, content, stylised, face_embedder, content_index="", threshold=0.0) -> io.NodeOutput:
        check_image(content, "content")
        check_image(stylised, "stylised")
        labels = content_labels(content_index, content.shape[0], stylised.shape[0])
        from hrinv.metrics.id_retrieval import id_retrieval, match_picture

        emb = face_embedder.model
        with _comfy.device_session(emb) as device, torch.no_grad(), _comfy.no_inference_mode():
            net = _comfy.device_copy(emb, device)
            to_bchw = lambda x: x[..., :3].permute(0, 3, 1, 2).float().clone()
            res = id_retrieval(to_bchw(content), to_bchw(stylised), labels, embedder=net,
                               threshold=float(threshold) or None)
        grid = match_picture(content.permute(0, 3, 1, 2), stylised.permute(0, 3, 1, 2), res, thumb=THUMB)
        grid = grid.permute(0, 2, 3, 1).contiguous().to(_comfy.intermediate_device())  # [M, H, W, 3]
        return io.NodeOutput(float(res.top1), res.report(), grid)

NODES = [IDRetrievalScore]
