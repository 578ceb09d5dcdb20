"""local_style_optimize (Eq. 8) mechanics on a tiny random generator with a cheap loss: row selection, exactness of
the untouched rows, no gradients into the generator, batches = independent problems, callbacks, noise maps."""

import copy

import pytest
import torch

from hrinv.errors import InvalidSettingError, ShapeError
from hrinv.generator.stylegan2 import Generator
from hrinv.latent import Latent
from hrinv.lso import LSOConfig, local_style_optimize, resolve_rows

TINY = dict(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3, mapping_kwargs={"num_layers": 2},
            synthesis_kwargs={"channel_base": 512, "channel_max": 32, "num_fp16_res": 0, "conv_clamp": None})


def pixel_loss(pred, target):
    return (pred - target).square().flatten(1).mean(1)  # [B]


@pytest.fixture(scope="module")
def setup():
    G = Generator(**TINY)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, t in G.state_dict().items():
            if t.is_floating_point() and not key.endswith("resample_filter"):
                t.copy_(torch.randn(t.shape, generator=g) * (0.3 if key.endswith("bias") else 1.0))
    G.requires_grad_(True)  # like a freshly built user module: LSO must still leave it alone
    z = torch.randn(3, G.z_dim, generator=g)
    with torch.no_grad():
        ws = G.mapping(z)  # [3, 8, 32]
        content = G.synthesis(ws[:2]).clamp(-1, 1)  # [2, 3, 32, 32]
    w_m = ws[1:].clone()  # a different code per content
    return G, w_m, content


FAST = dict(steps=4, w_avg_samples=256, seed=3)


@pytest.mark.parametrize("num_ws,auto", [(8, [0, 1, 2, 3, 4]), (10, [0, 1, 2, 3, 4]), (18, [0, 1, 2, 3, 4]),
                                          (6, [0, 1, 2, 3, 4]), (4, [0, 1, 2])])
def test_resolve_rows(num_ws, auto):
    assert resolve_rows("auto", num_ws) == auto
    assert resolve_rows("all", num_ws) == list(range(num_ws))
    assert resolve_rows(2, num_ws) == [0, 1]
    assert resolve_rows([3, 1, 1], num_ws) == [1, 3]
    if num_ws >= 6:
        assert resolve_rows("b8", num_ws) == [0, 1, 2]  # b4.conv1, b8.conv0, b8.conv1
    for bad in ("b3", "x", 0, [num_ws], []):
        with pytest.raises(InvalidSettingError):
            resolve_rows(bad, num_ws)


def test_only_chosen_rows_move_and_nothing_else_changes(setup):
    G, w_m, content = setup
    before = {k: v.clone() for k, v in G.state_dict().items()}
    w_keep, c_keep = w_m.clone(), content.clone()
    r = local_style_optimize(G, w_m, content, pixel_loss, LSOConfig(rows=[0, 2, 3], lr=1.0, **FAST))
    out = r.latent.ws
    assert r.rows == [0, 2, 3]
    for row in range(G.num_ws):
        if row in r.rows:
            assert not torch.equal(out[:, row], w_m[:, row])
        else:
            assert torch.equal(out[:, row], w_m[:, row]), row  # bit for bit
            assert torch.count_nonzero(r.w_opt[:, row]) == 0
    torch.testing.assert_close(out, w_m + r.w_opt)
    assert torch.equal(w_m, w_keep) and torch.equal(content, c_keep)
    assert all(p.grad is None for p in G.parameters())
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    assert r.image.shape == content.shape and r.history.shape == (4, 2)
    assert r.latent.generator_fingerprint == G.fingerprint()


def test_lso_reduces_the_loss_and_reg_limits_the_offset(setup):
    G, w_m, content = setup
    w_m, content = w_m[:1], content[:1]
    free = local_style_optimize(G, w_m, content, pixel_loss, LSOConfig(reg_weight=0.0, lr=0.5, steps=8,
                                                                       w_avg_samples=256, seed=0))
    assert all(a < b for a, b in zip(free.metrics["d_h_after"], free.metrics["d_h_before"]))
    tight = local_style_optimize(G, w_m, content, pixel_loss, LSOConfig(reg_weight=1e4, lr=0.5, steps=8,
                                                                        w_avg_samples=256, seed=0))
    assert max(tight.metrics["w_opt_norm"]) < 0.5 * min(free.metrics["w_opt_norm"])


def test_batch_is_independent_problems(setup):
    G, w_m, content = setup
    cfg = LSOConfig(**FAST)
    both = local_style_optimize(G, w_m, content, pixel_loss, cfg)
    for i in range(2):
        one = local_style_optimize(G, w_m[i:i + 1], content[i:i + 1], pixel_loss,
                                   LSOConfig(**{**FAST, "seed": FAST["seed"] + i}))
        torch.testing.assert_close(one.latent.ws[0], both.latent.ws[i], rtol=1e-4, atol=1e-5)


def test_callback_previews_and_cancel(setup):
    G, w_m, content = setup
    calls = []
    r = local_style_optimize(G, w_m[:1], content, pixel_loss, LSOConfig(preview_every=3, **FAST),
                             callback=lambda s, t, p: calls.append((s, t, None if p is None else tuple(p.shape))))
    assert r.latent.ws.shape[0] == 2  # one code for two contents broadcasts
    assert [c[0] for c in calls] == list(range(1, 5)) and calls[2][2] == (2, 3, 32, 32) and calls[0][2] is None

    def cancel(step, total, preview):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        local_style_optimize(G, w_m, content, pixel_loss, LSOConfig(**FAST), callback=cancel)
    assert all(p.grad is None for p in G.parameters())


def test_noise_maps_and_latent_input(setup):
    G, w_m, content = setup
    lat = Latent(ws=w_m, noise=None, generator_fingerprint="", settings={"from": "test"})
    r = local_style_optimize(G, lat, content, pixel_loss, LSOConfig(noise_maps=True, **FAST))
    assert set(r.latent.noise) == set(G.synthesis.noise_names)
    for n in r.latent.noise.values():
        assert n.shape[0] == 2
        torch.testing.assert_close(n.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    assert r.latent.settings["base"] == {"from": "test"}
    # given noise maps are kept fixed (and used) when not optimised
    fixed = local_style_optimize(G, r.latent, content, pixel_loss, LSOConfig(**FAST))
    assert all(torch.equal(fixed.latent.noise[k], r.latent.noise[k]) for k in r.latent.noise)


def test_inference_mode_inputs(setup):
    G, w_m, content = setup
    with torch.inference_mode():
        Gi = copy.deepcopy(G)
        wi, ci = w_m.clone(), content.clone()
        r = local_style_optimize(Gi, wi, ci, pixel_loss, LSOConfig(**FAST))
    assert r.latent.ws.shape == w_m.shape


def test_bad_inputs(setup):
    G, w_m, content = setup
    with pytest.raises(ShapeError):
        local_style_optimize(G, w_m[:, :4], content, pixel_loss, LSOConfig(**FAST))
    with pytest.raises(ShapeError):
        local_style_optimize(G, w_m, content[..., :16, :16], pixel_loss, LSOConfig(**FAST))
    with pytest.raises(ShapeError):
        local_style_optimize(G, w_m, content * 10, pixel_loss, LSOConfig(**FAST))
    with pytest.raises(ShapeError, match="w_m holds 2 codes but content holds 3 images") as e:
        local_style_optimize(G, w_m, content[:1].expand(3, -1, -1, -1), pixel_loss, LSOConfig(**FAST))
    assert "Pass as many content images as codes" in str(e.value)
    with pytest.raises(InvalidSettingError):
        LSOConfig(steps=0)
    with pytest.raises(InvalidSettingError):
        LSOConfig(reg_units="weird")
