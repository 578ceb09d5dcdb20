"""lerp_latents (paper Eq. 7): W+ row → block mappings ("authors" and "nvidia"), batches, Latents with noise maps."""

import pytest
import torch

from hrinv.errors import IncompatibleGeneratorsError, ShapeError
from hrinv.interpolate import lerp_latents, row_blocks, row_lambdas
from hrinv.latent import Latent


def _nvidia_usage(num_ws):
    """Independent statement of NVIDIA's layout: {row: [(block, layer), ...]} for a W+ with num_ws rows."""
    blocks = [4 * 2 ** i for i in range(num_ws // 2)]
    usage = {r: [] for r in range(num_ws)}
    usage[0].append((4, "conv1"))
    usage[1].append((4, "torgb"))
    for res in blocks[1:]:
        k = res.bit_length() - 1  # log2
        usage[2 * k - 5].append((res, "conv0"))
        usage[2 * k - 4].append((res, "conv1"))
        usage[2 * k - 3].append((res, "torgb"))
    return usage


@pytest.mark.parametrize("num_ws", [8, 10, 18])
def test_row_mappings(num_ws):
    blocks = [4 * 2 ** i for i in range(num_ws // 2)]
    assert row_blocks(num_ws, "authors") == [blocks[r // 2] for r in range(num_ws)]
    usage = _nvidia_usage(num_ws)
    expect = []
    for r in range(num_ws):
        convs = [res for res, layer in usage[r] if layer != "torgb"]
        expect.append(convs[0] if convs else usage[r][0][0])  # the block whose conv the row modulates
    assert row_blocks(num_ws, "nvidia") == expect
    # every row is used by at least one layer, and the last row only by the last torgb
    assert all(usage[r] for r in range(num_ws)) and usage[num_ws - 1] == [(blocks[-1], "torgb")]


def test_paper_rows_at_1024():
    authors = row_lambdas("paper", 18, "authors")
    nvidia = row_lambdas("paper", 18, "nvidia")
    assert authors.tolist() == [0.2] * 10 + [0.7] * 8  # HRInversion's w_swapping: rows 0-9 = b4..b64
    assert nvidia.tolist() == [0.2] * 9 + [0.7] * 9  # row 9 = b128.conv0 (and b64.torgb)
    assert row_lambdas("paper", 8, "authors").tolist() == [0.2] * 8  # 32 px: all blocks <= b64


def test_lerp_tensor_endpoints_rows_and_batches():
    g = torch.Generator().manual_seed(0)
    w_s = torch.randn(3, 10, 16, generator=g)
    w_t = torch.randn(1, 10, 16, generator=g)  # one reference, three contents
    keep_s, keep_t = w_s.clone(), w_t.clone()
    assert torch.equal(lerp_latents(w_s, w_t, 0.0), w_s)
    assert torch.equal(lerp_latents(w_s, w_t, 1.0), w_t.expand(3, -1, -1))
    lams = [0.0, 0.25, 0.5, 0.75, 1.0]
    for scheme in ("authors", "nvidia"):
        w_m = lerp_latents(w_s, w_t, lams, scheme=scheme)
        assert w_m.shape == (3, 10, 16)
        per_row = row_lambdas(lams, 10, scheme).float()
        torch.testing.assert_close(w_m, w_s + per_row[None, :, None] * (w_t - w_s))
    assert torch.equal(w_s, keep_s) and torch.equal(w_t, keep_t)
    single = lerp_latents(w_s[0], w_t[0], "swap:b16")  # unbatched [num_ws, w_dim]
    assert single.shape == (10, 16)
    assert torch.equal(single[:4], w_s[0, :4]) and torch.equal(single[4:], w_t[0, 4:])


def test_lerp_refuses_mismatched_layouts():
    with pytest.raises(ShapeError):
        lerp_latents(torch.zeros(1, 10, 16), torch.zeros(1, 8, 16), 0.5)
    with pytest.raises(ShapeError, match="w_s holds 2 codes but w_t holds 3") as e:
        lerp_latents(torch.zeros(2, 10, 16), torch.zeros(3, 10, 16), 0.5)
    assert "Invert the same number of images for both" in str(e.value)
    with pytest.raises(ShapeError):
        lerp_latents(torch.zeros(1, 10, 16), torch.zeros(1, 10, 16), 0.5, num_ws=18)


def _latent(seed, batch=2, noise=True):
    g = torch.Generator().manual_seed(seed)
    maps = {"b4.conv1": torch.randn(batch, 1, 4, 4, generator=g), "b8.conv0": torch.randn(batch, 1, 8, 8, generator=g),
            "b16.conv1": torch.randn(batch, 1, 16, 16, generator=g)} if noise else None
    return Latent(ws=torch.randn(batch, 8, 16, generator=g), noise=maps, generator_fingerprint=f"fp{seed}",
                  settings={"seed": seed})


def test_lerp_latent_objects_with_noise():
    a, b = _latent(1), _latent(2)
    lams = [0.1, 0.4, 0.7, 1.0]
    out = lerp_latents(a, b, lams)
    assert isinstance(out, Latent)
    torch.testing.assert_close(out.ws, lerp_latents(a.ws, b.ws, lams))
    for name, lam in (("b4.conv1", 0.1), ("b8.conv0", 0.4), ("b16.conv1", 0.7)):
        torch.testing.assert_close(out.noise[name], a.noise[name] + lam * (b.noise[name] - a.noise[name]))
    assert out.settings["source"]["fingerprint"] == "fp1" and out.settings["lambda_per_row"][0] == pytest.approx(0.1)
    with pytest.raises(IncompatibleGeneratorsError, match="noise"):
        lerp_latents(a, _latent(3, noise=False), 0.5)
    plain = lerp_latents(_latent(4, noise=False), _latent(5, noise=False), "paper")
    assert plain.noise is None


def test_per_row_list_expresses_a_crossover_at_an_odd_row():
    """The authors' style mixing takes rows 0-6 from one code and 7+ from the other: no per-block schedule can say
    that (row 7 shares a block with row 6 in both schemes), a per-row list can."""
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 18, 16, generator=g), torch.randn(2, 18, 16, generator=g)
    mix = [0.0] * 7 + [1.0] * 11
    out = lerp_latents(a, b, mix)
    assert torch.equal(out[:, :7], a[:, :7]) and torch.equal(out[:, 7:], b[:, 7:])
    for scheme in ("authors", "nvidia"):  # per-row overrides the row -> block scheme
        assert torch.equal(lerp_latents(a, b, mix, scheme=scheme), out)
        blocks = row_blocks(18, scheme)
        assert blocks[6] == blocks[7] or blocks[7] == blocks[8]  # why a per-block λ cannot cut between rows 6 and 7
    soft = lerp_latents(a, b, torch.linspace(0, 1, 18))
    torch.testing.assert_close(soft[:, 9], a[:, 9] + 9 / 17 * (b[:, 9] - a[:, 9]))
    # a list of num_ws / 2 values is still one λ per block
    per_block = [0.0] * 9
    per_block[3] = 1.0
    assert torch.equal(lerp_latents(a, b, per_block)[:, 6:8], b[:, 6:8])
    assert torch.equal(lerp_latents(a, b, per_block)[:, 5], a[:, 5])
    with pytest.raises(Exception, match="λ for W\\+ row 2"):
        lerp_latents(a, b, [0.0, 0.0, "x"] + [0.0] * 15)


def test_per_row_list_on_latents_lerps_noise_with_the_row_of_its_conv():
    a, b = _latent(1), _latent(2)
    rows = [0.0, 0.5, 0.25, 1.0, 0.75, 0.125, 0.375, 0.625]  # 8 rows: 32 px, blocks b4..b32
    out = lerp_latents(a, b, rows)
    torch.testing.assert_close(out.ws, lerp_latents(a.ws, b.ws, rows))
    # b4.conv1 -> row 0; b8.conv0 -> row 1, b8.conv1 -> row 2; b16.conv0 -> row 3, b16.conv1 -> row 4 (NVIDIA layout)
    for name, lam in (("b4.conv1", 0.0), ("b8.conv0", 0.5), ("b8.conv1", 0.25), ("b16.conv0", 1.0),
                      ("b16.conv1", 0.75)):
        if name in a.noise:
            torch.testing.assert_close(out.noise[name], a.noise[name] + lam * (b.noise[name] - a.noise[name]))
    assert out.settings["scheme"] == "per-row" and out.settings["lambda_per_block"] is None
    assert out.settings["lambda_per_row"] == rows
