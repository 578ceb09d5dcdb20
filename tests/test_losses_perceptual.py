"""PerceptualLoss: the paper's formula, per-sample semantics, masks, variants, memory modes, errors.

The formula, masks, tiling and memory modes do not depend on what the VGG learned: those tests use a seeded random
VGG16 (caffe convention, with per-tap calibration measured like the real one's). The stored calibration of the real
caffe weights is checked on a real face (slow, ../shared)."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import save_random_vgg_file, shared_path

from hrinv.errors import InvalidSettingError, ShapeError
from hrinv.losses import PRESETS, PerceptualLoss, TargetFeatures, load_vgg16, measure_calibration, tile_halo


@pytest.fixture(scope="module")
def vgg(vgg_random):
    return vgg_random


def _image(h=64, w=56, seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, h, w, generator=g) * 2 - 1  # [B, 3, H, W]


def _smooth(h, w, seed, batch=1):
    """A smooth image (more face-like statistics than uniform noise)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(batch, 3, max(h // 8, 2), max(w // 8, 2), generator=g) * 2 - 1
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def _reference_loss(vgg, pred, target, weights, kind="conv", cal=None, size=None):
    """The authors' formulation: flatten each tap per sample, multiply by λ, concatenate, mse_loss(reduction='sum')."""
    out = []
    for b in range(pred.shape[0]):
        vecs_p, vecs_t = [], []
        for img, vecs in ((pred[b:b + 1], vecs_p), (target[b:b + 1], vecs_t)):
            x = vgg.preprocess(img)
            if size is not None:
                x = F.interpolate(x, size=(size, size), mode="area")
            ops = {t: (t if kind == "conv" else t + 1) for t in weights}
            feats = vgg(x, ops.values())
            for t, lam in weights.items():
                vecs.append(feats[ops[t]].flatten(1) * lam * (1.0 if cal is None else cal[ops[t]]))
        out.append(F.mse_loss(torch.cat(vecs_p, 1).double(), torch.cat(vecs_t, 1).double(), reduction="sum"))
    return torch.stack(out).float()


def test_conv_and_high_match_reference_formula(vgg):
    pred, tgt = _smooth(48, 40, 1, batch=2), _smooth(48, 40, 2, batch=2)
    for layers, weights in (("conv", PRESETS["vgg16_conv_1024"][1]), ("high", {21: 2e-4, 28: 5e-4})):
        loss = PerceptualLoss(vgg, layers, calibration="none")
        got = loss(pred, loss.target(tgt))
        assert got.shape == (2,)
        torch.testing.assert_close(got, _reference_loss(vgg, pred, tgt, weights), rtol=2e-4, atol=0)
    for calibration in ("auto", "rms"):  # auto = one global factor of the known caffe weights; rms = per tap
        loss = PerceptualLoss(vgg, "conv", calibration=calibration)
        cal = loss.calibration
        assert set(cal) == set(vgg.calibration)
        torch.testing.assert_close(loss(pred, loss.target(tgt)),
                                   _reference_loss(vgg, pred, tgt, PRESETS["vgg16_conv_1024"][1], cal=cal),
                                   rtol=2e-4, atol=0)


def test_identity_zero_per_sample_independence_and_grad(vgg):
    loss = PerceptualLoss(vgg, "conv")
    tgt = _smooth(48, 64, 3, batch=3)
    t = loss.target(tgt)
    assert torch.equal(loss(tgt, t), torch.zeros(3))
    pred = _smooth(48, 64, 4, batch=3).requires_grad_(True)
    pred_copy, tgt_copy = pred.detach().clone(), tgt.clone()
    both = loss(pred, t)
    assert (both > 0).all()
    for b in range(3):  # batch = B independent problems
        single = loss(pred[b:b + 1].detach(), loss.target(tgt[b:b + 1]))
        torch.testing.assert_close(both[b:b + 1], single, rtol=1e-5, atol=0)
    both[1].backward()
    assert pred.grad[1].abs().sum() > 0 and pred.grad[0].abs().sum() == 0 and pred.grad[2].abs().sum() == 0
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())
    assert not tgt.requires_grad and torch.equal(pred.detach(), pred_copy) and torch.equal(tgt, tgt_copy)
    assert not loss.vgg.training


def test_target_broadcast_and_image_target(vgg):
    loss = PerceptualLoss(vgg, "high")
    tgt = _smooth(40, 40, 5)
    pred = _smooth(40, 40, 6, batch=2)
    a = loss(pred, loss.target(tgt))
    b = loss(pred, tgt)  # an image is accepted too
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, torch.cat([loss(pred[i:i + 1], tgt) for i in range(2)]))


def test_non_square_and_minimum_size(vgg):
    loss = PerceptualLoss(vgg, "conv")
    img = _smooth(33, 90, 7)
    assert loss(img, loss.target(img)).shape == (1,)
    with pytest.raises(ShapeError, match="more than 32 px") as e:
        loss.target(_smooth(32, 90, 7))
    assert "got 32x90 px" in str(e.value) and "upscale or pad the image" in str(e.value)
    with pytest.raises(ShapeError, match="more than 32 px") as e:  # the generator's render is the limit
        loss(_smooth(32, 32, 7), loss.target(_smooth(33, 33, 7)))
    assert "got 32x32 px" in str(e.value) and "use a generator that renders more than 32 px" in str(e.value)
    with pytest.raises(ShapeError, match=r"\[B, 3, H, W\]"):
        loss.target(torch.zeros(1, 64, 64, 3))
    with pytest.raises(ShapeError, match="differs from the target size"):
        loss(_smooth(40, 40, 1), loss.target(_smooth(48, 40, 1)))
    with pytest.raises(ShapeError, match="different configuration"):
        loss(img, PerceptualLoss(vgg, "high").target(img))
    with pytest.raises(ShapeError, match="target batch"):
        loss(_smooth(40, 40, 1, batch=3), loss.target(_smooth(40, 40, 1, batch=2)))


def test_mask(vgg):
    loss = PerceptualLoss(vgg, "conv")
    pred, tgt = _smooth(64, 64, 8, batch=2), _smooth(64, 64, 9, batch=2)
    t = loss.target(tgt)
    full = loss(pred, t)
    torch.testing.assert_close(loss(pred, t, mask=torch.ones(1, 1, 64, 64)), full)
    assert torch.equal(loss(pred, t, mask=torch.zeros(2, 1, 64, 64)), torch.zeros(2))
    m = torch.zeros(2, 1, 64, 64)
    m[0, :, :, :32] = 1.0
    m[1, :, 10:50, 5:45] = 0.5  # soft, not aligned to the pooling grid
    got = loss(pred, t, mask=m)
    # explicit: each tap's squared difference weighted by the mask averaged over the tap's pooling footprint
    feats_p = loss.vgg(loss.vgg.preprocess(pred), loss.ops.values())
    expected = torch.zeros(2, dtype=torch.float64)
    for layer, op in loss.ops.items():
        r = 64 // feats_p[op].shape[-1]
        mk = F.avg_pool2d(m, r) if r > 1 else m
        d = ((feats_p[op] - t.feats[op]).double() * loss.scales[layer]) ** 2
        expected += (d * mk.double()).sum((1, 2, 3))
    torch.testing.assert_close(got, expected.float(), rtol=1e-4, atol=0)
    assert got[0] < full[0] and got[1] < full[1]
    with pytest.raises(ShapeError, match="mask"):
        loss(pred, t, mask=torch.ones(2, 64, 64))
    with pytest.raises(ShapeError, match="mask"):
        loss(pred, t, mask=torch.ones(1, 1, 32, 32))


def test_mask_gradient_stays_in_region(vgg):
    loss = PerceptualLoss(vgg, {2: 1e-3})  # conv1_2 only: receptive field 5 px, so locality is testable
    pred = _smooth(48, 96, 10).requires_grad_(True)
    m = torch.zeros(1, 1, 48, 96)
    m[..., :, :40] = 1
    loss(pred, loss.target(_smooth(48, 96, 11)), mask=m).sum().backward()
    assert pred.grad[..., :42].abs().sum() > 0 and pred.grad[..., 42:].abs().sum() == 0


def test_downsample_variant(vgg):
    loss = PerceptualLoss(vgg, "conv", downsample=40, calibration="none")
    assert loss.downsample == (40, 40)
    pred, tgt = _smooth(80, 72, 12), _smooth(80, 72, 13)
    torch.testing.assert_close(loss(pred, loss.target(tgt)),
                               _reference_loss(vgg, pred, tgt, PRESETS["vgg16_conv_1024"][1], size=40), rtol=2e-4,
                               atol=0)
    assert PerceptualLoss(vgg, "conv", downsample=256).downsample == (256, 256)


def test_relu_variant_and_presets(vgg):
    loss = PerceptualLoss(vgg, "conv", taps="relu", calibration="none")
    assert loss.kind == "relu" and loss.weights == PRESETS["vgg16_relu_1024"][1]
    assert sorted(loss.ops.values()) == [3, 8, 15, 22, 29]
    pred, tgt = _smooth(48, 48, 14), _smooth(48, 48, 15)
    t = loss.target(tgt)
    assert all((f >= 0).all() for f in t.feats.values())
    torch.testing.assert_close(loss(pred, t), _reference_loss(vgg, pred, tgt, loss.weights, kind="relu"), rtol=2e-4,
                               atol=0)
    assert PerceptualLoss(vgg, "vgg16_conv_256").weights == {2: 1e-3, 7: 6e-4, 14: 5e-4, 21: 5e-4, 28: 1e-3}
    assert PerceptualLoss(vgg, "vgg16_relu_256").kind == "relu"
    assert PerceptualLoss(vgg, "high", taps="relu").weights == {21: 7e-4, 28: 7e-3}
    with pytest.raises(InvalidSettingError, match="contradicts"):
        PerceptualLoss(vgg, "vgg16_relu_256", taps="conv")
    with pytest.raises(InvalidSettingError, match="unknown layers"):
        PerceptualLoss(vgg, "vgg19")
    with pytest.raises(InvalidSettingError, match="conv op indices"):
        PerceptualLoss(vgg, {3: 1.0})
    with pytest.raises(InvalidSettingError, match="λ > 0"):
        PerceptualLoss(vgg, {2: 0.0, 7: -1.0})
    assert PerceptualLoss(vgg, {2: 0.0, 21: 2e-4}).ops == {21: 21}  # λ = 0 taps are not computed
    assert PerceptualLoss(vgg, "conv", tile=40, tile_halo=50).halo == 64  # aligned to the 16-px pooling grid
    for bad in ("half", 16, (64, 20)):
        with pytest.raises(InvalidSettingError, match="downsample"):
            PerceptualLoss(vgg, "conv", downsample=bad)


def test_calibration_options(vgg):
    img, other = _smooth(40, 40, 16), _smooth(40, 40, 17)
    raw = PerceptualLoss(vgg, {14: 1.0}, calibration="none")
    doubled = PerceptualLoss(vgg, {14: 1.0}, calibration={14: 2.0})
    torch.testing.assert_close(doubled(img, doubled.target(other)), 4 * raw(img, raw.target(other)))
    scales = measure_calibration(vgg, [img, other], ops=(2, 28))
    feats = [vgg(vgg.preprocess(x), (2, 28)) for x in (img, other)]
    rms2 = torch.cat([f[2].flatten() for f in feats]).double().square().mean().sqrt().item()
    assert scales[2] == pytest.approx(1.0 / rms2, rel=1e-6)
    assert measure_calibration(vgg, [img], ops=(7,), reference=vgg)[7] == pytest.approx(1.0)
    with pytest.raises(InvalidSettingError, match="calibration"):
        PerceptualLoss(vgg, "conv", calibration="rms2")
    rms = PerceptualLoss(vgg, "conv", calibration="rms")
    assert rms.calibration == vgg.calibration
    glob = PerceptualLoss(vgg, "conv", calibration="global")
    assert PerceptualLoss(vgg, "conv").calibration == glob.calibration  # the default keeps the authors' balance
    g = glob.calibration[2]
    assert all(v == g for v in glob.calibration.values())
    assert min(vgg.calibration[t] for t in (2, 7, 14, 21, 28)) < g < max(vgg.calibration[t] for t in (2, 7, 14, 21, 28))
    none = PerceptualLoss(vgg, "conv", calibration="none")
    torch.testing.assert_close(glob(img, glob.target(other)), none(img, none.target(other)) * g * g, rtol=1e-5, atol=0)
    from hrinv.losses import VGG16Conv
    uncalibrated = VGG16Conv("torchvision")
    assert PerceptualLoss(uncalibrated, "conv").calibration == {}
    with pytest.raises(InvalidSettingError, match="measure_calibration"):
        PerceptualLoss(uncalibrated, "conv", calibration="rms")


@pytest.mark.parametrize("layers", ["conv", "high", "vgg16_conv_256", "vgg16_relu_1024"])
def test_default_calibration_keeps_the_authors_layer_balance(vgg, layers):
    """Default ("auto") on weights with known constants: every tap's effective scale λ_l c_l is λ_l times one common
    factor, so the ratios between taps are the authors' λ ratios; "rms" gives λ_l times that tap's own constant."""
    default = PerceptualLoss(vgg, layers)
    rms = PerceptualLoss(vgg, layers, calibration="rms")
    lam = default.weights
    assert default.scales.keys() == lam.keys() == rms.scales.keys()
    first = min(lam)
    factor = default.scales[first] / lam[first]
    assert factor != 1.0  # the caffe features are brought to the λ's magnitude, not left raw
    for t in lam:
        assert default.scales[t] / default.scales[first] == pytest.approx(lam[t] / lam[first], rel=1e-12)
        assert rms.scales[t] == pytest.approx(lam[t] * vgg.calibration[rms.ops[t]], rel=1e-12)
    # the per-tap constants differ between taps (x1.5 for this random VGG; x7-x19 for the real caffe weights, see
    # tests/test_bundled.py), so "rms" changes the balance and the default does not
    ratios = [rms.scales[t] / lam[t] for t in lam]
    assert max(ratios) / min(ratios) > 1.2
    # the common factor is the geometric mean of the d_conv taps' constants (conv or ReLU outputs, per the taps)
    ops = [t if default.kind == "conv" else t + 1 for t in PRESETS["vgg16_conv_1024"][1]]
    geo = math.exp(sum(math.log(vgg.calibration[op]) for op in ops) / len(ops))
    assert factor == pytest.approx(geo, rel=1e-12)
    # and the loss is the raw-feature loss times factor², i.e. no tap gained or lost weight
    img, other = _smooth(40, 40, 30), _smooth(40, 40, 31)
    raw = PerceptualLoss(vgg, layers, calibration="none")
    torch.testing.assert_close(default(img, default.target(other)), raw(img, raw.target(other)) * factor ** 2,
                               rtol=1e-5, atol=0)


def test_checkpoint_is_exact(vgg):
    pred0, tgt = _smooth(64, 48, 18, batch=2), _smooth(64, 48, 19, batch=2)
    results = []
    for ckpt in (False, True):
        loss = PerceptualLoss(vgg, "conv", checkpoint=ckpt)
        pred = pred0.clone().requires_grad_(True)
        mask = torch.ones(2, 1, 64, 48)
        mask[1, :, 20:] = 0.3
        val = loss(pred, loss.target(tgt), mask=mask)
        val.sum().backward()
        results.append((val.detach(), pred.grad))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-6, atol=0)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("layers,size,batch", [({2: 2e-4, 7: 1e-4, 14: 1e-4}, (64, 72), 2), ("conv", (66, 40), 1)])
def test_tiling_is_exact(vgg, layers, size, batch):
    tile = 32  # (66, 40): the last row of tiles is 2 px high, so deep taps get empty cores there
    pred0, tgt = _smooth(*size, 20, batch=batch), _smooth(*size, 21, batch=batch)
    mask = torch.ones(1, 1, *size)
    mask[..., : size[0] // 3, :] = 0.25
    out = []
    for t in (None, tile):
        loss = PerceptualLoss(vgg, layers, tile=t)
        pred = pred0.clone().requires_grad_(True)
        target = loss.target(tgt)
        val = loss(pred, target, mask=mask)
        val.sum().backward()
        out.append((val.detach(), pred.grad, target))
    assert len(list(PerceptualLoss(vgg, layers, tile=tile)._tiles(*size))) == 6
    for op in out[0][2].feats:
        torch.testing.assert_close(out[1][2].feats[op], out[0][2].feats[op], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-5, atol=0)
    torch.testing.assert_close(out[1][1], out[0][1], rtol=1e-4, atol=1e-4 * out[0][1].abs().max().item())


def test_tile_halo_values():
    assert tile_halo(28) == 96 and tile_halo(29) == 96 and tile_halo(14) == 20 and tile_halo(2) == 2


def test_target_features_is_portable(vgg):
    loss = PerceptualLoss(vgg, "high")
    t = loss.target(_smooth(40, 40, 1))
    assert isinstance(t, TargetFeatures) and t.batch == 1 and t.size == (40, 40)
    t64 = t.to(torch.float64)
    assert all(f.dtype == torch.float64 for f in t64.feats.values())


def test_comfyui_inference_mode_workflow(tmp_path):
    """ComfyUI runs nodes under inference_mode: load + target there, optimise under inference_mode(False)."""
    path = tmp_path / "vgg16_random_caffe.safetensors"
    save_random_vgg_file(path)
    with torch.inference_mode():
        vgg = load_vgg16(path)
        loss = PerceptualLoss(vgg, "conv")
        t = loss.target(_smooth(40, 40, 22))
        mask = torch.ones(1, 1, 40, 40)
        with torch.inference_mode(False):
            pred = _smooth(40, 40, 23).requires_grad_(True)
            loss(pred, t, mask=mask).sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    with torch.inference_mode():
        from hrinv.losses import VGG16Conv
        bad = VGG16Conv("caffe")
    with pytest.raises(InvalidSettingError, match="inference"):
        PerceptualLoss(bad, "conv")


@pytest.mark.slow
def test_stored_caffe_calibration_reproduces_on_a_real_face():
    """The stored constants (16 faces at 1024²) give about unit RMS on another CelebA-HQ face at 1024²."""
    import numpy as np
    from PIL import Image

    vgg = load_vgg16(shared_path("weights", "vgg16_imagenet_caffe.safetensors"))

    files = sorted(shared_path("data", "faces", "celebahq").glob("*.jpg"))
    im = Image.open(files[-1]).convert("RGB").resize((1024, 1024), Image.LANCZOS)
    img = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float()[None] / 127.5 - 1  # [1, 3, 1024, 1024]
    with torch.no_grad():
        measured = measure_calibration(vgg, [img], ops=(2, 7, 14, 21, 28))
    for op, scale in measured.items():
        assert 0.6 < vgg.calibration[op] / scale < 1.6, (op, vgg.calibration[op], scale)
