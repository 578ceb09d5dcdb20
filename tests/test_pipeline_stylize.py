"""hrinv.stylize: the whole pipeline on tiny random generators and a random VGG (fresh clone, no ../shared).

The photo is synthetic and the face positions are given as landmarks (``alignment=``), so detection is not needed
here; tests/test_face_real.py runs the detector on real photos.
"""

import pytest
import torch

import hrinv
from hrinv.errors import InvalidSettingError, NoFaceFoundError, ShapeError
from hrinv.face import FaceDetection, align_faces
from hrinv.pipeline import StylizeConfig, stylize
from nodes_harness import random_vgg, tiny_generators

CANON = torch.tensor([[384.0, 480.0], [640.0, 480.0], [512.0, 600.0], [400.0, 720.0], [624.0, 720.0]])


def _det(cx, cy, scale):
    lm = (CANON - 512) * scale + torch.tensor([cx, cy])
    return FaceDetection(box=torch.cat([lm.min(0).values - 20, lm.max(0).values + 20]), score=0.99, landmarks=lm)


@pytest.fixture(scope="module")
def setup():
    G_s, G_t = tiny_generators()
    g = torch.Generator().manual_seed(1)
    photo = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 16, generator=g), size=(150, 200),
                                            mode="bicubic", align_corners=False)[0].clamp(0, 1)
    ref = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    return G_s, G_t, random_vgg(), photo, ref


def test_photo_in_photo_out(setup):
    G_s, G_t, vgg, photo, ref = setup
    al = align_faces(photo, size=64, detections=[_det(60, 70, 0.1), _det(140, 80, 0.12)], min_size=10)
    calls, stages = [], []
    cfg = StylizeConfig(steps=2, lso_steps=2, lam=[0.2, 0.2, 0.2, 0.7, 0.7], feather=0.1)
    res = stylize(photo, ref, G_s, G_t, vgg, config=cfg, alignment=al,
                  callback=lambda s, t, p: calls.append((s, t)), on_stage=lambda label, n: stages.append(label))
    assert res.faces.shape == (2, 2, 3, 64, 64) and res.mixed.shape == res.faces.shape
    assert res.photo.shape == (2, 3, 150, 200) and res.mask.shape == (2, 150, 200)
    assert res.content.shape == (2, 3, 64, 64)
    assert len(res.latents) == 2 and res.latents[0].ws.shape[0] == 2
    # untouched outside the pasted faces, changed inside
    out = res.mask[0] == 0
    assert torch.equal(res.photo[0][:, out], photo[:, out])
    assert (res.photo[0][:, res.mask[0] > 0.99] - photo[:, res.mask[0] > 0.99]).abs().mean() > 0.01
    # one overall progress bar: 2 + 2 + 2 references x 2 LSO steps
    assert calls[-1] == (8, 8) and all(t == 8 for _, t in calls)
    assert len(stages) == 4 and stages[0].startswith("invert 2 face")
    assert len(res.metrics["content_psnr"]) == 2 and res.metrics["lso"][0]["d_h_after"] is not None
    assert res.config["steps"] == 2 and res.config["lso_config"]["steps"] == 2


def test_pre_aligned_and_errors(setup):
    G_s, G_t, vgg, photo, ref = setup
    faces = torch.rand(1, 3, 80, 80, generator=torch.Generator().manual_seed(2)) * 2 - 1  # resized to 64
    res = stylize(faces, ref[:1], G_s, G_t, vgg, config=StylizeConfig(steps=1, lso_steps=0, width=48, height=32),
                  align=False, paste=False)
    assert res.faces.shape == (1, 1, 3, 32, 48) and res.photo is None and res.alignment is None
    with pytest.raises(InvalidSettingError, match="align=True"):
        stylize(faces, ref, G_s, G_t, vgg, align=False, paste=True)
    with pytest.raises(InvalidSettingError, match="square"):
        stylize(photo, ref, G_s, G_t, vgg, config=StylizeConfig(width=64, height=32))
    with pytest.raises(ShapeError, match=r"\[-1, 1\]"):
        stylize(faces * 3, ref, G_s, G_t, vgg, align=False, paste=False)
    with pytest.raises(InvalidSettingError):
        StylizeConfig(steps=0)
    blank = torch.full((3, 90, 120), 0.5)
    with pytest.raises(NoFaceFoundError):
        hrinv.stylize(blank, ref, G_s, G_t, vgg, config=StylizeConfig(steps=1, lso_steps=0))


def test_calibration_reaches_both_losses(setup, monkeypatch):
    import hrinv.losses as losses

    G_s, G_t, vgg, photo, ref = setup
    faces = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with pytest.raises(InvalidSettingError, match="calibration"):
        StylizeConfig(calibration="bogus")
    # the random VGG carries no measured constants: "rms" must reach the loss and be refused there
    with pytest.raises(InvalidSettingError, match="measured constants"):
        stylize(faces, ref[:1], G_s, G_t, vgg, config=StylizeConfig(steps=1, lso_steps=1, calibration="rms"),
                align=False, paste=False)
    built = []

    class Spy(losses.PerceptualLoss):
        def __init__(self, *a, **k):
            built.append((k.get("layers"), k.get("calibration")))
            super().__init__(*a, **k)

    monkeypatch.setattr(losses, "PerceptualLoss", Spy)
    stylize(faces, ref[:1], G_s, G_t, vgg, config=StylizeConfig(steps=1, lso_steps=1, calibration={2: 3.0}),
            align=False, paste=False)
    assert built == [("conv", {2: 3.0}), ("high", {2: 3.0})]


def test_given_reference_latent_skips_the_inversion_and_changes_nothing(setup, monkeypatch):
    """reference_latent= (the codes of an earlier result): same faces, codes, renders and metrics bit for bit, and the
    reference is not inverted again (one invert call, the contents', instead of two)."""
    import hrinv.inversion

    G_s, G_t, vgg, photo, ref = setup
    faces = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    cfg = StylizeConfig(steps=2, lso_steps=1, lam=[0.2, 0.2, 0.2, 0.7, 0.7], seed=4)
    first = stylize(faces, ref[:1], G_s, G_t, vgg, config=cfg, align=False, paste=False)
    real, calls, steps = hrinv.inversion.invert, [], []
    monkeypatch.setattr(hrinv.inversion, "invert", lambda G, t, *a, **k: calls.append(G) or real(G, t, *a, **k))
    again = stylize(faces, ref[:1], G_s, G_t, vgg, config=cfg, align=False, paste=False,
                    reference_latent=first.reference_latent, callback=lambda s, t, p: steps.append((s, t)))
    assert calls == [G_s]  # only the contents were inverted
    assert steps[-1] == (2 + 1, 2 + 1)  # the progress total leaves out the reference inversion
    for a, b in ((first.faces, again.faces), (first.mixed, again.mixed), (first.reference_image, again.reference_image),
                 (first.latents[0].ws, again.latents[0].ws), (first.content_image, again.content_image)):
        assert torch.equal(a, b)
    assert first.metrics["reference_psnr"] == again.metrics["reference_psnr"]
    assert first.metrics["lso"] == again.metrics["lso"]
    assert again.config["inversion_reference"] == first.config["inversion_reference"]
    with pytest.raises(ShapeError, match="one W\\+ code per reference"):
        stylize(faces, ref, G_s, G_t, vgg, config=cfg, align=False, paste=False,
                reference_latent=first.reference_latent)
    with pytest.raises(InvalidSettingError, match="another generator"):
        stylize(faces, ref[:1], G_s, G_s, vgg, config=cfg, align=False, paste=False,
                reference_latent=first.reference_latent)
