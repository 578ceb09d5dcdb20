"""`hrinv align`, and `hrinv invert` / `hrinv stylize` with their default alignment, on a photo with two real faces
(the ``two_face_photo`` fixture) and a random-weight VGG16: these test the plumbing, not the quality."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import save_random_vgg_file
from hrinv.cli import main


def test_align_no_face_is_a_clear_message(tmp_path, capsys):
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((60, 80, 3)) * 255).astype(np.uint8)).save(tmp_path / "noise.png")
    rc = main(["align", str(tmp_path / "noise.png"), "--out", str(tmp_path / "o"), "--size", "64", "--device", "cpu"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "noise.png: no face" in err and "min_size" in err
    assert list((tmp_path / "o").iterdir()) == []
    assert main(["align", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")]) == 1
    assert main(["align", str(tmp_path / "noise.png"), "--out", str(tmp_path / "o"), "--faces", "some"]) == 2


def test_align_writes_the_contract_files(tmp_path, capsys, two_face_photo):
    couple = two_face_photo
    out = tmp_path / "al"
    rc = main(["align", str(couple), "--out", str(out), "--size", "128", "--device", "cpu"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["couple.json", "couple_0.png", "couple_1.png"]
    doc = json.loads((out / "couple.json").read_text())
    assert doc["format"] == "hrinv.face_alignment" and doc["size"] == 128 and len(doc["faces"]) == 2
    assert doc["faces"][0]["qsize"] >= doc["faces"][1]["qsize"]  # largest first
    with Image.open(out / "couple_0.png") as im:
        assert im.size == (128, 128)
    # the JSON rebuilds the alignment and pastes the written crops back into the photo
    import hrinv
    from hrinv.imageio import read_image

    al = hrinv.FaceAlignment.from_json(doc)
    crops = torch.stack([read_image(out / f"couple_{k}.png") * 2 - 1 for k in range(2)])
    photo = read_image(couple)
    img, mask = hrinv.paste_back(photo, crops, al)
    assert img.shape == photo.shape and float(mask.max()) == pytest.approx(1.0)
    assert "2 face(s)" in capsys.readouterr().out


def test_stylize_cli_aligns_and_pastes_back_by_default(tmp_path, two_face_photo):
    from hrinv.io.checkpoints import save_generator
    from nodes_harness import tiny_generators

    photo_src = two_face_photo
    vgg = tmp_path / "vgg16_random.safetensors"
    save_random_vgg_file(vgg)
    with Image.open(photo_src) as im:
        im.convert("RGB").resize((570, 397)).save(tmp_path / "two.jpg")  # small copy: fast test
    G_s, G_t = tiny_generators()
    save_generator(G_s, tmp_path / "gs.safetensors")
    save_generator(G_t, tmp_path / "gt.safetensors")
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(tmp_path / "toon.png")
    out = tmp_path / "out"
    rc = main(["stylize", "--content", str(tmp_path / "two.jpg"), "--reference", str(tmp_path / "toon.png"),
               "--source", str(tmp_path / "gs.safetensors"), "--target", str(tmp_path / "gt.safetensors"),
               "--vgg", str(vgg), "--steps", "1", "--lso-steps", "1", "--out", str(out), "--device", "cpu", "-q"])
    assert rc == 0
    for f in ("two__toon.png", "two__toon_mask.png", "two.json", "two_0.png", "two_1.png", "two_0__toon.png",
              "two_1__toon.png", "two_0__toon.json", "two_0_inv.png", "toon_inv.png", "two_1__toon.latent.safetensors"):
        assert (out / f).is_file(), f
    with Image.open(out / "two__toon.png") as im:
        assert im.size == (570, 397)
    rec = json.loads((out / "two_1__toon.json").read_text())
    assert rec["face"] == 1 and rec["alignment"]["crop_size"] == 64 and rec["files"]["photo"] == "two__toon.png"
    mask = np.asarray(Image.open(out / "two__toon_mask.png"))
    assert mask.max() == 255 and mask.min() == 0


def test_invert_cli_aligns_by_default(tmp_path, two_face_photo):
    from hrinv.io.checkpoints import save_generator
    from nodes_harness import tiny_generators

    vgg = tmp_path / "vgg16_random.safetensors"
    save_random_vgg_file(vgg)
    with Image.open(two_face_photo) as im:
        im.convert("RGB").resize((570, 397)).save(tmp_path / "two.jpg")
    G_s, _ = tiny_generators()
    save_generator(G_s, tmp_path / "g.safetensors")
    out = tmp_path / "inv"
    rc = main(["invert", str(tmp_path / "two.jpg"), "--generator", str(tmp_path / "g.safetensors"), "--vgg", str(vgg),
               "--steps", "1", "--out", str(out), "--device", "cpu", "-q"])
    assert rc == 0
    for f in ("two_0.png", "two_1.png", "two_0_aligned.png", "two.alignment.json", "two_1.latent.safetensors"):
        assert (out / f).is_file(), f
    rec = json.loads((out / "two_1.json").read_text())
    assert rec["image"].endswith("two.jpg") and rec["face"] == 1 and rec["alignment"] == "two.alignment.json"
