"""ArcFace IR-SE50: reference key layout, strict loading, unit-norm 512-d embeddings."""

import pytest
import torch
import torch.nn.functional as F
from conftest import fixture_path

from hrinv.errors import CheckpointFormatError, ShapeError, WeightsNotFoundError
from hrinv.faceid import load_face_embedder
from hrinv.faceid.irse50 import IRSE50, load_irse50


def reference_keys():
    """Key names of TreB1eN's Backbone(50, 0.6, 'ir_se') written out from its description (not from our module)."""
    bn = ["weight", "bias", "running_mean", "running_var"]
    keys = ["input_layer.0.weight"] + [f"input_layer.1.{k}" for k in bn] + ["input_layer.2.weight"]
    unit, in_c = 0, 64
    for depth, n in zip((64, 128, 256, 512), (3, 4, 14, 3)):
        for k in range(n):
            p = f"body.{unit}."
            if in_c != depth:
                keys += [p + "shortcut_layer.0.weight"] + [p + f"shortcut_layer.1.{b}" for b in bn]
            keys += [p + f"res_layer.0.{b}" for b in bn] + [p + "res_layer.1.weight", p + "res_layer.2.weight",
                                                            p + "res_layer.3.weight"]
            keys += [p + f"res_layer.4.{b}" for b in bn] + [p + "res_layer.5.fc1.weight", p + "res_layer.5.fc2.weight"]
            unit, in_c = unit + 1, depth
    keys += [f"output_layer.0.{b}" for b in bn] + ["output_layer.3.weight", "output_layer.3.bias"]
    keys += [f"output_layer.4.{b}" for b in bn]
    return keys


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A state dict with the reference layout and random (but BN-sane) values, saved like model_ir_se50.pth."""
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, v in IRSE50().state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue  # the released file predates these buffers: they must be optional
        if k.endswith("running_var"):
            sd[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            sd[k] = torch.randn(v.shape, generator=g) * 0.05
    path = tmp_path_factory.mktemp("irse") / "model_ir_se50.pth"
    torch.save(sd, path)
    return path, sd


def test_key_layout_is_the_reference_one():
    ours = [k for k in IRSE50().state_dict() if not k.endswith("num_batches_tracked")]
    assert ours == reference_keys()
    assert sum(p.numel() for p in IRSE50().parameters()) > 43_000_000


@pytest.fixture(scope="module")
def embedder(weights_file):
    return load_face_embedder(weights_file[0])


def test_loads_and_embeds_unit_norm_with_paper_preprocessing(weights_file, embedder):
    _, sd = weights_file
    emb = embedder
    assert emb.name == "arcface" and emb.dim == 512 and emb.preprocess == "paper" and emb.threshold == 1.5
    assert torch.equal(emb.net.body[3].res_layer[1].weight, sd["body.3.res_layer.1.weight"])
    x = torch.rand(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    e = emb.embed([x[0], x[1]], batch_size=1)  # a list of [3, H, W], one image per forward pass
    assert e.shape == (2, 512)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(2), atol=1e-5, rtol=0)
    # the paper's preprocessing: the whole image resized to 112 (bilinear, antialias), to [-1, 1]; batched at once
    manual = torch.nn.functional.interpolate(x, size=(112, 112), mode="bilinear", antialias=True) * 2 - 1
    torch.testing.assert_close(e, emb.net(manual), atol=1e-5, rtol=1e-4)


def test_psp_preprocessing_crops_the_face():
    from hrinv.faceid.preprocess import preprocess

    x = torch.zeros(1, 3, 1024, 1024)
    x[:, :, 140:892, 128:880] = 1.0  # exactly the pSp crop [35:223, 32:220] of the 256 image, scaled by 4
    torch.testing.assert_close(preprocess(x, "psp", (112, 112)), torch.ones(1, 3, 112, 112))
    assert preprocess(x, "paper", (112, 112)).mean() < 0.6


def test_strict_key_validation(weights_file, tmp_path):
    _, sd = weights_file
    bad = dict(sd)
    bad.pop("body.5.res_layer.1.weight")
    bad["head.kernel"] = torch.zeros(3)
    p = tmp_path / "bad.pth"
    torch.save(bad, p)
    with pytest.raises(CheckpointFormatError, match=r"Missing: body\.5\.res_layer\.1\.weight.*Unexpected: head\.kernel"):
        load_irse50(p)


def test_dataparallel_prefix_and_wrapped_dict(weights_file, tmp_path):
    _, sd = weights_file
    p = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, p)
    net = load_irse50(p)
    assert torch.equal(net.output_layer[3].weight, sd["output_layer.3.weight"])


def test_refuses_pickles_that_run_code():
    evil = fixture_path("malicious", "evil.pkl")
    with pytest.raises(CheckpointFormatError, match="Nothing from it was executed"):
        load_irse50(evil)


def test_missing_file(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="model_ir_se50"):
        load_irse50(tmp_path / "model_ir_se50.pth")
    with pytest.raises(WeightsNotFoundError, match="arcface"):
        load_face_embedder("arcface", search_dirs=[tmp_path])

def test_wrong_network_input_size(embedder):
    with pytest.raises(ShapeError, match="112"):
        embedder.net(torch.rand(1, 3, 100, 100))


def _functional_irse50(sd, x):
    """IR-SE50 forward written directly from the state dict and the reference description (independent wiring)."""
    def bn(t, p):
        return F.batch_norm(t, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                            False, 0.0, 1e-5)

    x = F.prelu(bn(F.conv2d(x, sd["input_layer.0.weight"], padding=1), "input_layer.1"), sd["input_layer.2.weight"])
    unit = 0
    for n in (3, 4, 14, 3):
        for k in range(n):
            p, stride = f"body.{unit}.", 2 if k == 0 else 1
            if p + "shortcut_layer.0.weight" in sd:
                short = bn(F.conv2d(x, sd[p + "shortcut_layer.0.weight"], stride=stride), p + "shortcut_layer.1")
            else:
                short = F.max_pool2d(x, 1, stride)
            r = bn(x, p + "res_layer.0")
            r = F.prelu(F.conv2d(r, sd[p + "res_layer.1.weight"], padding=1), sd[p + "res_layer.2.weight"])
            r = bn(F.conv2d(r, sd[p + "res_layer.3.weight"], stride=stride, padding=1), p + "res_layer.4")
            s = r.mean(dim=(2, 3), keepdim=True)
            s = torch.sigmoid(F.conv2d(F.relu(F.conv2d(s, sd[p + "res_layer.5.fc1.weight"])),
                                       sd[p + "res_layer.5.fc2.weight"]))
            x = r * s + short
            unit += 1
    x = bn(x, "output_layer.0").flatten(1)
    x = F.linear(x, sd["output_layer.3.weight"], sd["output_layer.3.bias"])
    x = F.batch_norm(x, sd["output_layer.4.running_mean"], sd["output_layer.4.running_var"],
                     sd["output_layer.4.weight"], sd["output_layer.4.bias"], False, 0.0, 1e-5)
    return F.normalize(x, dim=1)


def test_forward_matches_an_independent_functional_version(weights_file, embedder):
    _, sd = weights_file
    x = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(4)) * 2 - 1
    torch.testing.assert_close(embedder.net(x), _functional_irse50(sd, x), atol=1e-5, rtol=1e-4)
