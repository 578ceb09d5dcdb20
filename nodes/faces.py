"""Faces in photos: AlignFaces (detect + FFHQ-align every face), PasteFaces (warp stylised faces back into the
photo), StylizeFaces (the whole paper pipeline on a photo, via ``hrinv.stylize``).

The FACE_ALIGNMENT socket carries the transforms from AlignFaces to PasteFaces (and can be saved as JSON with
``FaceAlignment.to_json``). The other nodes keep accepting already aligned images: AlignFaces is optional.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from comfy_api.latest import io

from . import _comfy
from ._common import CATEGORY, NodeError, fit_to_resolution, guarded, to_comfy, to_lib
from .invert import CALIBRATIONS, PRECISIONS, VGG_BYTES_PER_PIXEL
from .types import GENERATOR, VGG

FACE_ALIGNMENT = io.Custom("HRINV_FACE_ALIGNMENT")

SELECT = ["all", "largest", "index"]
PADDING = ["reflect", "edge", "zeros"]
NO_FACE = ["error", "use whole image"]


@dataclass(frozen=True, eq=False)
class FaceAlignmentHandle:
    """The alignments of a batch of photos: ``alignments[p]`` is the ``hrinv.FaceAlignment`` of photo p (its crops
    dropped); the aligned faces came out photo by photo, in order."""

    alignments: tuple

    @property
    def num_faces(self) -> int:
        return sum(len(a) for a in self.alignments)

    def __repr__(self) -> str:
        return f"HRInvFaceAlignment({len(self.alignments)} photo(s), {self.num_faces} face(s))"


def _photos(image) -> list:
    """IMAGE [B, H, W, C] -> list of [3, H, W] in [0, 1]."""
    x = to_lib(image, name="image")
    return [(xi + 1) / 2 for xi in x]


def _select(mode, index):
    return int(index) if mode == "index" else mode


class AlignFaces(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HRInv_AlignFaces",
            display_name="HRInversion: Align Faces (FFHQ)",
            category=CATEGORY,
            description="Finds every face in the photo(s) (MTCNN, bundled weights, pure PyTorch) and crops each one "
                        "the way FFHQ was aligned (eyes and mouth -> rotated square), which is what StyleGAN face "
                        "generators expect. Faces come out as one batch, largest first. Connect 'alignment' to Paste "
                        "Faces to put the stylised faces back into the photo.",
            inputs=[
                io.Image.Input("image", tooltip="Photo(s) with faces, any size. A batch is aligned photo by photo."),
                io.Int.Input("size", default=1024, min=64, max=4096, step=8,
                             tooltip="Side of the aligned crops; use the generator's resolution (1024 for FFHQ)."),
                io.Combo.Input("faces", options=SELECT, default="all",
                               tooltip="Which faces: all (largest first), the largest, or the one at 'face_index'."),
                io.Int.Input("face_index", default=0, min=0, max=255,
                             tooltip="With faces = index: which face (0 = the largest)."),
                io.Int.Input("min_face", default=32, min=8, max=4096,
                             tooltip="Ignore faces smaller than this many pixels (face box side in the photo)."),
                io.Combo.Input("padding", options=PADDING, default="reflect",
                               tooltip="How the photo is extended where a crop leaves it: reflect (FFHQ: mirrored, "
                                       "blurred, faded to the mean colour), edge, or zeros (black)."),
                io.Combo.Input("if_no_face", options=NO_FACE, default="error",
                               tooltip="error = stop with a message when a photo has no face; use whole image = "
                                       "treat the centred square of the photo as the face (drawings, pre-cropped "
                                       "faces)."),
                io.Int.Input("detect_max_side", default=1280, min=256, max=8192, step=8,
                             tooltip="Advanced: detection runs on a copy of the photo at most this big (memory "
                                     "stays bounded for huge photos; faces smaller than ~20 px in the copy are "
                                     "missed)."),
            ],
            outputs=[io.Image.Output(display_name="faces", tooltip="Aligned faces [N, size, size, 3]."),
                     FACE_ALIGNMENT.Output(display_name="alignment",
                                           tooltip="Where each face came from (for Paste Faces)."),
                     io.Mask.Output(display_name="mask", tooltip="Per face: 1 where the crop shows the photo, 0 where "
                                                                 "it is padding (feed it to Invert's mask).")],
        )

    @classmethod
    @guarded("HRInversion: Align Faces")
    def execute(cls, image, size=1024, faces="all", face_index=0, min_face=32, padding="reflect",
                if_no_face="error", detect_max_side=1280) -> io.NodeOutput:
        from hrinv.errors import NoFaceFoundError
        from hrinv.face import align_faces, whole_image_alignment

        photos = _photos(image)
        bar = _comfy.progress(len(photos))
        crops, masks, aligns = [], [], []
        with _comfy.device_session() as device, _comfy.no_inference_mode():
            for i, photo in enumerate(photos):
                try:
                    al = align_faces(photo, size=int(size), select=_select(faces, face_index),
                                     min_size=float(min_face), padding=padding, device=device,
                                     max_side=int(detect_max_side))
                except NoFaceFoundError as e:
                    if if_no_face != "use whole image":
                        raise NoFaceFoundError(f"photo {i + 1} of {len(photos)}: {e} Or set if_no_face to 'use "
                                               f"whole image'.") from None
                    al = whole_image_alignment(photo, size=int(size), device=device)
                crops.append(al.crops.cpu())
                masks.append(al.masks[:, 0].cpu())
                aligns.append(al.select(range(len(al))))
                bar(i + 1, len(photos))
        for a in aligns:
            a.crops, a.masks = None, None  # the handle carries transforms only; the pixels travel on 'faces'
        return io.NodeOutput(to_comfy(torch.cat(crops)), FaceAlignmentHandle(tuple(aligns)),
                             torch.cat(masks).to(_comfy.intermediate_device()))


class PasteFaces(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HRInv_PasteFaces",
            display_name="HRInversion: Paste Faces Back",
            category=CATEGORY,
            description="Warps (stylised) faces back into the photo they were aligned from, at the photo's full "
                        "resolution, with a soft edge and optional colour matching. Outputs the photo and the mask "
                        "of what was replaced (chain it with inpainting or crop-and-stitch nodes).",
            inputs=[
                io.Image.Input("photo", tooltip="The photo(s) given to Align Faces."),
                io.Image.Input("faces", tooltip="One face per aligned face, in the same order (any square size). A "
                                                "multiple (e.g. one set per style reference) gives one photo per set."),
                FACE_ALIGNMENT.Input("alignment", tooltip="The alignment output of Align Faces."),
                io.Float.Input("feather", default=0.1, min=0.0, max=0.5, step=0.01,
                               tooltip="Width of the soft edge, as a fraction of the face crop (0 = hard edge)."),
                io.Float.Input("color_match", default=0.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Match the colour and contrast of each face's centre to the original face "
                                       "(0 = off, 1 = full)."),
                io.Combo.Input("mask_shape", options=["square", "ellipse"], default="square",
                               tooltip="Paste the whole aligned square, or only the ellipse inscribed in it."),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The photo(s) with the faces pasted in."),
                     io.Mask.Output(display_name="mask", tooltip="How much of each pixel was replaced (0..1).")],
        )

    @classmethod
    @guarded("HRInversion: Paste Faces Back")
    def execute(cls, photo, faces, alignment, feather=0.1, color_match=0.0, mask_shape="square") -> io.NodeOutput:
        from hrinv.face import paste_back

        photos = _photos(photo)
        crops = to_lib(faces, name="faces")                                               # [K, 3, S, S]
        aligns = alignment.alignments
        if len(photos) != len(aligns):
            raise NodeError(f"'photo' has {len(photos)} image(s) but the alignment was made on {len(aligns)}; connect "
                            f"the same photo(s) that went into Align Faces.")
        m = alignment.num_faces
        if m == 0 or crops.shape[0] % m:
            raise NodeError(f"'faces' has {crops.shape[0]} image(s) but Align Faces found {m} face(s); give one face "
                            f"per aligned face (or a multiple: one set per style).")
        sets = crops.shape[0] // m
        outs, masks = [], []
        bar = _comfy.progress(sets * len(photos))
        with _comfy.device_session() as device, _comfy.no_inference_mode():
            for s in range(sets):
                start = s * m
                for p, (ph, al) in enumerate(zip(photos, aligns)):
                    n = len(al)
                    img, mask = paste_back(ph, crops[start:start + n], al, feather=float(feather),
                                           color_match=float(color_match), mask_shape=mask_shape, device=device)
                    start += n
                    outs.append(img.cpu())
                    masks.append(mask.cpu())
                    bar(s * len(photos) + p + 1, sets * len(photos))
        shapes = {tuple(o.shape) for o in outs}
        if len(shapes) > 1:
            raise NodeError("the photos of the batch have different sizes; paste them back one photo at a time.")
        return io.NodeOutput(to_comfy(torch.stack(outs) * 2 - 1),
                             torch.stack(masks).to(_comfy.intermediate_device()))


class StylizeFaces(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="HRInv_StylizeFaces",
            display_name="HRInversion: Stylise Every Face in a Photo",
            category=CATEGORY,
            description="The whole HRInversion pipeline in one node: aligns every face of the photo, inverts it in "
                        "G_s (Eq. 5), inverts the style reference in G_t, mixes generators and latents (Eq. 6/7), "
                        "runs Local Style Optimisation (Eq. 8), renders, and pastes the stylised faces back into "
                        "the photo. The step-by-step nodes do the same with every knob exposed.",
            inputs=[
                io.Image.Input("photo", tooltip="A photo with one or more faces (the first image of a batch)."),
                io.Image.Input("reference", tooltip="Aligned style reference image(s); one output photo per "
                                                    "reference."),
                GENERATOR.Input("source", tooltip="Source generator G_s (e.g. FFHQ)."),
                GENERATOR.Input("target", tooltip="Target generator G_t, fine-tuned from G_s."),
                VGG.Input("vgg", tooltip="VGG16 for the perceptual losses."),
                io.Int.Input("steps", default=1000, min=1, max=10000, tooltip="Inversion steps (paper: 1000)."),
                io.Int.Input("lso_steps", default=50, min=0, max=5000, tooltip="LSO steps (paper: 50; 0 = off)."),
                io.String.Input("lambdas", default="paper",
                                tooltip="λ per block (weight of G_t): paper, swap:bN, a number, or one per block."),
                io.Combo.Input("faces", options=["all", "largest"], default="all", tooltip="Which faces to stylise."),
                io.Int.Input("min_face", default=32, min=8, max=4096, tooltip="Ignore faces smaller than this (px)."),
                io.Combo.Input("if_no_face", options=NO_FACE, default="error",
                               tooltip="error = stop with a message when the photo has no face; use whole image = "
                                       "stylise the centred square of the photo instead."),
                io.Float.Input("feather", default=0.1, min=0.0, max=0.5, step=0.01,
                               tooltip="Soft edge of the pasted faces, fraction of the crop."),
                io.Float.Input("color_match", default=0.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Match each stylised face's colours to the original face (0 = off)."),
                io.Int.Input("seed", default=0, min=0, max=2**31 - 1, control_after_generate=False,
                             tooltip="Seed of the inversions and LSO."),
                io.Combo.Input("precision", options=list(PRECISIONS), default="fp32", optional=True,
                               tooltip="Advanced: compute precision of the generators and the loss in the inversions "
                                       "and LSO. fp32 = exact (default). bf16 = 3-4x faster on CPUs with AMX (GPUs not "
                                       "measured; emulated and slower on CPUs without it). fp16 = GPUs, with "
                                       "loss scaling. auto = bf16 (or fp16) on a GPU, fp32 on the CPU."),
                # optional (added later): a saved API graph without it still validates and gets "auto", the
                # behaviour before the input existed; the editor fills the default into older saved workflows
                io.Combo.Input("calibration", options=list(CALIBRATIONS), default="auto", optional=True,
                               tooltip="Advanced: how the VGG16 features are scaled in the perceptual losses of the "
                                       "inversions and LSO. auto = the library default: global for the caffe VGG16 "
                                       "(e.g. the bundled one), raw features for torchvision/timm weights (the "
                                       "paper's loss). global = one factor for every layer (keeps the authors' "
                                       "balance between the layers). rms = one factor per layer (unit RMS on real "
                                       "faces; weighs conv1_2 and conv5_3 more). The bundled G_s/G_t pair was made "
                                       "with rms and hrinv demo uses rms: with the bundled models choose rms (about "
                                       "1 dB better reconstruction). none = raw features. global and rms need a "
                                       "VGG16 with known constants (the bundled caffe one); with torchvision's "
                                       "vgg16-397923af.pth use auto."),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The photo with stylised faces, one per reference."),
                     io.Image.Output(display_name="faces", tooltip="The stylised faces (reference-major)."),
                     io.Mask.Output(display_name="mask", tooltip="What was replaced, one per reference."),
                     FACE_ALIGNMENT.Output(display_name="alignment", tooltip="The faces' transforms.")],
        )

    @classmethod
    @guarded("HRInversion: Stylise Every Face in a Photo")
    def execute(cls, photo, reference, source, target, vgg, steps=1000, lso_steps=50, lambdas="paper", faces="all",
                min_face=32, if_no_face="error", feather=0.1, color_match=0.0, seed=0,
                precision=None, calibration=None) -> io.NodeOutput:
        from hrinv.errors import NoFaceFoundError
        from hrinv.face import align_faces, whole_image_alignment
        from hrinv.pipeline import StylizeConfig, stylize

        calibration = calibration or "auto"
        if calibration in ("rms", "global") and not getattr(vgg.model, "calibration", None):
            raise NodeError(f"HRInversion: Stylise Every Face: calibration is '{calibration}', but the VGG16 {vgg!r} "
                            f"carries no calibration constants (only the caffe VGG16 does, e.g. "
                            f"bundled/vgg16_caffe_conv_fp16.safetensors). Set calibration to 'auto' (or 'none'), or "
                            f"load the caffe VGG16.")
        ph = _photos(photo)[0]
        refs = to_lib(reference, name="reference")
        G_s, G_t = source.model, target.model
        res = G_s.img_resolution
        if tuple(refs.shape[-2:]) != (res, res):
            refs = fit_to_resolution(refs, res, "center crop")
        config = StylizeConfig(lam=lambdas or "paper", steps=int(steps), lso_steps=int(lso_steps), select=faces,
                               min_face=float(min_face), feather=float(feather), color_match=float(color_match),
                               seed=int(seed), precision=precision or "fp32", calibration=calibration)
        total = config.steps + config.steps + refs.shape[0] * config.lso_steps
        with _comfy.device_session(G_s, G_t, vgg.model, working_bytes=2 * res * res * VGG_BYTES_PER_PIXEL) as device:
            try:
                al = align_faces(ph, size=res, select=faces, min_size=float(min_face), device=device)
            except NoFaceFoundError as e:
                if if_no_face != "use whole image":
                    raise NoFaceFoundError(f"{e} Or set if_no_face to 'use whole image'.") from None
                al = whole_image_alignment(ph, size=res, device=device)
            result = stylize(ph, refs, G_s, G_t, vgg.model, config=config, callback=_comfy.progress(total),
                             device=device, alignment=al)
        al = result.alignment.select(range(len(result.alignment)))
        al.crops, al.masks = None, None
        r, n = result.faces.shape[:2]
        stylised = result.faces.reshape(r * n, *result.faces.shape[2:])                 # [R * N, 3, h, w]
        return io.NodeOutput(to_comfy(result.photo * 2 - 1), to_comfy(stylised),
                             result.mask.to(_comfy.intermediate_device()), FaceAlignmentHandle((al,)))


NODES = [AlignFaces, PasteFaces, StylizeFaces]
