"""Detection + alignment + paste-back on real faces from ../shared (skipped without it).

Default suite: a few small cases (a synthetic ground truth on two CelebA-HQ faces, a two-face photo, grey / RGBA /
16-bit / tiny versions of a real photo). ``-m slow``: the whole study of benchmarks/face_alignment_study.py on every
CelebA-HQ face and every id-photo, with thresholds on the distributions (figures in docs/face-alignment.md).
"""

import importlib.util
import math

import numpy as np
import pytest
import torch

import hrinv
from conftest import REPO, shared_path
from hrinv.errors import NoFaceFoundError
from hrinv.imageio import read_image


def _study():
    spec = importlib.util.spec_from_file_location("face_alignment_study",
                                                  REPO / "benchmarks" / "face_alignment_study.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _small(path, side):
    from PIL import Image

    from hrinv.imageio import pil_to_tensor

    with Image.open(path) as im:
        im = im.convert("RGB")
        s = side / max(im.size)
        return pil_to_tensor(im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.LANCZOS))


@pytest.mark.parametrize("name,theta", [("ref_female_030321.jpg", 35.0), ("ref_female_048197.jpg", -28.0)])
def test_rotated_face_is_recovered(name, theta):
    """A known similarity transform is undone: the crop corners land where the transform put them."""
    st = _study()
    face = _small(shared_path("data", "faces", "celebahq", name), 512)  # the aligned crop, at 512
    g = torch.Generator().manual_seed(1)
    bg = torch.nn.functional.interpolate(torch.rand(1, 3, 5, 6, generator=g), size=(480, 640), mode="bicubic",
                                         align_corners=False)[0].clamp(0, 1)
    canvas, A = st.place(face, (480, 640), 260.0, theta, (330.0, 250.0), bg)
    ref = hrinv.align_faces(face, size=128, select="largest", min_size=80)
    al = hrinv.align_faces(canvas, size=128, select="largest", min_size=60)
    assert al.faces[0].angle == pytest.approx(theta + ref.faces[0].angle, abs=3.0)
    S = face.shape[-1]
    q = st.apply(st.invert_affine(A), al.faces[0].quad)
    corners = torch.tensor([[0, 0], [0, S], [S, S], [S, 0]], dtype=torch.float64)
    assert float(torch.linalg.vector_norm(q - corners, dim=1).mean()) / S < 0.05  # within 5 % of the crop side
    assert st.psnr((al.crops[0] + 1) / 2, (ref.crops[0] + 1) / 2) > 18


def test_two_faces_found_largest_first_and_pasted_back():
    photo = _small(shared_path("data", "faces", "id-photos", "couple.jpg"), 800)
    dets = hrinv.detect_faces(photo)
    assert len(dets) == 2 and dets[0].size >= dets[1].size
    for d in dets:
        lm = d.landmarks
        assert lm[0, 0] < lm[1, 0] and lm[3, 1] > lm[0, 1] and lm[4, 1] > lm[1, 1]  # eyes left/right, mouth below
        assert d.box[0] <= lm[:, 0].min() and lm[:, 0].max() <= d.box[2]
    al = hrinv.align_faces(photo, size=256)
    img, mask = hrinv.paste_back(photo, al.crops, al, feather=0.1)
    assert torch.equal(img[:, mask == 0], photo[:, mask == 0])
    psnr = -10 * torch.log10((img - photo)[:, mask > 0].pow(2).mean())
    assert psnr > 30


def test_grey_rgba_16bit_and_tiny_versions_of_a_real_photo(tmp_path):
    from PIL import Image

    src = shared_path("data", "faces", "id-photos", "img1.jpg")
    with Image.open(src) as im:
        im = im.convert("RGB")
        im.thumbnail((500, 500))
        im.convert("L").save(tmp_path / "grey.png")
        rgba = im.convert("RGBA")
        rgba.putalpha(180)
        rgba.save(tmp_path / "rgba.png")
        Image.fromarray(np.asarray(im.convert("L"), dtype=np.uint16) * 257).save(tmp_path / "grey16.png")
        im.resize((36, 48)).save(tmp_path / "tiny.png")
    for name in ("grey.png", "rgba.png", "grey16.png"):
        img = read_image(tmp_path / name)
        al = hrinv.align_faces(img, size=64)
        assert len(al) == 1, name
    with Image.open(tmp_path / "grey16.png") as im16:
        assert im16.mode.startswith("I")
        assert len(hrinv.align_faces(im16, size=64)) == 1  # a PIL image straight in, 16-bit
    with pytest.raises(NoFaceFoundError, match="36x48"):
        hrinv.align_faces(read_image(tmp_path / "tiny.png"), size=64)


@pytest.mark.slow
def test_huge_photo_memory_stays_bounded(tmp_path):
    """20 MP: detection runs on a <= 1280 px copy, the crop on the face's region only."""
    import resource

    photo = torch.nn.functional.interpolate(read_image(shared_path("data", "faces", "id-photos", "img1.jpg"))[None],
                                            size=(3648, 5472), mode="bilinear", align_corners=False)[0].clamp(0, 1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    al = hrinv.align_faces(photo, size=1024)
    grow = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    assert len(al) == 1 and al.faces[0].size > 1500
    assert grow < 1500, f"peak RSS grew by {grow:.0f} MB on a 20 MP photo (the photo itself is 240 MB)"


@pytest.mark.slow
def test_full_study_distributions(tmp_path):
    """Every CelebA-HQ face under a random rotation/scale/translation, every id-photo, dlib identity."""
    import argparse

    shared_path("data", "faces", "celebahq")
    st = _study()
    args = argparse.Namespace(size=512, limit=0)
    syn = st.synth(args, tmp_path)
    s = syn["summary"]
    assert not syn["missed"]
    assert s["corner_err_pct"]["median"] < 2.5 and s["corner_err_pct"]["p95"] < 6
    assert s["roll_err_deg"]["median"] < 1.5 and s["roll_err_deg"]["max"] < 6
    assert s["nme"]["median"] < 5
    assert s["psnr_eq"]["median"] > 20
    assert s["paste_outside_maxdiff"]["max"] == 0 and s["paste_psnr"]["min"] > 35
    shared_path("weights", "dlib_face_recognition_resnet_model_v1.dat")
    real = st.real(args, tmp_path)
    assert real["found"] / real["photos"] > 0.9
    assert real["identity"]["top1"] > 3 * real["identity"]["chance"]
    assert real["faces_per_photo"]["couple.jpg"] == 2
    assert math.isfinite(real["couple_paste"]["psnr_inside"]) and real["couple_paste"]["outside_maxdiff"] == 0
