"""Bad values at the library boundary (issue 11, part 8) and the CLI's typed errors (part 7). No silent NaN.

Runs without ../shared: a small random generator and a pixel loss.
"""

import json
import logging
import math

import pytest
import torch

import hostile_files as H
from hrinv.cli import main
from hrinv.errors import HRInvError, InvalidSettingError, NonFiniteError, ShapeError
from hrinv.inversion import InversionConfig, compute_w_stats, invert
from hrinv.lso import LSOConfig, local_style_optimize
from hrinv.optim import optimize


def mse(pred, target, mask=None):
    se = (pred - target).square()
    if mask is not None:
        se = se * mask
    return se.flatten(1).mean(1)


@pytest.fixture(scope="module")
def G():
    return H.small_generator()


@pytest.fixture(scope="module")
def stats(G):
    return compute_w_stats(G, 200)


@pytest.fixture(scope="module")
def target(G):
    with torch.no_grad():
        return G.synthesis(G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0)))).clamp(-1, 1)


CFG = InversionConfig(steps=3, seed=0, w_avg_samples=200)


def test_one_nan_pixel_is_refused_with_its_location(G, stats, target):
    bad = target.clone()
    bad[1, 2, 3, 4] = float("nan")
    with pytest.raises(ShapeError, match=r"target holds non-finite values \(1 NaN value\(s\) of .*\[1, 2, 3, 4\]"):
        invert(G, bad, mse, CFG, w_stats=stats)
    bad[1, 2, 3, 4] = float("inf")
    with pytest.raises(ShapeError, match="inf"):
        invert(G, bad, mse, CFG, w_stats=stats)


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), -1.0, 0.0])
def test_non_finite_or_non_positive_lr_is_refused(lr):
    with pytest.raises(ValueError, match="lr"):
        InversionConfig(lr=lr)
    with pytest.raises(InvalidSettingError, match="lr"):
        LSOConfig(lr=lr)


@pytest.mark.parametrize("seed", [2 ** 70, -1])
def test_seeds_beyond_64_bits_are_refused(seed):
    with pytest.raises(ValueError, match="seed"):
        InversionConfig(seed=seed)
    with pytest.raises(InvalidSettingError, match="seed"):
        LSOConfig(seed=seed)


@pytest.mark.parametrize("value,match", [(float("nan"), "non-finite"), (1.5, r"\[0, 1\]"), (-0.2, r"\[0, 1\]")])
def test_nan_or_out_of_range_masks_are_refused(G, stats, target, value, match):
    mask = torch.ones(2, 1, 8, 8)
    mask[0, 0, 1, 1] = value
    with pytest.raises(ShapeError, match=match):
        invert(G, target, mse, CFG, w_stats=stats, mask=mask)


def test_nan_w_stats_are_refused(G, stats, target):
    w_avg, w_std = stats
    bad = w_avg.clone()
    bad[3] = float("nan")
    with pytest.raises(ShapeError, match="w_avg"):
        invert(G, target, mse, CFG, w_stats=(bad, w_std))
    with pytest.raises(InvalidSettingError, match="w_std"):
        invert(G, target, mse, CFG, w_stats=(w_avg, float("nan")))


def test_nan_lso_inputs_are_refused(G, stats, target):
    ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(1)))
    bad = ws.clone()
    bad[0, 0, 0] = float("nan")
    cfg = LSOConfig(steps=2, seed=0, w_avg_samples=200)
    with pytest.raises(ShapeError, match="w_m"):
        local_style_optimize(G, bad, target[:1], mse, cfg, w_stats=stats)
    content = target[:1].clone()
    content[0, 0, 0, 0] = float("nan")
    with pytest.raises(ShapeError, match="content"):
        local_style_optimize(G, ws, content, mse, cfg, w_stats=stats)
    w_avg, w_std = stats
    with pytest.raises(ShapeError, match="w_avg"):
        local_style_optimize(G, ws, target[:1], mse, cfg, w_stats=(w_avg * float("nan"), w_std))


def test_unit_range_target_warns_but_runs(G, stats, target, caplog):
    """Decision: a [-1, 1] batch lying entirely in [0, 1] is almost surely a [0, 1] image passed unconverted, but a
    very bright image looks the same, so it is a warning, not an error."""
    with caplog.at_level(logging.WARNING):
        res = invert(G, (target + 1) / 2, mse, CFG, w_stats=stats)
    assert "[0, 1]" in caplog.text and "x * 2 - 1" in caplog.text
    assert torch.isfinite(res.latent.ws).all()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        invert(G, target, mse, CFG, w_stats=stats)
    assert "[0, 1]" not in caplog.text


def test_optimisation_that_goes_non_finite_stops_naming_step_and_cause():
    x = torch.zeros(2, 3)

    def closure(v, step, steps):
        loss = (v["x"] - 1).square().sum(1)
        if step == 4:
            loss = loss * float("nan")
        return loss, None

    with pytest.raises(NonFiniteError, match=r"step 5 of 10.*sample\(s\) \[0, 1\].*variables are finite") as e:
        optimize({"x": x}, closure, steps=10, lr=0.1)
    assert e.value.step == 5

    def exploding(v, step, steps):
        return (v["x"] * 1e30).square().sum(1) * 1e30, None

    with pytest.raises(NonFiniteError, match="non-finite at step"):
        optimize({"x": x + 1}, exploding, steps=10, lr=1e38, lr_rampup=0)


def test_non_finite_start_is_blamed_on_the_initial_values():
    with pytest.raises(NonFiniteError, match="at the start"):
        optimize({"x": torch.full((1, 2), float("nan"))}, lambda v, s, n: (v["x"].sum(1), None), steps=2)


def test_render_size_and_nan_codes_are_refused(G):
    from hrinv.rendering import render
    ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(ShapeError, match="MP"):
        render(G, ws, 16384, 16384)
    with pytest.raises(ShapeError, match="16384"):
        render(G, ws, 30000, 8)
    with pytest.raises(ShapeError, match="non-finite"):
        render(G, ws * float("nan"), 8, 8)


# ----------------------------------------------------------------------------------------------------------------------
# CLI: every bad argument is a typed error on stderr, exit 1, no traceback


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, G):
    from hrinv.io.checkpoints import save_generator
    d = tmp_path_factory.mktemp("cli")
    save_generator(G, d / "g.safetensors")
    H.write_png(d / "face.png", 8, 8)
    with torch.no_grad():
        ws = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(1)))
    from hrinv.latent import Latent
    Latent(ws, None, G.fingerprint()).save(d / "lat.safetensors")
    (d / "a_file").write_text("x")
    data = (d / "lat.safetensors").read_bytes()
    (d / "lat_cut.safetensors").write_bytes(data[: len(data) // 2])
    (d / "lat_cut.npz").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    return d


def _cli(argv, capsys):
    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _fails_cleanly(rc, err, *words):
    assert rc == 1, (rc, err)
    assert "error:" in err and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


def test_cli_render_damaged_latents_and_bad_sizes(cli_files, capsys):
    d = cli_files
    for lat in ("lat_cut.safetensors", "lat_cut.npz", "a_file"):
        rc, out, err = _cli(["render", d / lat, "-g", d / "g.safetensors", "--out", d / "o.png", "--device", "cpu"],
                            capsys)
        _fails_cleanly(rc, err)
    rc, out, err = _cli(["render", d / "lat.safetensors", "-g", d / "g.safetensors", "--width", 30000, "--height",
                         30000, "--out", d / "o.png"], capsys)
    _fails_cleanly(rc, err, "16384")
    rc, out, err = _cli(["render", d / "lat.safetensors", "-g", d / "g.safetensors", "--out", d / "o.xyz",
                         "--device", "cpu"], capsys)
    _fails_cleanly(rc, err, ".xyz")
    assert not list(d.glob("o*"))  # refused before rendering anything


@pytest.mark.parametrize("device", ["bogus", "cuda:99", "cuda"])
def test_cli_bad_devices(cli_files, capsys, device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    d = cli_files
    rc, out, err = _cli(["render", d / "lat.safetensors", "-g", d / "g.safetensors", "--out", d / "o.png",
                         "--device", device], capsys)
    _fails_cleanly(rc, err, "--device")


def test_cli_invert_bad_values(cli_files, capsys):
    d = cli_files
    base = ["invert", d / "face.png", "-g", d / "g.safetensors", "--vgg", d / "none.safetensors", "--device", "cpu"]
    rc, out, err = _cli(base + ["--out", d / "o1", "--lr", "inf"], capsys)
    _fails_cleanly(rc, err, "lr")
    rc, out, err = _cli(base + ["--out", d / "o1", "--seed", str(2 ** 70)], capsys)
    _fails_cleanly(rc, err, "seed")
    rc, out, err = _cli(base + ["--out", d / "a_file"], capsys)
    _fails_cleanly(rc, err, "existing file")


def test_cli_fit_inr_and_convert_bad_values(cli_files, capsys):
    d = cli_files
    rc, out, err = _cli(["fit-inr", d / "g.safetensors", d / "h.safetensors", "--lr", "nan"], capsys)
    _fails_cleanly(rc, err, "--lr")
    rc, out, err = _cli(["fit-inr", d / "g.safetensors", d / "h.safetensors", "--seed", str(2 ** 70)], capsys)
    _fails_cleanly(rc, err, "--seed")
    rc, out, err = _cli(["convert", d / "g.safetensors", d / "missing" / "x.safetensors"], capsys)
    _fails_cleanly(rc, err, "does not exist")


def test_cli_unexpected_exception_is_reported_without_traceback(monkeypatch, capsys, cli_files):
    import hrinv.commands.convert as conv

    def boom(args):
        raise KeyError("surprise")

    monkeypatch.setattr(conv, "run", boom)
    rc, out, err = _cli(["convert", cli_files / "g.safetensors", "--print"], capsys)
    _fails_cleanly(rc, err, "unexpected KeyError", "-v")


def test_render_size_check_accepts_numpy_ints():
    import numpy as np

    from hrinv._checks import check_render_size
    assert check_render_size(np.int64(8), 8) == (8, 8)
    with pytest.raises(ShapeError):
        check_render_size(True, 8)
    assert math.isfinite(json.loads("1.0"))
    assert issubclass(NonFiniteError, HRInvError)
