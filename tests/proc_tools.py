"""Helpers for tests that start `hrinv` in child processes (torchrun ranks, a run killed midway)."""

import os
import signal
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Set by torchrun in its workers; a test started under torchrun itself must not pass them on to its own children.
_TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")


def child_env(**extra) -> dict:
    """This process's environment without torchrun's variables, with one CPU thread per process (equal float
    reductions in every rank, and no oversubscription of a small CI machine) and the checkout importable."""
    env = {k: v for k, v in os.environ.items() if k not in _TORCHRUN_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), **extra)
    return env


def run_group(cmd, env, timeout=240) -> subprocess.CompletedProcess:
    """Run ``cmd`` from the repository in its own process group; on a timeout kill the whole group (torchrun's
    workers too), so no rank outlives the test."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
