import shutil
import subprocess
import sys

import pytest

from hrinv.cli import COMMANDS, build_parser, main


def test_help_lists_every_command(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
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
