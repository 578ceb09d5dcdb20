"""fit_inr_head: distil a head from a generator's own output (nv_tiny fixture; ~15 s on one core)."""

import json

import pytest
import torch
from conftest import fixture_generator, fixture_path
from safetensors.torch import load_file

from hrinv.generator.inr import INRHead, fit_inr_head, psnr
from hrinv.generator.stylegan2 import Generator


@pytest.fixture(scope="module")
def nv_tiny():
    G, _ = fixture_generator("nv_tiny")
    return G, load_file(str(fixture_path("nv_tiny", "io.safetensors")))


@pytest.fixture(scope="module")
def fitted(nv_tiny):
    G, _ = nv_tiny
    before = {k: v.clone() for k, v in G.state_dict().items()}
    calls = []
    G2 = fit_inr_head(G, steps=80, batch=4, points=1024, reuse=8, generator=torch.Generator().manual_seed(0),
                      callback=lambda s, n, p: calls.append((s, n, None if p is None else tuple(p.shape))),
                      preview_every=40)
    return G, G2, before, calls


def test_input_untouched_and_new_generator(fitted):
    G, G2, before, calls = fitted
    assert G.inr is None and G2 is not G and G2.inr is not None
    assert all(torch.equal(v, before[k]) for k, v in G.state_dict().items())
    assert G2.fingerprint() == G.fingerprint()
    assert [c[0] for c in calls] == list(range(1, 81)) and calls[-1][1] == 80
    assert calls[39][2] == (1, 3, 32, 64) and calls[0][2] is None


@torch.no_grad()
def test_native_psnr_and_any_shape(fitted, nv_tiny):
    _, G2, _, _ = fitted
    _, io = nv_tiny
    ref = G2.synthesis(io["ws"])
    out = G2.synthesis(io["ws"], shape=(32, 32))
    assert (psnr(out, ref) >= 35).all()
    wide = G2.synthesis(io["ws"], shape=(24, 80))
    assert wide.shape == (4, 3, 24, 80) and torch.isfinite(wide).all()
    info = G2.inr.fit_info
    assert info["psnr_native_db"] >= 35 and info["steps"] == 80
    # the learned residual must not make in-between pixels worse than plain bicubic on held-out samples
    assert info["psnr_2x_head_db"] >= info["psnr_2x_bicubic_db"] - 0.2


def test_head_serialises(fitted):
    _, G2, _, _ = fitted
    cfg = json.loads(json.dumps(G2.inr.config))
    assert cfg["fit_info"]["steps"] == 80
    G3 = Generator(**G2.init_kwargs).attach_inr(INRHead.from_config(cfg))
    G3.load_state_dict(G2.state_dict(), strict=True)
    ws = G3.mapping(torch.randn(1, G3.z_dim))
    with torch.no_grad():
        torch.testing.assert_close(G3.synthesis(ws, shape=(20, 50)), G2.synthesis(ws, shape=(20, 50)))


def test_fit_is_reproducible_and_cancellable(nv_tiny):
    G, _ = nv_tiny
    a = fit_inr_head(G, steps=3, batch=2, points=64, generator=torch.Generator().manual_seed(1))
    b = fit_inr_head(G, steps=3, batch=2, points=64, generator=torch.Generator().manual_seed(1))
    for k, v in a.inr.state_dict().items():
        torch.testing.assert_close(v, b.inr.state_dict()[k], atol=0, rtol=0)

    def cancel(step, total, preview):
        if step == 2:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        fit_inr_head(G, steps=5, batch=2, points=64, callback=cancel)
    assert G.inr is None
