"""INRHead unit tests: exact at native size, any shape, gradients, (de)serialisation, attach/detach."""

import copy
import json

import pytest
import torch

from hrinv.errors import IncompatibleGeneratorsError, ShapeError
from hrinv.generator.inr import INRHead, pixel_centres, psnr
from hrinv.generator.stylegan2 import Generator


def tiny(res=16):
    return Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=res, img_channels=3, mapping_kwargs={"num_layers": 2},
                     synthesis_kwargs={"channel_base": 256, "channel_max": 16})


def with_random_head(G, seed=0):
    R = G.img_resolution
    head = INRHead(G.synthesis.channels[R], R, hidden=16)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():  # a non-trivial (untrained) residual so that the tests can see the MLP
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return G.attach_inr(head)


def test_pixel_centres():
    torch.testing.assert_close(pixel_centres(4), torch.tensor([-0.75, -0.25, 0.25, 0.75]))
    torch.testing.assert_close(pixel_centres(4, 1, 3), torch.tensor([-0.25, 0.25]))


@torch.no_grad()
def test_native_render_is_exact_even_with_random_mlp():
    G = with_random_head(tiny(16))
    ws = G.mapping(torch.randn(2, 8))
    ref = G.synthesis(ws)
    out = G.synthesis(ws, shape=(16, 16))
    assert (out - ref).abs().max() < 1e-5
    assert (psnr(out, ref) > 80).all()
    # off the native grid the MLP residual is active
    up = G.synthesis(ws, shape=(32, 32))
    G0 = copy.deepcopy(G)
    torch.nn.init.zeros_(G0.inr.fc2.weight)
    torch.nn.init.zeros_(G0.inr.fc2.bias)
    assert (G0.synthesis(ws, shape=(32, 32)) - up).abs().max() > 1e-3


@pytest.mark.parametrize("shape", [(16, 40), (7, 16), (64, 8), (1, 1), (33, 17)])
@torch.no_grad()
def test_any_shape(shape):
    G = with_random_head(tiny(16))
    out = G(torch.randn(2, 8), shape=shape)
    assert out.shape == (2, 3, *shape) and torch.isfinite(out).all()


@torch.no_grad()
def test_nonsquare_native_axis_keeps_columns():
    """(H, W) = (R, 2R) with an untrained head (zero residual): a bicubic 2x stretch of G's image along x."""
    G = tiny(16)
    G.attach_inr(INRHead(G.synthesis.channels[16], 16))
    ws = G.mapping(torch.randn(1, 8))
    ref = G.synthesis(ws)
    wide = G.synthesis(ws, shape=(16, 32))
    down = torch.nn.functional.avg_pool2d(wide, kernel_size=(1, 2))
    assert (down - ref).abs().mean() < 0.5 * (ref - ref.mean()).abs().mean()


def test_gradients_flow_through_shape_render():
    G = with_random_head(tiny(16)).requires_grad_(False)
    ws = G.mapping(torch.randn(1, 8)).detach().requires_grad_(True)
    noise = {"b16.conv1": torch.randn(1, 1, 16, 16, requires_grad=True)}
    G.synthesis.b16.conv1.noise_strength.fill_(0.5)
    G.synthesis(ws, noise=noise, shape=(24, 40)).square().mean().backward()
    assert ws.grad.abs().sum() > 0 and noise["b16.conv1"].grad.abs().sum() > 0


@pytest.mark.parametrize("tile", [7, 16, 64])
def test_tiled_render_equals_one_piece_in_values_and_gradients(tile):
    """render_tile: the head runs in checkpointed pieces (a tile of 7 leaves ragged edges on both axes, 64 is one
    piece); the image and the gradients of ws, the noise maps and nothing else change only by float rounding."""
    G = with_random_head(tiny(16)).requires_grad_(False)
    G.synthesis.b16.conv1.noise_strength.fill_(0.5)
    g = torch.Generator().manual_seed(3)
    ws0 = G.mapping(torch.randn(2, 8, generator=g)).detach()
    n0 = torch.randn(2, 1, 16, 16, generator=g)
    out, grads = [], []
    for t in (None, tile):
        ws, n = ws0.clone().requires_grad_(True), n0.clone().requires_grad_(True)
        img = G.synthesis(ws, noise={"b16.conv1": n}, shape=(23, 41), render_tile=t)
        (img * torch.linspace(-1, 1, 41)).square().mean().backward()
        out.append(img.detach())
        grads.append((ws.grad, n.grad))
    assert out[1].shape == (2, 3, 23, 41)
    torch.testing.assert_close(out[1], out[0], atol=1e-6, rtol=1e-6)
    for a, b in zip(grads[1], grads[0]):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    with torch.no_grad():  # without gradients: plain pieces, same image (as the untiled no-grad render: fused modconv)
        torch.testing.assert_close(G.synthesis(ws0, noise={"b16.conv1": n0}, shape=(23, 41), render_tile=tile),
                                   G.synthesis(ws0, noise={"b16.conv1": n0}, shape=(23, 41)), atol=1e-6, rtol=1e-6)
    with pytest.raises(ShapeError, match="tile"):
        G.synthesis(ws0, shape=(23, 41), render_tile=0)


def test_config_roundtrip_and_state_dict_keys():
    G = with_random_head(tiny(16))
    cfg = json.loads(json.dumps(G.inr.config))
    head2 = INRHead.from_config(cfg)
    head2.load_state_dict(G.inr.state_dict(), strict=True)
    sd = G.state_dict()
    assert {k for k in sd if k.startswith("inr.")} == {f"inr.{k}" for k in head2.state_dict()}
    G2 = Generator(**G.init_kwargs).attach_inr(INRHead.from_config(cfg))
    G2.load_state_dict(sd, strict=True)
    ws = G.mapping(torch.randn(1, 8))
    with torch.no_grad():
        torch.testing.assert_close(G2.synthesis(ws, shape=(20, 30)), G.synthesis(ws, shape=(20, 30)))
    with pytest.raises(ShapeError):
        INRHead.from_config({"type": "something-else"})
    with pytest.raises(ShapeError, match="version"):
        INRHead.from_config({**cfg, "version": 99})


def test_fingerprint_ignores_head_and_detach():
    G = tiny(8)
    f = G.fingerprint()
    with_random_head(G)
    assert G.fingerprint() == f
    G.attach_inr(None)
    assert G.inr is None and not any(k.startswith("inr.") for k in G.state_dict())
    with pytest.raises(ShapeError, match="INR head"):
        G.synthesis(G.mapping(torch.randn(1, 8)), shape=(8, 8))


def test_incompatible_head():
    G = tiny(16)
    with pytest.raises(IncompatibleGeneratorsError, match="fit"):
        G.attach_inr(INRHead(5, 16))
    with pytest.raises(ShapeError):
        G.attach_inr(torch.nn.Linear(2, 2))


@torch.no_grad()
def test_deepcopy_and_direct_assignment_keep_synthesis_in_sync():
    G = with_random_head(tiny(8))
    G2 = copy.deepcopy(G)
    assert G2.synthesis._inr_holder[0] is G2.inr and G2.inr is not G.inr
    G.inr = None  # plain assignment also reaches the synthesis network
    with pytest.raises(ShapeError):
        G.synthesis(G.mapping(torch.randn(1, 8)), shape=(8, 8))
    assert G2(torch.randn(1, 8), shape=(8, 12)).shape == (1, 3, 8, 12)


def test_bad_shape():
    G = with_random_head(tiny(8))
    ws = G.mapping(torch.randn(1, 8))
    for bad in [(0, 8), (8,), "big", (8, -1)]:
        with pytest.raises(ShapeError):
            G.synthesis(ws, shape=bad)
