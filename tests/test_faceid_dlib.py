"""dlib face ResNet port: parser, architecture details, and agreement with dlib's own descriptors.

Format and architecture tests read a ``.dat`` written with seeded random weights (``tests/dlib_dat.py``), so they run
on a fresh clone; agreement with dlib's descriptors needs the real file in ``../shared``."""

import numpy as np
import pytest
import torch
from conftest import fixture_path, shared_path
from dlib_dat import write_dlib_dat

from hrinv.errors import CheckpointCorruptError, CheckpointFormatError, ShapeError, WeightsNotFoundError
from hrinv.faceid.dlib_resnet import add_prev, load_dlib_resnet, parse_dlib_dat


@pytest.fixture(scope="module")
def dat():
    """The real network (learned weights)."""
    return shared_path("weights", "dlib_face_recognition_resnet_model_v1.dat")


@pytest.fixture(scope="module")
def net(dat):
    return load_dlib_resnet(dat)


@pytest.fixture(scope="module")
def random_net(dlib_random_dat):
    return load_dlib_resnet(dlib_random_dat)


@pytest.fixture(scope="module")
def oracle():
    z = np.load(fixture_path("dlib_face", "chips_and_descriptors.npz"), allow_pickle=False)
    chips = torch.from_numpy(z["chips"]).permute(0, 3, 1, 2).float() / 255  # [12, 3, 150, 150]
    return chips, torch.from_numpy(z["descriptors"]), [str(n) for n in z["names"]]


def test_parser_reads_the_whole_network(dlib_random_dat):
    meta, layers = parse_dlib_dat(dlib_random_dat)
    tags = [lay.tag for lay in layers]
    assert tags.count("con_4") == 29 and tags.count("affine_") == 29 and tags.count("add_prev_") == 14
    assert tags.count("avg_pool_2") == 5 and tags.count("max_pool_2") == 1 and tags[-1] == "fc_2"
    assert meta["input_size"] == (150, 150)
    np.testing.assert_allclose(meta["input_mean"], (122.782, 117.001, 104.298), atol=1e-4)
    assert meta["distance_threshold"] == pytest.approx(0.6, abs=1e-6)
    assert meta["sample_expansion_factor"] == 1 and meta["loss"] == "loss_metric_2"


def test_the_test_writer_reproduces_the_real_file(dat, tmp_path):
    """Parsing dlib's own file and writing the layers back gives the same bytes: the parser reads every field, and the
    random-weight files the other tests use are in dlib's format, not just one our parser accepts."""
    meta, layers = parse_dlib_dat(dat)
    assert write_dlib_dat(tmp_path / "copy.dat", meta, layers).read_bytes() == dat.read_bytes()


def test_parameter_count_and_padding_rules(random_net):
    net = random_net
    assert sum(p.numel() for p in net.parameters()) == 5_614_592
    assert net.conv1.padding == (0, 0) and net.conv1.stride == (2, 2)
    downs = [b for b in net.blocks if b.skip_pool is not None]
    assert len(downs) == 4 and all(b.conv1.padding == (0, 0) and b.conv1.stride == (2, 2) for b in downs)


def test_matches_dlib_descriptors(net, oracle):
    chips, ref, _ = oracle
    with torch.no_grad():
        out = net(chips)  # [12, 128]
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= 1e-4


def test_float64_matches_dlib(dat, oracle):
    chips, ref, _ = oracle
    out = load_dlib_resnet(dat, dtype=torch.float64)(chips[:2].double())
    assert (out.float() - ref[:2]).abs().max().item() <= 1e-4


def test_float64_and_gradients(dlib_random_dat, random_net):
    x = torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    net64 = load_dlib_resnet(dlib_random_dat, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in net64.parameters())
    x.requires_grad_(True)
    out = net64(x)  # [2, 128]
    torch.testing.assert_close(out.float(), random_net(x.detach().float()), atol=1e-4, rtol=1e-4)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_add_prev_zero_pads_top_left():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 4, 4, 4), 10.0)
    out = add_prev(a, b)
    assert out.shape == (1, 4, 4, 4)
    assert torch.all(out[:, :2, :3, :3] == 11) and torch.all(out[:, 2:] == 10) and torch.all(out[:, :, 3, :] == 10)


def test_wrong_input_size_is_a_shape_error(random_net):
    with pytest.raises(ShapeError, match="150"):
        random_net(torch.rand(1, 3, 112, 112))


def test_missing_truncated_and_foreign_files(dlib_random_dat, tmp_path):
    dat = dlib_random_dat
    with pytest.raises(WeightsNotFoundError, match="dlib_face_recognition_resnet_model_v1.dat"):
        parse_dlib_dat(tmp_path / "nope.dat")
    cut = tmp_path / "cut.dat"
    cut.write_bytes(dat.read_bytes()[:1_000_000])
    with pytest.raises(CheckpointCorruptError, match="byte"):
        parse_dlib_dat(cut)
    other = tmp_path / "other.dat"
    other.write_bytes(b"\x01\x01\x01\x08loss_mmod" + b"\x00" * 64)
    with pytest.raises(CheckpointFormatError, match="loss_metric"):
        parse_dlib_dat(other)
