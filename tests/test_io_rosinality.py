"""rosinality .pt checkpoints -> our Generator: the rosinality reference outputs are reproduced (max |diff| <= 1e-4)."""

import argparse
import json
import os

import pytest
import torch
from conftest import extra_fixtures, fixture_path
from safetensors.torch import load_file

from hrinv.errors import CheckpointFormatError, UnsafeCheckpointError
from hrinv.io.checkpoints import estimate_w_avg, load_generator, read_checkpoint
from hrinv.io.rosinality import fit_channel_table, rosinality_noise_names

TOL = 1e-4


def _ros(name):
    d = fixture_path(name, "checkpoint.pt").parent
    return d, json.loads((d / "config.json").read_text()), load_file(str(d / "io.safetensors"))


# ros_cm1_64 (committed) and ros_small (../shared): 64 px, channel_multiplier 1, 8-layer style MLP and a channel
# table that narrows at 64 px, which the loader must fit from the checkpoint's shapes
@pytest.mark.parametrize("name,n", [("ros_cm2_32", 2), ("ros_cm1_64", 1),
                                    *[(x, 1) for x in extra_fixtures("ros_small")]])
def test_rosinality_outputs_are_reproduced(name, n):
    d, cfg, io = _ros(name)
    G = load_generator(d / "checkpoint.pt")
    assert G.img_resolution == cfg["size"] and G.w_dim == cfg["style_dim"] and G.num_ws == cfg["n_latent"]
    assert G.mapping.num_layers == cfg["n_mlp"]
    assert {str(r): c for r, c in G.synthesis.channels.items()} == cfg["channels_used"]
    assert torch.equal(G.mapping.w_avg, io["latent_avg"])
    z = io["z"][:n]
    with torch.no_grad():
        ws = G.mapping(z, None)  # [n, num_ws, w_dim]
        assert (ws[:, 0] - io["w"][:n]).abs().max() <= TOL
        assert (G.synthesis(ws, noise_mode="const") - io["img"][:n]).abs().max() <= TOL
        ws_t = G.mapping(z, None, truncation_psi=0.7)
        assert (G.synthesis(ws_t, noise_mode="const") - io["img_trunc"][:n]).abs().max() <= TOL
        assert (G.synthesis(io["wplus"][:n], noise_mode="const") - io["img_wplus"][:n]).abs().max() <= TOL
        names = rosinality_noise_names(G.img_resolution)
        noise = {layer: io[f"noise_explicit_{i}"][:n] for i, layer in enumerate(names)}
        img = G.synthesis(ws, noise_mode="const", noise=noise)
        assert (img - io["img_noise_explicit"][:n]).abs().max() <= TOL
        assert (img - io["img"][:n]).abs().max() > 0.1  # explicit noise really changed the image


def test_noise_index_mapping_matches_generator_layers():
    assert rosinality_noise_names(32) == ["b4.conv1", "b8.conv0", "b8.conv1", "b16.conv0", "b16.conv1",
                                          "b32.conv0", "b32.conv1"]
    d, _, _ = _ros("ros_cm2_32")
    G = load_generator(d / "checkpoint.pt")
    assert rosinality_noise_names(32) == list(G.synthesis.noise_names)
    ck = torch.load(d / "checkpoint.pt", weights_only=True)
    for i, layer in enumerate(rosinality_noise_names(32)):  # the stored noise maps land on those layers
        assert torch.equal(G.synthesis.noise_buffers()[layer], ck["g_ema"][f"noises.noise_{i}"][0, 0])


def test_channel_table_fit():
    assert fit_channel_table({4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128}, 256) == (32768, 512)
    assert fit_channel_table({4: 512, 8: 512, 16: 512, 32: 512, 64: 256}, 64) == (16384, 512)
    assert fit_channel_table({4: 64, 8: 64, 16: 64, 32: 64, 64: 32}, 64) == (2048, 64)
    assert fit_channel_table({4: 32, 8: 64, 16: 16}, 16) is None


def test_jojogan_style_g_only_checkpoint_estimates_w_avg(tmp_path):
    d, _, io = _ros("ros_cm2_32")
    ck = torch.load(d / "checkpoint.pt", weights_only=True)
    path = tmp_path / "jojo.pt"
    torch.save({"g": ck["g_ema"]}, path)
    G = load_generator(path)
    assert G.meta["w_avg"].startswith("estimated")
    assert not torch.equal(G.mapping.w_avg, io["latent_avg"])
    torch.testing.assert_close(G.mapping.w_avg, estimate_w_avg(G), rtol=0, atol=0)  # deterministic
    assert (G.mapping.w_avg - estimate_w_avg(G, seed=1)).abs().max() < 0.1  # a mean, not one sample
    with torch.no_grad():  # apart from w_avg the network is the same
        assert (G.synthesis(io["wplus"][:1]) - io["img_wplus"][:1]).abs().max() <= TOL
    with pytest.raises(CheckpointFormatError, match="'g'"):  # which="G" needs a non-EMA 'g'
        read_checkpoint(_g_ema_only(tmp_path, ck), which="G")


def _g_ema_only(tmp_path, ck):
    p = tmp_path / "ema_only.pt"
    torch.save({"g_ema": ck["g_ema"], "latent_avg": ck["latent_avg"]}, p)
    return p


def test_training_checkpoint_with_argparse_namespace(tmp_path):
    d, _, _ = _ros("ros_cm2_32")
    ck = torch.load(d / "checkpoint.pt", weights_only=True)
    g = {k: v + 0.5 if k.startswith("style.1") else v for k, v in ck["g_ema"].items()}
    assert argparse.Namespace not in torch.serialization.get_safe_globals()
    path = tmp_path / "train.pt"
    torch.save({"g": g, "d": {"x": torch.zeros(2)}, "g_ema": ck["g_ema"], "g_optim": {"state": {}},
                "d_optim": {"state": {}}, "args": argparse.Namespace(size=32, lr=0.002, path="/data"),
                "ada_aug_p": 0.1, "latent_avg": ck["latent_avg"]}, path)
    _, sd, extras = read_checkpoint(path)
    assert extras["args"] == {"size": 32, "lr": 0.002, "path": "/data"} and extras["key"] == "g_ema"
    assert argparse.Namespace not in torch.serialization.get_safe_globals()  # the allow-list change was local
    _, sd_g, extras_g = read_checkpoint(path, which="G")
    assert extras_g["key"] == "g"
    assert torch.equal(sd_g["mapping.fc0.weight"], sd["mapping.fc0.weight"] + 0.5)


def test_dualstylegan_generator_prefix_is_extracted(tmp_path):
    d, _, _ = _ros("ros_cm2_32")
    ck = torch.load(d / "checkpoint.pt", weights_only=True)
    dual = {f"generator.{k}": v for k, v in ck["g_ema"].items()}
    dual.update({"style.0.weight": torch.zeros(3), "res.0.conv.weight": torch.zeros(2, 2)})
    path = tmp_path / "dual.pt"
    torch.save({"g_ema": dual}, path)
    _, sd, extras = read_checkpoint(path)
    _, ref, _ = read_checkpoint(d / "checkpoint.pt")
    assert extras.get("dualstylegan") and set(sd) == set(ref)
    assert all(torch.equal(sd[k], ref[k]) for k in ref if k != "mapping.w_avg")


@pytest.mark.parametrize("edit,match", [
    (lambda sd: sd.pop("convs.1.noise.weight"), "missing"),
    (lambda sd: sd.update({"extra.weight": torch.zeros(1)}), "unexpected"),
    (lambda sd: sd.update({"convs.0.conv.weight": torch.zeros(1, 32, 16, 3, 3)}), "shape"),
    (lambda sd: sd.update({"convs.0.conv.blur.kernel": torch.ones(4, 4)}), "blur kernel"),
    (lambda sd: sd.update({"style.1.weight": "oops"}), "not tensors"),
])
def test_inconsistent_rosinality_state_dicts_are_rejected_with_details(tmp_path, edit, match):
    d, _, _ = _ros("ros_cm2_32")
    ck = torch.load(d / "checkpoint.pt", weights_only=True)
    sd = dict(ck["g_ema"])
    edit(sd)
    path = tmp_path / "bad.pt"
    torch.save({"g_ema": sd}, path)
    with pytest.raises(CheckpointFormatError, match=match):
        load_generator(path)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zip_format", [True, False])
def test_pt_with_code_is_refused_and_never_runs(tmp_path, zip_format):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": _Evil(marker)}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_generator(path)
    assert not marker.exists()


def test_pt_without_generator_is_a_format_error(tmp_path):
    path = tmp_path / "opt.pt"
    torch.save({"optimizer": {"lr": 0.1}, "step": 3}, path)
    with pytest.raises(CheckpointFormatError, match="g_ema"):
        load_generator(path)
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointFormatError, match="Tensor"):
        load_generator(path)


def _meta_state_dict(shapes):
    """Shape-only tensors (meta device) for the stock layouts; the 4x4 blur kernels get their real values."""
    from hrinv.io.rosinality import resample_filter
    return {k: (resample_filter() * 4 if k.endswith("kernel") else torch.empty(s, device="meta"))
            for k, s in shapes.items()}


@pytest.mark.parametrize("ros,nv", [("ros_stock_size1024_sd512_mlp8_cm2", "nv_stock_cfg_stylegan2_res1024"),
                                    ("ros_stock_size256_sd512_mlp8_cm2", None),
                                    ("ros_stock_size64_sd128_mlp8_cm1", None)])
def test_stock_rosinality_layouts_map_onto_stock_nvidia_layouts(ros, nv):
    """Full-size layouts (no weights): the converted keys/shapes are those of the NVIDIA network of the same config."""
    from hrinv.io.checkpoints import infer_nvidia_config
    from hrinv.io.rosinality import convert_rosinality_state_dict
    ros_info = json.loads(fixture_path("shapes", f"{ros}.json").read_text())
    init_kwargs, sd, _ = convert_rosinality_state_dict(_meta_state_dict(ros_info["state_dict_shapes"]))
    cm = ros_info["ctor_kwargs"]["channel_multiplier"]
    assert init_kwargs["synthesis_kwargs"]["channel_max"] == 512
    assert init_kwargs["synthesis_kwargs"]["channel_base"] == {2: 32768, 1: 16384}[cm]
    assert init_kwargs["img_resolution"] == ros_info["ctor_kwargs"]["size"]
    assert init_kwargs["mapping_kwargs"]["num_layers"] == ros_info["ctor_kwargs"]["n_mlp"]
    if nv is None:
        from hrinv.generator.stylegan2 import Generator
        ref = Generator(**init_kwargs, device="meta").state_dict()
        assert {k: list(v.shape) for k, v in sd.items()} == {k: list(v.shape) for k, v in ref.items()}
    else:
        nv_info = json.loads(fixture_path("shapes", f"{nv}.json").read_text())
        assert {k: list(v.shape) for k, v in sd.items()} == {k: list(s) for k, s in
                                                             nv_info["state_dict_shapes"].items()}
        inferred = infer_nvidia_config({k: torch.empty(s, device="meta")
                                        for k, s in nv_info["state_dict_shapes"].items()})
        for key in ("z_dim", "w_dim", "c_dim", "img_resolution", "img_channels", "mapping_kwargs"):
            assert inferred[key] == nv_info["init_kwargs"][key]
        for key in ("channel_base", "channel_max"):
            assert inferred["synthesis_kwargs"][key] == nv_info["init_kwargs"]["synthesis_kwargs"][key]
