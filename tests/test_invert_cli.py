"""`hrinv invert`: end to end (a couple of steps only). The command's plumbing does not depend on learned weights: a
seeded random 64 px generator, a random VGG16 in the caffe file layout and a smooth random picture stand in."""

import json

import pytest
import torch
from conftest import save_random_vgg_file, tiny_generators

from hrinv.cli import main


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    from PIL import Image

    from hrinv.io.checkpoints import save_generator

    d = tmp_path_factory.mktemp("invert_cli")
    save_generator(tiny_generators(0)[0], d / "tiny64.safetensors")
    save_random_vgg_file(d / "vgg16_random_caffe.safetensors")
    g = torch.Generator().manual_seed(5)
    low = torch.rand(1, 3, 6, 6, generator=g)
    pic = torch.nn.functional.interpolate(low, size=(256, 256), mode="bicubic", align_corners=False).clamp(0, 1)
    Image.fromarray((pic[0].permute(1, 2, 0) * 255).round().byte().numpy()).save(d / "face.png")
    return {"gen": d / "tiny64.safetensors", "vgg": d / "vgg16_random_caffe.safetensors", "face": d / "face.png"}


def test_cli_invert_writes_png_latent_json(paths, tmp_path, capsys):
    from PIL import Image

    from hrinv.io.checkpoints import load_generator
    from hrinv.latent import Latent

    wide = tmp_path / "wide.png"
    with Image.open(paths["face"]) as im:
        im.convert("RGB").crop((0, 50, 256, 242)).resize((160, 120)).save(wide)  # 4:3, non-square
    out = tmp_path / "out"
    rc = main(["invert", str(paths["face"]), "--generator", str(paths["gen"]), "--vgg", str(paths["vgg"]),
               "--steps", "2", "--seed", "3", "--no-noise-maps", "--device", "cpu", "--out", str(out), "--save-target",
               "--no-align"])
    assert rc == 0
    stem = paths["face"].stem
    with Image.open(out / f"{stem}.png") as im:
        assert im.size == (64, 64) and im.mode == "RGB"
    assert (out / f"{stem}_target.png").is_file()
    rec = json.loads((out / f"{stem}.json").read_text())
    assert rec["settings"]["inversion"]["steps"] == 2 and rec["settings"]["inversion"]["noise_maps"] is False
    assert rec["settings"]["inversion"]["seed"] == 3
    # a random generator and VGG: only check the metrics are there
    assert {"psnr", "loss", "seconds"} <= set(rec["metrics"]) and rec["metrics"]["psnr"] > 0
    lat = Latent.load(out / f"{stem}.latent.safetensors")
    G = load_generator(paths["gen"])
    lat.check_compatible(G, strict_fingerprint=True)
    assert lat.noise is None and lat.ws.shape == (1, G.num_ws, G.w_dim)
    assert "PSNR" in capsys.readouterr().out

    rc = main(["invert", str(wide), "--generator", str(paths["gen"]), "--vgg", str(paths["vgg"]), "--steps", "1",
               "--keep-aspect", "--device", "cpu", "--out", str(out), "--quiet", "--no-align"])
    assert rc == 0
    with Image.open(out / "wide.png") as im:
        assert im.size == (64, 48)  # kept the aspect ratio: padded to 64x64 for G, cropped back
    rec = json.loads((out / "wide.json").read_text())
    assert rec["settings"]["pads"] == [0, 0, 8, 8]


def test_cli_invert_errors(paths, tmp_path, capsys):
    rc = main(["invert", str(tmp_path / "missing.jpg"), "--generator", str(paths["gen"]), "--vgg", str(paths["vgg"]),
               "--out", str(tmp_path)])
    assert rc == 1 and "not found" in capsys.readouterr().err
    rc = main(["invert", str(paths["face"]), "--generator", str(paths["gen"]), "--vgg", str(paths["vgg"]),
               "--steps", "0", "--out", str(tmp_path)])
    assert rc == 1 and "steps" in capsys.readouterr().err  # a typed error, on stderr, exit 1


def test_common_image_helpers(tmp_path):
    from PIL import Image

    from hrinv.commands._common import fit_image, load_image, resolve_device, resolve_dtype, save_image

    im = Image.new("RGB", (300, 200), (255, 0, 0))
    assert fit_image(im, 64).size == (64, 64)
    assert fit_image(im, 64, keep_aspect=True).size == (64, 43)
    p = tmp_path / "a.png"
    Image.new("LA", (40, 30), (128, 255)).save(p)
    t = load_image(p, 32)
    assert t.shape == (1, 3, 32, 32) and -1 <= float(t.min()) <= float(t.max()) <= 1
    save_image(t, tmp_path / "b.png")
    torch.testing.assert_close(load_image(tmp_path / "b.png"), t, atol=1 / 127, rtol=0)
    assert resolve_device("cpu").type == "cpu" and resolve_dtype("bf16") == torch.bfloat16
    with pytest.raises(ValueError):
        resolve_dtype("int8")
