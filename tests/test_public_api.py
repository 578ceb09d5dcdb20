"""The lazy top-level API of hrinv: every advertised name resolves to the object it names, and importing the
submodules first (as user scripts do) does not shadow the functions with their modules."""

import importlib
import inspect
import subprocess
import sys

import hrinv


def test_every_public_name_resolves():
    for name in hrinv._LAZY:
        obj = getattr(hrinv, name)
        assert not inspect.ismodule(obj), f"hrinv.{name} is a module, expected a class or function"


def test_submodule_imports_do_not_shadow_functions():
    code = ("import hrinv.inversion, hrinv.rendering, hrinv.lso, hrinv.interpolate\n"
            "from hrinv.inversion import InversionConfig\n"
            "import hrinv, inspect\n"
            "assert callable(hrinv.invert) and not inspect.ismodule(hrinv.invert)\n"
            "assert callable(hrinv.render) and not inspect.ismodule(hrinv.render)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_import_is_light():
    r = subprocess.run([sys.executable, "-c", "import sys, hrinv; print('torch' in sys.modules)"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False", "importing hrinv must not import torch or build anything"


def test_unknown_attribute_raises():
    try:
        hrinv.no_such_thing
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("expected AttributeError")


def test_version_matches_pyproject():
    import tomllib
    from pathlib import Path
    meta = tomllib.loads((Path(hrinv.__file__).parents[1] / "pyproject.toml").read_text())
    assert meta["project"]["version"] == hrinv.__version__
    importlib.import_module("hrinv.errors")
