"""Shared test fixtures.

``../shared`` (next to the repository) holds the real weights, data and reference fixtures. CI has it; a user's
checkout usually does not, so tests that need it skip with a clear reason. Override the location with
``HRINV_SHARED=/path/to/shared``.
"""

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HRINV_SHARED", REPO.parent / "shared")).resolve()


def shared_path(*parts):
    """Path inside ../shared, or skip the calling test with a reason that says what is missing."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p} (the team's ../shared folder with real weights/data/fixtures; "
                    f"set HRINV_SHARED to point at it)")
    return p


@pytest.fixture
def shared():
    """The ../shared folder (skips when absent)."""
    return shared_path()


@pytest.fixture
def fixtures_dir():
    return shared_path("fixtures")


@pytest.fixture
def device():
    """Test device: ``HRINV_TEST_DEVICE`` (default cpu)."""
    return torch.device(os.environ.get("HRINV_TEST_DEVICE", "cpu"))


@pytest.fixture
def rng():
    """A local, seeded generator (tests never seed the global RNG)."""
    return torch.Generator().manual_seed(0)


NV_INIT_KEYS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs")


def fixture_generator(name, *, synthesis_overrides=None, transform=None):
    """The NVIDIA reference generator of ``../shared/fixtures/<name>`` (config.json + state_dict.safetensors), built
    with our Generator and loaded strictly. ``transform(state_dict) -> state_dict`` may edit the weights first.
    Returns ``(G, cfg)``; skips when ../shared is absent."""
    import json

    from safetensors.torch import load_file

    from hrinv.generator.stylegan2 import Generator

    folder = shared_path("fixtures", name)
    cfg = json.loads((folder / "config.json").read_text())
    kwargs = {k: cfg[k] for k in NV_INIT_KEYS}
    kwargs["synthesis_kwargs"] = {**kwargs["synthesis_kwargs"], **(synthesis_overrides or {})}
    G = Generator(**kwargs)
    sd = load_file(str(folder / "state_dict.safetensors"))
    G.load_state_dict(transform(sd) if transform else sd, strict=True)
    return G.eval(), cfg
