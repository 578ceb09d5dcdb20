"""hrinv.imageio.read_image: every image mode comes out as float RGB [3, H, W] in [0, 1]."""

import numpy as np
import pytest
import torch
from PIL import Image

from hrinv.errors import ImageReadError
from hrinv.imageio import list_images, read_image


def test_rgb_and_greyscale(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    t = read_image(tmp_path / "a.png")
    assert t.shape == (3, 5, 7) and t.dtype == torch.float32
    torch.testing.assert_close(t, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.png")
    g = read_image(tmp_path / "g.png")
    assert g.shape == (3, 5, 7) and torch.equal(g[0], g[2])


def test_sixteen_bit_uses_full_range(tmp_path):
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    t = read_image(tmp_path / "d.png")
    torch.testing.assert_close(t[0, 0], torch.tensor([0.0, 32768 / 65535, 1.0]))


def test_rgba_palette_composited(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red; the rest fully transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    t = read_image(tmp_path / "t.png")
    torch.testing.assert_close(t[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(t[:, 1, 1], torch.ones(3))  # over white
    Image.fromarray(rgba, "RGBA").convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (3, 2, 2)


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (4, 2), (0, 0, 0))
    img.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    img.save(tmp_path / "r.jpg", exif=exif, quality=100)
    t = read_image(tmp_path / "r.jpg")
    assert t.shape == (3, 4, 2)  # upright: taller than wide
    assert t[:, 0, 1].mean() > 0.8  # top-left pixel went to the top-right corner


def test_unreadable_files(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="x.jpg"):
        read_image(tmp_path / "x.jpg")
    Image.new("RGB", (64, 64)).save(tmp_path / "full.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:200])
    with pytest.raises(ImageReadError, match="cut.jpg"):
        read_image(tmp_path / "cut.jpg")
    with pytest.raises(ImageReadError, match="nothing"):
        read_image(tmp_path / "missing.png")
    assert [p.name for p in list_images(tmp_path)] == ["cut.jpg", "full.jpg", "x.jpg"]
