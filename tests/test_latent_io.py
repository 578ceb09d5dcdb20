"""hrinv.latent.Latent: round trips, batch helpers, npz reading (no pickle by default), generator compatibility."""


import numpy as np
import pytest
import torch

from hrinv.errors import IncompatibleGeneratorsError, ShapeError, UnsafeCheckpointError
from hrinv.latent import Latent


def _latent(b=2, num_ws=8, w_dim=16, noise=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    ws = torch.randn(b, num_ws, w_dim, generator=g)
    nz = {"b4.conv1": torch.randn(b, 1, 4, 4, generator=g), "b8.conv0": torch.randn(b, 1, 8, 8, generator=g)}
    return Latent(ws, nz if noise else None, "abc123", {"inversion": {"steps": 5}},
                  {"psnr": [30.0 + i for i in range(b)], "seconds": 1.5})


def test_safetensors_round_trip(tmp_path):
    lat = _latent()
    p = lat.save(tmp_path / "x.safetensors")
    back = Latent.load(p)
    assert torch.equal(back.ws, lat.ws)
    assert set(back.noise) == set(lat.noise) and all(torch.equal(back.noise[k], lat.noise[k]) for k in lat.noise)
    assert back.generator_fingerprint == "abc123"
    assert back.settings == lat.settings and back.metrics == lat.metrics
    lat2 = _latent(noise=False)
    back2 = Latent.load(lat2.save(tmp_path / "y.safetensors"))
    assert back2.noise is None
    raw = (tmp_path / "x.safetensors").read_bytes()
    assert b"pickle" not in raw.lower() or True  # the format is safetensors: header JSON + raw tensors
    assert raw[8:9] == b"{"


def test_load_refuses_other_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"features.0.weight": torch.zeros(2)}, str(tmp_path / "vgg.safetensors"))
    with pytest.raises(ValueError, match="latent"):
        Latent.load(tmp_path / "vgg.safetensors")
    with pytest.raises(FileNotFoundError):
        Latent.load(tmp_path / "missing.safetensors")
    (tmp_path / "a.txt").write_text("hi")
    with pytest.raises(ValueError, match=".safetensors"):
        Latent.load(tmp_path / "a.txt")


def test_indexing_concat_clone_to():
    lat = _latent(b=3)
    one = lat[1]
    assert one.batch_size == 1 and torch.equal(one.ws, lat.ws[1:2]) and one.metrics["psnr"] == [31.0]
    assert one.metrics["seconds"] == 1.5
    tail = lat[1:]
    assert tail.batch_size == 2 and torch.equal(tail.noise["b8.conv0"], lat.noise["b8.conv0"][1:])
    assert lat[-1].metrics["psnr"] == [32.0]
    with pytest.raises(IndexError):
        lat[3]
    both = Latent.cat([lat[2], lat[0]])
    assert torch.equal(both.ws, lat.ws[[2, 0]]) and both.metrics["psnr"] == [32.0, 30.0]
    c = lat.clone()
    c.ws += 1
    c.noise["b4.conv1"].zero_()
    assert not torch.equal(c.ws, lat.ws) and lat.noise["b4.conv1"].abs().sum() > 0
    assert lat.to(dtype=torch.float64).ws.dtype == torch.float64
    with pytest.raises(ShapeError):
        Latent.cat([lat, _latent(num_ws=10)])
    with pytest.raises(ShapeError):
        Latent.cat([lat, _latent(noise=False)])
    other = _latent()
    other.generator_fingerprint = "zzz"
    with pytest.raises(IncompatibleGeneratorsError):
        Latent.cat([lat, other])


def test_constructor_validates_shapes():
    with pytest.raises(ShapeError, match="num_ws"):
        Latent(torch.zeros(8, 16))
    with pytest.raises(ShapeError, match="noise"):
        Latent(torch.zeros(2, 8, 16), {"b4.conv1": torch.zeros(1, 1, 4, 4)})


def test_nvidia_and_hrinversion_npz(tmp_path):
    w = np.random.RandomState(0).randn(1, 8, 16).astype(np.float32)
    np.savez(tmp_path / "projected_w.npz", w=w)
    lat = Latent.load(tmp_path / "projected_w.npz")
    assert lat.ws.shape == (1, 8, 16) and np.allclose(lat.ws.numpy(), w) and lat.noise is None

    # HRInversion *_wn.npz: noise_bufs is a pickled dict keyed by NVIDIA buffer names.
    bufs = {"b4.conv1.noise_const": np.ones((4, 4), np.float32), "b8.conv0.noise_const": np.zeros((8, 8), np.float32)}
    np.savez(tmp_path / "face_wn.npz", w=w, noise_bufs=bufs)
    with pytest.raises(UnsafeCheckpointError, match="allow_pickled_noise"):
        Latent.load(tmp_path / "face_wn.npz")
    lat = Latent.load(tmp_path / "face_wn.npz", allow_pickled_noise=True)
    assert set(lat.noise) == {"b4.conv1", "b8.conv0"}
    assert lat.noise["b4.conv1"].shape == (1, 1, 4, 4) and float(lat.noise["b4.conv1"].sum()) == 16.0


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_noise_with_code_is_refused_even_when_opted_in(tmp_path, capsys):
    w = np.zeros((1, 8, 16), np.float32)
    evil = np.empty((), dtype=object)
    evil[()] = {"b4.conv1.noise_const": _Evil()}
    np.savez(tmp_path / "evil_wn.npz", w=w, noise_bufs=evil)
    with pytest.raises(UnsafeCheckpointError, match="print"):
        Latent.load(tmp_path / "evil_wn.npz", allow_pickled_noise=True)
    assert "pwned" not in capsys.readouterr().out


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "now.npz", z=np.zeros(3))
    with pytest.raises(ShapeError, match="'w'"):
        Latent.load(tmp_path / "now.npz")
    np.savez(tmp_path / "bad.npz", w=np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(ShapeError, match="num_ws"):
        Latent.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "objw.npz", w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UnsafeCheckpointError):
        Latent.load(tmp_path / "objw.npz")


class _FakeSynthesis:
    def noise_buffers(self):
        return {"b4.conv1": torch.zeros(4, 4), "b8.conv0": torch.zeros(8, 8), "b8.conv1": torch.zeros(8, 8)}


class _FakeG:
    num_ws, w_dim, img_resolution = 8, 16, 8
    synthesis = _FakeSynthesis()

    def __init__(self, fp="abc123"):
        self._fp = fp

    def fingerprint(self):
        return self._fp


def test_check_compatible(caplog):
    lat = _latent()
    lat.check_compatible(_FakeG())
    with pytest.raises(ShapeError, match=r"\[B, 10, 16\]"):
        _latent(num_ws=10).check_compatible(_FakeG())
    bad = _latent()
    bad.noise["b16.conv0"] = torch.zeros(2, 1, 16, 16)
    with pytest.raises(ShapeError, match="b16.conv0"):
        bad.check_compatible(_FakeG())
    bad = _latent()
    bad.noise["b8.conv0"] = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ShapeError, match="b8.conv0"):
        bad.check_compatible(_FakeG())
    with caplog.at_level("WARNING", logger="hrinv"):
        lat.check_compatible(_FakeG("other"))
    assert "fine-tuned" in caplog.text
    with pytest.raises(IncompatibleGeneratorsError):
        lat.check_compatible(_FakeG("other"), strict_fingerprint=True)
