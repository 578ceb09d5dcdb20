"""ID retrieval with the real dlib network on aligned CelebA-HQ faces (CelebA identity labels).

Degraded copies (blur, noise, JPEG, colour shift, down/up-sampling) of each face are retrieved against the 44
originals: far above chance. The same queries with shuffled labels score at chance. Different photos of the same
CelebA identity are each other's nearest neighbour.
"""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path
from PIL import Image

from hrinv.faceid import load_face_embedder
from hrinv.imageio import read_image
from hrinv.metrics.id_retrieval import id_retrieval


def _blur(x, sigma=2.0):
    r = int(3 * sigma)
    k = torch.exp(-torch.arange(-r, r + 1.0) ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).to(x)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)


def _jpeg(x, quality=10):
    out = []
    for img in x:
        arr = (img.permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        out.append(torch.from_numpy(np.asarray(Image.open(buf).convert("RGB")).copy()))
    return torch.stack(out).permute(0, 3, 1, 2).float() / 255


def _noise(x, sigma=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


def _colour(x):
    gain = torch.tensor([1.25, 0.95, 0.7]).view(1, 3, 1, 1)
    grey = x.mean(dim=1, keepdim=True)
    return ((0.6 * x + 0.4 * grey) * gain + 0.05).clamp(0, 1)  # desaturated, warm cast, lifted blacks


def _down_up(x, factor=8):
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(h // factor, w // factor), mode="bilinear", antialias=True)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


DEGRADATIONS = {"blur": _blur, "noise": _noise, "jpeg": _jpeg, "colour": _colour, "down_up": _down_up}


@pytest.fixture(scope="module")
def faces():
    folder = shared_path("data", "faces", "celebahq")
    labels = {}
    for line in (folder / "labels.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, ident = line.split()
            labels[name] = int(ident)
    names = sorted(labels)
    imgs = torch.stack([read_image(folder / n) for n in names])  # [44, 3, 1024, 1024]
    return names, [labels[n] for n in names], imgs


@pytest.fixture(scope="module")
def emb():
    dat = shared_path("weights", "dlib_face_recognition_resnet_model_v1.dat")
    return load_face_embedder(dat)


@pytest.fixture(scope="module")
def gallery(emb, faces):
    return emb.embed(faces[2], batch_size=8)  # [44, 128] the originals at full size


def _retrieval(emb, faces, gallery, keys):
    """For each degradation, retrieval of the degraded copies (made at 256 px) against the originals."""
    names, _, imgs = faces
    n = len(names)
    small = F.interpolate(imgs, size=(256, 256), mode="bilinear", antialias=True)  # [44, 3, 256, 256]
    g = torch.Generator().manual_seed(0)
    out = {}
    for key, sel in keys.items():
        q = emb.embed(DEGRADATIONS[key](small[sel]), batch_size=8)  # [n', 128]
        labels = torch.arange(n)[sel]
        r = id_retrieval(gallery, q, labels, embedder=emb)
        perm = labels[torch.randperm(len(labels), generator=g)]
        shuffled = id_retrieval(gallery, q, perm, embedder=emb)
        out[key] = (r, shuffled, int((perm == labels).sum()))
    return out


def _check(out):
    for key, (r, shuffled, own) in out.items():
        assert r.top1 >= 0.8, (key, r.top1)  # chance = 1/44 = 2.3 %
        assert r.true_distance.mean() < 2 * r.threshold
        # with shuffled labels only a query that drew its own face back can hit (expected 1 in 44 per query)
        assert shuffled.top1 <= (own + 2) / r.num_stylized, (key, shuffled.top1)


def test_degraded_copies_far_above_chance_and_shuffled_at_chance(emb, faces, gallery):
    n = len(faces[0])
    _check(_retrieval(emb, faces, gallery, {"blur": slice(0, n // 2), "jpeg": slice(n // 2, n)}))


@pytest.mark.slow
def test_all_degradations_on_all_faces(emb, faces, gallery):
    _check(_retrieval(emb, faces, gallery, {k: slice(None) for k in DEGRADATIONS}))


def test_same_identity_photos_are_nearest(emb, faces, gallery):
    names, idents, _ = faces
    d = torch.cdist(gallery, gallery) ** 2
    d.fill_diagonal_(float("inf"))
    pairs = [(i, j) for i in range(len(names)) for j in range(len(names)) if i != j and idents[i] == idents[j]]
    assert len(pairs) == 4  # two CelebA identities with two photos each
    for i, j in pairs:
        assert int(d[i].argmin()) == j, (names[i], names[int(d[i].argmin())])
        assert float(d[i, j]) < 0.16  # dlib's same-person rule (0.6 on raw descriptors) holds
