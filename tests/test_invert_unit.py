"""hrinv.inversion on the tiny NVIDIA fixture generator with a cheap pixel loss: API contract, not image quality."""

import json

import pytest
import torch
from conftest import fixture_generator

from hrinv.errors import ShapeError
from hrinv.inversion import InversionConfig, compute_w_stats, crop_from_square, invert, pad_to_square, psnr
from hrinv.latent import Latent


def _load_fixture_G(name="nv_tiny", rgb_scale=0.15):
    """The fixture generator with its ToRGB layers scaled so images stay mostly inside [-1, 1]."""
    def scale_torgb(sd):
        return {k: v * rgb_scale if (".torgb.weight" in k or ".torgb.bias" in k) else v for k, v in sd.items()}

    return fixture_generator(name, transform=scale_torgb)[0]


@pytest.fixture(scope="module")
def G():
    return _load_fixture_G()


@pytest.fixture(scope="module")
def stats(G):
    return compute_w_stats(G, 1000)


def mse(pred, target, mask=None):
    se = (pred - target).square()
    if mask is not None:
        se = se * mask
    return se.flatten(1).mean(1)


def _targets(G, b=2, seed=1, psi=0.6):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ws = G.mapping(torch.randn(b * G.num_ws, G.z_dim, generator=g))[:, 0].view(b, G.num_ws, -1)
        w_avg = compute_w_stats(G, 500)[0]
        ws = w_avg + psi * (ws - w_avg)  # a random W+ (one mapped z per row), truncated
        return G.synthesis(ws).clamp(-1, 1)


def _snapshot(G):
    return {k: v.clone() for k, v in G.state_dict().items()}


def test_compute_w_stats_matches_reference_definition(G):
    import numpy as np

    w_avg, w_std = compute_w_stats(G, 300, seed=123)
    z = torch.from_numpy(np.random.RandomState(123).randn(300, G.z_dim)).float()
    with torch.no_grad():
        w = G.mapping(z)[:, 0]
    torch.testing.assert_close(w_avg, w.mean(0), rtol=1e-5, atol=1e-5)
    assert w_std == pytest.approx(float(((w - w.mean(0)) ** 2).sum(1).mean().sqrt()), rel=1e-5)


def test_invert_shapes_latent_and_no_side_effects(G, stats):
    target = _targets(G)
    before, tgt_before = _snapshot(G), target.clone()
    res = invert(G, target, mse, InversionConfig(steps=30, seed=3), w_stats=stats)
    lat = res.latent
    assert lat.ws.shape == (2, G.num_ws, G.w_dim)
    assert set(lat.noise) == set(G.synthesis.noise_names)
    assert lat.noise["b8.conv0"].shape == (2, 1, 8, 8)
    # noise maps are normalised every step: zero mean, unit RMS per sample and map
    n = lat.noise["b16.conv1"]
    torch.testing.assert_close(n.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(n.square().mean(dim=(1, 2, 3)), torch.ones(2), atol=1e-4, rtol=0)
    assert res.image.shape == target.shape and res.history.shape == (30, 2)
    assert lat.generator_fingerprint == G.fingerprint()
    assert lat.settings["inversion"]["steps"] == 30 and len(lat.metrics["psnr"]) == 2
    assert (res.history[-1] < res.history[0]).all()
    # the latent reproduces the returned image
    with torch.no_grad():
        again = G.synthesis(lat.ws, **lat.synthesis_kwargs())
    torch.testing.assert_close(again.clamp(-1, 1), res.image, atol=1e-5, rtol=0)
    torch.testing.assert_close(psnr(again, target), torch.tensor(lat.metrics["psnr"]), atol=1e-3, rtol=0)
    # nothing of the user's changed, nothing got a gradient
    after = G.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in G.parameters()) and torch.equal(target, tgt_before)
    json.dumps(lat.settings), json.dumps(lat.metrics)  # JSON-able


def test_w_space_and_eq5_preset(G, stats):
    target = _targets(G, b=1)
    res = invert(G, target, mse, InversionConfig.preset("cross_domain", steps=10, seed=0, latent_space="w"),
                 w_stats=stats)
    assert res.latent.noise is None
    ws = res.latent.ws
    assert torch.equal(ws, ws[:, :1].expand_as(ws))  # one code repeated over the layers
    with torch.no_grad():
        again = G.synthesis(ws, noise_mode="const")  # Eq. 5 uses the generator's constant noise
    torch.testing.assert_close(again.clamp(-1, 1), res.image, atol=1e-5, rtol=0)


def test_batch_equals_single_runs_and_seeding(G, stats):
    target = _targets(G, b=2)
    cfg = InversionConfig(steps=8, seed=7)
    batch = invert(G, target, mse, cfg, w_stats=stats)
    for i in range(2):
        single = invert(G, target[i:i + 1], mse, InversionConfig(steps=8, seed=7 + i), w_stats=stats)
        # Grouped (batched) and single modulated convs round differently, and Adam's normalised steps amplify that
        # float noise where a gradient is ~0 (e.g. noise pixels of layers with a tiny noise_strength), so the
        # results agree closely but not bit-exactly. A wrong batching (shared ε / noise draws, coupled losses)
        # gives differences of order 1 everywhere.
        dws = (batch.latent.ws[i:i + 1] - single.latent.ws).abs()
        moved = (single.latent.ws - batch.latent.ws[1 - i:2 - i]).abs().mean()  # vs. the other sample's result
        assert dws.max() < 3e-2 and dws.mean() < 1e-3 and moved > 100 * dws.mean()
        for k in single.latent.noise:
            assert (batch.latent.noise[k][i:i + 1] - single.latent.noise[k]).abs().mean() < 5e-3, k
        assert psnr(batch.image[i:i + 1], single.image) > 45
    again = invert(G, target, mse, cfg, w_stats=stats)
    assert torch.equal(again.latent.ws, batch.latent.ws)
    other = invert(G, target, mse, InversionConfig(steps=8, seed=8), w_stats=stats)
    assert not torch.allclose(other.latent.ws, batch.latent.ws)
    gen_a = invert(G, target, mse, InversionConfig(steps=3), w_stats=stats, generator=torch.Generator().manual_seed(1))
    gen_b = invert(G, target, mse, InversionConfig(steps=3), w_stats=stats, generator=torch.Generator().manual_seed(1))
    assert torch.equal(gen_a.latent.ws, gen_b.latent.ws)


class _LearnableLoss(torch.nn.Module):
    """A loss with a trainable parameter: invert must not accumulate gradients into it."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, pred, target):
        return (self.scale * (pred - target)).square().flatten(1).mean(1)


def test_loss_parameters_get_no_grad(G, stats):
    loss = _LearnableLoss()
    invert(G, _targets(G, b=1), loss, InversionConfig(steps=3, seed=0), w_stats=stats)
    assert loss.scale.grad is None and loss.scale.requires_grad


def test_cancellation_leaves_nothing_behind(G, stats):
    target = _targets(G, b=1)
    before = _snapshot(G)

    class Stop(Exception):
        pass

    seen = []

    def cb(step, total, preview):
        seen.append((step, preview is not None))
        if step == 4:
            raise Stop

    with pytest.raises(Stop):
        invert(G, target, mse, InversionConfig(steps=50, seed=0, preview_every=2), w_stats=stats, callback=cb)
    assert seen == [(1, False), (2, True), (3, False), (4, True)]
    after = G.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and all(p.grad is None for p in G.parameters())
    assert torch.is_grad_enabled()


def test_inside_inference_mode_like_comfyui():
    with torch.inference_mode():
        G = _load_fixture_G()  # built and loaded inside inference mode: every parameter is an inference tensor
        assert next(G.parameters()).is_inference()
        target = _targets(G, b=1)
        mask = torch.ones(1, 1, 32, 32)
        res = invert(G, target, mse, InversionConfig(steps=15, seed=0, w_avg_samples=200), mask=mask)
        assert torch.is_inference_mode_enabled() and not torch.is_grad_enabled()
    assert res.history[-1, 0] < res.history[0, 0]
    assert not res.latent.ws.is_inference()


def test_non_square_target_is_padded_and_masked(G, stats):
    target = _targets(G, b=1)[..., 4:28]  # [1, 3, 32, 24]
    sq, mask, pads = pad_to_square(target)
    assert sq.shape == (1, 3, 32, 32) and pads == (4, 4, 0, 0) and mask.sum() == 32 * 24
    assert torch.equal(crop_from_square(sq, pads), target)
    seen = []
    res = invert(G, target, mse, InversionConfig(steps=5, seed=0, preview_every=5), w_stats=stats,
                 callback=lambda s, t, p: seen.append(None if p is None else tuple(p.shape)))
    assert res.image.shape == (1, 3, 32, 24) and seen[-1] == (1, 3, 32, 24)
    assert res.latent.settings["pads"] == [4, 4, 0, 0] and res.latent.settings["target_size"] == [32, 24]
    with pytest.raises(ShapeError, match="longer side is 32 px") as e:
        invert(G, torch.zeros(1, 3, 20, 24), mse, InversionConfig(steps=1), w_stats=stats)
    assert "20x24 px" in str(e.value) and "renders 32x32 px" in str(e.value)
    assert "hrinv" not in str(e.value) and "--" not in str(e.value)  # no CLI words: node users read it too
    with pytest.raises(ShapeError, match="INR"):
        invert(G, target, mse, InversionConfig(steps=1, non_square="inr"), w_stats=stats)


def test_mask_changes_what_counts(G, stats):
    target = _targets(G, b=1)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :16] = 1
    res = invert(G, target, mse, InversionConfig(steps=20, seed=0), mask=mask, w_stats=stats)
    inside = psnr(res.image[..., :16], target[..., :16])
    assert res.latent.metrics["psnr"][0] == pytest.approx(float(inside), abs=1e-3)  # PSNR is masked too
    with pytest.raises(ShapeError, match="mask"):
        invert(G, target, mse, InversionConfig(steps=1), mask=torch.ones(1, 32, 32), w_stats=stats)


def test_init_latent_warm_start(G, stats):
    target = _targets(G, b=1)
    first = invert(G, target, mse, InversionConfig(steps=20, seed=0), w_stats=stats)
    cfg = InversionConfig(steps=1, seed=0, lr=1e-9, initial_noise_factor=0)
    warm = invert(G, target, mse, cfg, w_stats=stats, init_latent=first.latent)
    torch.testing.assert_close(warm.latent.ws, first.latent.ws, atol=1e-6, rtol=0)
    with pytest.raises(ShapeError):
        invert(G, target, mse, cfg, w_stats=stats, init_latent=Latent(torch.zeros(1, 3, G.w_dim)))


def test_random_init_and_regulariser_and_mse_term(G, stats):
    target = _targets(G, b=1)
    cfg = InversionConfig(steps=5, seed=0, init="random", init_truncation=0.5, noise_regularize=1e3, lambda_mse=1.0)
    res = invert(G, target, mse, cfg, w_stats=stats)
    assert torch.isfinite(res.history).all()


def test_bad_targets(G, stats):
    with pytest.raises(ShapeError, match=r"\[B, 3, H, W\]"):
        invert(G, torch.zeros(3, 32, 32), mse, InversionConfig(steps=1), w_stats=stats)
    with pytest.raises(ShapeError, match=r"\[-1, 1\]"):
        invert(G, torch.full((1, 3, 32, 32), 200.0), mse, InversionConfig(steps=1), w_stats=stats)
    with pytest.raises(ShapeError, match="floating"):
        invert(G, torch.zeros(1, 3, 32, 32, dtype=torch.uint8), mse, InversionConfig(steps=1), w_stats=stats)
    with pytest.raises(ValueError, match="loss"):
        invert(G, torch.zeros(1, 3, 32, 32), None, InversionConfig(steps=1), w_stats=stats)


@pytest.mark.parametrize("kwargs, word", [
    ({"steps": 0}, "steps"), ({"lr": -1}, "lr"), ({"latent_space": "z"}, "latent_space"),
    ({"lambda_mse": -0.1}, "lambda_mse"), ({"noise_ramp": 1.5}, "noise_ramp"),
    ({"lr_rampup": 0.8, "lr_rampdown": 0.5}, "lr_rampup"), ({"w_avg_samples": 1}, "w_avg_samples"),
    ({"init": "zeros"}, "init"), ({"seed": -1}, "seed"), ({"preview_every": -2}, "preview_every"),
    ({"loss_layers": "mid"}, "loss_layers"), ({"downsample": 16}, "downsample"), ({"non_square": "crop"}, "non_square"),
    ({"betas": (0.9, 1.5)}, "betas"), ({"init_truncation": 2.0}, "init_truncation"),
])
def test_config_validation(kwargs, word):
    with pytest.raises(ValueError, match=word):
        InversionConfig(**kwargs)


def test_presets():
    assert InversionConfig.preset("cross_domain").noise_maps is False
    old = InversionConfig(optimize_noise=False)  # the old name is still accepted and readable
    assert old.noise_maps is False and old.optimize_noise is False and "optimize_noise" not in old.to_dict()
    assert InversionConfig.preset("reconstruction") == InversionConfig()
    assert InversionConfig.preset("downsampled_256", steps=5).downsample == 256
    assert InversionConfig(latent_space="W+").latent_space == "w+"
    with pytest.raises(ValueError, match="preset"):
        InversionConfig.preset("nope")
    json.dumps(InversionConfig(loss_layers={21: 2e-4}).to_dict())


def test_any_size_target_through_inr_head(G, stats):
    import copy

    from hrinv.generator.inr import INRHead

    Gi = copy.deepcopy(G)
    Gi.attach_inr(INRHead(Gi.synthesis.channels[Gi.img_resolution], Gi.img_resolution))
    with torch.no_grad():
        target = Gi.synthesis(stats[0].expand(1, Gi.num_ws, -1), shape=(24, 40)).clamp(-1, 1)  # [1, 3, 24, 40]
    target = (target + 0.1 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    res = invert(Gi, target, mse, InversionConfig(steps=6, seed=0), w_stats=stats)
    assert res.image.shape == (1, 3, 24, 40)
    assert res.latent.settings["render_shape"] == [24, 40] and res.latent.settings["pads"] == []
    assert all(p.grad is None for p in Gi.inr.parameters())
    with torch.no_grad():
        again = Gi.synthesis(res.latent.ws, shape=(24, 40), **res.latent.synthesis_kwargs())
    torch.testing.assert_close(again.clamp(-1, 1), res.image, atol=1e-5, rtol=0)


def test_downsample_for_the_baseline_loss(G, stats):
    from hrinv.inversion import _resize_for_loss

    img = torch.arange(2 * 3 * 96 * 128, dtype=torch.float32).view(2, 3, 96, 128)
    small = _resize_for_loss(img, 48)
    assert small.shape == (2, 3, 48, 64)
    torch.testing.assert_close(small, torch.nn.functional.avg_pool2d(img, 2))  # area = box average
    assert _resize_for_loss(img, 256) is img and _resize_for_loss(img, None) is img
    seen = []

    def spy(pred, target):
        seen.append(tuple(pred.shape))
        return mse(pred, target)

    invert(G, _targets(G, b=1), spy, InversionConfig(steps=1, downsample=33), w_stats=stats)
    assert seen == [(1, 3, 32, 32)] * 2  # 32 <= 33: untouched (one step + the final evaluation)
