"""Training under torchrun: `hrinv fit-inr` with 2 CPU processes (gloo) trains one head with DDP (every rank ends
with the same weights; rank 0 writes the file); without torchrun nothing changes (same seed -> same head)."""

import sys
from pathlib import Path

import torch

from hrinv.cli import main
from hrinv.io.checkpoints import load_generator, save_generator
from proc_tools import child_env, run_group

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--steps", "3", "--batch", "2", "--points", "256", "--device", "cpu", "--seed", "3"]


def test_fit_inr_under_torchrun_uses_ddp(tmp_path):
    from nodes_harness import tiny_generators

    G, _ = tiny_generators()
    src = tmp_path / "g.safetensors"
    save_generator(G, src)
    dst2 = tmp_path / "ddp.safetensors"
    r = run_group([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
              "-m", "hrinv", "fit-inr", str(src), str(dst2), *ARGS], child_env())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 ranks trained the same head" in r.stdout
    G2 = load_generator(dst2)
    assert G2.inr.fit_info["ranks"] == 2 and G2.inr.fit_info["steps"] == 3

    # One process: no process group, the plain code path; the same seed gives the same head twice, and a head
    # different from the 2-rank one (which saw twice the samples).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dst1 = tmp_path / "one.safetensors"
        assert main(["fit-inr", str(src), str(dst1), *ARGS]) == 0
        assert main(["fit-inr", str(src), str(tmp_path / "again.safetensors"), *ARGS]) == 0
    finally:
        torch.set_num_threads(n)
    G1, G1b = load_generator(dst1), load_generator(tmp_path / "again.safetensors")
    assert "ranks" not in G1.inr.fit_info
    for (k, a), b, c in zip(G1.inr.state_dict().items(), G1b.inr.state_dict().values(), G2.inr.state_dict().values()):
        assert torch.equal(a, b), k
    assert any(not torch.equal(a, c) for a, c in zip(G1.inr.parameters(), G2.inr.parameters()))


# ----------------------------------------------------------------------------------------------------------------
# hrinv finetune under torchrun


def _finetune_inputs(tmp_path):
    from PIL import Image
    from safetensors.torch import save_file

    from nodes_harness import random_vgg, tiny_generators

    G, _ = tiny_generators()
    save_generator(G, tmp_path / "gs.safetensors")
    save_file({f"features.{k}": v.contiguous() for k, v in random_vgg().features.state_dict().items()},
              str(tmp_path / "vgg.safetensors"))
    rng = torch.Generator().manual_seed(4)
    styles = []
    for name in ("a", "b", "c"):
        arr = (torch.rand(70, 64, 3, generator=rng) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(tmp_path / f"{name}.png")
        styles.append(str(tmp_path / f"{name}.png"))
    return ["finetune", "--generator", str(tmp_path / "gs.safetensors"), "--style", *styles, "--vgg",
            str(tmp_path / "vgg.safetensors"), "--steps", "4", "--invert-steps", "2", "--seed", "11", "--device", "cpu"]


def test_finetune_under_torchrun_equals_one_process_with_the_union_batch(tmp_path):
    """2 ranks x --batch-size 2 (DDP, averaged gradients) = 1 process x --batch-size 4: each step both draw the same
    global batch of 4 codes from the seed; rank r trains on codes 2r, 2r+1; the mean of the two ranks' mean
    gradients is the mean gradient of the 4.

    Equal to float rounding, not bit for bit: the reduction order differs, the convolutions pick batch-size
    dependent kernels, and Adam with beta1 = 0 divides each gradient by its own magnitude (the first update is
    lr * sign(g)), which amplifies rounding in near-zero gradient entries. Measured here: max |G_t(2 ranks) -
    G_t(1 process)| 1.9e-4, mean 8e-6 to 2.4e-5 (the larger with the generator's hand-written backward, whose
    float64 gradients equal the batch-split ones to 1e-15), against a mean move of 3.6e-3 from G_s; the same
    single-process run with 2 CPU threads instead of 1 differs from itself by more (max 1.3e-3). Another global
    batch (2 codes) lands at mean 2.0e-4. The test asks for a mean difference under 1 % of the mean move, and checks
    that the other batch is at least 5x farther away."""
    args = _finetune_inputs(tmp_path)
    ddp = tmp_path / "ddp" / "gt.safetensors"
    r = run_group([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
              "-m", "hrinv", *args, "--batch-size", "2", "--out", str(ddp)], child_env())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 ranks trained the same G_t" in r.stdout and "global batch 2 x 2" in r.stdout
    assert r.stdout.count("G_t ->") == 1  # rank 0 alone reports and writes
    assert sorted(p.name for p in ddp.parent.iterdir()) == ["gt.json", "gt.png", "gt.safetensors"]

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = tmp_path / "one" / "gt.safetensors"
        assert main([*args, "--batch-size", "4", "--out", str(one), "-q"]) == 0
        other = tmp_path / "other" / "gt.safetensors"
        assert main([*args, "--batch-size", "2", "--out", str(other), "-q"]) == 0
    finally:
        torch.set_num_threads(n)
    G_s = load_generator(tmp_path / "gs.safetensors")
    G2, G1, Gb = load_generator(ddp), load_generator(one), load_generator(other)
    assert G2.meta["finetune"]["ranks"] == 2 and "ranks" not in G1.meta["finetune"]
    flat = lambda G: torch.cat([p.detach().flatten() for p in G.synthesis.parameters()])  # noqa: E731
    s0, w2, w1, wb = flat(G_s), flat(G2), flat(G1), flat(Gb)
    moved = float((w1 - s0).abs().mean())
    diff = float((w2 - w1).abs().mean())
    assert moved > 1e-3  # training changed the weights (4 Adam steps of lr 2e-3)
    assert diff < 0.01 * moved, (diff, moved)
    assert float((wb - w1).abs().mean()) > 5 * diff  # another global batch is far away: the comparison can fail
    assert abs(G2.meta["finetune"]["loss_last"] - G1.meta["finetune"]["loss_last"]) < 1e-5


# ----------------------------------------------------------------------------------------------------------------
# tools/train_face64.py (the bundled 64 px model's training script) under torchrun


def test_train_face64_under_torchrun(tmp_path):
    """2 gloo ranks train one student with DDP: every rank ends with the same weights (checked by the script), rank 0
    alone writes the checkpoint and its metrics; a random-weight teacher and VGG stand in for the real ones."""
    import importlib.util
    import json

    from safetensors.torch import save_file

    from nodes_harness import random_vgg

    spec = importlib.util.spec_from_file_location("train_face64", REPO / "tools" / "train_face64.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    gen = torch.Generator().manual_seed(0)
    teacher = tool.DCGANGenerator()
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    torch.save({"netG_state_dict": teacher.state_dict()}, tmp_path / "teacher.tar")
    save_file({f"features.{k}": v.contiguous() for k, v in random_vgg().features.state_dict().items()},
              str(tmp_path / "vgg.safetensors"))
    out = tmp_path / "run"
    r = run_group([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
              str(REPO / "tools" / "train_face64.py"), "--out", str(out), "--teacher", str(tmp_path / "teacher.tar"),
              "--vgg", str(tmp_path / "vgg.safetensors"), "--steps", "3", "--batch", "2", "--percep-batch", "1",
              "--heldout", "8", "--log-every", "1", "--ckpt-every", "2"], child_env())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 ranks (DDP, gloo): global batch 2 x 2" in r.stdout
    assert "2 ranks hold the same student" in r.stdout
    assert r.stdout.count("checkpoint step 3") == 1 and r.stdout.count("checkpoint step 2") == 1  # rank 0 only
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ranks"] == 2 and metrics["step"] == 3 and "x 2 processes" in metrics["hardware"]
    G = load_generator(out / "stylegan2_face64.safetensors")
    assert G.img_resolution == 64 and G.z_dim == 100
