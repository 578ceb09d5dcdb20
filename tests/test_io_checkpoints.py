"""Format dispatch, our .safetensors format, cross-format equality, `hrinv convert`, and damaged/odd inputs."""

import json
import os
import zipfile

import pytest
import torch
from conftest import extra_fixtures, fixture_path
from safetensors.torch import load_file, save_file

from hrinv.cli import main
from hrinv.errors import CheckpointCorruptError, CheckpointFormatError, WeightsNotFoundError
from hrinv.io.checkpoints import (
    HRINV_FORMAT,
    inspect_checkpoint,
    load_generator,
    read_checkpoint,
    save_generator,
    sniff_format,
)


def _equal_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def nv_tiny_G():
    return load_generator(fixture_path("nv_tiny", "network_proto4.pkl"))


def test_safetensors_round_trip_keeps_weights_config_and_source(nv_tiny_G, tmp_path):
    path = save_generator(nv_tiny_G, tmp_path / "g.safetensors")
    assert sniff_format(path) == "safetensors"
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        info = json.loads(f.metadata()["hrinv"])
    assert info["format"] == HRINV_FORMAT and info["version"] == 1 and info["inr"] is None
    assert info["init_kwargs"] == nv_tiny_G.init_kwargs and info["source"]["format"] == "nvidia-pkl"
    G2 = load_generator(path)
    assert _equal_state(nv_tiny_G, G2) and G2.init_kwargs == nv_tiny_G.init_kwargs
    assert G2.fingerprint() == nv_tiny_G.fingerprint()
    assert G2.meta["format"] == "hrinv-safetensors" and G2.meta["converted_from"]["format"] == "nvidia-pkl"
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


def test_inr_head_survives_the_round_trip(nv_tiny_G, tmp_path):
    inr = pytest.importorskip("hrinv.generator.inr")
    import copy
    G = copy.deepcopy(nv_tiny_G)
    R = G.img_resolution
    head = inr.INRHead(G.synthesis.channels[R], R, hidden=8)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.01)
    G.attach_inr(head)
    path = save_generator(G, tmp_path / "inr.safetensors")
    G2 = load_generator(path)
    assert G2.inr is not None and G2.inr.config == G.inr.config
    assert _equal_state(G, G2)
    assert inspect_checkpoint(path)["has_inr"]


def test_pickle_pt_and_safetensors_forms_load_to_the_same_network(nv_tiny_G, tmp_path):
    d = fixture_path("nv_tiny")
    from_st = load_generator(d / "state_dict.safetensors")  # plain state dict + config.json sidecar
    assert from_st.meta["config_from"].endswith("config.json")
    assert _equal_state(nv_tiny_G, from_st) and from_st.init_kwargs == nv_tiny_G.init_kwargs
    pt = tmp_path / "sd.pt"
    torch.save(nv_tiny_G.state_dict(), pt)  # a plain NVIDIA state dict in a .pt, no sidecar: shapes
    from_pt = load_generator(pt)
    assert from_pt.meta["config_from"] == "shapes" and _equal_state(nv_tiny_G, from_pt)
    assert from_pt.init_kwargs["synthesis_kwargs"]["channel_base"] == 1024


@pytest.mark.parametrize("name", ["ros_cm1_64", *extra_fixtures("ros_small")])
def test_rosinality_and_its_conversion_are_the_same_network(tmp_path, name):
    src = fixture_path(name, "checkpoint.pt")
    G = load_generator(src)
    out = tmp_path / "ros.safetensors"
    assert main(["convert", str(src), str(out)]) == 0
    G2 = load_generator(out)
    assert _equal_state(G, G2) and G2.init_kwargs == G.init_kwargs


def test_convert_cli(tmp_path, capsys):
    src = fixture_path("nv_tiny", "network_proto4.pkl")
    dst = tmp_path / "g.safetensors"
    assert main(["convert", str(src), str(dst), "--which", "G"]) == 0
    G = load_generator(dst)
    assert G.meta["converted_from"]["which"] == "G"
    assert _equal_state(G, load_generator(src, which="G"))
    assert main(["convert", str(src), str(dst)]) == 1  # exists, no --force
    assert "--force" in capsys.readouterr().err
    assert main(["convert", str(src), str(tmp_path / "g.pt")]) == 1
    capsys.readouterr()
    assert main(["convert", str(src), "--print"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "nvidia-pkl" and info["init_kwargs"]["img_resolution"] == 32
    evil = fixture_path("malicious", "evil.pkl")
    assert main(["convert", str(evil), str(tmp_path / "e.safetensors")]) == 1
    assert "posix.system" in capsys.readouterr().err and not (tmp_path / "e.safetensors").exists()


def test_inspect(nv_tiny_G):
    info = inspect_checkpoint(fixture_path("nv_tiny", "network_proto4.pkl"))
    assert info["format"] == "nvidia-pkl" and info["img_resolution"] == 32 and info["num_ws"] == nv_tiny_G.num_ws
    assert info["num_params"] == sum(p.numel() for p in nv_tiny_G.parameters())
    assert info["w_avg"] == "stored" and not info["has_inr"]
    json.dumps(info)


def test_dispatch_is_by_content_not_extension(tmp_path):
    data = fixture_path("ros_cm2_32", "checkpoint.pt").read_bytes()
    odd = tmp_path / "weights.pkl"  # a torch zip named .pkl
    odd.write_bytes(data)
    assert sniff_format(odd) == "torch-zip"
    assert load_generator(odd).meta["format"] == "rosinality"
    legacy = tmp_path / "legacy.bin"
    torch.save(torch.load(odd, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    assert sniff_format(legacy) == "torch-legacy"
    assert load_generator(legacy).meta["container"] == "torch-legacy"


# ----------------------------------------------------------------------------------------------------------------------
# Odd and damaged inputs: always a typed error


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="not found"):
        load_generator(tmp_path / "nope.pkl")
    assert issubclass(WeightsNotFoundError, FileNotFoundError)
    (tmp_path / "net.pkl").write_bytes(b"")
    with pytest.raises(CheckpointFormatError, match="directory.*net.pkl"):
        load_generator(tmp_path)


def test_empty_random_and_foreign_files(tmp_path):
    p = tmp_path / "x.pt"
    p.write_bytes(b"")
    with pytest.raises(CheckpointCorruptError, match="empty"):
        load_generator(p)
    p.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(3)).to(torch.uint8)
                  .numpy().tobytes())
    with pytest.raises((CheckpointFormatError, CheckpointCorruptError)):
        load_generator(p)
    p.write_bytes(b"hello, I am a text file\n")
    with pytest.raises(CheckpointFormatError, match="not a checkpoint format"):
        load_generator(p)
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("readme.txt", "hi")
    with pytest.raises(CheckpointFormatError, match="not a torch checkpoint"):
        load_generator(z)
    st = tmp_path / "t.safetensors"
    save_file({"a": torch.zeros(2)}, str(st))
    with pytest.raises(CheckpointFormatError, match="not a StyleGAN2 generator"):
        load_generator(st)
    save_file({"a": torch.zeros(2)}, str(st), metadata={"hrinv": json.dumps({"format": "hrinv.latent"})})
    with pytest.raises(CheckpointFormatError, match="hrinv.generator"):
        load_generator(st)


@pytest.mark.parametrize("name", ["ros_cm2_32/checkpoint.pt", "nv_tiny/state_dict.safetensors"])
def test_truncated_files_are_corrupt(tmp_path, name):
    data = fixture_path(*name.split("/")).read_bytes()
    ext = os.path.splitext(name)[1]
    for i, cut in enumerate([3, 7, 12, 200, len(data) // 2, len(data) - 100, len(data) - 1]):
        p = tmp_path / f"cut{i}{ext}"
        p.write_bytes(data[:cut])
        with pytest.raises(CheckpointCorruptError):
            load_generator(p)


def test_nvidia_state_dict_with_missing_keys_is_rejected(tmp_path):
    sd = load_file(str(fixture_path("nv_tiny", "state_dict.safetensors")))
    sd.pop("synthesis.b16.conv1.weight")
    p = tmp_path / "sd.safetensors"
    save_file(sd, str(p))
    with pytest.raises(CheckpointFormatError):
        load_generator(p)
    sd = load_file(str(fixture_path("nv_tiny", "state_dict.safetensors")))
    sd["synthesis.b8.conv0.noise_const"] = torch.zeros(4, 4)
    save_file(sd, str(p))
    with pytest.raises(CheckpointFormatError, match="shape"):
        load_generator(p)


def test_which_is_validated():
    with pytest.raises(ValueError, match="which"):
        read_checkpoint(fixture_path("nv_tiny", "network_proto4.pkl"), which="D")


def test_pickled_plain_state_dicts(nv_tiny_G, tmp_path):
    import pickle
    p = tmp_path / "sd.pkl"
    p.write_bytes(pickle.dumps(nv_tiny_G.state_dict(), protocol=4))
    G = load_generator(p)
    assert G.meta["format"] == "pickle:nvidia-state-dict" and _equal_state(G, nv_tiny_G)
    ros = torch.load(fixture_path("ros_cm2_32", "checkpoint.pt"), weights_only=True)["g_ema"]
    p.write_bytes(pickle.dumps(ros, protocol=2))
    _, sd, extras = read_checkpoint(p)
    assert sd["synthesis.b4.const"].shape == (32, 4, 4)
    assert extras["format"] == "pickle:rosinality-state-dict" and extras["w_avg_missing"]
    p.write_bytes(pickle.dumps({"a": torch.zeros(2)}, protocol=2))
    with pytest.raises(CheckpointFormatError, match="not a StyleGAN2 generator"):
        load_generator(p)
