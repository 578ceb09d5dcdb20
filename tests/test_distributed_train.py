"""Training under torchrun: `hrinv fit-inr` with 2 CPU processes (gloo) trains one head with DDP (every rank ends
with the same weights; rank 0 writes the file); without torchrun nothing changes (same seed -> same head)."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from hrinv.cli import main
from hrinv.io.checkpoints import load_generator, save_generator

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--steps", "3", "--batch", "2", "--points", "256", "--device", "cpu", "--seed", "3"]


def _run(cmd, env, timeout=240):
    """Run ``cmd`` in its own process group; on a timeout kill the whole group (torchrun's workers too)."""
    import signal

    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR",
                                                               "MASTER_PORT", "LOCAL_WORLD_SIZE")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return env


def test_fit_inr_under_torchrun_uses_ddp(tmp_path):
    from nodes_harness import tiny_generators

    G, _ = tiny_generators()
    src = tmp_path / "g.safetensors"
    save_generator(G, src)
    dst2 = tmp_path / "ddp.safetensors"
    r = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
              "-m", "hrinv", "fit-inr", str(src), str(dst2), *ARGS], _env())
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
