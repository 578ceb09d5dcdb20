"""render(): INR and resize modes, aspect policies, tiling equivalence, errors."""

import pytest
import torch

from hrinv.errors import ShapeError
from hrinv.generator.inr import INRHead
from hrinv.generator.stylegan2 import Generator
from hrinv.rendering import canvas_layout, render


def tiny(res=16, head=True, seed=0):
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=res, img_channels=3, mapping_kwargs={"num_layers": 2},
                  synthesis_kwargs={"channel_base": 256, "channel_max": 16})
    if head:
        h = INRHead(G.synthesis.channels[res], res, hidden=16)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in h.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        G.attach_inr(h)
    return G


@pytest.fixture(scope="module")
def G():
    return tiny()


@pytest.fixture(scope="module")
def ws(G):
    with torch.no_grad():
        return G.mapping(torch.randn(2, 8, generator=torch.Generator().manual_seed(3)))


def test_canvas_layout():
    assert canvas_layout(10, 20, "stretch") == ((10, 20), (0, 10), (0, 20), (0, 0))
    assert canvas_layout(10, 20, "crop") == ((20, 20), (5, 15), (0, 20), (0, 0))
    assert canvas_layout(10, 20, "pad") == ((10, 10), (0, 10), (0, 10), (0, 5))
    with pytest.raises(ShapeError):
        canvas_layout(4, 4, "zoom")


@pytest.mark.parametrize("tile", [3, 7, 64])
def test_tiled_equals_untiled(G, ws, tile):
    full = render(G, ws, 24, 40, tile=None)
    tiled = render(G, ws, 24, 40, tile=tile)
    assert full.shape == (2, 3, 24, 40) and full.device.type == "cpu"
    torch.testing.assert_close(tiled, full, atol=1e-6, rtol=0)


def test_inr_render_matches_synthesis_shape(G, ws):
    with torch.no_grad():
        ref = G.synthesis(ws, shape=(20, 36)).clamp(-1, 1)
    torch.testing.assert_close(render(G, ws, 20, 36, mode="inr"), ref)
    native = render(G, ws, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(native, G.synthesis(ws).clamp(-1, 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fit", ["crop", "pad"])
def test_fit_policies(G, ws, fit):
    out = render(G, ws, 12, 24, fit=fit, tile=5, pad_value=-1.0)
    assert out.shape == (2, 3, 12, 24)
    if fit == "crop":  # the middle rows of a 24 x 24 render
        torch.testing.assert_close(out, render(G, ws, 24, 24)[:, :, 6:18], atol=1e-6, rtol=0)
    else:  # a 12 x 12 render centred in black
        torch.testing.assert_close(out[:, :, :, 6:18], render(G, ws, 12, 12), atol=1e-6, rtol=0)
        assert (out[:, :, :, :6] == -1).all() and (out[:, :, :, 18:] == -1).all()


def test_resize_mode(ws):
    G = tiny(head=False)
    out = render(G, ws, 24, 40)  # auto -> resize without a head
    assert out.shape == (2, 3, 24, 40)
    with torch.no_grad():
        img = G.synthesis(ws)
    ref = torch.nn.functional.interpolate(img, size=(24, 40), mode="bicubic", align_corners=False, antialias=True)
    torch.testing.assert_close(out, ref.clamp(-1, 1))
    torch.testing.assert_close(render(G, ws, 16, 16, clamp=False), img)
    small = render(G, ws, 8, 8, fit="crop")
    assert small.shape == (2, 3, 8, 8)
    with pytest.raises(ShapeError, match="INR head"):
        render(G, ws, 8, 8, mode="inr")


def test_out_dtype_callback_and_errors(G, ws):
    calls = []
    out = render(G, ws, 10, 10, tile=4, out_dtype=torch.float16, callback=lambda *a: calls.append(a))
    assert out.dtype == torch.float16
    assert calls[-1] == (9, 9, None) and len(calls) == 9

    def cancel(step, total, preview):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render(G, ws, 10, 10, tile=4, callback=cancel)
    for kw in [{"height": 0, "width": 4}, {"height": 4, "width": 4, "mode": "magic"},
               {"height": 4, "width": 4, "tile": 0}]:
        with pytest.raises(ShapeError):
            render(G, ws, **kw)


def test_render_does_not_touch_inputs(G, ws):
    before = ws.clone()
    params = {k: v.clone() for k, v in G.state_dict().items()}
    render(G, ws, 9, 13, noise_mode="random", generator=torch.Generator().manual_seed(1))
    assert torch.equal(ws, before)
    assert all(torch.equal(v, params[k]) for k, v in G.state_dict().items())
