"""End to end: `hrinv stylize` on two tiny related generators (few steps) writes every file, and `hrinv render`
re-renders the stylised latent with the saved G_m at another size."""

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import save_random_vgg_file
from hrinv.cli import main
from hrinv.generator.stylegan2 import Generator
from hrinv.io.checkpoints import save_generator
from hrinv.latent import Latent

SMALL = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=64, img_channels=3, mapping_kwargs={"num_layers": 2},
             synthesis_kwargs={"channel_base": 256, "channel_max": 16, "num_fp16_res": 0, "conv_clamp": None})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("stylize")
    g = torch.Generator().manual_seed(0)
    G_s = Generator(**SMALL)
    with torch.no_grad():
        for key, t in G_s.state_dict().items():
            if t.is_floating_point() and not key.endswith("resample_filter"):
                t.copy_(torch.randn(t.shape, generator=g) * (0.1 if key.endswith("bias") else 1.0))
    G_t = copy.deepcopy(G_s)
    with torch.no_grad():
        for key, t in G_t.state_dict().items():
            if key.startswith("synthesis.") and t.is_floating_point() and not key.endswith("resample_filter"):
                t.add_(0.1 * t.abs().mean() * torch.randn(t.shape, generator=g))
    save_generator(G_s, d / "gs.safetensors")
    save_generator(G_t, d / "gt.safetensors")
    rng = np.random.default_rng(0)
    for name, size in (("face", (80, 72)), ("toon", (64, 64))):
        arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(d / f"{name}.png")
    return d


def test_stylize_then_render(workdir, capsys):
    vgg = workdir / "vgg16_random.safetensors"  # the plumbing, not the quality: a random-weight VGG16 will do
    save_random_vgg_file(vgg)
    out = workdir / "out"
    rc = main(["stylize", "--content", str(workdir / "face.png"), "--reference", str(workdir / "toon.png"),
               "--source", str(workdir / "gs.safetensors"), "--target", str(workdir / "gt.safetensors"),
               "--vgg", str(vgg), "--lam", "0.2,0.2,0.2,0.7,0.7", "--steps", "2", "--lso-steps", "2",
               "--width", "96", "--height", "48", "--save-generator", "--out", str(out), "--device", "cpu",
               "--no-align"])
    assert rc == 0
    for f in ("face__toon.png", "face__toon_mixed.png", "face__toon.latent.safetensors", "face__toon.json",
              "face_inv.png", "toon_inv.png", "face.latent.safetensors", "toon.latent.safetensors",
              "generator_m.safetensors"):
        assert (out / f).is_file(), f
    assert Image.open(out / "face__toon.png").size == (96, 48)
    record = json.loads((out / "face__toon.json").read_text())
    assert record["lerp"]["lambda_per_block"] == {"b4": 0.2, "b8": 0.2, "b16": 0.2, "b32": 0.7, "b64": 0.7}
    assert record["lerp"]["lambda_per_row"] == [0.2] * 6 + [0.7] * 4
    assert record["lso"]["steps"] == 2 and record["metrics"]["lso_d_h_after"] is not None
    lat = Latent.load(out / "face__toon.latent.safetensors")
    assert lat.ws.shape == (1, 10, 16)
    err = capsys.readouterr().err  # progress: tqdm bars on stderr
    assert "in G_s" in err and "LSO with" in err and "2/2" in err

    png = workdir / "again.png"
    rc = main(["render", str(out / "face__toon.latent.safetensors"),
               "--generator", str(out / "generator_m.safetensors"), "--width", "40", "--height", "56",
               "--out", str(png), "--device", "cpu"])
    assert rc == 0 and Image.open(png).size == (40, 56)


def test_stylize_refuses_unrelated_architectures(workdir, tmp_path, capsys):
    other = Generator(**{**SMALL, "img_resolution": 32})
    save_generator(other, tmp_path / "other.safetensors")
    rc = main(["stylize", "--content", str(workdir / "face.png"), "--reference", str(workdir / "toon.png"),
               "--source", str(workdir / "gs.safetensors"), "--target", str(tmp_path / "other.safetensors"),
               "--vgg", str(tmp_path / "missing-vgg.safetensors"), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert rc == 1
    assert "img_resolution" in capsys.readouterr().err
    rc = main(["stylize", "--content", str(workdir / "nope.png"), "--reference", str(workdir / "toon.png"),
               "--source", "a", "--target", "b", "--vgg", "c", "--out", str(tmp_path / "o")])
    assert rc == 1 and "nope.png" in capsys.readouterr().err
