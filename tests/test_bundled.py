"""The files bundled in hrinv/bundled: sha256 verification, refusal of damaged copies, the VGG16 fallback and its
fp16 accuracy, the bundled generators, and their visibility in the ComfyUI loader lists."""

import json
import shutil

import pytest
import torch

from hrinv import bundled
from hrinv.errors import CheckpointCorruptError, WeightsNotFoundError

from conftest import shared_path

BUNDLE_LIMIT_MIB = 40
# measured on the bundled G_s with its INR head (stylegan2_face64.md): PSNR vs its own 64 px output of a 128 px
# render averaged over 2 x 2 pixels, and of 2x super-resolution from 32 px maps
HEAD_128_POOLED_DB = 53.1
HEAD_SR2X_DB = 45.7


@pytest.fixture
def fresh_cache():
    bundled._verified.cache_clear()
    yield
    bundled._verified.cache_clear()


def test_manifest_lists_every_file_with_card_and_licence():
    m = bundled.manifest()
    assert "vgg16_caffe_conv_fp16.safetensors" in m and "demo_photo.png" in m
    for name, e in m.items():
        assert (bundled.ROOT / name).is_file(), name
        assert (bundled.ROOT / e["card"]).is_file(), f"{name}: card {e['card']} missing"
        assert e["licence"] and e["source"], name
        assert (bundled.ROOT / name).stat().st_size == e["bytes"], name
    on_disk = {p.name for p in bundled.ROOT.iterdir() if p.suffix in (".safetensors", ".png")}
    assert on_disk <= set(m), f"files in hrinv/bundled without a manifest entry: {on_disk - set(m)}"
    total = sum(e["bytes"] for e in m.values()) / 2 ** 20
    print(f"bundle total {total:.1f} MiB over {len(m)} files")
    assert total < BUNDLE_LIMIT_MIB


def test_every_bundled_file_verifies_its_sha256(fresh_cache):
    for name, e in bundled.manifest().items():
        p = bundled.path(name)
        assert p == bundled.ROOT / name
        assert bundled.sha256_file(p) == e["sha256"]


@pytest.mark.parametrize("name", ["vgg16_caffe_conv_fp16.safetensors", "demo_photo.png"])
def test_a_damaged_copy_is_refused(tmp_path, monkeypatch, fresh_cache, name):
    for n in bundled.manifest():
        if n == name:
            data = bytearray((bundled.ROOT / n).read_bytes())
            data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle
            (tmp_path / n).write_bytes(bytes(data))
    monkeypatch.setattr(bundled, "ROOT", tmp_path)
    with pytest.raises(CheckpointCorruptError, match="damaged") as info:
        bundled.path(name)
    msg = str(info.value)
    assert name in msg and bundled.manifest()[name]["sha256"] in msg and "Reinstall" in msg
    bundled._verified.cache_clear()
    (tmp_path / name).unlink()
    with pytest.raises(WeightsNotFoundError, match="missing"):
        bundled.path(name)
    with pytest.raises(WeightsNotFoundError, match="not a bundled file"):
        bundled.path("ffhq.pkl")


def test_a_damaged_vgg_is_not_loaded_by_the_fallback(tmp_path, monkeypatch, fresh_cache):
    from hrinv.losses import load_vgg16

    name = "vgg16_caffe_conv_fp16.safetensors"
    data = bytearray((bundled.ROOT / name).read_bytes())
    data[-100] ^= 0x01
    (tmp_path / name).write_bytes(bytes(data))
    monkeypatch.setattr(bundled, "ROOT", tmp_path)
    monkeypatch.delenv("HRINV_VGG16", raising=False)
    with pytest.raises(CheckpointCorruptError, match="damaged"):
        load_vgg16()


def test_load_vgg16_without_a_path_uses_the_bundled_caffe_weights(monkeypatch):
    from hrinv.losses import PerceptualLoss, load_vgg16

    monkeypatch.delenv("HRINV_VGG16", raising=False)
    vgg = load_vgg16()
    assert vgg.meta["path"] == str(bundled.ROOT / "vgg16_caffe_conv_fp16.safetensors")
    assert vgg.convention.name == "caffe" and vgg.calibration  # metadata says caffe; calibration is known
    assert next(vgg.parameters()).dtype == torch.float32  # stored fp16, upcast
    v64 = load_vgg16(dtype=torch.float64)
    assert next(v64.parameters()).dtype == torch.float64
    x = torch.rand(1, 3, 48, 48) * 2 - 1
    loss = PerceptualLoss(vgg)
    assert float(loss(x, x.flip(-1))) > 0 and float(loss(x, x)) == 0
    # the default keeps the authors' layer balance on the shipped weights: one factor for all taps, so the effective
    # scales λ_l c_l are in the ratio of the paper's λ's (conv1_2 : conv5_3 = 2e-4 : 5e-4); "rms" re-weights them
    s, lam = loss.scales, loss.weights
    assert s[28] / s[2] == pytest.approx(lam[28] / lam[2], rel=1e-12)
    assert len({round(s[t] / lam[t], 12) for t in lam}) == 1
    rms = PerceptualLoss(vgg, calibration="rms").scales
    assert rms[28] / rms[2] == pytest.approx(lam[28] / lam[2] * vgg.calibration[28] / vgg.calibration[2])
    assert rms[28] / rms[2] > 3 * s[28] / s[2]  # conv5_3 is ~6x smaller in caffe: per-tap RMS lifts it


def test_bundled_vgg_matches_fp32(monkeypatch):
    """fp16 storage changes the perceptual loss by < 2e-3 relative and keeps the input gradient direction."""
    from hrinv.imageio import read_image
    from hrinv.losses import PerceptualLoss, load_vgg16

    fp32 = load_vgg16(shared_path("weights", "vgg16_imagenet_caffe.safetensors"))
    fp16 = load_vgg16(bundled.path("vgg16_caffe_conv_fp16.safetensors"))
    faces = sorted(shared_path("data", "faces", "celebahq").glob("*.jpg"))[:4]
    imgs = torch.stack([torch.nn.functional.interpolate(read_image(f)[None], size=128, mode="area")[0]
                        for f in faces]) * 2 - 1
    pred = imgs.roll(1, 0)
    for layers in ("conv", "high"):
        la, lb = PerceptualLoss(fp32, layers), PerceptualLoss(fp16, layers)
        a, b = la(pred, imgs), lb(pred, imgs)
        rel = float(((a - b).abs() / a).max())
        p1 = pred.clone().requires_grad_(True)
        la(p1, imgs).sum().backward()
        p2 = pred.clone().requires_grad_(True)
        lb(p2, imgs).sum().backward()
        cos = float(torch.nn.functional.cosine_similarity(p1.grad.flatten(), p2.grad.flatten(), dim=0))
        print(f"{layers}: loss fp32 {a.tolist()} fp16 {b.tolist()} max rel diff {rel:.2e}, grad cosine {cos:.5f}")
        assert rel < 2e-3 and cos > 0.999


def _generators():
    return bundled.names("generator")


@pytest.mark.skipif(not _generators(), reason="no bundled generator in this checkout")
def test_bundled_generators_load_and_are_a_lerp_compatible_pair():
    from hrinv.interpolate import lerp_generators
    from hrinv.io.checkpoints import load_generator

    G_s = load_generator(bundled.path("stylegan2_face64.safetensors"))
    assert G_s.img_resolution == 64 and G_s.z_dim == 100 and G_s.c_dim == 0
    assert float(G_s.mapping.w_avg.norm()) > 0  # w_avg was measured (truncation / inversion need it)
    z = torch.randn(256, 100, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        w = G_s.mapping(z)[:, 0]
        img = G_s(z[:2])
    # w_avg = the mean of mapping(z) (measured on 10,000 z): close to this 256-sample mean
    spread = float((w - w.mean(0)).norm(dim=1).mean())
    assert float((w.mean(0) - G_s.mapping.w_avg).norm()) < 0.25 * spread
    assert img.shape == (2, 3, 64, 64) and img.abs().max() < 3
    if "stylegan2_face64_demo_style.safetensors" in bundled.names():
        G_t = load_generator(bundled.path("stylegan2_face64_demo_style.safetensors"))
        assert G_t.meta.get("parent_fingerprint") == G_s.fingerprint()
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "does not look fine-tuned" warning
            lerp_generators(G_s, G_t, 0.5)


@pytest.mark.skipif(not _generators(), reason="no bundled generator in this checkout")
def test_bundled_generators_carry_an_inr_head_and_render_at_any_size():
    """Both bundled generators carry the INR head fitted by tools/fit_bundled_inr.py (G_t shares G_s's), render at a
    size that is not 64 px through it, reproduce their own 64 px output, and stay a lerp-compatible pair."""
    import torch.nn.functional as F

    from hrinv.generator.inr import psnr
    from hrinv.interpolate import lerp_generators
    from hrinv.io.checkpoints import load_generator
    from hrinv.rendering import render

    G_s = load_generator(bundled.path("stylegan2_face64.safetensors"))
    G_t = load_generator(bundled.path("stylegan2_face64_demo_style.safetensors"))
    assert G_s.inr is not None and G_t.inr is not None
    assert G_s.inr.fit_info["steps"] > 0  # a fitted head, not a fresh (bicubic-only) one
    for a, b in zip(G_s.inr.state_dict().values(), G_t.inr.state_dict().values()):
        assert torch.equal(a, b)  # G_t shares G_s's head (its card says why)
    z = torch.randn(6, 100, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        ws = G_s.mapping(z)
        out = render(G_s, ws, 96, 128)  # height 96, width 128: through the head (mode auto)
        assert out.shape == (6, 3, 96, 128) and torch.isfinite(out).all()
        x, native = G_s.synthesis.forward_features(ws, noise_mode="const")
        at64 = G_s.synthesis(ws, noise_mode="const", shape=(64, 64))
        up = G_s.synthesis(ws, noise_mode="const", shape=(128, 128))
        # 2x super-resolution from 32 px maps: the head must predict the generator's own 64 px pixels
        xs = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
        imgs = F.interpolate(native, size=(32, 32), mode="bicubic", align_corners=False, antialias=True)
        sr = G_s.inr(xs, imgs, (64, 64))
        bic = F.interpolate(imgs, size=(64, 64), mode="bicubic", align_corners=False)
    p64, p128, p_sr, p_bic = (float(psnr(a, native).mean()) for a in (at64, F.avg_pool2d(up, 2), sr, bic))
    print(f"bundled G_s head: 64 px {p64:.1f} dB, 128 px pooled {p128:.2f} dB, 2x SR head {p_sr:.2f} dB vs bicubic "
          f"{p_bic:.2f} dB")
    # thresholds: the figures of G_s's card (fp16 file, measured on other z) minus a margin
    assert p64 > 100  # exact by construction (residual gated to 0 at pixel centres): ~200 dB
    assert p128 > HEAD_128_POOLED_DB - 1.5
    assert p_sr > HEAD_SR2X_DB - 1.5 and p_sr > p_bic - 0.3
    G_m = lerp_generators(G_s, G_t, 0.5)
    assert G_m.inr is not None
    assert render(G_m, ws[:1], 128, 128).shape == (1, 3, 128, 128)


def test_comfy_loader_lists_show_the_bundled_models(tmp_path):
    from nodes_harness import stubbed_pack

    with stubbed_pack(tmp_path / "comfy") as h:
        glue = h.node_module._comfy
        user_dir = tmp_path / "comfy" / "models" / "vgg"
        user_dir.mkdir(parents=True, exist_ok=True)
        (user_dir / "my_vgg.pth").write_bytes(b"x")
        vggs = glue.list_files("hrinv_vgg")
        assert vggs[0] == "my_vgg.pth" and "bundled/vgg16_caffe_conv_fp16.safetensors" in vggs  # user's first
        assert glue.resolve("hrinv_vgg", "bundled/vgg16_caffe_conv_fp16.safetensors", "VGG16") == \
            str(bundled.ROOT / "vgg16_caffe_conv_fp16.safetensors")
        assert "bundled/" not in json.dumps(glue.list_files("hrinv_faceid"))
        gens = glue.list_files("hrinv_stylegan")
        assert not any("vgg16" in g or "mtcnn" in g for g in gens)  # only generators in the generator list
        assert [g for g in gens if g.startswith("bundled/")] == ["bundled/" + n for n in _generators()]
        assert glue.file_signature("hrinv_vgg", "bundled/vgg16_caffe_conv_fp16.safetensors").startswith(
            str(bundled.ROOT))
        # the user's folders are unchanged: the bundled folder is not registered as a model folder
        assert str(bundled.ROOT) not in h.folder_paths.folder_names_and_paths["hrinv_vgg"][0]
        node = h.nodes["HRInv_LoadVGG16"]
        out = node.execute("bundled/vgg16_caffe_conv_fp16.safetensors")
        assert out.args[0].model.meta["path"].endswith("vgg16_caffe_conv_fp16.safetensors")


def test_bundle_folder_copy_is_self_consistent(tmp_path, monkeypatch, fresh_cache):
    """A byte-exact copy of the folder (what pip installs) verifies."""
    for name in bundled.manifest():
        shutil.copy(bundled.ROOT / name, tmp_path / name)
    monkeypatch.setattr(bundled, "ROOT", tmp_path)
    for name in bundled.manifest():
        assert bundled.path(name).parent == tmp_path
