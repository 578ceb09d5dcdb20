"""`hrinv fit-inr` end to end: NVIDIA pickle in, .safetensors with generator + head out, loads back and renders."""

import pytest
import torch
from conftest import fixture_path

from hrinv.cli import main


def test_fit_inr_command(tmp_path, capsys):
    src = fixture_path("nv_tiny", "network_proto4.pkl")
    dst = tmp_path / "tiny_inr.safetensors"
    rc = main(["fit-inr", str(src), str(dst), "--steps", "4", "--batch", "2", "--points", "256", "--device", "cpu"])
    assert rc == 0 and dst.exists()
    assert "native" in capsys.readouterr().out
    from hrinv.io.checkpoints import load_generator
    G = load_generator(dst)
    assert G.inr is not None and G.inr.fit_info["steps"] == 4
    G0 = load_generator(src)
    assert G.fingerprint() == G0.fingerprint()
    ws = G.mapping(torch.randn(1, G.z_dim))
    with torch.no_grad():
        assert G.synthesis(ws, shape=(20, 48)).shape == (1, 3, 20, 48)
        torch.testing.assert_close(G.synthesis(ws, shape=(32, 32)), G0.synthesis(ws), atol=1e-5, rtol=0)
    # refuses to overwrite, and a wrong extension, with exit code 1 and a message
    assert main(["fit-inr", str(src), str(dst), "--steps", "1"]) == 1
    assert main(["fit-inr", str(src), str(tmp_path / "x.pt"), "--steps", "1"]) == 1
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--steps", "-1"], ["--batch", "0"]])
def test_fit_inr_bad_settings(tmp_path, bad):
    src = fixture_path("nv_tiny", "network_proto4.pkl")
    assert main(["fit-inr", str(src), str(tmp_path / "o.safetensors"), *bad]) == 1
