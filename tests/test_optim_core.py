"""The generic optimisation core (hrinv.optim): schedules, determinism, batching, cancellation, inference mode."""

import math

import pytest
import torch

from hrinv.optim import EarlyStopping, lr_at, noise_sigma_at, optimize, sample_seeds


class TinyGen(torch.nn.Module):
    """A small differentiable 'generator': code [B, 4, 8] -> image [B, 3, 8, 8]."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc = torch.nn.Linear(32, 3 * 8 * 8)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=g) / 6)
            self.fc.bias.copy_(torch.randn(self.fc.bias.shape, generator=g) / 10)
        self.requires_grad_(False)

    def forward(self, code):
        return torch.tanh(self.fc(code.flatten(1))).view(-1, 3, 8, 8)


def _problem(batch=2, seed=1):
    G = TinyGen()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        target = G(torch.randn(batch, 4, 8, generator=g) * 0.7)

    def closure(v, step, steps):
        img = G(v["code"])
        return (img - target).square().flatten(1).mean(1), img

    return G, target, closure


def test_lr_schedule_matches_reference_formula():
    assert lr_at(0.0, 0.1) == 0.0  # the reference wastes step 0 (Adam moment init only)
    assert lr_at(0.025, 0.1) == pytest.approx(0.05)  # half-way through the 5 % ramp-up
    assert lr_at(0.5, 0.1) == pytest.approx(0.1)
    t = 0.9  # inside the 25 % cosine ramp-down
    assert lr_at(t, 0.1) == pytest.approx(0.1 * (0.5 - 0.5 * math.cos(math.pi * (1 - t) / 0.25)))
    assert lr_at(0.999, 0.1) < 1e-4
    assert lr_at(0.0, 0.1, rampup=0) == pytest.approx(0.1 * (0.5 - 0.5 * math.cos(math.pi)))


def test_latent_noise_schedule():
    assert noise_sigma_at(0.0, 2.0) == pytest.approx(2.0 * 0.05)
    assert noise_sigma_at(0.375, 2.0) == pytest.approx(2.0 * 0.05 * 0.25)
    assert noise_sigma_at(0.75, 2.0) == 0.0 and noise_sigma_at(0.9, 2.0) == 0.0
    assert noise_sigma_at(0.1, 2.0, ramp=0) == 0.0


def test_optimize_reduces_loss_and_leaves_inputs_alone():
    G, _, closure = _problem()
    init = torch.zeros(2, 4, 8)
    before = [p.clone() for p in G.parameters()]
    res = optimize({"code": init}, closure, steps=60, lr=0.1, perturb={"code": 1.0}, seeds=[0, 1])
    h = torch.tensor(res.history)  # [steps, B]
    assert h.shape == (60, 2) and res.steps_run == 60
    assert (h[-1] < 0.2 * h[0]).all()
    assert torch.equal(init, torch.zeros(2, 4, 8))  # input untouched
    assert all(torch.equal(a, b) and b.grad is None for a, b in zip(before, G.parameters()))
    assert not res.variables["code"].requires_grad and res.variables["code"].grad is None


def test_deterministic_with_seeds_and_different_otherwise():
    _, _, closure = _problem()
    run = lambda seeds: optimize({"code": torch.zeros(2, 4, 8)}, closure, steps=15, perturb={"code": 1.0},
                                 seeds=seeds).variables["code"]
    a, b, c = run([3, 4]), run([3, 4]), run([5, 6])
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_batch_equals_independent_runs():
    _, target, _ = _problem(batch=3)
    G = TinyGen()

    def make_closure(tgt):
        return lambda v, s, n: ((G(v["code"]) - tgt).square().flatten(1).mean(1), None)

    batch = optimize({"code": torch.zeros(3, 4, 8)}, make_closure(target), steps=20, perturb={"code": 0.5},
                     seeds=[10, 11, 12]).variables["code"]
    for i in range(3):
        single = optimize({"code": torch.zeros(1, 4, 8)}, make_closure(target[i:i + 1]), steps=20,
                          perturb={"code": 0.5}, seeds=[10 + i]).variables["code"]
        torch.testing.assert_close(batch[i:i + 1], single, rtol=1e-5, atol=1e-6)


def test_sample_seeds():
    assert sample_seeds(3, seed=7) == [7, 8, 9]
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert sample_seeds(2, generator=g1) == sample_seeds(2, generator=g2)


def test_callback_previews_and_cancellation():
    _, _, closure = _problem()
    calls = []

    def cb(step, total, preview):
        calls.append((step, total, None if preview is None else tuple(preview.shape)))

    optimize({"code": torch.zeros(2, 4, 8)}, closure, steps=7, callback=cb, preview_every=3)
    assert [c[0] for c in calls] == list(range(1, 8)) and all(c[1] == 7 for c in calls)
    assert [c[2] is not None for c in calls] == [False, False, True, False, False, True, True]

    class Cancel(Exception):
        pass

    def cancel(step, total, preview):
        if step == 3:
            raise Cancel()

    init = torch.zeros(2, 4, 8)
    with pytest.raises(Cancel):
        optimize({"code": init}, closure, steps=50, callback=cancel)
    assert torch.equal(init, torch.zeros(2, 4, 8)) and init.grad is None and not init.requires_grad


def test_runs_inside_inference_mode_with_inference_inputs():
    with torch.inference_mode():
        G = TinyGen()  # parameters are inference tensors, as a model loaded inside a ComfyUI node
        target = G(torch.full((1, 4, 8), 0.3))
        init = torch.zeros(1, 4, 8)
        assert init.is_inference() and target.is_inference()

        def closure(v, step, steps):
            img = G(v["code"])
            return (img - target).square().flatten(1).mean(1), img

        # The core clones its variables; the closure's own inference tensors (G's weights, target) are the
        # caller's business -- here they are only read, which autograd allows when not saved for backward.
        # Linear saves its weight for backward, so this must fail unless the caller thaws G ...
        with pytest.raises(RuntimeError, match="[Ii]nference"):
            optimize({"code": init}, closure, steps=2)
        # ... while a thawed copy works even though we are still inside inference_mode.
        with torch.inference_mode(False):
            G2 = TinyGen()
        res = optimize({"code": init}, lambda v, s, n: ((G2(v["code"]) - target.clone()).square().mean((1, 2, 3)),
                                                         None), steps=20)
        assert torch.is_grad_enabled() is False and torch.is_inference_mode_enabled()
    assert res.history[-1][0] < res.history[0][0]
    assert not res.variables["code"].is_inference()


def test_grad_mask_freezes_entries():
    _, _, closure = _problem(batch=1)
    mask = torch.zeros(1, 4, 8)
    mask[:, :2] = 1
    res = optimize({"code": torch.zeros(1, 4, 8)}, closure, steps=10, grad_mask={"code": mask})
    assert torch.equal(res.variables["code"][:, 2:], torch.zeros(1, 2, 8))
    assert res.variables["code"][:, :2].abs().sum() > 0


def test_early_stopping():
    es = EarlyStopping(patience=3, min_rel_improvement=0.01, start=0.0)
    flat = [[1.0, 2.0]] * 10
    assert es.should_stop(flat, 0.9)
    improving = [[1.0 - 0.1 * i, 2.0] for i in range(10)]
    assert not es.should_stop(improving, 0.9)  # sample 0 still improves
    assert not EarlyStopping(patience=3, start=0.95).should_stop(flat, 0.9)  # not yet checked
    _, _, closure = _problem(batch=1)
    res = optimize({"code": torch.zeros(1, 4, 8)}, closure, steps=400, lr=0.1,
                   early_stopping=EarlyStopping(patience=20, min_rel_improvement=0.05, start=0.1))
    assert res.stopped_early and res.steps_run < 400
    with pytest.raises(ValueError):
        EarlyStopping(patience=-1)


def test_argument_errors():
    _, _, closure = _problem()
    with pytest.raises(ValueError, match="steps"):
        optimize({"code": torch.zeros(2, 4, 8)}, closure, steps=0)
    with pytest.raises(KeyError, match="perturb"):
        optimize({"code": torch.zeros(2, 4, 8)}, closure, steps=1, perturb={"nope": 1.0}, seeds=[0, 1])
    with pytest.raises(ValueError, match="seeds"):
        optimize({"code": torch.zeros(2, 4, 8)}, closure, steps=1, perturb={"code": 1.0})
    with pytest.raises(ValueError, match=r"\[B\]"):
        optimize({"code": torch.zeros(2, 4, 8)}, lambda v, s, n: (v["code"].sum(), None), steps=1)


def test_adam_schedule_mask_and_penalty():
    """optimize() = Adam with the reference lr schedule; masked entries stay exactly put; the penalty is computed on
    the variables without ε."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 5, 7, generator=g)
    weights = torch.arange(7.0)

    def closure(v, step, steps):
        return ((v["x"] - 1.5).square() * weights).sum((1, 2)), None

    res = optimize({"x": x0}, closure, steps=20, lr=0.1)
    ref = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=0.1)
    for step in range(20):
        for group in opt.param_groups:
            group["lr"] = lr_at(step / 20, 0.1)
        opt.zero_grad()
        closure({"x": ref}, step, 20)[0].sum().backward()
        opt.step()
    torch.testing.assert_close(res.variables["x"], ref.detach(), rtol=1e-6, atol=1e-7)

    mask = torch.ones(1, 5, 1)
    mask[:, 3:] = 0
    seen = []

    def penalty(v):
        seen.append(v["x"].detach().clone())
        return 0.1 * v["x"].square().sum((1, 2))

    res = optimize({"x": x0}, closure, steps=20, lr=0.1, grad_mask={"x": mask}, penalty=penalty,
                   perturb={"x": 1.0}, seeds=[0, 1], noise_factor=0.5)
    assert torch.equal(seen[0], x0)  # the clean variable, not x + ε
    assert torch.equal(res.variables["x"][:, 3:], x0[:, 3:])  # masked rows: exactly put
    assert not torch.equal(res.variables["x"][:, :3], x0[:, :3]) and len(seen) == 20
