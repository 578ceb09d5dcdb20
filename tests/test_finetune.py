"""hrinv.finetune: few-shot G_t from style images (JoJoGAN recipe). Seeded tiny random generators, no ../shared."""

import copy
import warnings

import pytest
import torch

import hrinv
from hrinv.errors import InvalidSettingError, ShapeError
from hrinv.finetuning import FinetuneConfig, finetune, mixed_rows, tuned_parameter_names
from hrinv.generator.stylegan2 import Generator
from hrinv.interpolate import generator_relation, lerp_generators
from hrinv.io.checkpoints import load_generator, save_generator

SMALL = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3, mapping_kwargs={"num_layers": 2},
             synthesis_kwargs={"channel_base": 256, "channel_max": 16, "num_fp16_res": 0, "conv_clamp": None})


def small_generator(seed=0, res=32):
    g = torch.Generator().manual_seed(seed)
    G = Generator(**{**SMALL, "img_resolution": res})
    with torch.no_grad():
        for key, t in G.state_dict().items():
            if t.is_floating_point() and not key.endswith("resample_filter"):
                t.copy_(torch.randn(t.shape, generator=g) * (0.1 if key.endswith("bias") else 1.0))
    return G.eval().requires_grad_(False)


def mse_loss(pred, target):
    return (pred - target).square().flatten(1).mean(1)  # [B]


@pytest.fixture(scope="module")
def G_s():
    return small_generator(0)


@pytest.fixture(scope="module")
def styles():
    g = torch.Generator().manual_seed(5)
    low = torch.rand(2, 3, 4, 4, generator=g)
    return (torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear") * 2 - 1).contiguous()


@pytest.fixture(scope="module")
def style_ws(G_s):
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        return G_s.mapping(torch.randn(2, G_s.z_dim, generator=g), None)  # [2, num_ws, w_dim]


FAST = dict(steps=6, batch_size=2, invert_steps=0, w_avg_samples=64)


def test_mixed_rows_scale_jojogan_layout():
    assert mixed_rows(18) == list(range(7, 18))
    assert mixed_rows(18, FinetuneConfig(preserve_color=True)) == [9, 11, 15, 16, 17]
    assert mixed_rows(10) == [4, 5, 6, 7, 8, 9]
    assert mixed_rows(10, FinetuneConfig(preserve_color=True)) == [5, 6, 8, 9]
    assert set(mixed_rows(14, FinetuneConfig(preserve_color=True))) < set(mixed_rows(14))
    assert mixed_rows(10, FinetuneConfig(mix_rows=[3, 1, 3])) == [1, 3]
    with pytest.raises(InvalidSettingError, match="out of range"):
        mixed_rows(10, FinetuneConfig(mix_rows=[12]))


@pytest.mark.parametrize("bad", [dict(steps=0), dict(lr=-1), dict(alpha=2), dict(mix_rows="some"),
                                 dict(mix_rows=[]), dict(tune_blocks="b4"), dict(betas=(1.0, 0.9)),
                                 dict(loss_layers="low"), dict(seed=-3), dict(batch_size=0)])
def test_config_refuses_bad_values(bad):
    with pytest.raises(InvalidSettingError, match="FinetuneConfig"):
        FinetuneConfig(**bad)


def test_bad_style_images(G_s):
    with pytest.raises(ShapeError, match="32x32"):
        finetune(G_s, torch.zeros(1, 3, 16, 16), mse_loss, FinetuneConfig(**FAST))
    with pytest.raises(ShapeError, match=r"\[-1, 1\]"):
        finetune(G_s, torch.full((1, 3, 32, 32), 200.0), mse_loss, FinetuneConfig(**FAST))
    with pytest.raises(ShapeError, match="RGB"):
        finetune(G_s, torch.zeros(3, 32, 32), mse_loss, FinetuneConfig(**FAST))
    with pytest.raises(ShapeError, match="style_latents"):
        finetune(G_s, torch.zeros(2, 3, 32, 32), mse_loss, FinetuneConfig(**FAST), style_latents=torch.zeros(1, 8, 16))
    with pytest.raises(InvalidSettingError, match="tune_blocks"):
        tuned_parameter_names(G_s, FinetuneConfig(tune_blocks=["b1024"]))


def test_finetune_learns_style_keeps_source_and_architecture(G_s, styles, style_ws, tmp_path):
    before = {k: v.clone() for k, v in G_s.state_dict().items()}
    cfg = FinetuneConfig(steps=40, batch_size=2, invert_steps=0, lr=5e-3, seed=1)
    G_t = finetune(G_s, styles, mse_loss, cfg, style_latents=style_ws)
    # G_s untouched, still frozen
    for k, v in G_s.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(p.requires_grad for p in G_s.parameters())
    assert not any(p.requires_grad for p in G_t.parameters())
    # the references' codes now render closer to the references, and random (mixed) codes move towards them too
    with torch.no_grad():
        d_s = mse_loss(G_s.synthesis(style_ws), styles).mean()
        d_t = mse_loss(G_t.synthesis(style_ws), styles).mean()
        mixed = style_ws.clone()
        mixed[:, 3:] = G_s.mapping(torch.randn(2, 16, generator=torch.Generator().manual_seed(3)), None)[:, 3:]
        m_s = mse_loss(G_s.synthesis(mixed), styles).mean()
        m_t = mse_loss(G_t.synthesis(mixed), styles).mean()
    assert d_t < 0.7 * d_s, (float(d_s), float(d_t))
    assert m_t < 0.7 * m_s, (float(m_s), float(m_t))
    info = G_t.meta["finetune"]
    assert info["loss_last"] < info["loss_first"]
    assert info["mixed_rows"] == mixed_rows(G_s.num_ws)
    # the mapping network is never trained: random codes and w_avg are G_s's
    for k, v in G_t.state_dict().items():
        if k.startswith("mapping."):
            assert torch.equal(v, G_s.state_dict()[k]), k
    # lineage, architecture: lerp_generators accepts it without a warning
    assert G_t.meta["parent_fingerprint"] == G_s.fingerprint() != G_t.fingerprint()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        G_m = lerp_generators(G_s, G_t, 0.5)
    assert generator_relation(G_s, G_t)["looks_finetuned"]
    assert G_m.img_resolution == G_s.img_resolution
    # saved as our .safetensors, the lineage survives a reload
    path = save_generator(G_t, tmp_path / "gt.safetensors")
    G_r = load_generator(path)
    assert G_r.meta["parent_fingerprint"] == G_s.fingerprint()
    assert G_r.meta["finetune"]["mixed_rows"] == info["mixed_rows"]
    assert G_r.fingerprint() == G_t.fingerprint()


def test_seeded_and_reproducible(G_s, styles, style_ws):
    a = finetune(G_s, styles, mse_loss, FinetuneConfig(**FAST, seed=3), style_latents=style_ws)
    b = finetune(G_s, styles, mse_loss, FinetuneConfig(**FAST, seed=3), style_latents=style_ws)
    c = finetune(G_s, styles, mse_loss, FinetuneConfig(**FAST, seed=4), style_latents=style_ws)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    g = torch.Generator().manual_seed(11)
    d = finetune(G_s, styles, mse_loss, FinetuneConfig(**{**FAST, "seed": None}), style_latents=style_ws, generator=g)
    assert d.meta["finetune"]["seed"] != "None"


def test_tune_blocks_and_mix_rows_limit_what_changes(G_s, styles, style_ws):
    cfg = FinetuneConfig(**FAST, tune_blocks=["b16", "b32"], mix_rows=[6, 7])
    G_t = finetune(G_s, styles, mse_loss, cfg, style_latents=style_ws)
    sd_s, sd_t = G_s.state_dict(), G_t.state_dict()
    changed = {k.split(".")[1] for k in sd_s if k.startswith("synthesis.") and not torch.equal(sd_s[k], sd_t[k])}
    assert changed == {"b16", "b32"}
    assert G_t.meta["finetune"]["tuned_blocks"] == ["b16", "b32"]
    assert G_t.meta["finetune"]["mixed_rows"] == [6, 7]


def test_inversion_progress_preview_and_cancel(G_s, styles):
    calls = []
    cfg = FinetuneConfig(steps=4, batch_size=1, invert_steps=3, preview_every=2, w_avg_samples=64)
    G_t = finetune(G_s, styles, mse_loss, cfg, callback=lambda s, t, p: calls.append((s, t, p)))
    assert [c[0] for c in calls] == list(range(1, 8)) and all(c[1] == 7 for c in calls)
    previews = [c[2] for c in calls if c[2] is not None]
    assert len(previews) == 2 and previews[0].shape == (2, 3, 32, 32)
    assert len(G_t.meta["finetune"]["reference_inversion_psnr"]) == 2

    before = {k: v.clone() for k, v in G_s.state_dict().items()}

    def cancel(step, total, preview):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(G_s, styles, mse_loss, cfg, callback=cancel)
    assert all(torch.equal(v, before[k]) for k, v in G_s.state_dict().items())
    assert not any(p.requires_grad or p.grad is not None for p in G_s.parameters())


def test_inside_inference_mode_like_comfyui(styles, style_ws):
    with torch.inference_mode():
        G = small_generator(0)
        st = styles.clone()
        ws = style_ws.clone()
        G_t = finetune(G, st, mse_loss, FinetuneConfig(**FAST), style_latents=ws)
    assert G_t.meta["parent_fingerprint"] == G.fingerprint()
    with torch.no_grad():
        assert G_t.synthesis(style_ws).shape == (2, 3, 32, 32)


def test_perceptual_loss_and_public_api():
    from nodes_harness import random_vgg

    assert hrinv.finetune is finetune and hrinv.FinetuneConfig is FinetuneConfig
    G64 = small_generator(0, res=64)
    styles = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    cfg = FinetuneConfig(steps=2, batch_size=1, invert_steps=1, lambda_mse=0.1, w_avg_samples=64)
    G_t = hrinv.finetune(G64, styles, random_vgg(0), cfg)
    assert G_t.meta["parent_fingerprint"] == G64.fingerprint()
    assert G_t.meta["finetune"]["config"]["lambda_mse"] == 0.1
    assert copy.deepcopy(G_t).fingerprint() == G_t.fingerprint()


def test_cli_finetune_writes_generator_json_and_sheet(tmp_path, capsys):
    import json

    from nodes_harness import random_vgg
    from PIL import Image
    from safetensors.torch import save_file

    from hrinv.cli import main

    G64 = small_generator(0, res=64)
    save_generator(G64, tmp_path / "gs.safetensors")
    save_file({f"features.{k}": v.contiguous() for k, v in random_vgg().features.state_dict().items()},
              str(tmp_path / "vgg.safetensors"))
    rng = torch.Generator().manual_seed(4)
    for name in ("a", "b"):
        arr = (torch.rand(80, 90, 3, generator=rng) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(tmp_path / f"{name}.png")
    out = tmp_path / "out" / "gt.safetensors"
    rc = main(["finetune", "--generator", str(tmp_path / "gs.safetensors"), "--style", str(tmp_path / "a.png"),
               str(tmp_path / "b.png"), "--vgg", str(tmp_path / "vgg.safetensors"), "--out", str(out), "--steps", "2",
               "--invert-steps", "1", "--batch-size", "1", "--preserve-color", "--seed", "7", "--device", "cpu"])
    assert rc == 0
    G_t = load_generator(out)
    assert G_t.meta["parent_fingerprint"] == load_generator(tmp_path / "gs.safetensors").fingerprint()
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["settings"]["preserve_color"] is True and rec["seed"] == "7" and rec["settings"]["steps"] == 2
    assert rec["mixed_rows"] == [5, 6, 8, 9] and len(rec["metrics"]["reference_inversion_psnr"]) == 2
    with Image.open(out.with_suffix(".png")) as im:
        assert im.size == (128, 192)  # 2 references x 3 rows (reference, G_s, G_t)
    assert "G_t ->" in capsys.readouterr().out

    rc = main(["finetune", "--generator", str(tmp_path / "gs.safetensors"), "--style", str(tmp_path / "nope.png"),
               "--vgg", str(tmp_path / "vgg.safetensors"), "--out", str(out)])
    assert rc == 1 and "not found" in capsys.readouterr().err
    rc = main(["finetune", "--generator", str(tmp_path / "gs.safetensors"), "--style", str(tmp_path / "a.png"),
               "--vgg", str(tmp_path / "vgg.safetensors"), "--out", str(out), "--mix-rows", "1,x"])
    assert rc == 2 and "--mix-rows" in capsys.readouterr().err
