"""Activation buffers reused across the steps of one optimisation loop (CPU only).

Why: on the CPU, a large activation (above glibc's mmap threshold, at most 32 MiB: every 256² activation at batch 4)
is mapped fresh by the allocator and page-faulted and zeroed by the kernel on first touch, then unmapped when it is
freed, every step. A 64 MiB buffer cost about 50 ms of page faults that way on one of our test CPUs, against 15–23 ms
for the multiply that fills it (docs/performance.md). CUDA's caching allocator already reuses its blocks, so the pool
is never used there.

How: a loop owns a :class:`BufferPool` and makes it current for its duration::

    with BufferPool():
        for step in range(steps):
            ...  # forward, backward, optimiser step

While a pool is current in this thread (a :class:`contextvars.ContextVar`, so per thread / per context), the ops
that opt in ask it for their activation-sized results: the modulation ``x * s`` of
:func:`hrinv.generator.ops.modulated_conv2d_unfused` and its input gradient, the clamp / leaky-ReLU gradients of
:func:`hrinv.generator.ops.modconv_epilogue` (fp32/fp64), and in the VGG loss the out-of-place ReLU, the ReLU
gradient and the tap distance's temporaries. Each gets from :func:`pooled_like` / :meth:`BufferPool.empty` a **new**
tensor (its own ``TensorImpl``, version counter and autograd history) on the storage of a pooled buffer of the same
byte size that **nothing else references any more** (the storage's reference count is checked, under a lock, so a
buffer still saved by a live graph, held by a user, aliased by a view or stolen as a ``.grad`` is never handed out
again). Two buffers of the same size live at the same time
therefore get two storages. Leaving the ``with`` block drops every storage: nothing is held after the loop (no
module-level pool keeps memory next to a host's models). ``with pool:`` is entered by one thread at a time; other
threads share a pool through :meth:`BufferPool.use` (the hand-out is under a lock).

Without ``torch._C._storage_Use_Count`` (older torch) the pool never reuses anything and ops allocate as usual.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading

import torch

__all__ = ["BufferPool", "current_pool", "pooled_empty", "pooled_like"]

_CURRENT: contextvars.ContextVar[BufferPool | None] = contextvars.ContextVar("hrinv_buffer_pool", default=None)
_USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)


def current_pool() -> BufferPool | None:
    """The pool made current in this thread / context by ``with BufferPool():``, or None."""
    return _CURRENT.get()


def pooled_like(like: torch.Tensor) -> torch.Tensor | None:
    """An uninitialised contiguous tensor shaped and typed like ``like``, on a free storage of the current pool; None
    when there is no pool, it does not pool such a tensor, or grad mode is on. ``out=`` ops are not differentiable,
    so only the forward/backward of an autograd Function (where grad mode is off) writes into it."""
    return pooled_empty(like.shape, like.dtype, like.device)


def pooled_empty(shape, dtype: torch.dtype, device) -> torch.Tensor | None:
    """:func:`pooled_like` for a given shape, dtype and device."""
    pool = _CURRENT.get()
    if pool is None or torch.is_grad_enabled():
        return None
    device = torch.device(device)
    numel = 1
    for n in shape:
        numel *= int(n)
    if not pool.wants(device, numel * dtype.itemsize):
        return None
    return pool.empty(shape, dtype, device)


class BufferPool:
    """Reusable CPU storages, keyed by byte size, alive while the pool is current (see the module doc).

    Args:
        min_bytes: smaller requests are not pooled (the allocator's free lists serve them quickly).

    Attributes:
        hits, misses: requests served from a free pooled storage / with a new one (statistics for tests).
    """

    def __init__(self, min_bytes: int = 1 << 20):
        self.min_bytes = int(min_bytes)
        self.hits = 0
        self.misses = 0
        self._free: dict[int, list[torch.UntypedStorage]] = {}
        self._lock = threading.Lock()
        self._tokens: list[contextvars.Token] = []

    def __enter__(self) -> BufferPool:
        """Make the pool current; the matching exit restores the previous one and drops every storage."""
        self._tokens.append(_CURRENT.set(self))
        return self

    def __exit__(self, *exc) -> None:
        _CURRENT.reset(self._tokens.pop())
        if not self._tokens:
            self.clear()

    @contextlib.contextmanager
    def use(self):
        """Make the pool current for a ``with`` block **without** dropping its storages at the end: for an owner that
        outlives the block (e.g. a benchmark's loop object that runs one step per call); it calls :meth:`clear`
        (or lets the pool be collected) when done. Any thread may use the same pool this way."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)

    def clear(self) -> None:
        """Drop every storage (buffers still used elsewhere stay alive with their users)."""
        with self._lock:
            self._free.clear()

    @property
    def held_bytes(self) -> int:
        """Bytes of the storages the pool holds (free or in use)."""
        with self._lock:
            return sum(nbytes * len(lst) for nbytes, lst in self._free.items())

    def wants(self, device: torch.device, nbytes: int) -> bool:
        """Whether a request of ``nbytes`` on ``device`` is pooled (CPU, large enough, a torch that can tell)."""
        return device.type == "cpu" and nbytes >= self.min_bytes and _USE_COUNT is not None

    def empty(self, shape, dtype: torch.dtype, device) -> torch.Tensor:
        """An uninitialised contiguous tensor ``[*shape]``: on a free pooled storage when :meth:`wants` it, else a
        plain ``torch.empty``. The caller must overwrite every element (the storage holds a previous step's data)."""
        device = torch.device(device)
        numel = 1
        for s in shape:
            numel *= int(s)
        nbytes = numel * dtype.itemsize
        if not self.wants(device, nbytes):
            return torch.empty(shape, dtype=dtype, device=device)
        out = torch.empty(0, dtype=dtype, device=device)
        with self._lock:
            pool = self._free.setdefault(nbytes, [])
            for storage in pool:
                if _USE_COUNT(storage._cdata) == 1:  # only the pool's own reference: nobody uses it
                    self.hits += 1
                    return out.set_(storage, 0, tuple(shape))  # takes a reference inside the lock
            storage = torch.empty(numel, dtype=dtype, device=device).untyped_storage()
            pool.append(storage)
            self.misses += 1
            return out.set_(storage, 0, tuple(shape))
