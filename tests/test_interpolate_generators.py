"""lerp_generators (paper Eq. 6): endpoints, per-block λ, compatibility checks, the fine-tuning heuristic."""

import copy
import warnings

import pytest
import torch

from hrinv.errors import IncompatibleGeneratorsError, InvalidSettingError
from hrinv.generator.stylegan2 import Generator
from hrinv.interpolate import block_lambdas, block_of_key, generator_relation, lerp_generators, parse_lambda

TINY = dict(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3, mapping_kwargs={"num_layers": 2},
            synthesis_kwargs={"channel_base": 512, "channel_max": 32, "num_fp16_res": 0, "conv_clamp": None})


def _randomise(G, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in G.state_dict().items():
            if t.is_floating_point() and not key.endswith("resample_filter"):
                t.copy_(torch.randn(t.shape, generator=g) * scale)
    return G


def _make(seed=0, **overrides):
    kw = copy.deepcopy(TINY)
    for k, v in overrides.items():
        if isinstance(v, dict):
            kw[k].update(v)
        else:
            kw[k] = v
    return _randomise(Generator(**kw), seed)


def _finetune(G, seed=1, rel=0.05):
    """A "fine-tuned" copy: every float tensor (params and buffers but filters) moved by rel·N(0, 1)·|typical|."""
    Gt = copy.deepcopy(G)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in Gt.state_dict().items():
            if t.is_floating_point() and not key.endswith("resample_filter"):
                t.add_(rel * t.abs().mean().clamp_min(1e-3) * torch.randn(t.shape, generator=g))
    return Gt


@pytest.fixture(scope="module")
def pair():
    G_s = _make(0)
    return G_s, _finetune(G_s)


def _snapshot(G):
    return {k: v.clone() for k, v in G.state_dict().items()}


def test_endpoints_are_exact_and_inputs_untouched(pair):
    G_s, G_t = pair
    before_s, before_t = _snapshot(G_s), _snapshot(G_t)
    G0 = lerp_generators(G_s, G_t, 0.0)
    G1 = lerp_generators(G_s, G_t, 1.0, mapping_lam="target")
    for key, a in G_s.state_dict().items():
        assert torch.equal(G0.state_dict()[key], a), key
        assert torch.equal(G1.state_dict()[key], G_t.state_dict()[key]), key
    for key in before_s:
        assert torch.equal(before_s[key], G_s.state_dict()[key])
        assert torch.equal(before_t[key], G_t.state_dict()[key])
    assert G0 is not G_s and G1 is not G_t
    assert not any(p.requires_grad for p in G0.parameters())
    ws = torch.randn(2, G_s.num_ws, G_s.w_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(G0.synthesis(ws), G_s.synthesis(ws))
        assert torch.equal(G1.synthesis(ws), G_t.synthesis(ws))


def test_per_block_lambda_lands_on_the_right_keys(pair):
    G_s, G_t = pair
    lams = [0.1, 0.3, 0.6, 0.9]  # b4, b8, b16, b32
    G_m = lerp_generators(G_s, G_t, lams)
    by_block = dict(zip(G_s.synthesis.block_resolutions, lams))
    sd_s, sd_t, sd_m = G_s.state_dict(), G_t.state_dict(), G_m.state_dict()
    seen = set()
    for key, a in sd_s.items():
        part = block_of_key(key)
        if key.endswith("resample_filter"):
            assert torch.equal(sd_m[key], a)
            continue
        if part == "mapping":
            lam = lams[0]  # default: λ of the first block
        else:
            lam = by_block[int(part[1:])]
            seen.add(part)
        expect = a + lam * (sd_t[key] - a)
        torch.testing.assert_close(sd_m[key], expect, rtol=1e-6, atol=1e-6, msg=key)
        if not torch.equal(a, sd_t[key]):
            # and not any other block's λ
            for other in set(lams) - {lam}:
                assert not torch.allclose(sd_m[key], a + other * (sd_t[key] - a), atol=1e-7), key
    assert seen == {"b4", "b8", "b16", "b32"}
    assert G_m.meta["lerp"]["lambda_per_block"] == {"b4": 0.1, "b8": 0.3, "b16": 0.6, "b32": 0.9}


def test_layer_swapping_and_mapping_source(pair):
    G_s, G_t = pair
    G_m = lerp_generators(G_s, G_t, "swap:b16", mapping_lam="source")
    for key, v in G_m.state_dict().items():
        part = block_of_key(key)
        src = part in ("mapping", "b4", "b8") or key.endswith("resample_filter")
        assert torch.equal(v, (G_s if src else G_t).state_dict()[key]), key


def test_paper_schedule_and_parsing():
    blocks = [4, 8, 16, 32, 64, 128, 256, 512, 1024]
    paper = block_lambdas("paper", blocks)
    assert [paper[r] for r in blocks] == [0.2] * 5 + [0.7] * 4
    assert block_lambdas("swap:b64", blocks) == {r: (1.0 if r >= 64 else 0.0) for r in blocks}
    assert block_lambdas(parse_lambda("0.2,0.2,0.2,0.2,0.2,0.7,0.7,0.7,0.7"), blocks) == paper
    assert block_lambdas({f"b{r}": 0.5 for r in blocks}, blocks) == {r: 0.5 for r in blocks}
    assert block_lambdas(parse_lambda("0.25"), blocks) == {r: 0.25 for r in blocks}
    for bad in ("swap:b2048", "nonsense", [0.1, 0.2], {"b4": 0.1}, "0.1,x"):
        with pytest.raises(InvalidSettingError):
            block_lambdas(parse_lambda(bad) if isinstance(bad, str) else bad, blocks)


def test_incompatible_generators_are_refused(pair):
    G_s, _ = pair
    other_res = _make(0, img_resolution=64)
    with pytest.raises(IncompatibleGeneratorsError, match="img_resolution"):
        lerp_generators(G_s, other_res)
    narrower = _make(0, synthesis_kwargs={"channel_max": 16})
    with pytest.raises(IncompatibleGeneratorsError, match="shape"):
        lerp_generators(G_s, narrower)
    deeper_mapping = _make(0, mapping_kwargs={"num_layers": 3})
    with pytest.raises(IncompatibleGeneratorsError, match="keys only in G_t"):
        lerp_generators(G_s, deeper_mapping)


def test_runtime_only_kwargs_are_tolerated(pair):
    G_s, _ = pair
    clamped = copy.deepcopy(_make(0, synthesis_kwargs={"conv_clamp": 256}))
    clamped.load_state_dict(_finetune(G_s).state_dict())
    G_m = lerp_generators(G_s, clamped, 0.5)
    assert G_m.init_kwargs == G_s.init_kwargs
    assert G_m.meta["lerp"]["tolerated_differences"]


def test_warns_on_unrelated_generators_only(pair, caplog):
    G_s, G_t = pair
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a genuine fine-tune must not warn
        lerp_generators(G_s, G_t, "paper")
    assert generator_relation(G_s, G_t)["looks_finetuned"]
    unrelated = _make(7)
    rel = generator_relation(G_s, unrelated)
    assert not rel["looks_finetuned"] and abs(rel["median_cosine"]) < 0.3
    with pytest.warns(UserWarning, match="fine-tuned"):
        lerp_generators(G_s, unrelated, "paper")
    assert any("fine-tuned" in r.getMessage() for r in caplog.records if r.name.startswith("hrinv"))


def test_inr_head_gets_the_last_block_lambda(pair):
    from hrinv.generator.inr import INRHead

    G_s, G_t = copy.deepcopy(pair[0]), copy.deepcopy(pair[1])
    R = G_s.img_resolution
    G_s.attach_inr(_randomise(INRHead(G_s.synthesis.channels[R], R), 11))
    G_t.attach_inr(_randomise(INRHead(G_t.synthesis.channels[R], R), 11))
    with torch.no_grad():
        for t in G_t.inr.parameters():
            t.add_(0.1)
    G_m = lerp_generators(G_s, G_t, [0.1, 0.2, 0.3, 0.8])
    sd_s, sd_t, sd_m = G_s.state_dict(), G_t.state_dict(), G_m.state_dict()
    inr_keys = [k for k in sd_m if k.startswith("inr.") and sd_m[k].is_floating_point()]
    assert inr_keys and G_m.inr is not None and G_m.inr is not G_s.inr
    for key in inr_keys:
        torch.testing.assert_close(sd_m[key], sd_s[key] + 0.8 * (sd_t[key] - sd_s[key]))
    G_s.attach_inr(None)
    with pytest.raises(IncompatibleGeneratorsError, match="INR head"):
        lerp_generators(G_s, G_t, 0.5)


def test_real_snapshot_pair_g_and_g_ema():
    """The NVIDIA fixture snapshot holds G_ema and the training G (= G_ema + N(0, 0.05)): a related pair."""
    from conftest import fixture_path
    from hrinv.io.checkpoints import load_generator

    pkl = fixture_path("nv_tiny", "network_proto4.pkl")
    G_ema, G = load_generator(pkl), load_generator(pkl, which="G")
    rel = generator_relation(G_ema, G)
    assert rel["looks_finetuned"] and rel["median_cosine"] > 0.99
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        G_m = lerp_generators(G_ema, G, "swap:b16")
    assert torch.equal(G_m.state_dict()["synthesis.b8.conv0.weight"], G_ema.state_dict()["synthesis.b8.conv0.weight"])
    assert torch.equal(G_m.state_dict()["synthesis.b16.conv0.weight"], G.state_dict()["synthesis.b16.conv0.weight"])
