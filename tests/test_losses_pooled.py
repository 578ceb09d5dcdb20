"""The perceptual loss's allocation-saving forms (in-place ReLU on conv outputs that are not taps, the fused squared
distance, pooled buffers inside a loop) give bitwise the values, taps and gradients of the plain out-of-place op
chain they replace, in every memory mode, and never overwrite a tap (the paper's footnote 2)."""

import pytest
import torch
import torch.nn.functional as F

from hrinv import bufferpool
from hrinv.bufferpool import BufferPool
from hrinv.losses import PerceptualLoss, perceptual, vgg as vgg_mod
from hrinv.losses.vgg import RELU_INDICES


@pytest.fixture(scope="module")
def vgg(vgg_random):
    return vgg_random


def _images(batch, h=48, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, h, w, generator=g) * 2 - 1


def _old_chain(monkeypatch):
    """The loss as it was: every ReLU out of place (``F.relu``), the distance as autograd's op chain."""
    monkeypatch.setattr(vgg_mod._ReLU, "apply", staticmethod(lambda h, inplace: F.relu(h)))
    monkeypatch.setattr(perceptual._SquaredDistance, "apply", staticmethod(
        lambda f, t, scale: (f.float() - t.float()).mul_(scale).square().sum(dim=(1, 2, 3))))


def _loss_and_grad(loss, pred, feats, mask, pool):
    p = pred.clone().requires_grad_(True)
    with pool if pool is not None else torch.enable_grad():
        for _ in range(2):  # a second step reuses the pool's buffers
            p.grad = None
            value = loss(p, feats, mask)
            value.sum().backward()
    return value.detach(), p.grad


@pytest.mark.parametrize("taps,mode", [("conv", "plain"), ("relu", "plain"), ("conv", "checkpoint"),
                                       ("relu", "checkpoint"), ("conv", "tile")])
def test_loss_and_gradients_bitwise_equal_to_the_out_of_place_chain(vgg, monkeypatch, mode, taps):
    if bufferpool._USE_COUNT is None:
        pytest.skip("torch without _storage_Use_Count: nothing is pooled")
    kw = {"checkpoint": mode == "checkpoint", "tile": 32 if mode == "tile" else None}
    loss = PerceptualLoss(vgg, "conv", taps=taps, **kw)
    pred, target = _images(2, seed=1), _images(1, seed=2)  # a batch-1 target broadcast against 2 predictions
    mask = torch.rand(1, 1, 48, 48, generator=torch.Generator().manual_seed(3))
    feats = loss.target(target)
    got = {}
    for name, pool in (("plain", None), ("pooled", BufferPool(min_bytes=0))):
        for m in (None, mask):
            got[name, m is None] = _loss_and_grad(loss, pred, feats, m, pool)
    with monkeypatch.context() as mp:
        _old_chain(mp)
        old_feats = loss.target(target)
        old = {m is None: _loss_and_grad(loss, pred, old_feats, m, None) for m in (None, mask)}
    assert all(torch.equal(old_feats.feats[k], feats.feats[k]) for k in feats.feats)
    for (name, unmasked), (value, grad) in got.items():
        assert torch.equal(value, old[unmasked][0]), (name, unmasked)
        assert torch.equal(grad, old[unmasked][1]), (name, unmasked)


def test_taps_are_never_overwritten_and_inputs_never_modified(vgg):
    x = vgg.preprocess(_images(2, seed=4)).requires_grad_(True)
    h0 = vgg.run(x, 0, 0).detach()  # conv1_1 output
    h0_copy = h0.clone()
    out = vgg.run(h0, 1, 7)  # starts with a ReLU: the caller's tensor must stay as it was
    assert torch.equal(h0, h0_copy)
    taps = vgg(x, (0, 2, 7, 14))
    copies = {k: v.detach().clone() for k, v in taps.items()}
    assert (copies[2] < 0).any() and (copies[0] < 0).any()  # conv taps keep their negative values
    more = vgg(x, (0, 2, 7, 14, 28))  # running on past the taps
    assert all(torch.equal(more[k], copies[k]) for k in copies)
    assert all(torch.equal(taps[k], copies[k]) for k in copies)
    assert torch.equal(out, vgg.run(x, 0, 7))


def test_relus_after_conv_outputs_that_are_not_taps_run_in_place(vgg, monkeypatch):
    seen = []
    real = vgg_mod._ReLU.apply
    monkeypatch.setattr(vgg_mod._ReLU, "apply",
                        staticmethod(lambda h, inplace: seen.append(inplace) or real(h, inplace)))
    vgg(vgg.preprocess(_images(1)), (2, 9))
    assert seen == [True, False, True, True]  # ops 1, 3 (after tap 2: out of place), 6, 8
    assert len(seen) == len([i for i in RELU_INDICES if i < 9])


@pytest.mark.parametrize("pooled", [False, True])
def test_squared_distance_matches_autograd_of_the_chain_for_both_inputs(pooled):
    g = torch.Generator().manual_seed(5)
    f = torch.randn(2, 3, 4, 5, generator=g, requires_grad=True)
    t = torch.randn(1, 3, 4, 5, generator=g, requires_grad=True)  # broadcast, and differentiable here
    with BufferPool(min_bytes=0) if pooled else torch.enable_grad():
        got = perceptual._SquaredDistance.apply(f, t, 0.3)
        got_grads = torch.autograd.grad(got.sum() * 1.7, (f, t))
    want = (f.float() - t.float()).mul_(0.3).square().sum(dim=(1, 2, 3))
    want_grads = torch.autograd.grad(want.sum() * 1.7, (f, t))
    assert torch.equal(got, want) and all(torch.equal(a, b) for a, b in zip(got_grads, want_grads))
