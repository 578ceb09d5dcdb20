"""The activation buffer pool (hrinv.bufferpool): the loops reuse large CPU buffers across steps without changing a bit
of any value or gradient, never hand out a buffer that something still uses, hold nothing after the loop, and keep
to their own thread. Seeded random networks only (no ../shared needed)."""

import threading

import pytest
import torch

from hrinv import bufferpool, optim
from hrinv.bufferpool import BufferPool, current_pool
from hrinv.generator import ops
from hrinv.generator.stylegan2 import Generator
from hrinv.inversion import InversionConfig, invert

needs_use_count = pytest.mark.skipif(bufferpool._USE_COUNT is None, reason="torch without _storage_Use_Count")


def _seeded_G(res=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    G = Generator(64, 0, 64, res, 3, mapping_kwargs={"num_layers": 2},
                  synthesis_kwargs={"channel_base": 512, "channel_max": 64, "conv_clamp": 256})
    with torch.no_grad():
        for name, p in G.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * (100.0 if name.startswith("mapping.") else 1.0))
            elif "noise_strength" in name:
                p.fill_(0.05)
            if "torgb" in name:
                p.mul_(0.3)
    return G.eval().requires_grad_(False)


def _variables(G, batch=2, seed=3):
    g = torch.Generator().manual_seed(seed)
    ws = torch.randn(batch, G.num_ws, G.w_dim, generator=g).mul_(0.5).requires_grad_(True)
    noise = {n: torch.randn(batch, 1, G.synthesis.noise_resolution(n), G.synthesis.noise_resolution(n),
                            generator=g).requires_grad_(True) for n in G.synthesis.noise_names}
    target = torch.randn(batch, 3, G.img_resolution, G.img_resolution, generator=g).clamp(-1, 1)
    return ws, noise, target


def _run_steps(G, pool, steps=3, finetune=False):
    """``steps`` Adam steps of a W+ (+ noise) inversion (or of fine-tuning G's weights): every image, loss and
    gradient of every step."""
    ws, noise, target = _variables(G)
    params = list(G.synthesis.parameters()) if finetune else [ws, *noise.values()]
    if finetune:
        ws = ws.detach()
    opt = torch.optim.Adam(params, lr=0.05)
    out = []
    for _ in range(steps):
        with pool.use() if pool is not None else torch.enable_grad():
            opt.zero_grad(set_to_none=True)
            img = G.synthesis(ws, noise=noise)  # unfused modconv: gradients flow
            loss = (img - target).square().sum()
            loss.backward()
            opt.step()
        out.append([img.detach().clone(), loss.detach().clone()] + [p.grad.clone() for p in params])
    return out


@needs_use_count
@pytest.mark.parametrize("finetune", [False, True])
def test_pooled_steps_are_bitwise_equal_to_unpooled(finetune):
    G1, G2 = _seeded_G().requires_grad_(finetune), _seeded_G().requires_grad_(finetune)
    pool = BufferPool(min_bytes=0)  # pool every size (the test network's activations are small)
    plain, pooled = _run_steps(G1, None, finetune=finetune), _run_steps(G2, pool, finetune=finetune)
    assert pool.hits > 0 and pool.misses > 0  # buffers were reused from the second step on
    for a, b in zip(plain, pooled):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


@needs_use_count
def test_a_buffer_still_referenced_is_never_handed_out():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 16, 16, generator=g, requires_grad=True)
    s = torch.randn(2, 8, generator=g, requires_grad=True)
    with BufferPool(min_bytes=0) as pool:
        held = ops._Modulate.apply(x, s)  # a user holds an output
        view = ops._Modulate.apply(x, s)[0]  # ... or only a view of one
        # this output is free again once its graph is gone; the pooled gradient x * s of its backward is kept by
        # autograd as x.grad (AccumulateGrad steals a gradient nobody else holds): never handed out again either
        (ops._Modulate.apply(x, s) * 2).sum().backward()
        assert pool.hits + pool.misses == 4 and len(pool._free[x.numel() * 4]) == 3
        before = held.detach().clone(), view.detach().clone(), x.grad.clone()
        ptrs = {t.untyped_storage().data_ptr() for t in (held, view, x.grad)}
        fresh = [ops._Modulate.apply(x * 3, s) for _ in range(3)]
        assert not ptrs & {t.untyped_storage().data_ptr() for t in fresh}
        assert torch.equal(held, before[0]) and torch.equal(view, before[1]) and torch.equal(x.grad, before[2])
        hits, fresh_ptrs = pool.hits, {t.untyped_storage().data_ptr() for t in fresh}
        del fresh
        again = ops._Modulate.apply(x, s)  # the fresh ones are free now: reused
        assert pool.hits == hits + 1 and again.untyped_storage().data_ptr() in fresh_ptrs


@needs_use_count
def test_a_retained_graph_keeps_its_saved_buffers():
    """The graph of an earlier step kept alive (``retain_graph=True``): the next steps must not write into the
    buffers it saved, so a second backward through it gives the same gradients as the first."""
    G = _seeded_G().requires_grad_(True)  # weight gradients: the convolutions save their input x * s
    ws, noise, target = _variables(G)
    wanted = [ws, *G.synthesis.parameters()]
    with BufferPool(min_bytes=0) as pool:
        loss0 = (G.synthesis(ws, noise=noise) - target).square().sum()
        g0 = torch.autograd.grad(loss0, wanted, retain_graph=True)
        for k in range(3):  # later steps, with other inputs, while loss0's graph (and its saved x * s) lives
            loss = (G.synthesis(ws * (1.1 + k), noise=noise) - target).square().sum()
            loss.backward()
        assert pool.hits > 0
        g1 = torch.autograd.grad(loss0, wanted)
    assert all(torch.equal(a, b) for a, b in zip(g0, g1))


@needs_use_count
@pytest.mark.parametrize("fail", [False, True])
def test_the_loop_holds_nothing_after_it_ends(monkeypatch, fail):
    pools = []

    class Spy(BufferPool):
        def __init__(self):
            super().__init__(min_bytes=0)
            pools.append(self)

    def callback(step, total, preview):
        assert current_pool() is pools[-1]
        if fail and step == 2:
            raise KeyboardInterrupt("cancelled")

    monkeypatch.setattr(optim, "BufferPool", Spy)
    G = _seeded_G()
    target = _variables(G)[2]
    cfg = InversionConfig(steps=3, w_avg_samples=64, seed=0)
    if fail:
        with pytest.raises(KeyboardInterrupt):
            invert(G, target, loss=lambda pred, tgt: (pred - tgt).square().flatten(1).mean(1), config=cfg,
                   callback=callback)
    else:
        invert(G, target, loss=lambda pred, tgt: (pred - tgt).square().flatten(1).mean(1), config=cfg,
               callback=callback)
    assert len(pools) == 1 and pools[0].hits > 0
    assert pools[0].held_bytes == 0 and current_pool() is None


@needs_use_count
def test_invert_is_bitwise_the_same_with_and_without_the_pool(monkeypatch):
    G = _seeded_G()
    target = _variables(G)[2]
    cfg = InversionConfig(steps=3, w_avg_samples=64, seed=0)
    mse = lambda pred, tgt: (pred - tgt).square().flatten(1).mean(1)  # noqa: E731
    monkeypatch.setattr(optim, "BufferPool", lambda: BufferPool(min_bytes=0))
    a = invert(G, target, loss=mse, config=cfg)
    monkeypatch.setattr(optim, "BufferPool", lambda: BufferPool(min_bytes=1 << 62))  # never pools
    b = invert(G, target, loss=mse, config=cfg)
    assert torch.equal(a.latent.ws, b.latent.ws) and torch.equal(a.image, b.image)
    assert all(torch.equal(a.latent.noise[k], b.latent.noise[k]) for k in a.latent.noise)
    assert torch.equal(a.history, b.history)


def test_only_cpu_contiguous_large_buffers_are_pooled(monkeypatch):
    pool = BufferPool(min_bytes=4096)
    assert not pool.wants(torch.device("meta"), 1 << 30)
    assert not pool.wants(torch.device("cpu"), 4095)
    assert pool.wants(torch.device("cpu"), 4096) == (bufferpool._USE_COUNT is not None)
    x = torch.randn(2, 8, 16, 16).to(memory_format=torch.channels_last)
    s = torch.randn(2, 8)
    with pool:
        y = ops._Modulate.apply(x, s)  # channels_last input: not pooled, its layout kept
        assert y.is_contiguous(memory_format=torch.channels_last) and pool.misses == 0
        assert torch.equal(y, x * s[:, :, None, None])
        m = ops._Modulate.apply(torch.randn(2, 8, 16, 16, device="meta"), torch.randn(2, 8, device="meta"))
        assert m.device.type == "meta" and pool.misses == 0
    monkeypatch.setattr(bufferpool, "_USE_COUNT", None)  # a torch that cannot count references: never pools
    with pool:
        assert torch.equal(ops._Modulate.apply(x.contiguous(), s), x * s[:, :, None, None]) and pool.misses == 0


@needs_use_count
def test_pools_are_per_thread_and_a_shared_pool_never_hands_out_a_buffer_twice():
    seen, errors = {}, []
    shared = BufferPool(min_bytes=0)
    start = threading.Barrier(4, timeout=60)

    def worker(i):
        try:
            seen[i] = current_pool()  # a new thread starts without the caller's pool
            with shared.use():
                start.wait()
                held = [shared.empty((64, 64), torch.float32, "cpu").fill_(i) for _ in range(50)]
                start.wait()
                assert all(bool((t == i).all()) for t in held)  # nobody else wrote into this thread's buffers
                seen[i, "ptrs"] = {t.untyped_storage().data_ptr() for t in held}
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    with BufferPool():
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    assert all(seen[i] is None for i in range(4))
    ptrs = [seen[i, "ptrs"] for i in range(4)]
    assert sum(map(len, ptrs)) == len(set().union(*ptrs)) == 200  # 200 distinct storages while all were held
