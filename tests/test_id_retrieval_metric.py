"""id_retrieval on embeddings: definition, thresholded variant, chance, per-image records, errors."""

import json

import pytest
import torch

from hrinv.errors import DatasetLayoutError, ShapeError
from hrinv.metrics.id_retrieval import id_retrieval


def clusters(n=20, per=5, d=128, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)
    labels = torch.arange(n).repeat_interleave(per)
    s = c[labels] + noise * torch.randn(n * per, d, generator=g)
    return c, s, labels


def test_brute_force_definition():
    c, s, labels = clusters(noise=0.12)
    r = id_retrieval(c, s, labels)
    cn, sn = torch.nn.functional.normalize(c, dim=1), torch.nn.functional.normalize(s, dim=1)
    d = torch.cdist(sn, cn) ** 2  # [M, N]
    assert r.top1 == pytest.approx((d.argmin(1) == labels).float().mean().item())
    torch.testing.assert_close(r.nearest_distance, d.min(1).values, atol=1e-5, rtol=0)
    torch.testing.assert_close(r.true_distance, d[torch.arange(len(labels)), labels], atol=1e-5, rtol=0)
    assert torch.equal(r.true_rank == 0, r.hits)
    assert r.chance == pytest.approx(1 / 20) and r.num_content == 20 and r.num_stylized == 100


def test_near_copies_score_one_and_shuffled_labels_score_chance():
    c, s, labels = clusters(n=50, per=8, noise=0.05)
    assert id_retrieval(c, s, labels).top1 == 1.0
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))
    shuffled = id_retrieval(c, s, labels[perm])
    assert shuffled.top1 < 0.08  # chance is 0.02; 0.08 is > 4 standard deviations above it for 400 draws


def test_thresholded_variant_and_default_thresholds():
    c, s, labels = clusters(d=512, noise=0.2)
    r = id_retrieval(c, s, labels)
    assert r.threshold == 1.5  # 512-d: the paper's ArcFace threshold
    strict = id_retrieval(c, s, labels, threshold=0.0)
    assert strict.top1_thresholded == 0.0 and strict.top1 == r.top1
    mid = float(r.nearest_distance.median())
    r2 = id_retrieval(c, s, labels, threshold=mid)
    assert r2.top1_thresholded == pytest.approx(float((r.hits & (r.nearest_distance <= mid)).float().mean()))
    assert id_retrieval(c[:, :128], s[:, :128], labels).threshold == 0.16
    assert id_retrieval(c[:, :64], s[:, :64], labels).top1_thresholded is None


def test_string_labels_and_json():
    c, s, labels = clusters(n=3, per=2)
    names = ["anna", "bob", "carl"]
    r = id_retrieval(c, s, [names[i] for i in labels], content_names=names,
                     stylized_names=[f"{names[i]}/{k}.png" for k, i in enumerate(labels)])
    d = json.loads(r.to_json())
    assert d["top1"] == r.top1 and d["per_image"][0]["content"] == "anna" and d["per_content"]["bob"]["count"] == 2
    assert "ID retrieval (top-1)" in r.table() and "carl" in r.table()


def test_chunking_does_not_change_the_result():
    c, s, labels = clusters(noise=0.3)
    a, b = id_retrieval(c, s, labels), id_retrieval(c, s, labels, chunk=7)
    assert torch.equal(a.nearest, b.nearest) and torch.equal(a.true_rank, b.true_rank)


def test_errors():
    c, s, labels = clusters(n=4, per=2)
    with pytest.raises(ShapeError, match="one label per"):
        id_retrieval(c, s, labels[:-1])
    with pytest.raises(ShapeError, match=r"\[0, 3\]"):
        id_retrieval(c, s, labels + 1)
    with pytest.raises(DatasetLayoutError, match="empty"):
        id_retrieval(c[:0], s, labels)
    with pytest.raises(ShapeError, match="same network"):
        id_retrieval(c, s[:, :64], labels)
    with pytest.raises(DatasetLayoutError, match="'zed'"):
        id_retrieval(c, s, ["zed"] * 8, content_names=list("abcd"))
    with pytest.raises(ShapeError, match="no embedder"):
        id_retrieval(torch.rand(4, 3, 64, 64), s, labels)


def test_report_picture_and_default_labels_live_in_the_library():
    from hrinv.metrics.id_retrieval import default_labels, match_picture

    assert default_labels(2, 2) == [0, 1] and default_labels(2, 4) == [0, 0, 1, 1] and default_labels(2, 3) == [0, 1, 0]
    c, s, labels = clusters(n=3, per=2, noise=0.05)
    r = id_retrieval(c, s, labels)
    s[5] = c[0]  # make the last stylised "image" a copy of content 0: a miss
    r = id_retrieval(c, s, labels)
    assert not bool(r.hits[5]) and int(r.nearest[5]) == 0
    lines = r.report().splitlines()
    assert lines[0].startswith("ID retrieval (top-1)") and lines[-1].startswith("5 | 2 | 0 |") and lines[-1].endswith("NO")
    # pictures: smooth random content / stylised images in [0, 1]
    g = torch.Generator().manual_seed(1)
    content, stylised = torch.rand(3, 3, 40, 40, generator=g), torch.rand(6, 3, 50, 30, generator=g)
    pic = match_picture(content, stylised, r, thumb=16)
    assert pic.shape == (6, 3, 24, 72) and 0 <= float(pic.min()) and float(pic.max()) <= 1
    green, red = torch.tensor([0.1, 0.8, 0.2]), torch.tensor([0.9, 0.15, 0.1])
    assert torch.allclose(pic[0, :, 0, 0], green) and torch.allclose(pic[5, :, 0, 0], red)
    own = torch.nn.functional.interpolate(content[2:3], size=(16, 16), mode="bilinear", antialias=True,
                                          align_corners=False)[0]
    torch.testing.assert_close(pic[5, :, 4:20, 28:44], own.clamp(0, 1))  # middle tile: its own content (2)
