"""FaceEmbedder with the dlib network: input forms, preprocessing on aligned faces, errors.

Plumbing tests (input forms, errors, precision) use dlib's network with seeded random weights (``tests/dlib_dat.py``);
the tests that compare with dlib's own descriptors need the real file in ``../shared``."""

import numpy as np
import pytest
import torch
from conftest import fixture_path, shared_path

from hrinv.errors import ShapeError, WeightsNotFoundError
from hrinv.faceid import load_face_embedder
from hrinv.faceid.preprocess import crop_box, preprocess
from hrinv.imageio import read_image


@pytest.fixture(scope="module")
def emb(dlib_random_dat):
    """Found by name in a folder, as users load it; random weights."""
    return load_face_embedder("dlib", search_dirs=[dlib_random_dat.parent])


@pytest.fixture(scope="module")
def emb_real():
    dat = shared_path("weights", "dlib_face_recognition_resnet_model_v1.dat")
    return load_face_embedder("dlib", search_dirs=[dat.parent])


def test_describes_itself(emb):
    d = emb.describe()
    assert emb.dim == 128 and emb.name == "dlib" and emb.preprocess == "dlib" and emb.threshold == pytest.approx(0.16)
    assert d["weights"].endswith(".dat") and "150x150" in d["preprocess_description"]


def test_aligned_faces_land_on_dlib_chips(emb_real):
    """The 'dlib' crop of a CelebA-HQ-aligned image gives almost dlib's own descriptor (from its detected chip)."""
    emb = emb_real
    z = np.load(fixture_path("dlib_face", "chips_and_descriptors.npz"), allow_pickle=False)
    ref = torch.nn.functional.normalize(torch.from_numpy(z["descriptors"]), dim=1)  # [12, 128]
    imgs = [read_image(shared_path("data", "faces", "celebahq", str(n))) for n in z["names"][:6]]
    e = emb.embed(imgs)  # a list of [3, 1024, 1024]
    d = torch.cdist(e, ref) ** 2  # [6, 12]
    assert d.diagonal().max() < 0.03  # same face, our crop vs dlib's landmark chip
    assert torch.equal(d.argmin(dim=1), torch.arange(6))
    torch.testing.assert_close(e.norm(dim=1), torch.ones(6), atol=1e-5, rtol=0)


def test_chip_mode_and_raw_descriptors(emb_real):
    emb = emb_real
    z = np.load(fixture_path("dlib_face", "chips_and_descriptors.npz"), allow_pickle=False)
    chips = torch.from_numpy(z["chips"][:2]).permute(0, 3, 1, 2)  # uint8 [2, 3, 150, 150]
    chip_emb = load_face_embedder(emb.meta["path"], preprocess="chip")
    raw = chip_emb.embed(chips, normalize=False)
    assert (raw - torch.from_numpy(z["descriptors"][:2])).abs().max() < 1e-4


def test_input_forms_agree(emb):
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    a = emb.embed(x, batch_size=1)  # a batch tensor, one image per pass
    b = emb.embed([x[0], torch.rand(3, 200, 180), x[1]])  # a list of mixed sizes
    c = emb.embed((x[0] * 255).round().to(torch.uint8))  # one uint8 [3, H, W]
    assert a.shape == (2, 128) and b.shape == (3, 128) and c.shape == (1, 128)
    torch.testing.assert_close(b[[0, 2]], a, atol=1e-5, rtol=1e-4)
    assert (a[0] - c[0]).abs().max() < 0.05
    grey = emb.embed(x[:1, :1])  # [1, 1, H, W] is replicated to RGB
    torch.testing.assert_close(grey, emb.embed(x[:1, :1].expand(-1, 3, -1, -1)))
    rgba = emb.embed(torch.cat([x[:1], torch.ones(1, 1, 128, 128)], dim=1))  # opaque alpha: same as RGB
    torch.testing.assert_close(rgba, a[:1], atol=1e-5, rtol=1e-4)


def test_bad_inputs_say_what_to_do(emb):
    with pytest.raises(ShapeError, match="movedim"):
        emb.embed(torch.rand(1, 128, 128, 3))
    with pytest.raises(ShapeError, match=r"\(x \+ 1\) / 2"):
        emb.embed(torch.rand(1, 3, 128, 128) * 2 - 1)
    with pytest.raises(ShapeError, match="too small"):
        emb.embed(torch.rand(1, 3, 40, 40))
    with pytest.raises(ValueError, match="does not apply"):
        load_face_embedder(emb.meta["path"], preprocess="paper")
    with pytest.raises(WeightsNotFoundError, match="HRINV_FACEID_DIR"):
        load_face_embedder("dlib", search_dirs=[])


def test_crop_box_replicates_edges():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = crop_box(x, 0.0, 0.0, 0.5)  # 2x2 box centred on the top-left corner
    assert out.shape == (1, 1, 2, 2) and torch.equal(out[0, 0], torch.tensor([[0.0, 0.0], [0.0, 0.0]]))
    assert preprocess(torch.rand(2, 3, 256, 256), "dlib", (150, 150)).shape == (2, 3, 150, 150)


def test_half_precision_and_inference_mode(emb):
    x = torch.rand(2, 3, 160, 160, generator=torch.Generator().manual_seed(3))
    half = load_face_embedder(emb.meta["path"], dtype=torch.bfloat16)
    with torch.inference_mode():  # ComfyUI runs nodes under inference mode
        a = half.embed(x)
    assert a.dtype == torch.float32
    assert ((a - emb.embed(x)) ** 2).sum(dim=1).max() < 0.01  # far below the 0.16 same-person threshold
