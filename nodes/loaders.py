"""Loader nodes: StyleGAN2 / Style-INR-GAN generators, VGG16 weights, face-embedding networks.

Files are picked from the pack's model folders (``models/stylegan2``, ``models/vgg``, ``models/facerecog`` plus any
folder ``extra_model_paths.yaml`` adds under ``hrinv_stylegan`` / ``hrinv_vgg`` / ``hrinv_faceid``). Loading never
executes code from a file (hrinv's safe loaders). Networks are built outside inference mode so that the
optimisation nodes downstream can back-propagate through them, and are kept on the offload device.
"""

from __future__ import annotations

import os

import torch
from comfy_api.latest import io

from . import _comfy
from ._common import CATEGORY, guarded
from .types import FACE_EMBEDDER, GENERATOR, VGG, FaceEmbedderHandle, GeneratorHandle, VGGHandle

INR_FROM_FILE = "from checkpoint"
INR_NONE = "none"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _check_name(key: str, name: str, what: str):
    """validate_inputs helper: True, or our message listing the folders searched (ComfyUI 0.3.64 does not check
    V3 combo values itself)."""
    if name and _comfy.list_files(key) and name in _comfy.list_files(key):
        return True
    return _comfy.not_found_message(key, name, what)


class LoadStyleINRGAN(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        files = _comfy.list_files("hrinv_stylegan")
        return io.Schema(
            node_id="HRInv_LoadStyleINRGAN",
            display_name="HRInversion: Load Generator (StyleGAN2 / Style-INR-GAN)",
            category=f"{CATEGORY}/loaders",
            description="Load a StyleGAN2 generator from models/stylegan2: NVIDIA stylegan2-ada .pkl (read safely, "
                        "nothing in it is executed), rosinality .pt, or hrinv .safetensors. Optionally attach or drop "
                        "a Style-INR-GAN head (renders any resolution). Outputs the generator for the other nodes.",
            inputs=[
                io.Combo.Input("ckpt_name", options=files,
                               tooltip="Generator checkpoint in models/stylegan2 (.pkl, .pt, .pth, .safetensors), "
                                       "e.g. ffhq.pkl as source and metfaces.pkl as target."),
                io.Combo.Input("inr_head", options=[INR_FROM_FILE, INR_NONE] + files, default=INR_FROM_FILE,
                               tooltip="Style-INR-GAN head: keep the one stored in the checkpoint (if any), drop it, "
                                       "or attach a head saved as its own file in models/stylegan2."),
                io.Combo.Input("which", options=["G_ema", "G"], default="G_ema",
                               tooltip="For NVIDIA .pkl snapshots: the averaged generator G_ema (what everyone uses) "
                                       "or the raw training generator G. Ignored for other formats."),
                io.Combo.Input("dtype", options=list(DTYPES), default="float32",
                               tooltip="Weight precision. float32 is safest for optimisation; half precision saves "
                                       "memory on GPUs that support it."),
            ],
            outputs=[GENERATOR.Output(display_name="generator", tooltip="The loaded generator (kept offloaded "
                                                                         "between nodes).")],
        )

    @classmethod
    def validate_inputs(cls, ckpt_name):
        return _check_name("hrinv_stylegan", ckpt_name, "Generator checkpoint")

    @classmethod
    def fingerprint_inputs(cls, ckpt_name, inr_head, which, dtype):
        sig = _comfy.file_signature("hrinv_stylegan", ckpt_name)
        if inr_head not in (INR_FROM_FILE, INR_NONE):
            sig += "|" + _comfy.file_signature("hrinv_stylegan", inr_head)
        return f"{sig}|{inr_head}|{which}|{dtype}"

    @classmethod
    @guarded("HRInversion: Load Generator")
    async def execute(cls, ckpt_name, inr_head=INR_FROM_FILE, which="G_ema", dtype="float32") -> io.NodeOutput:
        from hrinv.io.checkpoints import load_generator

        path = _comfy.resolve("hrinv_stylegan", ckpt_name, "Generator checkpoint")
        with _comfy.no_inference_mode():
            G = load_generator(path, device=_comfy.offload_device(), dtype=DTYPES[dtype], which=which)
            if inr_head == INR_NONE:
                G.attach_inr(None)
            elif inr_head != INR_FROM_FILE:
                G.attach_inr(_load_inr_head(_comfy.resolve("hrinv_stylegan", inr_head, "INR head"), G, DTYPES[dtype]))
            G.requires_grad_(False).eval()
        return io.NodeOutput(GeneratorHandle(G, os.path.basename(ckpt_name), {"path": path}))
    # execute is async although it never awaits: ComfyUI 0.3.64 runs ready async nodes first, so both generators
    # are loaded (and Lerp Generators, also async, checks that they fit together) before any long inversion starts.


def _load_inr_head(path: str, G, dtype):
    """An INR head stored on its own: an hrinv generator file with an ``inr.*`` part, or a bare head file."""
    from hrinv.io.checkpoints import load_generator

    src = load_generator(path, device=_comfy.offload_device(), dtype=dtype)
    if getattr(src, "inr", None) is None:
        from hrinv.errors import CheckpointFormatError

        raise CheckpointFormatError(f"{os.path.basename(path)} has no INR head (no 'inr.*' weights). Choose "
                                    f"'{INR_FROM_FILE}' or '{INR_NONE}', or a file made by `hrinv fit-inr`.")
    return src.inr


class LoadVGG16(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HRInv_LoadVGG16",
            display_name="HRInversion: Load VGG16 (perceptual loss)",
            category=f"{CATEGORY}/loaders",
            description="Load VGG16 ImageNet weights from models/vgg for HRInversion's full-resolution perceptual "
                        "loss (torchvision vgg16-397923af.pth, timm vgg16.tv_in1k, or a caffe-convention "
                        ".safetensors). Only the conv trunk is used.",
            inputs=[io.Combo.Input("vgg_name", options=_comfy.list_files("hrinv_vgg"),
                                   tooltip="VGG16 weights file in models/vgg, e.g. vgg16-397923af.pth.")],
            outputs=[VGG.Output(display_name="vgg", tooltip="Frozen VGG16 conv trunk for the inversion and LSO "
                                                            "losses.")],
        )

    @classmethod
    def validate_inputs(cls, vgg_name):
        return _check_name("hrinv_vgg", vgg_name, "VGG16 weights")

    @classmethod
    def fingerprint_inputs(cls, vgg_name):
        return _comfy.file_signature("hrinv_vgg", vgg_name)

    @classmethod
    @guarded("HRInversion: Load VGG16")
    def execute(cls, vgg_name) -> io.NodeOutput:
        from hrinv.losses.vgg import load_vgg16

        path = _comfy.resolve("hrinv_vgg", vgg_name, "VGG16 weights")
        with _comfy.no_inference_mode():
            vgg = load_vgg16(path, device=_comfy.offload_device())
        return io.NodeOutput(VGGHandle(vgg, os.path.basename(vgg_name)))


class LoadFaceEmbedder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HRInv_LoadFaceEmbedder",
            display_name="HRInversion: Load Face Embedder",
            category=f"{CATEGORY}/loaders",
            description="Load a face-recognition network from models/facerecog for the ID-retrieval score: ArcFace "
                        "IR-SE50 model_ir_se50.pth (the paper's network) or dlib's "
                        "dlib_face_recognition_resnet_model_v1.dat (CC0-licensed, no extra install).",
            inputs=[io.Combo.Input("model_name", options=_comfy.list_files("hrinv_faceid"),
                                   tooltip="Face-embedding weights in models/facerecog: model_ir_se50.pth "
                                           "(ArcFace) or dlib_face_recognition_resnet_model_v1.dat (dlib).")],
            outputs=[FACE_EMBEDDER.Output(display_name="face_embedder", tooltip="Face-embedding network for the "
                                                                                "ID-retrieval score.")],
        )

    @classmethod
    def validate_inputs(cls, model_name):
        return _check_name("hrinv_faceid", model_name, "Face-embedding weights")

    @classmethod
    def fingerprint_inputs(cls, model_name):
        return _comfy.file_signature("hrinv_faceid", model_name)

    @classmethod
    @guarded("HRInversion: Load Face Embedder")
    def execute(cls, model_name) -> io.NodeOutput:
        from hrinv.faceid import load_face_embedder

        path = _comfy.resolve("hrinv_faceid", model_name, "Face-embedding weights")
        with _comfy.no_inference_mode():
            net = load_face_embedder(path, device=_comfy.offload_device())
        return io.NodeOutput(FaceEmbedderHandle(net, os.path.basename(model_name)))


NODES = [LoadStyleINRGAN, LoadVGG16, LoadFaceEmbedder]
