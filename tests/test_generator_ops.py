"""hrinv.generator.ops against straightforward formulations written out here (explicit loops, per-sample weights).

The generator parity tests check these ops end to end against the reference implementations; these tests pin each op
down on its own, including arguments the generator never uses (negative/asymmetric padding, down-sampling, gain,
flip_filter, every activation), in float64 so that any difference is a real one.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from hrinv.generator import ops

D = torch.float64


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


def _upfirdn2d_loops(x, f, up, down, pad, flip_filter, gain):
    """The definition: zero insertion, pad (negative crops), FIR filter as a true convolution (or correlation when
    flip_filter), decimation. Written with explicit index loops."""
    n, c, h, w = x.shape
    x0, x1, y0, y1 = pad
    up_img = torch.zeros(n, c, h * up, w * up, dtype=x.dtype)
    up_img[:, :, ::up, ::up] = x  # every sample followed by (up - 1) zeros
    hp, wp = h * up + y0 + y1, w * up + x0 + x1
    padded = torch.zeros(n, c, hp, wp, dtype=x.dtype)
    for i in range(hp):
        for j in range(wp):
            si, sj = i - y0, j - x0
            if 0 <= si < h * up and 0 <= sj < w * up:
                padded[:, :, i, j] = up_img[:, :, si, sj]
    fh, fw = f.shape
    k = f * gain if flip_filter else f.flip([0, 1]) * gain  # convolution = correlation with the flipped kernel
    oh, ow = hp - fh + 1, wp - fw + 1
    out = torch.zeros(n, c, oh, ow, dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = (padded[:, :, i:i + fh, j:j + fw] * k).sum((-1, -2))
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize("up,down,pad,flip_filter,gain", [
    (1, 1, [1, 1, 1, 1], False, 1.0),
    (2, 1, [2, 1, 2, 1], False, 4.0),
    (1, 2, [1, 1, 1, 1], False, 1.0),
    (2, 2, [1, 2, 0, 3], True, 2.5),
    (1, 1, [-1, 2, 1, -2], False, 1.0),  # negative padding crops
    (3, 1, [0, 0, 0, 0], True, 1.0),
])
def test_upfirdn2d_matches_its_definition(up, down, pad, flip_filter, gain):
    x = _rand(2, 3, 5, 6)
    f = _rand(3, 4, seed=1)  # non-square and not symmetric: flips and axis order matter
    got = ops.upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip_filter, gain=gain)
    ref = _upfirdn2d_loops(x, f, up, down, pad, flip_filter, gain)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_upfirdn2d_padding_forms_and_identity():
    x = _rand(1, 2, 4, 4)
    f = ops.setup_filter([1, 3, 3, 1], dtype=D)
    torch.testing.assert_close(ops.upfirdn2d(x, f, padding=2), ops.upfirdn2d(x, f, padding=[2, 2, 2, 2]))
    torch.testing.assert_close(ops.upfirdn2d(x, f, padding=[1, 2]), ops.upfirdn2d(x, f, padding=[1, 1, 2, 2]))
    torch.testing.assert_close(ops.upfirdn2d(x, None), x)  # no filter: identity
    with pytest.raises(ValueError, match="padding"):
        ops.upfirdn2d(x, f, padding=[1, 2, 3])


def test_setup_filter_and_resampling_keep_constants():
    f = ops.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    torch.testing.assert_close(f, torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)
    assert torch.equal(ops.setup_filter([2.0], normalize=False), torch.tensor([[4.0]]))
    with pytest.raises(ValueError, match="1-D or 2-D"):
        ops.setup_filter(torch.ones(2, 2, 2))
    f = f.double()
    const = torch.full((1, 1, 8, 8), 0.7, dtype=D)
    up = ops.upsample2d(const, f)
    down = ops.downsample2d(const, f)
    assert up.shape == (1, 1, 16, 16) and down.shape == (1, 1, 4, 4)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 0.7))  # DC gain 1 inside
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.full_like(down[..., 1:-1, 1:-1], 0.7))


def _act_ref(x, act, alpha):
    return {"linear": x, "relu": x.clamp_min(0), "lrelu": torch.where(x >= 0, x, alpha * x), "tanh": x.tanh(),
            "sigmoid": 1 / (1 + (-x).exp()), "elu": torch.where(x > 0, x, x.exp() - 1),
            "selu": 1.0507009873554805 * torch.where(x > 0, x, 1.6732632423543772 * (x.exp() - 1)),
            "softplus": (1 + x.exp()).log(), "swish": x / (1 + (-x).exp())}[act]


@pytest.mark.parametrize("act", sorted(ops.ACT_GAIN))
def test_bias_act_matches_formulas(act):
    x = _rand(2, 5, 3, 4) * 2
    b = _rand(5, seed=2)
    got = ops.bias_act(x, b, act=act)
    default_gain = math.sqrt(2) if act in ("relu", "lrelu", "swish") else 1.0
    torch.testing.assert_close(got, _act_ref(x + b.view(1, 5, 1, 1), act, 0.2) * default_gain, rtol=1e-12, atol=1e-12)


def test_bias_act_dim_alpha_gain_clamp_order():
    x = _rand(3, 4, 6) * 50
    b = _rand(6, seed=3) * 10
    got = ops.bias_act(x, b, dim=2, act="lrelu", alpha=0.1, gain=3.0, clamp=40.0)
    pre = x + b.view(1, 1, 6)
    ref = (torch.where(pre >= 0, pre, 0.1 * pre) * 3.0).clamp(-40, 40)  # bias, activation, gain, then clamp
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    assert (got.abs() == 40).any()  # the clamp was reached
    torch.testing.assert_close(ops.bias_act(x), x)  # linear, no bias: identity
    with pytest.raises(ValueError, match="unknown activation"):
        ops.bias_act(x, act="gelu")


@pytest.mark.parametrize("k", [3, 1])
def test_conv2d_resample_up_and_down_equal_resample_then_conv(k):
    """Inside the image (away from the zero-padded border), filtering and convolving commute: the fused layouts
    equal the obvious order (resample with the FIR filter, then a plain convolution)."""
    x = _rand(2, 3, 8, 8)
    w = _rand(4, 3, k, k, seed=4)
    f = ops.setup_filter([1, 3, 3, 1], dtype=D)
    p = k // 2
    got_up = ops.conv2d_resample(x, w, f=f, up=2, padding=p)
    ref_up = F.conv2d(ops.upsample2d(x, f), w, padding=p)
    assert got_up.shape == ref_up.shape == (2, 4, 16, 16)
    torch.testing.assert_close(got_up[..., 3:-3, 3:-3], ref_up[..., 3:-3, 3:-3], rtol=1e-10, atol=1e-10)
    got_down = ops.conv2d_resample(x, w, f=f, down=2, padding=p)
    ref_down = ops.downsample2d(F.conv2d(x, w, padding=p), f)
    assert got_down.shape == ref_down.shape == (2, 4, 4, 4)
    torch.testing.assert_close(got_down[..., 1:-1, 1:-1], ref_down[..., 1:-1, 1:-1], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ops.conv2d_resample(x, w, padding=p), F.conv2d(x, w, padding=p))
    torch.testing.assert_close(ops.conv2d_resample(x, w, padding=p, flip_weight=False),
                               F.conv2d(x, w.flip([2, 3]), padding=p))


@pytest.mark.parametrize("k,flip_weight,size", [(3, False, (8, 8)), (3, True, (7, 5)), (5, False, (6, 6))])
def test_polyphase_up_convolution_equals_the_transposed_convolution(monkeypatch, k, flip_weight, size):
    """The stride-2 up-sampling convolution in polyphase form (four regular convolutions interleaved into the padded
    buffer of the FIR filter) gives the transposed-convolution path's values and gradients (float64, to 1e-10)."""
    x = _rand(2, 3, *size).requires_grad_(True)
    w = _rand(4, 3, k, k, seed=5).requires_grad_(True)
    f = ops.setup_filter([1, 3, 3, 1], dtype=D)
    g = _rand(2, 4, 2 * size[0], 2 * size[1], seed=6)
    calls = []
    real = ops._conv_transpose2x_polyphase
    monkeypatch.setattr(ops, "_conv_transpose2x_polyphase", lambda *a: calls.append(1) or real(*a))
    results, results32 = [], []
    for threshold in (0, 10 ** 9):  # polyphase on every size, then never
        monkeypatch.setattr(ops, "POLYPHASE_MIN_PIXELS", threshold)
        y = ops.conv2d_resample(x, w, f=f, up=2, padding=k // 2, flip_weight=flip_weight)
        results.append((y, *torch.autograd.grad((y * g).sum(), (x, w))))
        results32.append(ops.conv2d_resample(x.detach().float(), w.detach().float(), f=f.float(), up=2,
                                             padding=k // 2, flip_weight=flip_weight))
    assert len(calls) == 2  # the polyphase path ran (in float64 and float32), then did not
    assert results[0][0].shape == (2, 4, 2 * size[0], 2 * size[1])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(results32[0], results32[1], rtol=1e-5, atol=1e-5)


def _modconv_per_sample(x, weight, styles, demodulate, up, f, noise):
    """Each sample with its own weight: scale input channels by the style, normalise each output filter."""
    outs = []
    for i in range(x.shape[0]):
        w = weight * styles[i].view(1, -1, 1, 1)  # [O, I, kh, kw]
        if demodulate:
            w = w / (w.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8).sqrt()
        xi = x[i:i + 1]
        y = ops.conv2d_resample(xi, w, f=f, up=up, padding=weight.shape[-1] // 2)
        outs.append(y)
    y = torch.cat(outs)
    return y if noise is None else y + noise


@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("up", [1, 2])
def test_modulated_conv2d_fused_and_unfused_equal_per_sample_weights(demodulate, up):
    x = _rand(3, 4, 6, 6)
    weight = _rand(5, 4, 3, 3, seed=5)
    styles = _rand(3, 4, seed=6).abs() + 0.5
    f = ops.setup_filter([1, 3, 3, 1], dtype=D) if up > 1 else None
    noise = _rand(3, 1, 6 * up, 6 * up, seed=7)
    ref = _modconv_per_sample(x, weight, styles, demodulate, up, f, noise)
    for fused in (True, False):
        got = ops.modulated_conv2d(x, weight, styles, noise=noise, up=up, padding=1, resample_filter=f,
                                   demodulate=demodulate, fused_modconv=fused)
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
    if demodulate:  # demodulation makes the result independent of the style's overall scale
        again = ops.modulated_conv2d(x, weight, styles * 7.0, up=up, padding=1, resample_filter=f)
        torch.testing.assert_close(again, ref - noise, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="styles"):
        ops.modulated_conv2d(x, weight, styles[:, :3])


def test_normalize_2nd_moment():
    x = _rand(4, 16) * 3
    y = ops.normalize_2nd_moment(x)
    torch.testing.assert_close(y.square().mean(1), torch.ones(4, dtype=D))
    torch.testing.assert_close(y, x / x.square().mean(1, keepdim=True).add(1e-8).sqrt())
