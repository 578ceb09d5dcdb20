"""VGG16 trunk and weight loaders: the taps are conv outputs, every file layout loads, bad files give clear errors.

Most tests need the VGG16 file layouts, not learned weights: they use a seeded random VGG16 written in the layout of
the caffe-convention file (safetensors with convention metadata). The last test uses the real weights: the
package's bundled float16 copy (and the float32 file where ../shared has it)."""

import os

import pytest
import torch
import torch.nn.functional as F
from conftest import SHARED, save_random_vgg_file
from safetensors.torch import load_file, save_file

from hrinv.errors import (
    CheckpointCorruptError,
    CheckpointFormatError,
    InvalidSettingError,
    UnsafeCheckpointError,
    WeightsNotFoundError,
)
from hrinv.losses import CAFFE, TORCHVISION, VGG16Conv, load_vgg16
from hrinv.losses.vgg import CONV_INDICES, POOL_INDICES

CAFFE_FILE = ("weights", "vgg16_imagenet_caffe.safetensors")


@pytest.fixture(scope="module")
def caffe_path(tmp_path_factory):
    """A random VGG16 in the caffe-convention file layout (``features.N.*`` + ``input_convention`` metadata)."""
    path = tmp_path_factory.mktemp("vgg") / "vgg16_random_caffe.safetensors"
    save_random_vgg_file(path, seed=0, convention="caffe")
    return path


@pytest.fixture(scope="module")
def caffe_sd(caffe_path):
    return load_file(str(caffe_path))  # {"features.N.weight": ...}


@pytest.fixture(scope="module")
def vgg(caffe_path):
    return load_vgg16(caffe_path)


def _image(h=64, w=56, seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, h, w, generator=g) * 2 - 1  # [B, 3, H, W] in [-1, 1]


def _explicit_chain(sd, x, stop):
    """Reference VGG16 written independently: F.conv2d / relu / max_pool in torchvision order, returning every op."""
    outs = {}
    h = x
    for i in range(stop + 1):
        if i in CONV_INDICES:
            h = F.conv2d(h, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], padding=1)
        elif i in POOL_INDICES:
            h = F.max_pool2d(h, kernel_size=2, stride=2)
        else:
            h = torch.relu(h)
        outs[i] = h
    return outs


def test_taps_are_conv_outputs(vgg, caffe_sd):
    x = vgg.preprocess(_image())
    taps = vgg(x, (2, 3, 7, 14, 21, 28))
    ref = _explicit_chain(caffe_sd, x, 28)
    for t in (2, 7, 14, 21, 28):
        torch.testing.assert_close(taps[t], ref[t], rtol=1e-4, atol=1e-3 * ref[t].abs().max().item())
        assert (taps[t] < 0).float().mean() > 0.05, f"tap {t} has no negative values: not a pre-ReLU conv output"
    assert (taps[3] >= 0).all() and torch.equal(taps[3], taps[2].clamp_min(0))


def test_taps_unaffected_by_later_ops_and_inplace_edits(vgg):
    x = vgg.preprocess(_image(seed=1))
    shallow = vgg(x, (2,))[2].clone()
    deep = vgg(x, (2, 3, 28))  # running further must not rewrite tap 2 (the in-place ReLU trap)
    torch.testing.assert_close(deep[2], shallow, rtol=0, atol=0)
    before = deep[2].clone()
    deep[3].relu_().mul_(0.0)  # in-place edits of the following activation
    assert torch.equal(deep[2], before) and (deep[2] < 0).any()
    assert x.data_ptr() != deep[2].data_ptr()


def test_stops_after_last_tap(vgg):
    calls = []
    orig = vgg._op
    vgg._op = lambda i, h, **kw: (calls.append(i), orig(i, h, **kw))[1]
    try:
        vgg(vgg.preprocess(_image()), (7,))
    finally:
        del vgg._op
    assert calls == list(range(8))


def test_caffe_preprocessing_matches_explicit_bgr_mean(vgg):
    img = _image(40, 48, seed=2)
    assert vgg.convention is CAFFE and vgg.meta["convention_from"] == "file metadata"
    x01 = (img + 1) / 2
    bgr255 = x01[:, [2, 1, 0]] * 255.0
    expected = bgr255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    torch.testing.assert_close(vgg.preprocess(img), expected, rtol=1e-6, atol=1e-4)
    img_copy = img.clone()
    vgg.preprocess(img)
    assert torch.equal(img, img_copy)


def test_torchvision_preprocessing():
    img = _image(40, 48, seed=3)
    x01 = (img + 1) / 2
    expected = (x01 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    torch.testing.assert_close(TORCHVISION.apply(img), expected)


def _same_weights(vgg, sd):
    for i in CONV_INDICES:
        assert torch.equal(vgg.features[str(i)].weight, sd[f"features.{i}.weight"])
        assert torch.equal(vgg.features[str(i)].bias, sd[f"features.{i}.bias"])


def test_torchvision_pth_layout(tmp_path, caffe_sd):
    sd = dict(caffe_sd)
    sd["classifier.0.weight"] = torch.zeros(8, 4)  # the classifier is ignored, whatever its size
    sd["classifier.6.bias"] = torch.zeros(8)
    p = tmp_path / "vgg16-397923af.pth"
    torch.save(sd, p)
    v = load_vgg16(p)
    _same_weights(v, caffe_sd)
    assert v.convention is TORCHVISION and v.calibration is None  # no metadata: torchvision convention
    assert not any(p.requires_grad for p in v.parameters()) and not v.training
    assert load_vgg16(p, convention="caffe").convention is CAFFE


def test_timm_layouts(tmp_path, caffe_sd):
    sd = {k.replace("features.", "features_"): v for k, v in caffe_sd.items()}  # timm features_only (FeatureListNet)
    p = tmp_path / "vgg16_features_only.pth"
    torch.save(sd, p)
    _same_weights(load_vgg16(p), caffe_sd)
    full = dict(caffe_sd)  # timm vgg16.tv_in1k model.safetensors: features.N + pre_logits + head
    full["pre_logits.fc1.weight"] = torch.zeros(4, 4)
    full["head.fc.weight"] = torch.zeros(10, 4)
    q = tmp_path / "model.safetensors"
    save_file(full, str(q))
    _same_weights(load_vgg16(q), caffe_sd)


def test_bare_and_wrapped_layouts(tmp_path, caffe_sd):
    bare = {k.replace("features.", ""): v for k, v in caffe_sd.items()}  # vgg.features.state_dict()
    p = tmp_path / "bare.pt"
    torch.save(bare, p)
    _same_weights(load_vgg16(p), caffe_sd)
    wrapped = {"state_dict": {"module." + k: v for k, v in caffe_sd.items()}, "epoch": 3}
    q = tmp_path / "wrapped.pth"
    torch.save(wrapped, q)
    _same_weights(load_vgg16(q), caffe_sd)


def test_caffe_file_and_dtype(caffe_path, caffe_sd):
    v = load_vgg16(caffe_path, dtype=torch.float64)
    assert v.features["0"].weight.dtype == torch.float64
    assert v.convention is CAFFE
    assert v.calibration is None and v.meta["calibration"] is None  # unknown weights: no stored calibration
    out = v(v.preprocess(_image(48, 48).double()), (28,))[28]
    assert out.dtype == torch.float64


def test_hf_cache_path(tmp_path, monkeypatch, caffe_sd):
    snap = tmp_path / "models--timm--vgg16.tv_in1k" / "snapshots" / "0123abc"
    snap.mkdir(parents=True)
    (tmp_path / "models--timm--vgg16.tv_in1k" / "refs").mkdir()
    (tmp_path / "models--timm--vgg16.tv_in1k" / "refs" / "main").write_text("0123abc")
    save_file(dict(caffe_sd), str(snap / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HRINV_VGG16", raising=False)
    v = load_vgg16(timm_name="vgg16.tv_in1k")
    _same_weights(v, caffe_sd)
    assert v.convention is TORCHVISION
    with pytest.raises(WeightsNotFoundError, match="local Hugging Face cache"):
        load_vgg16(timm_name="vgg16_bn.tv_in1k")


def test_timm_model_agrees_if_timm_imports(caffe_sd):
    timm = pytest.importorskip("timm", reason="timm is optional and not importable here")
    m = timm.create_model("vgg16", pretrained=False, features_only=True, out_indices=(0, 1, 2, 3, 4))
    for mod in m.modules():
        if isinstance(mod, torch.nn.ReLU):
            mod.inplace = False
    m.load_state_dict({k.replace("features.", "features_"): v for k, v in caffe_sd.items()}, strict=False)
    v = VGG16Conv("caffe")
    v.load_state_dict(caffe_sd)
    x = v.preprocess(_image(64, 64))
    ours = v(x, (3,))[3]  # relu1_2 = timm's first feature
    torch.testing.assert_close(m(x)[0], ours, rtol=1e-4, atol=1e-3)


# --------------------------------------------------------------------------------------------------------------
# errors


def test_missing_file_no_path_and_env(tmp_path, monkeypatch, caffe_path):
    with pytest.raises(WeightsNotFoundError, match="not found"):
        load_vgg16(tmp_path / "nope.pth")
    monkeypatch.delenv("HRINV_VGG16", raising=False)
    monkeypatch.setattr("hrinv.losses.vgg._bundled_vgg", lambda: None)  # an install without the bundled VGG16
    with pytest.raises(WeightsNotFoundError, match="path="):
        load_vgg16()
    monkeypatch.setenv("HRINV_VGG16", str(caffe_path))
    assert load_vgg16().meta["path"] == str(caffe_path)


def test_vgg19_bn_and_shape_errors(tmp_path, caffe_sd):
    vgg19 = dict(caffe_sd)
    vgg19["features.30.weight"] = torch.zeros(512, 512, 3, 3)
    vgg19["features.30.bias"] = torch.zeros(512)
    p = tmp_path / "vgg19.pth"
    torch.save(vgg19, p)
    with pytest.raises(CheckpointFormatError, match="VGG19"):
        load_vgg16(p)
    bn = {k: v for k, v in caffe_sd.items() if k.startswith("features.0.")}
    bn["features.1.running_mean"] = torch.zeros(64)
    bn["features.1.weight"] = torch.zeros(64)
    q = tmp_path / "vgg16_bn.pth"
    torch.save(bn, q)
    with pytest.raises(CheckpointFormatError, match="batch-norm"):
        load_vgg16(q)
    wrong = dict(caffe_sd)
    wrong["features.5.weight"] = wrong["features.5.weight"].transpose(0, 1).contiguous()
    r = tmp_path / "wrong.safetensors"
    save_file(wrong, str(r))
    with pytest.raises(CheckpointFormatError, match=r"features\.5.*expected \(128, 64, 3, 3\)"):
        load_vgg16(r)
    missing = {k: v for k, v in caffe_sd.items() if not k.startswith("features.28.")}
    s = tmp_path / "missing.safetensors"
    save_file(missing, str(s))
    with pytest.raises(CheckpointFormatError, match=r"missing \['features\.28\.weight'"):
        load_vgg16(s)


def test_corrupt_unsafe_and_unknown_files(tmp_path):
    p = tmp_path / "trunc.safetensors"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    with pytest.raises(CheckpointCorruptError):
        load_vgg16(p)
    q = tmp_path / "trunc.pth"
    q.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(CheckpointCorruptError):
        load_vgg16(q)
    evil = tmp_path / "evil.pth"
    torch.save({"x": torch.zeros(1), "obj": _Evil(tmp_path / "pwned")}, evil)
    with pytest.raises(UnsafeCheckpointError, match="weights_only"):
        load_vgg16(evil)
    assert not os.path.exists(tmp_path / "pwned")
    with pytest.raises(CheckpointFormatError, match="extension"):
        (tmp_path / "w.onnx").write_bytes(b"x")
        load_vgg16(tmp_path / "w.onnx")
    with pytest.raises(InvalidSettingError, match="convention"):
        VGG16Conv("yuv")


class _Evil:
    """Pickles to a call of Path.touch: loading it unsafely would create a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (type(self.path).touch, (self.path,))


# --------------------------------------------------------------------------------------------------------------
# the real caffe-convention weights: the package's bundled float16 copy, and the float32 file where ../shared has it


def _real_caffe_files():
    from hrinv import bundled

    fp32 = SHARED.joinpath(*CAFFE_FILE)
    return [bundled.ROOT / "vgg16_caffe_conv_fp16.safetensors"] + ([fp32] if fp32.is_file() else [])


@pytest.mark.parametrize("path", _real_caffe_files(), ids=lambda p: p.name)
def test_real_caffe_file_carries_convention_and_calibration(path):
    """The learned ImageNet weights load with the convention from their metadata and their known calibration, and
    the trunk's taps match an independent conv/relu/pool chain on the same weights (upcast to float32, as the loader
    does: the float16 file is checked with the same tolerance)."""
    v = load_vgg16(path)
    assert v.convention is CAFFE and v.meta["convention_from"] == "file metadata"
    assert v.calibration is not None and v.meta["calibration"]  # the known caffe weights carry their calibration
    sd = {k: t.float() for k, t in load_file(str(path)).items()}
    x = v.preprocess(_image(seed=4))
    ref = _explicit_chain(sd, x, 28)
    taps = v(x, (2, 7, 14, 21, 28))
    for t in (2, 7, 14, 21, 28):
        torch.testing.assert_close(taps[t], ref[t], rtol=1e-4, atol=1e-3 * ref[t].abs().max().item())
