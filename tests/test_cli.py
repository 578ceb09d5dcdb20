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


def test_console_script_installed_when_pip_installed():
    exe = shutil.which("hrinv")
    if exe is None:
        pytest.skip("the `hrinv` command is not on PATH (package not pip-installed in this environment)")
    r = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_cli_conventions_usage_errors_exit_2_library_errors_exit_1(tmp_path, capsys):
    """Usage errors (argparse, missing inputs) -> stderr, exit 2; library errors -> one stderr line, exit 1, no
    traceback; stdout stays clean for results."""
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
