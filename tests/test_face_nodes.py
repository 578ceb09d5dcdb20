"""Align Faces / Paste Faces Back / Stylise Every Face nodes over the ComfyUI stubs (called like the host does)."""

import pytest
import torch
from nodes_harness import face_images, random_vgg, run_node, stubbed_pack, tiny_generators


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy")
    with stubbed_pack(base) as ns:
        types = ns.node_module.types
        ns.vgg = types.VGGHandle(random_vgg(), "random")
        G_s, G_t = tiny_generators()
        ns.gs = types.GeneratorHandle(G_s, "tiny_s")
        ns.gt = types.GeneratorHandle(G_t, "tiny_t")
        yield ns


def _align(h, img, **kw):
    args = dict(size=64, faces="all", face_index=0, min_face=16, padding="reflect", if_no_face="error",
                detect_max_side=1280)
    args.update(kw)
    return run_node(h.nodes["HRInv_AlignFaces"], image=img, **args)


def test_no_face_is_a_clear_error_or_the_whole_image(h):
    from hrinv.errors import NoFaceFoundError

    img = face_images(1, size=96)  # smooth random pictures, no faces
    with pytest.raises(NoFaceFoundError, match="use whole image"):
        _align(h, img)
    faces, al, mask = _align(h, img, if_no_face="use whole image")
    assert faces.shape == (1, 64, 64, 3) and mask.shape == (1, 64, 64) and float(mask.min()) == 1.0
    assert "1 face" in repr(al)
    # pasting the unchanged crop back gives the photo back (up to two resamplings)
    out, m = run_node(h.nodes["HRInv_PasteFaces"], photo=img, faces=faces, alignment=al, feather=0.0,
                      color_match=0.0, mask_shape="square")
    assert out.shape == img.shape and m.shape == (1, 96, 96)
    assert (out - img).abs().mean() < 0.02
    # two sets of faces -> two photos; a wrong count is refused with a message
    out2, m2 = run_node(h.nodes["HRInv_PasteFaces"], photo=img, faces=torch.cat([faces, 1 - faces]), alignment=al,
                        feather=0.1, color_match=0.0, mask_shape="ellipse")
    assert out2.shape == (2, 96, 96, 3) and m2[0, 0, 0] == 0 and m2[0, 48, 48] == 1


def test_wrong_photo_count_is_refused(h):
    img = face_images(1, size=96)
    faces, al, _ = _align(h, img, if_no_face="use whole image")
    with pytest.raises(Exception, match="photo"):
        run_node(h.nodes["HRInv_PasteFaces"], photo=torch.cat([img, img]), faces=faces, alignment=al)


def _couple(path, size=(570, 397)):
    from PIL import Image

    from hrinv.imageio import pil_to_tensor

    with Image.open(path) as im:
        t = pil_to_tensor(im.convert("RGB").resize(size))
    return t.permute(1, 2, 0)[None]  # IMAGE [1, H, W, 3]


def test_align_and_paste_two_faces(h, two_face_photo):
    img = _couple(two_face_photo)
    faces, al, mask = _align(h, img)
    assert faces.shape == (2, 64, 64, 3) and mask.shape == (2, 64, 64)
    one, al1, _ = _align(h, img, faces="index", face_index=1)
    assert one.shape[0] == 1 and torch.allclose(one[0], faces[1], atol=1e-5)
    out, m = run_node(h.nodes["HRInv_PasteFaces"], photo=img, faces=1 - faces, alignment=al, feather=0.1,
                      color_match=0.0, mask_shape="square")
    assert out.shape == img.shape
    assert torch.allclose(out[0][m[0] == 0], img[0][m[0] == 0], atol=1e-6)
    with pytest.raises(Exception, match="found 2 face"):
        run_node(h.nodes["HRInv_PasteFaces"], photo=img, faces=torch.cat([faces, faces[:1]]), alignment=al)
    assert float((m[0] > 0.99).float().mean()) > 0.1


def test_stylize_faces_node(h, two_face_photo):
    img = _couple(two_face_photo)
    ref = face_images(1, size=64, seed=5)
    photo, faces, mask, al = run_node(h.nodes["HRInv_StylizeFaces"], photo=img, reference=ref, source=h.gs,
                                      target=h.gt, vgg=h.vgg, steps=1, lso_steps=1, lambdas="paper", faces="all",
                                      min_face=16, if_no_face="error", feather=0.1, color_match=0.0, seed=0)
    assert photo.shape == img.shape and faces.shape == (2, 64, 64, 3) and mask.shape == (1, 397, 570)
    assert "2 face" in repr(al)


def test_stylize_faces_precision_widget_reaches_inversions_and_lso(h, monkeypatch):
    """The Stylise Every Face node offers the same precision names as Invert Image, the library and the CLI, and its
    value is the precision of both inversions and of LSO."""
    import hrinv.inversion
    import hrinv.lso
    from hrinv import perf

    widget = next(i for i in h.nodes["HRInv_StylizeFaces"].GET_SCHEMA().inputs if i.id == "precision")
    assert tuple(widget.options) == perf.PRECISIONS and widget.default == "fp32"
    seen = []
    real_inv, real_lso = hrinv.inversion.invert, hrinv.lso.local_style_optimize
    monkeypatch.setattr(hrinv.inversion, "invert",
                        lambda *a, **k: seen.append(("invert", a[3].precision)) or real_inv(*a, **k))
    monkeypatch.setattr(hrinv.lso, "local_style_optimize",
                        lambda *a, **k: seen.append(("lso", a[4].precision)) or real_lso(*a, **k))
    img = face_images(1, size=96)
    ref = face_images(1, size=64, seed=5)
    photo, faces, _, _ = run_node(h.nodes["HRInv_StylizeFaces"], photo=img, reference=ref, source=h.gs, target=h.gt,
                                  vgg=h.vgg, steps=1, lso_steps=1, lambdas="paper", faces="all", min_face=16,
                                  if_no_face="use whole image", feather=0.1, color_match=0.0, seed=0,
                                  precision="bf16")
    assert seen == [("invert", "bf16"), ("invert", "bf16"), ("lso", "bf16")]
    assert photo.shape == img.shape and bool(torch.isfinite(faces).all())


def test_stylize_faces_calibration_widget_reaches_the_losses(h, monkeypatch):
    """The Stylise Every Face node offers the library's calibration names (default auto, the behaviour before the
    input existed); the chosen one is StylizeConfig.calibration and the calibration of both perceptual losses the
    pipeline builds (d_conv of the inversions, d_h of LSO)."""
    import hrinv.losses
    import hrinv.pipeline
    from hrinv.losses.perceptual import CALIBRATIONS

    widget = next(i for i in h.nodes["HRInv_StylizeFaces"].GET_SCHEMA().inputs if i.id == "calibration")
    assert tuple(widget.options) == CALIBRATIONS and widget.default == "auto"
    assert widget.optional                      # an older saved API graph without it still validates
    vgg = h.node_module.types.VGGHandle(random_vgg(calibrated=True), "random, calibrated")
    configs, losses = [], []
    real_stylize, real_loss = hrinv.pipeline.stylize, hrinv.losses.PerceptualLoss

    class SpyLoss(real_loss):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            losses.append((k.get("calibration"), dict(self.calibration)))

    monkeypatch.setattr(hrinv.pipeline, "stylize",
                        lambda *a, **k: configs.append(k["config"].calibration) or real_stylize(*a, **k))
    monkeypatch.setattr(hrinv.losses, "PerceptualLoss", SpyLoss)
    img = face_images(1, size=96)
    ref = face_images(1, size=64, seed=5)
    args = dict(photo=img, reference=ref, source=h.gs, target=h.gt, vgg=vgg, steps=1, lso_steps=1, lambdas="paper",
                faces="all", min_face=16, if_no_face="use whole image", feather=0.1, color_match=0.0, seed=0,
                precision="fp32")
    resolved = {}
    for cal in CALIBRATIONS:
        configs.clear(), losses.clear()
        photo, faces, _, _ = run_node(h.nodes["HRInv_StylizeFaces"], calibration=cal, **args)
        assert configs == [cal] and [c for c, _ in losses] == [cal, cal]       # d_conv and d_h
        assert photo.shape == img.shape and bool(torch.isfinite(faces).all())
        resolved[cal] = losses[0][1]
    assert resolved["rms"] == vgg.model.calibration                            # per tap
    assert len(set(resolved["global"].values())) == 1 and resolved["auto"] == resolved["global"]
    assert resolved["none"] == {} and resolved["rms"] != resolved["global"]
    # an older workflow (no calibration input at all) gets the old behaviour, auto
    configs.clear()
    run_node(h.nodes["HRInv_StylizeFaces"], **args)
    assert configs == ["auto"]


def test_stylize_faces_calibration_needing_constants_is_refused_up_front(h, monkeypatch):
    """rms / global with a VGG16 that carries no constants (torchvision's weights) stop before any work with a
    message naming the widget and what to choose instead; auto and none run with it."""
    import hrinv.pipeline

    called = []
    monkeypatch.setattr(hrinv.pipeline, "stylize", lambda *a, **k: called.append(1))
    args = dict(photo=face_images(1, size=96), reference=face_images(1, size=64, seed=5), source=h.gs, target=h.gt,
                vgg=h.vgg, steps=1, lso_steps=1, lambdas="paper", faces="all", min_face=16,
                if_no_face="use whole image", feather=0.1, color_match=0.0, seed=0, precision="fp32")
    assert h.vgg.model.calibration is None
    for cal in ("rms", "global"):
        with pytest.raises(Exception, match=f"calibration is '{cal}'.*'auto'"):
            run_node(h.nodes["HRInv_StylizeFaces"], calibration=cal, **args)
    assert called == []
