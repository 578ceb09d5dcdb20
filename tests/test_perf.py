"""Speed switches give the fp32 result: the in-place modconv tail, unfused-when-differentiating, bf16 autocast (CPU),
fp16 loss scaling, and the automatic memory-mode choice. Seeded random networks only (no ../shared needed).

Tolerances (stated, measured on this machine's CPU with the seeds below):
* unfused vs fused modconv, fp32: image max |diff| < 1e-4, loss rel < 1e-5, gradients rel < 1e-4.
* the epilogue vs the plain op chain: float64 gradcheck (exact).
* bf16 autocast vs fp32: image PSNR > 35 dB (images in [-1, 1]), gradient cosine > 0.99.
* N-step inversion (bf16, fp16) within 0.3 dB PSNR of the fp32 run.
"""

import math

import pytest
import torch

from hrinv import perf
from hrinv.errors import InvalidSettingError
from hrinv.generator import ops
from hrinv.generator.stylegan2 import Generator
from hrinv.inversion import InversionConfig, compute_w_stats, invert, psnr
from hrinv.losses import PerceptualLoss
from hrinv.losses.vgg import VGG16Conv


def _seeded_G(res=32, clamp=256, seed=0, num_fp16_res=0):
    g = torch.Generator().manual_seed(seed)
    G = Generator(64, 0, 64, res, 3, mapping_kwargs={"num_layers": 2},
                  synthesis_kwargs={"channel_base": 512, "channel_max": 64, "conv_clamp": clamp,
                                    "num_fp16_res": num_fp16_res})
    with torch.no_grad():  # NVIDIA's init (weights N(0, 1) / lr_multiplier, constant biases), from our seed
        for name, p in G.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * (100.0 if name.startswith("mapping.") else 1.0))
            elif "noise_strength" in name:
                p.fill_(0.05)
        for name, b in G.named_buffers():
            if "noise_const" in name:
                b.copy_(torch.randn(b.shape, generator=g))
        for name, p in G.named_parameters():
            if "torgb" in name:
                p.mul_(0.3)
    return G


def _seeded_vgg(seed=1):
    g = torch.Generator().manual_seed(seed)
    vgg = VGG16Conv()
    with torch.no_grad():
        for m in vgg.features.values():
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2 / fan_in))
            m.bias.zero_()
    return vgg


def _inputs(G, batch=2, seed=3):
    g = torch.Generator().manual_seed(seed)
    ws = torch.randn(batch, G.num_ws, G.w_dim, generator=g).requires_grad_(True)
    noise = {}
    for name in G.synthesis.noise_names:
        r = G.synthesis.noise_resolution(name)
        noise[name] = torch.randn(batch, 1, r, r, generator=g).requires_grad_(True)
    target = torch.randn(batch, 3, G.img_resolution, G.img_resolution, generator=g).clamp(-1, 1)
    return ws, noise, target


def _grads(G, ws, noise, target, fused=None, ctx=None):
    for t in [ws, *noise.values()]:
        t.grad = None
    import contextlib
    with ctx or contextlib.nullcontext():
        img = G.synthesis(ws, noise=noise, fused_modconv=fused)
        loss = (img.float() - target).square().sum()
    loss.backward()
    return img.detach().float(), float(loss), torch.cat([ws.grad.flatten()] + [t.grad.flatten() for t in
                                                                                noise.values()])


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# ----------------------------------------------------------------------------------------------------------------------
# The in-place tail and the unfused path


@pytest.mark.parametrize("act,clamp", [("lrelu", None), ("lrelu", 0.7), ("linear", 0.5), ("linear", None)])
def test_epilogue_matches_the_plain_op_chain_and_gradchecks(act, clamp):
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64)
    d = torch.rand(2, 3, generator=g, dtype=torch.float64).add_(0.5).requires_grad_(True)
    n = torch.randn(2, 1, 5, 5, generator=g, dtype=torch.float64).requires_grad_(True)
    b = torch.randn(3, generator=g, dtype=torch.float64).requires_grad_(True)
    yl = y.clone().requires_grad_(True)
    gain = 1.3

    def ours(yl, d, n, b):
        return ops.modconv_epilogue(yl * 1.0, d, n, b, act=act, gain=gain, clamp=clamp)  # * 1.0: a fresh tensor

    def plain(yl, d, n, b):
        return ops.bias_act(yl * d[:, :, None, None] + n, b, act=act, gain=gain, clamp=clamp)

    assert torch.allclose(ours(yl, d, n, b), plain(yl, d, n, b), atol=1e-12)
    if clamp is None:  # the clamp's kink makes finite differences meaningless exactly at the boundary
        assert torch.autograd.gradcheck(ours, (yl, d, n, b))
    out_o, out_p = ours(yl, d, n, b), plain(yl, d, n, b)
    w = torch.randn(out_o.shape, generator=g, dtype=torch.float64)
    go = torch.autograd.grad((out_o * w).sum(), (yl, d, n, b))
    gp = torch.autograd.grad((out_p * w).sum(), (yl, d, n, b))
    for a, e in zip(go, gp):
        assert torch.allclose(a, e, atol=1e-10), (a - e).abs().max()


@pytest.mark.parametrize("noise_shape", [(5, 5), (1, 1, 5, 5), (2, 1, 5, 5), None])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_epilogue_backward_for_every_noise_shape(noise_shape, dtype):
    """The fp32/fp64 backward (batched dot products, no activation-sized temporaries) against autograd of the plain
    op chain, for the noise shapes a layer passes: shared const map [r, r], [1, 1, r, r], per-sample [B, 1, r, r]."""
    g = torch.Generator().manual_seed(1)
    y = torch.randn(2, 3, 5, 5, generator=g, dtype=dtype) * 3
    d = torch.rand(2, 3, generator=g, dtype=dtype).add_(0.5).requires_grad_(True)
    n = None if noise_shape is None else torch.randn(noise_shape, generator=g, dtype=dtype).requires_grad_(True)
    b = torch.randn(3, generator=g, dtype=dtype).requires_grad_(True)
    yl = y.clone().requires_grad_(True)
    w = torch.randn(2, 3, 5, 5, generator=g, dtype=dtype)
    out_o = ops.modconv_epilogue(yl * 1.0, d, n, b, act="lrelu", gain=1.4, clamp=2.5)
    out_p = ops.bias_act(yl * d[:, :, None, None] + (0 if n is None else n), b, act="lrelu", gain=1.4, clamp=2.5)
    assert (out_p.abs() >= 2.5).any() and (out_p < 0).any()  # the clamp and the negative slope both bite
    inputs = [t for t in (yl, d, n, b) if t is not None]
    go = torch.autograd.grad((out_o * w).sum(), inputs)
    gp = torch.autograd.grad((out_p * w).sum(), inputs)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    for a, e in zip(go, gp):
        assert a.shape == e.shape
        assert torch.allclose(a, e, atol=tol, rtol=tol), (a - e).abs().max()


def test_unfused_modconv_gradchecks_through_modulation_and_polyphase(monkeypatch):
    """The whole unfused layer (custom modulation backward, polyphase up-sampling, in-place tail) passes a float64
    gradcheck with respect to the input, the weight, the styles, the noise and the bias."""
    monkeypatch.setattr(ops, "POLYPHASE_MIN_PIXELS", 0)
    g = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_(True)  # noqa: E731
    x, w, s, nz, b = r(2, 2, 3, 3), r(2, 2, 3, 3), r(2, 2), r(2, 1, 6, 6), r(2)
    f = ops.setup_filter([1, 3, 3, 1], dtype=torch.float64)

    def layer(x, w, s, nz, b):
        return ops.modulated_conv2d_unfused(x, w, s, noise=nz, bias=b, up=2, padding=1, resample_filter=f,
                                            flip_weight=False, act="lrelu", gain=1.4)

    assert torch.autograd.gradcheck(layer, (x, w, s, nz, b), fast_mode=True)


def test_epilogue_rejects_what_it_cannot_invert():
    y = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="slope"):
        ops.modconv_epilogue(y, act="lrelu", alpha=0.0)
    with pytest.raises(ValueError, match="act"):
        ops.modconv_epilogue(y, act="tanh")


@pytest.mark.parametrize("clamp", [256, 0.3])
def test_unfused_when_differentiating_equals_fused(clamp):
    G = _seeded_G(clamp=clamp)
    ws, noise, target = _inputs(G)
    img_f, loss_f, grad_f = _grads(G, ws, noise, target, fused=True)
    img_u, loss_u, grad_u = _grads(G, ws, noise, target, fused=None)  # automatic: unfused (grads needed)
    assert (img_f - img_u).abs().max() < 1e-4
    assert abs(loss_f - loss_u) / abs(loss_f) < 1e-5
    assert _rel(grad_u, grad_f) < 1e-4


def test_fine_tuning_gradients_equal_in_both_forms():
    G = _seeded_G().requires_grad_(True)
    ws, noise, target = _inputs(G)
    ws = ws.detach()
    res = []
    for fused in (True, False):
        G.zero_grad(set_to_none=True)
        ((G.synthesis(ws, noise=noise, fused_modconv=fused) - target).square().sum()).backward()
        res.append(torch.cat([p.grad.flatten() for p in G.synthesis.parameters() if p.grad is not None]))
    assert res[0].numel() == res[1].numel() and _rel(res[1], res[0]) < 1e-4


def test_no_grad_forward_still_uses_the_fused_form(monkeypatch):
    G = _seeded_G()
    calls = []
    real = ops.modulated_conv2d_unfused
    monkeypatch.setattr(ops, "modulated_conv2d_unfused", lambda *a, **k: calls.append(1) or real(*a, **k))
    ws = torch.randn(1, G.num_ws, G.w_dim)
    with torch.no_grad():
        G.synthesis(ws)
    assert not calls
    G.synthesis(ws.requires_grad_(True))
    assert calls


# ----------------------------------------------------------------------------------------------------------------------
# Reduced precision on the CPU (the numerics of the GPU path)


def test_bf16_autocast_generator_and_loss_close_to_fp32():
    G = _seeded_G(res=64)
    loss = PerceptualLoss(_seeded_vgg(), "conv", calibration="none")
    ws, noise, target = _inputs(G, batch=1)
    feats = loss.target(target)

    def run(dtype):
        for t in [ws, *noise.values()]:
            t.grad = None
        with perf.autocast(dtype, "cpu"):
            img = G.synthesis(ws, noise=noise)
            val = loss(img, feats).sum()
        val.backward()
        return img.detach().float(), float(val), torch.cat([ws.grad.flatten()] + [t.grad.flatten()
                                                                                  for t in noise.values()])

    img32, l32, g32 = run(torch.float32)
    img16, l16, g16 = run(torch.bfloat16)
    assert float(psnr(img16, img32)) > 35.0
    assert abs(l16 - l32) / l32 < 0.02
    cos = float(torch.nn.functional.cosine_similarity(g16, g32, dim=0))
    assert cos > 0.99, cos


def _plan_step(G, loss, ws, noise, feats, plan):
    """One step as the loops run it (hrinv.optim.precision_closure): synthesis under the plan's generator context,
    the loss under its loss context. Returns the image, the loss and the gradient of every variable."""
    from hrinv.optim import precision_closure

    for t in [ws, *noise.values()]:
        t.grad = None
    closure = precision_closure(plan, lambda v, ff32: G.synthesis(v["ws"], noise={k[6:]: t for k, t in v.items()
                                                                                 if k.startswith("noise.")},
                                                                   force_fp32=ff32),
                                lambda img, v: loss(img.float(), feats))
    val, img = closure({"ws": ws, **{"noise." + k: t for k, t in noise.items()}}, 0, 1)
    val.sum().backward()
    return img.detach().float(), float(val.detach().sum()), torch.cat([ws.grad.flatten()] + [t.grad.flatten()
                                                                                     for t in noise.values()])


def test_bf16_plan_path_close_to_fp32_and_fp32_plan_path_unchanged():
    """The loops' own path (precision plan: autocast + per-loop weight casts, channels_last bf16 convolutions on the
    CPU, bf16 backward kernels, bf16 tap distances): bf16 within the stated tolerances of fp32 (image PSNR > 35 dB,
    loss within 2 %, gradient cosine > 0.99), and the fp32 plan bitwise equal to running without any plan."""
    G = _seeded_G(res=64).requires_grad_(False)
    loss = PerceptualLoss(_seeded_vgg(), "conv", calibration="none").requires_grad_(False)
    ws, noise, target = _inputs(G, batch=2)
    feats = loss.target(target)
    for t in [ws, *noise.values()]:
        t.grad = None
    img = G.synthesis(ws, noise=noise)
    val = loss(img.float(), feats).sum()
    val.backward()
    img0, l0 = img.detach(), float(val.detach())
    g0 = torch.cat([ws.grad.flatten()] + [t.grad.flatten() for t in noise.values()])

    img32, l32, g32 = _plan_step(G, loss, ws, noise, feats, perf.precision_plan("fp32", "cpu", G))
    assert torch.equal(img32, img0) and l32 == l0 and torch.equal(g32, g0)  # fp32: bitwise unchanged

    plan = perf.precision_plan("bf16", "cpu", G)
    assert plan.weights.channels_last and plan.weights.dtype == torch.bfloat16
    img16, l16, g16 = _plan_step(G, loss, ws, noise, feats, plan)
    cached = [v[2] for v in plan.weights._cache.values() if v[2].ndim == 4]
    assert cached and all(t.dtype == torch.bfloat16 for t in cached)
    assert all(t.is_contiguous(memory_format=torch.channels_last) for t in cached)
    n_cached = len(plan.weights._cache)
    img16b, l16b, g16b = _plan_step(G, loss, ws, noise, feats, plan)  # second step: served from the cache
    assert len(plan.weights._cache) == n_cached and torch.equal(img16b, img16) and torch.equal(g16b, g16)
    assert float(psnr(img16, img0).min()) > 35.0
    assert abs(l16 - l0) / l0 < 0.02
    cos = float(torch.nn.functional.cosine_similarity(g16, g0, dim=0))
    assert cos > 0.99, cos
    print(f"bf16 plan path vs fp32: PSNR {float(psnr(img16, img0).min()):.1f} dB, loss rel {abs(l16 - l0) / l0:.2e}, "
          f"gradient cosine {cos:.5f}")


def test_compute_weights_casts_a_frozen_parameter_once():
    """Cached: a frozen nn.Parameter (cast + channels_last, and derived values), recomputed after an in-place change;
    never cached: a parameter that requires grad (stays differentiable) or a temporary. active() sets and resets."""
    cw = perf.ComputeWeights(torch.bfloat16, channels_last=True)
    p = torch.nn.Parameter(torch.randn(8, 4, 3, 3), requires_grad=False)
    a = cw.cast(p)
    assert a.dtype == torch.bfloat16 and a.is_contiguous(memory_format=torch.channels_last) and cw.cast(p) is a
    assert torch.equal(a.float(), p.to(torch.bfloat16).float())
    calls = []
    s1 = cw.derived(p, "sumsq", lambda w: calls.append(1) or w.square().sum())
    assert cw.derived(p, "sumsq", lambda w: calls.append(1) or w.square().sum()) is s1 and len(calls) == 1
    with torch.no_grad():
        p.mul_(2)  # version bump: the cached cast is stale
    b = cw.cast(p)
    assert b is not a and torch.equal(b.float(), p.to(torch.bfloat16).float())
    q = torch.nn.Parameter(torch.randn(8, 4, 3, 3))  # requires grad (fine-tuning)
    assert cw.cast(q).grad_fn is not None and cw.cast(q) is not cw.cast(q)
    t = torch.randn(8, 4, 3, 3)  # a temporary
    assert cw.cast(t) is not cw.cast(t) and len(cw._cache) == 2  # p's cast and p's sumsq only
    assert cw.cast(None) is None
    assert perf.active_weights() is None
    with cw.active():
        assert perf.active_weights() is cw
        assert perf.autocast_dtype("cpu") is None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert cw.serves(torch.randn(1)) and perf.autocast_dtype("cpu") == torch.bfloat16
        assert not cw.serves(torch.randn(1)) and cw.serves(torch.randn(1, dtype=torch.bfloat16))
    assert perf.active_weights() is None


@pytest.mark.parametrize("noise_shape", [(5, 5), (1, 1, 5, 5), (2, 1, 5, 5), None])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_epilogue_and_modulation_bf16_backward_close_to_exact(noise_shape, layout):
    """The bf16 backward kernels (fused clamp / leaky-ReLU gradients, in place, bf16 reductions accumulated in fp32,
    the noise term as a batched matrix-vector product) against float64 autograd of the plain op chain on the same
    bf16-rounded values: every gradient within 2 % (relative norm), for both layouts."""
    g = torch.Generator().manual_seed(1)
    bf = torch.bfloat16
    y = (torch.randn(2, 3, 5, 5, generator=g) * 3).to(bf).contiguous(memory_format=layout)
    d = torch.rand(2, 3, generator=g).add_(0.5).to(bf).requires_grad_(True)
    n = None if noise_shape is None else torch.randn(noise_shape, generator=g).to(bf).requires_grad_(True)
    b = torch.randn(3, generator=g).requires_grad_(True)
    w = torch.randn(2, 3, 5, 5, generator=g).to(bf)
    x = torch.randn(2, 3, 5, 5, generator=g).to(bf).contiguous(memory_format=layout).requires_grad_(True)
    s = torch.randn(2, 3, generator=g).to(bf).requires_grad_(True)
    xm = ops._Modulate.apply(x, s)
    out_o = ops.modconv_epilogue(xm * y, d, n, b, act="lrelu", gain=1.4, clamp=2.5)
    inputs = [t for t in (x, s, d, n, b) if t is not None]
    go = torch.autograd.grad((out_o.float() * w.float()).sum(), inputs)
    ex = [t.detach().double().requires_grad_(True) for t in inputs]
    xe, se, de = ex[0], ex[1], ex[2]
    ne = ex[3] if n is not None else None
    be = ex[-1]
    z = (xe * se[:, :, None, None] * y.double()) * de[:, :, None, None] + (0 if ne is None else ne)
    out_p = ops.bias_act(z, be, act="lrelu", gain=1.4, clamp=2.5)
    assert (out_p.abs() >= 2.5).any() and (out_p < 0).any()  # the clamp and the negative slope both bite
    gp = torch.autograd.grad((out_p * w.double()).sum(), ex)
    for a, e in zip(go, gp):
        assert a.shape == e.shape
        assert _rel(a.double(), e) < 0.02, (_rel(a.double(), e), a.shape)


def test_polyphase_in_channels_last_equals_the_transposed_convolution(monkeypatch):
    """NHWC activations (bf16 on the CPU) take the polyphase up-convolution from 32^2 inputs: same values and
    gradients as the transposed path (float32, channels_last), 1e-5."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 8, 32, 32, generator=g).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    w = torch.randn(6, 8, 3, 3, generator=g).requires_grad_(True)
    f = ops.setup_filter([1, 3, 3, 1])
    up = torch.randn(2, 6, 64, 64, generator=g)
    calls = []
    orig = ops._conv_transpose2x_polyphase
    monkeypatch.setattr(ops, "_conv_transpose2x_polyphase", lambda *a, **k: calls.append(1) or orig(*a, **k))

    def run():
        y = ops.conv2d_resample(x, w, f=f, up=2, padding=1, flip_weight=False)
        return (y,) + torch.autograd.grad((y * up).sum(), (x, w))

    poly = run()
    assert calls and poly[0].is_contiguous(memory_format=torch.channels_last)
    monkeypatch.setattr(ops, "POLYPHASE_MIN_PIXELS_NHWC", 10 ** 9)
    calls.clear()
    ref = run()
    assert not calls
    for a, e in zip(poly, ref):
        assert torch.allclose(a, e, atol=1e-5, rtol=1e-5), (a - e).abs().max()


def test_bf16_tap_distance_close_to_fp32_and_target_cast_once():
    """bf16 features: the per-sample distance (bf16 difference and square, fp32 sums) within 0.5 % of the fp32
    distance of the same values; the target's features are cast to bf16 (and the prediction's layout) once."""
    loss = PerceptualLoss(_seeded_vgg(), "conv", calibration="none")
    g = torch.Generator().manual_seed(6)
    a, b = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1, torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    feats = loss.target(b)
    plan = perf.precision_plan("bf16", "cpu")
    with plan.loss_context():
        d16 = loss(a, feats)
        cast = feats._cast
        assert len(cast) == 1
        d16b = loss(a, feats)
        assert feats._cast is cast and len(cast) == 1 and torch.equal(d16, d16b)
    assert d16.dtype == torch.float32 and d16.shape == (2,)
    with plan.loss_context():
        fa16 = loss.vgg(loss._network_input(a), sorted(loss.ops.values()))
    t16 = next(iter(cast.values()))
    exact = sum(((fa16[op].double() - t16[op].double()) * loss.scales[layer]).square().sum(dim=(1, 2, 3))
                for layer, op in loss.ops.items())
    assert torch.allclose(d16.double(), exact, rtol=5e-3), (d16, exact)
    d32 = loss(a, feats)
    assert float((d16 - d32).abs().max() / d32.abs().max()) < 0.02
    from hrinv.losses.perceptual import _SquaredDistanceBF16

    f = torch.randn(2, 4, 8, 8, generator=g).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    f.requires_grad_(True)
    t = torch.randn(2, 4, 8, 8, generator=g).to(torch.bfloat16)
    w = torch.rand(2, 4, generator=g)
    (_SquaredDistanceBF16.apply(f, t) * w).sum().backward()
    exact = 2 * (f.detach().double() - t.double()) * w.double()[:, :, None, None]
    assert _rel(f.grad.double(), exact) < 1e-2


def test_precision_setting_is_validated_and_resolved():
    with pytest.raises(InvalidSettingError, match="precision"):
        perf.resolve_precision("half", "cpu")
    with pytest.raises(Exception, match="precision"):
        InversionConfig(precision="int8")
    assert perf.resolve_precision("fp32", "cpu") == torch.float32
    assert perf.resolve_precision("auto", "cpu") == torch.float32  # the CPU default stays exact
    assert perf.resolve_precision("BF16", "cpu") == torch.bfloat16
    assert InversionConfig(precision="BF16").precision == "bf16"
    plan = perf.precision_plan("fp16", "cpu", _seeded_G(num_fp16_res=2))
    assert plan.name == "fp16" and plan.force_fp32 is False and plan.guard.enabled  # NVIDIA per-block fp16
    assert perf.precision_plan("fp16", "cpu", _seeded_G()).force_fp32 is True  # no fp16 blocks: autocast instead


def test_grad_scale_guard_is_exact_and_catches_overflow():
    guard = perf.GradScaleGuard(True, init_scale=1024.0, growth_interval=2)
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    y = guard.exit((guard.enter(x) * 3.0).sum())
    y.backward()
    assert torch.equal(x.grad, torch.tensor([3.0, 3.0])) and guard.update() and guard.scale == 1024.0
    x.grad = None
    y = guard.exit((guard.enter(x) * 3.0).sum())
    y.backward()
    assert guard.update() and guard.scale == 2048.0  # grew after 2 good steps
    x.grad = None
    y = guard.exit((guard.enter(x) * torch.tensor([float("inf"), 1.0])).sum())
    y.backward()
    assert torch.equal(x.grad, torch.zeros(2))  # never inf/nan into the optimiser
    assert not guard.update() and guard.scale == 1024.0 and guard.skipped == 1


@pytest.mark.parametrize("precision", ["bf16", pytest.param("fp16", marks=pytest.mark.slow)])  # CPU fp16: slow
def test_inversion_in_reduced_precision_within_0p3_db_of_fp32(precision):
    G = _seeded_G(res=64, num_fp16_res=2)
    stats = compute_w_stats(G, 500)
    loss = PerceptualLoss(_seeded_vgg(), "conv", calibration="none")
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        ws = stats[0] + 0.7 * (G.mapping(torch.randn(G.num_ws, G.z_dim, generator=g))[:, 0] - stats[0])
        target = G.synthesis(ws[None]).clamp(-1, 1)
    out = {}
    for p in ("fp32", precision):
        cfg = InversionConfig(steps=20, seed=0, precision=p, initial_noise_factor=0.0, w_avg_samples=500)
        out[p] = invert(G, target, loss, cfg, w_stats=stats).latent.metrics["psnr"][0]
    start = float(psnr(G.synthesis(stats[0].expand(1, G.num_ws, -1)), target))
    print(f"{precision}: PSNR fp32 {out['fp32']:.2f} dB, {precision} {out[precision]:.2f} dB (start {start:.2f})")
    assert out["fp32"] > start + 3  # the run did something
    assert abs(out[precision] - out["fp32"]) < 0.3


# ----------------------------------------------------------------------------------------------------------------------
# Memory modes


def test_memory_plan_picks_modes_from_free_memory():
    gib = 2 ** 30
    big = perf.plan_memory(1024, 1024, 1, free_bytes=64 * gib)
    assert not big.checkpoint and big.tile is None  # plenty: fastest mode
    mid = perf.plan_memory(1024, 1024, 1, free_bytes=5.5 * gib)
    small = perf.plan_memory(1024, 1024, 1, free_bytes=4 * gib)
    assert mid.checkpoint and mid.tile is None and small.tile == 256
    assert small.estimate <= small.budget
    ten_mp = perf.plan_memory(2736, 3648, 1, free_bytes=24 * gib)  # 10 MP, non-square
    print("1024^2 @64/5/4 GiB:", big, mid, small, "\n10 MP @ 24 GiB:", ten_mp)
    assert ten_mp.estimate <= ten_mp.budget and (ten_mp.tile or ten_mp.checkpoint)
    assert perf.plan_memory(1024, 1024, free_bytes=64 * gib, mode="tile").tile == 512  # override
    with pytest.raises(InvalidSettingError):
        perf.plan_memory(64, 64, mode="fast")


def test_memory_plan_for_an_inr_target_tiles_the_render_and_counts_the_head():
    """A 10 MP non-square target through the INR head of a 64 px generator: with 24 GiB the head renders in
    checkpointed 512 px tiles (its untiled activations, about 1.7 KB per pixel, would not fit next to the loss) and
    the VGG loss is checkpointed or tiled; a 1024^2 target at native size with the same budget needs neither."""
    gib = 2 ** 30
    ten = perf.plan_memory(2736, 3648, 1, free_bytes=24 * gib, inr=True, native=64)
    assert ten.render_tile == 512 and (ten.checkpoint or ten.tile) and ten.estimate <= ten.budget
    untiled_head = perf._INR_BYTES_PER_PX * 2736 * 3648
    assert ten.estimate + untiled_head > ten.budget  # the untiled head would not fit next to this plan's loss
    small = perf.plan_memory(912, 1216, 1, free_bytes=24 * gib, inr=True, native=64)
    assert small.render_tile is None and not small.checkpoint and small.tile is None
    assert small.estimate > perf._INR_BYTES_PER_PX * 912 * 1216  # the untiled head is counted
    native = perf.plan_memory(1024, 1024, 1, free_bytes=24 * gib)
    assert native.render_tile is None and not native.checkpoint and native.tile is None
    tight = perf.plan_memory(2736, 3648, 1, free_bytes=9 * gib, inr=True, native=64)
    assert tight.render_tile == 512 and tight.tile in (256, 512) and tight.estimate <= tight.budget
    # measured: 7.67 GiB working memory at 10 MP with 512 px tiles, so 8 GiB free (6.4 usable) is honestly too little
    short = perf.plan_memory(2736, 3648, 1, free_bytes=8 * gib, inr=True, native=64)
    assert short.tile == 256 and short.estimate > short.budget and short.reason.startswith("does not fit")
    assert tight.estimate > perf._VGG_TARGET_BYTES_PER_PX * 2736 * 3648  # tiles keep the full-size target features


def test_invert_takes_the_render_tile_from_the_plan(monkeypatch):
    import hrinv.inversion as inv

    monkeypatch.setattr(perf, "free_memory_bytes", lambda device=None: 24 * 2 ** 30)
    loss, render_tile = inv._with_memory_plan(_seeded_vgg(), InversionConfig(), "cpu", (2736, 3648), 1, inr=True,
                                              native=64)
    assert render_tile == 512 and (loss.checkpoint or loss.tile)
    loss, render_tile = inv._with_memory_plan(_seeded_vgg(), InversionConfig(), "cpu", (2736, 3648), 1, inr=False)
    assert render_tile is None  # rendered at native size (padded): nothing to tile


def test_invert_applies_the_memory_plan_to_a_loss_it_builds(monkeypatch):
    import hrinv.inversion as inv

    seen = {}
    real = PerceptualLoss.__init__

    def spy(self, *a, **k):
        seen.update(k)
        real(self, *a, **k)

    monkeypatch.setattr(PerceptualLoss, "__init__", spy)
    G = _seeded_G(res=64)
    target = torch.zeros(1, 3, 64, 64)
    inv.invert(G, target, _seeded_vgg(), InversionConfig(steps=1, seed=0, memory="tile", w_avg_samples=100))
    assert seen.get("tile") == 512 and seen.get("checkpoint") is False
    with pytest.raises(ValueError, match="memory"):
        InversionConfig(memory="lots")
