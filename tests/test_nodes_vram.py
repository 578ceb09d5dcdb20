"""The pack shares the GPU with the host: our networks go through ComfyUI's model management (ModelPatcher +
load_models_gpu) instead of being deep-copied to the device at every run, and a cancelled run leaves no tensors
behind. Over the stubs in tests/comfy_stubs; the 'meta' device stands in for a GPU (no memory, no data)."""

import copy
import gc
import weakref

import pytest
import torch
from nodes_harness import face_images, random_vgg, run_node, stubbed_pack, tiny_generators
from torch.utils._python_dispatch import TorchDispatchMode

from hrinv import perf


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    with stubbed_pack(tmp_path_factory.mktemp("comfy")) as ns:
        ns.vgg = ns.node_module.types.VGGHandle(random_vgg(), "random")
        yield ns


def test_networks_are_loaded_once_through_the_host_and_used_in_place(h, monkeypatch):
    comfy = h.node_module._comfy
    G = copy.deepcopy(tiny_generators()[0]).eval().requires_grad_(False)
    vgg = copy.deepcopy(h.vgg.model)
    monkeypatch.setattr(h.mm, "get_torch_device", lambda: torch.device("meta"))  # a "GPU" without memory
    h.mm.load_models_gpu_calls.clear()
    for _ in range(2):  # two runs of the same workflow
        with comfy.device_session(G, vgg, working_bytes=123) as device:
            assert device.type == "meta"
            assert next(G.parameters()).device.type == "meta" and next(vgg.parameters()).device.type == "meta"
            assert perf.frozen_on(G, device) is G  # the loops use the resident copy: no per-run deep copy
    pg, pv = comfy.patcher_for(G), comfy.patcher_for(vgg)
    assert pg is comfy.patcher_for(G) and pg.model is G  # one patcher per network object
    assert pg.loads == 1 and pv.loads == 1  # the second run found them resident
    calls = h.mm.load_models_gpu_calls
    assert len(calls) == 2 and all(c[2] for c in calls) and calls[0][1] == 123  # full load, working memory asked
    assert h.mm.loaded_models()[:2] in ([pg, pv], [pv, pg])
    h.mm.current_loaded_models.clear()


def test_frozen_on_copies_only_when_it_must():
    G = tiny_generators()[0].eval().requires_grad_(False)
    assert perf.frozen_on(G, "cpu") is G
    assert perf.frozen_on(G, "cpu", torch.float64) is not G
    G.train()
    assert perf.frozen_on(G, "cpu") is not G
    G.eval()
    with torch.inference_mode():
        G_inf = copy.deepcopy(G)
    c = perf.frozen_on(G_inf, "cpu")
    assert c is not G_inf and not any(p.is_inference() for p in c.parameters())


class _Tracker(TorchDispatchMode):
    """Records a weak reference to every tensor an op creates (a counting stand-in for a device allocator)."""

    def __init__(self, min_numel):
        super().__init__()
        self.refs, self.min_numel = [], min_numel

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor) and t.numel() >= self.min_numel:
                self.refs.append(weakref.ref(t))
        return out


def test_cancelled_and_failed_runs_leave_no_tensors(h):
    G = tiny_generators()[0].eval().requires_grad_(False)
    handle = h.node_module.types.GeneratorHandle(G, "tiny")
    run_node(h.nodes["HRInv_Invert"], generator=handle, image=face_images(1), vgg=h.vgg, steps=1)  # warm caches

    def cancel_at_step_2(v, t, p, node_id=None):
        if v >= 2:
            h.mm.interrupt_current_processing(True)

    def fail_at_step_2(v, t, p, node_id=None):  # e.g. a device error in the middle of the run
        if v >= 2:
            raise RuntimeError("simulated failure at step 2")

    for how in ("cancel", "error"):
        tracker = _Tracker(min_numel=64 * 64)  # activations of the 64 px generator / VGG, not w statistics
        if how == "cancel":
            h.utils.set_progress_bar_global_hook(cancel_at_step_2)
            want = h.mm.InterruptProcessingException
        else:
            h.utils.set_progress_bar_global_hook(fail_at_step_2)
            want = Exception
        image = face_images(1)
        raised = None
        try:
            with tracker:
                run_node(h.nodes["HRInv_Invert"], generator=handle, image=image, vgg=h.vgg, steps=20)
        except want as exc:  # what the host sees; the name is unbound after the block, as in the host's handler
            raised = type(exc)
        finally:
            h.utils.set_progress_bar_global_hook(None)
            h.mm.interrupt_current_processing(False)
        assert raised is not None, f"{how}: the run did not stop"
        gc.collect()
        alive = [r() for r in tracker.refs if r() is not None]
        assert tracker.refs, "the tracker saw no tensors"
        assert not alive, f"{how}: {len(alive)} tensors outlived the run: {[tuple(t.shape) for t in alive][:5]}"
