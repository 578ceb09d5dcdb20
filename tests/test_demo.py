"""``hrinv demo`` end to end with the bundled models, offline and without ../shared: the output photo has the input's
size, its face changed, and every pixel outside the paste-back mask is the input's."""

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import report_figure
from hrinv import bundled

NEEDED = ["stylegan2_face64.safetensors", "stylegan2_face64_demo_style.safetensors", "demo_photo.png",
          "demo_style.png", "vgg16_caffe_conv_fp16.safetensors", "mtcnn.safetensors"]
pytestmark = pytest.mark.skipif(any(n not in bundled.names() for n in NEEDED),
                                reason="the bundled demo models are not all in this checkout")


def test_hrinv_demo_writes_a_stylised_photo(tmp_path, monkeypatch, capsys):
    from hrinv import cli
    from hrinv.demo import run_demo
    from hrinv.imageio import read_image

    monkeypatch.setenv("HRINV_SHARED", str(tmp_path / "no-shared-here"))  # nothing from ../shared may be used
    monkeypatch.delenv("HRINV_VGG16", raising=False)
    out = tmp_path / "demo"
    t0 = time.perf_counter()
    rc = cli.main(["demo", "--out", str(out), "--steps", "8", "--lso-steps", "3", "--face-size", "128", "--quiet"])
    secs = time.perf_counter() - t0
    assert rc == 0
    report_figure(f"hrinv demo (bundled models, 8 + 8 inversion steps, 3 LSO steps) took {secs:.1f} s")
    photo = read_image(bundled.path("demo_photo.png"))  # [3, H, W] in [0, 1]
    styl = np.asarray(Image.open(out / "stylized.png").convert("RGB")).astype(np.float32) / 255
    H, W = photo.shape[-2:]
    assert styl.shape == (H, W, 3)
    src = photo.permute(1, 2, 0).numpy()
    # the mask of what was replaced: recompute it from the same alignment (deterministic) by running the library
    res = run_demo(tmp_path / "again", config=_cfg(), device="cpu")
    mask = res.mask.numpy()
    assert mask.shape == (H, W) and mask.max() > 0.99
    outside = mask == 0
    assert outside.mean() > 0.5  # the face is a part of the photo
    # background: unchanged outside the mask (up to 8-bit rounding of the PNG)
    assert np.abs(styl[outside] - src[outside]).max() <= 1 / 255 + 1e-6
    # face: changed inside the mask
    inside = mask > 0.99
    assert np.abs(styl[inside] - src[inside]).mean() > 0.03
    comp = Image.open(out / "comparison.png")
    assert comp.width > 4 * comp.height // 2  # 5 panels side by side, one row per face
    info = json.loads((out / "demo.json").read_text())
    assert info["metrics"]["faces"] >= 1 and info["G_t"].startswith("bundled")
    # same settings -> same picture (seeded)
    again = np.asarray(Image.open(res.stylized).convert("RGB")).astype(np.float32) / 255
    assert np.abs(again - styl).max() <= 1 / 255 + 1e-6


def _cfg():
    from hrinv.demo import DemoConfig

    return DemoConfig(steps=8, lso_steps=3, face_size=128)


def test_demo_refuses_a_missing_photo(tmp_path, capsys):
    from hrinv import cli

    assert cli.main(["demo", "--out", str(tmp_path), "--photo", str(tmp_path / "nope.jpg")]) == 1
    out, err = capsys.readouterr()
    assert "not found" in err and out == ""


def test_demo_reports_a_photo_without_a_face(tmp_path, capsys):
    from hrinv import cli

    p = tmp_path / "flat.png"
    Image.fromarray(np.full((128, 128, 3), 120, np.uint8)).save(p)
    assert cli.main(["demo", "--out", str(tmp_path / "o"), "--photo", str(p), "--steps", "2", "--lso-steps", "0",
                     "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert "no face" in err.lower() and err.startswith("hrinv demo: error: ") and out == ""


def test_demo_config_defaults_fit_the_bundled_generator():
    from hrinv.demo import DemoConfig
    from hrinv.interpolate import block_lambdas, parse_lambda
    from hrinv.io.checkpoints import load_generator

    G = load_generator(bundled.path("stylegan2_face64.safetensors"))
    lam = block_lambdas(parse_lambda(DemoConfig().lam), G.synthesis.block_resolutions)
    assert list(lam) == G.synthesis.block_resolutions and max(lam.values()) <= 1
    assert torch.isfinite(G.mapping.w_avg).all()
    # the demo's loss is the one its bundled generators were made with (their cards say rms)
    from hrinv.losses import PerceptualLoss, load_vgg16

    assert DemoConfig().calibration == "rms"
    loss = PerceptualLoss(load_vgg16(bundled.path("vgg16_caffe_conv_fp16.safetensors")), calibration="rms")
    assert len(set(round(v, 9) for v in loss.calibration.values())) > 1  # per-tap constants, not one factor


def test_demo_threads_option_is_checked_and_restored(tmp_path, capsys):
    from hrinv import cli

    before = torch.get_num_threads()
    assert cli.main(["demo", "--out", str(tmp_path), "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
    assert cli.main(["demo", "--out", str(tmp_path), "--threads", "1", "--photo", str(tmp_path / "nope.jpg")]) == 1  # missing file
    assert torch.get_num_threads() == before                   # the process setting is given back


def test_demo_calibration_option_reaches_every_loss(tmp_path, monkeypatch):
    """--calibration goes into DemoConfig and from there into the stylisation's losses (StylizeConfig)."""
    import hrinv.pipeline as pipeline
    from hrinv import cli
    from hrinv.errors import InvalidSettingError

    seen = []

    def fake_stylize(*a, config=None, **k):
        seen.append(config.calibration)
        raise InvalidSettingError("stop here")  # a library error: the command reports it and exits 1

    monkeypatch.setattr(pipeline, "stylize", fake_stylize)
    assert cli.main(["demo", "--out", str(tmp_path), "--quiet", "--calibration", "global"]) == 1
    assert cli.main(["demo", "--out", str(tmp_path), "--quiet"]) == 1
    assert seen == ["global", "rms"]
    with pytest.raises(SystemExit) as e:  # argparse: usage error, exit 2
        cli.main(["demo", "--calibration", "bogus"])
    assert e.value.code == 2
