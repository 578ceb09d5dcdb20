"""Several processes, GPUs and machines through ``torch.distributed`` as started by ``torchrun``.

Nothing here changes a plain run: without the ``torchrun`` environment (``WORLD_SIZE`` unset or 1),
:func:`init_distributed` returns a single-process :class:`DistContext` and every helper is a no-op.

Under ``torchrun --nproc-per-node N [--nnodes M ...] -m hrinv ...`` each process

- joins the process group (``nccl`` when it runs on CUDA, ``gloo`` on the CPU), with a long timeout because batch
  ranks can finish their shards hours apart;
- uses its own device ``cuda:LOCAL_RANK`` (``--device auto`` or ``cuda``); on the CPU all ranks share the CPU;
- takes the items ``rank, rank + N, rank + 2N, ...`` of a deterministic list (:func:`shard`): no overlap, no gaps.

Object collectives (barrier, broadcast, gather of Python objects) always run over a CPU ``gloo`` group, so they work
the same with ``nccl`` and never tie a GPU stream to a rank that is still busy.
"""

import datetime
import logging
import os
from dataclasses import dataclass

import torch

__all__ = [
    "DistContext",
    "in_torchrun",
    "init_distributed",
    "shard",
]

log = logging.getLogger(__name__)

# How long a rank may wait at a barrier for the others (a rank that drew the slow items may be hours behind).
DEFAULT_TIMEOUT_HOURS = 72.0


def in_torchrun() -> bool:
    """True when the torchrun environment asks for more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


@dataclass
class DistContext:
    """Where this process stands: ``rank`` of ``world_size`` (``local_rank`` on its node), its ``device``, and
    whether it runs in a process group (``active``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    active: bool = False
    _cpu_group: object = None
    _owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.active:
            import torch.distributed as dist

            dist.barrier(group=self._cpu_group)

    def broadcast_object(self, obj=None, src: int = 0):
        """``obj`` of rank ``src`` on every rank (any picklable object made by our own code)."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src, group=self._cpu_group)
        return box[0]

    def gather_object(self, obj, dst: int = 0):
        """``[obj of rank 0, obj of rank 1, ...]`` on rank ``dst``, None on the others (``[obj]`` in one process)."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size if self.rank == dst else None
        dist.gather_object(obj, out, dst=dst, group=self._cpu_group)
        return out

    def all_reduce_max(self, value: float) -> float:
        """The largest ``value`` over the ranks (used to agree on an error)."""
        if not self.active:
            return value
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self._cpu_group)
        return float(t.item())

    def close(self) -> None:
        """Leave the process group (only if this context started it)."""
        if self.active and self._owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
        self.active = False


def _env_int(name, default):
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        from .errors import InvalidSettingError

        raise InvalidSettingError(f"environment variable {name}={value!r}: expected an integer (torchrun sets it); "
                                  f"unset it or start the job with torchrun.") from None


def rank_device(requested, local_rank: int, world_size: int) -> torch.device:
    """This rank's device: ``auto``/``cuda`` -> ``cuda:LOCAL_RANK`` (when CUDA exists), ``cpu`` -> cpu.

    An explicit ``cuda:K`` is kept for a single process but refused when several processes would share it.
    """
    from .errors import InvalidSettingError

    name = str(requested or "auto").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidSettingError(f"--device {requested}: this torch build sees no CUDA device; use --device cpu "
                                      f"(gloo) or run on GPU machines.")
        if world_size > 1:
            if dev.index is not None:
                raise InvalidSettingError(f"--device {requested} under torchrun: every rank would use the same GPU. "
                                          f"Pass --device cuda (or auto); rank r then uses cuda:LOCAL_RANK.")
            n = torch.cuda.device_count()
            if local_rank >= n:
                raise InvalidSettingError(f"local rank {local_rank} needs GPU cuda:{local_rank}, but this node has "
                                          f"{n} GPU(s). Start at most {n} processes per node (--nproc-per-node {n}).")
            dev = torch.device("cuda", local_rank)
        elif dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type not in ("cpu", "mps", "xpu"):
        raise InvalidSettingError(f"--device {requested}: expected auto, cpu, cuda or cuda:N.")
    return dev


def init_distributed(device="auto", *, timeout_hours: float | None = None) -> DistContext:
    """Join the torchrun process group when there is one, else describe a single process.

    Args:
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps`` (see :func:`rank_device`).
        timeout_hours: collective timeout (default ``HRINV_DIST_TIMEOUT_HOURS`` or 72 h).

    Returns:
        DistContext. Call ``.close()`` at the end (the CLI does).
    """
    world = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    dev = rank_device(device, local_rank, world)
    if world <= 1:
        return DistContext(device=dev)
    import torch.distributed as dist

    hours = float(os.environ.get("HRINV_DIST_TIMEOUT_HOURS", timeout_hours or DEFAULT_TIMEOUT_HOURS))
    timeout = datetime.timedelta(hours=hours)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    started = False
    if not dist.is_initialized():
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
        started = True
    else:
        backend = dist.get_backend()
    cpu_group = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else None
    ctx = DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                      local_world_size=local_world, device=dev, backend=backend, active=True,
                      _cpu_group=cpu_group, _owns_group=started)
    log.info("rank %d/%d (local %d) on %s, backend %s", ctx.rank, ctx.world_size, local_rank, dev, backend)
    return ctx


def shard(items, rank: int, world_size: int) -> list:
    """Items ``rank, rank + world_size, ...`` of ``items``: over all ranks, every item exactly once."""
    if world_size < 1 or not 0 <= rank < world_size:
        from .errors import InvalidSettingError

        raise InvalidSettingError(f"shard: rank must be in [0, {world_size - 1}] for world size {world_size}, "
                                  f"got rank {rank}.")
    return list(items)[rank::world_size]
