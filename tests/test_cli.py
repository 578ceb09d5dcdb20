import shutil
import subprocess
import sys

import pytest

from hrinv.cli import COMMANDS, build_parser, main


def test_help_lists_every_command(capsys):
    assert main([]) == 2
    out = capsys.readouterr().err
    for name in COMMANDS:
        assert name in out


def test_unknown_command_is_rejected():
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["no-such-command"])
    assert e.value.code == 2


def test_module_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "hrinv", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("hrinv ")


def test_console_script_entry_point():
    """The ``hrinv`` script pyproject.toml declares points at a callable that runs; when the package is pip-installed
    the script on PATH runs too."""
    import importlib
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()  # tomllib needs Python 3.11
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    module, _, func = re.search(r'^hrinv\s*=\s*"([^"]+)"', scripts, re.M).group(1).partition(":")
    entry = getattr(importlib.import_module(module), func)
    with pytest.raises(SystemExit) as e:
        entry(["--version"])
    assert e.value.code == 0
    exe = shutil.which("hrinv")
    if exe is not None:  # pip-installed here: the generated script works as well
        r = subprocess.run([exe, "--version"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_cli_conventions_usage_errors_exit_2_library_errors_exit_1(tmp_path, capsys):
    """Usage errors (what argparse refuses) -> stderr, exit 2; library errors (a missing or unreadable input too) ->
    one stderr line, exit 1, no traceback; stdout stays clean for results."""
    with pytest.raises(SystemExit) as e:
        main(["render"])  # required arguments missing: argparse
    assert e.value.code == 2 and "usage:" in capsys.readouterr().err
    assert main(["render", str(tmp_path / "nope.latent.safetensors"), "-g", "g.safetensors", "-o", "x.png"]) == 1  # typed error: exit 1
    out, err = capsys.readouterr()
    assert "not found" in err and out == ""
    bad = tmp_path / "garbage.pkl"
    bad.write_bytes(b"not a pickle at all")
    assert main(["convert", str(bad), str(tmp_path / "out.safetensors")]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("hrinv convert: error: ") and "Traceback" not in err and out == ""


def _missing_input_cases(n):
    """Every command, called with an input file (or folder) that does not exist; whatever else it needs is missing
    too, so the input must be the first thing checked."""
    return {
        "convert": ["convert", f"{n}.pkl", f"{n}.safetensors"],
        "fit-inr": ["fit-inr", f"{n}.pkl", f"{n}.safetensors"],
        "invert": ["invert", f"{n}.png", "--generator", f"{n}.pkl", "--vgg", f"{n}.pth", "--out", f"{n}_out"],
        "stylize": ["stylize", "--content", f"{n}.png", "--reference", f"{n}.png", "--source", f"{n}.pkl",
                    "--target", f"{n}.pkl", "--vgg", f"{n}.pth", "--out", f"{n}_out"],
        "render": ["render", f"{n}.safetensors", "--generator", f"{n}.pkl", "--out", f"{n}.png"],
        "id-retrieval": ["id-retrieval", f"{n}_folder"],
        "batch": ["batch", "invert", "-i", f"{n}_folder", "--generator", f"{n}.pkl", "--vgg", f"{n}.pth",
                  "--out", f"{n}_out"],
        "evaluate": ["evaluate", f"{n}.jsonl"],
        "align": ["align", f"{n}.jpg", "--out", f"{n}_out"],
        "finetune": ["finetune", "--generator", f"{n}.pkl", "--style", f"{n}.png", "--vgg", f"{n}.pth",
                     "--out", f"{n}.safetensors"],
        "demo": ["demo", "--photo", f"{n}.jpg", "--out", f"{n}_out"],
    }


# `download` reads no input file (an unknown model name is a usage error: exit 2, tested in test_download.py).
@pytest.mark.parametrize("command", sorted(set(COMMANDS) - {"download"}))
def test_missing_input_is_a_library_error_on_stderr(command, tmp_path, capsys):
    argv = _missing_input_cases(str(tmp_path / "missing"))[command]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"hrinv {command}: error: ") and "missing" in err, (out, err)
    assert "not found" in err or "does not exist" in err, err
    assert "Traceback" not in err and not (tmp_path / "missing_out").exists()  # nothing written before the check


def test_progress_is_a_tqdm_bar_on_stderr():
    import io

    from hrinv.commands._common import Progress

    stream = io.StringIO()
    p = Progress("invert x", stream=stream)
    for step in range(1, 5):
        p(step, 4)
    text = stream.getvalue()
    assert "invert x" in text and "4/4" in text and "step" in text
    quiet = io.StringIO()
    Progress("q", stream=quiet, quiet=True)(1, 1)
    assert quiet.getvalue() == ""


def test_setting_names_follow_the_library_and_old_flags_still_parse():
    import argparse

    from hrinv.commands import invert, stylize

    p = argparse.ArgumentParser()
    invert.add_arguments(p)
    base = ["x.png", "-g", "g", "--vgg", "v", "-o", "o"]
    new = p.parse_args(base + ["--no-noise-maps", "--latent-space", "w", "--lr", "0.05"])
    old = p.parse_args(base + ["--no-noise", "--space", "w"])
    assert new.noise is False and old.noise is False and new.space == old.space == "w" and new.lr == 0.05
    assert p.parse_args(base).noise is None  # the preset decides
    assert "--no-noise-maps" in p.format_help() and "--space " not in p.format_help()
    q = argparse.ArgumentParser()
    stylize.add_arguments(q)
    base = ["-c", "a", "-r", "b", "--source", "s", "--target", "t", "--vgg", "v", "-o", "o"]
    assert q.parse_args(base + ["--lso-reg-weight", "2", "--lso-noise-maps"]).lso_reg == 2.0
    old = q.parse_args(base + ["--lso-reg", "3", "--lso-noise"])
    assert old.lso_reg == 3.0 and old.lso_noise is True


def test_stylize_precision_option_reaches_inversions_and_lso(capsys):
    """``hrinv stylize --precision`` (and ``hrinv batch stylize``) takes the library's precision names and sets the
    precision of both inversions and of LSO; a name outside them is a usage error."""
    import argparse

    from hrinv import perf
    from hrinv.commands import batch, stylize

    def parse(module, argv):
        p = argparse.ArgumentParser(prog="hrinv")
        module.add_arguments(p)
        return p.parse_args(argv)

    base = ["-r", "ref.png", "--source", "s.safetensors", "--target", "t.safetensors", "--vgg", "v.pth", "-o", "out"]
    assert stylize.config_from_args(parse(stylize, ["-c", "photo.jpg"] + base)).precision == "fp32"
    for p in perf.PRECISIONS:
        cfg = stylize.config_from_args(parse(stylize, ["-c", "photo.jpg", "--precision", p] + base))
        c, r = cfg.inversion_configs()
        assert (cfg.precision, c.precision, r.precision, cfg.lso_config().precision) == (p, p, p, p)
    args = parse(batch, ["stylize", "--input", "in", "--precision", "bf16"] + base)
    assert stylize.config_from_args(args).precision == "bf16"
    with pytest.raises(SystemExit) as e:
        parse(stylize, ["-c", "photo.jpg", "--precision", "fp64"] + base)
    assert e.value.code == 2 and "--precision" in capsys.readouterr().err
