"""Stub of the parts of ``comfy.model_management`` the pack uses: devices, memory, interrupt. CPU only."""

import threading

import torch


class InterruptProcessingException(Exception):
    pass


OOM_EXCEPTION = torch.cuda.OutOfMemoryError

_lock = threading.RLock()
interrupt_processing = False
free_memory_calls = []          # test hook: what the pack asked the host to free
soft_empty_cache_calls = 0


def get_torch_device():
    return torch.device("cpu")


def unet_offload_device():
    return torch.device("cpu")


def intermediate_device():
    return torch.device("cpu")


def module_size(module):
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


def free_memory(memory_required, device, keep_loaded=[]):  # noqa: B006 (ComfyUI's signature)
    free_memory_calls.append((memory_required, device))
    return []


def soft_empty_cache(force=False):
    global soft_empty_cache_calls
    soft_empty_cache_calls += 1


def interrupt_current_processing(value=True):
    global interrupt_processing
    with _lock:
        interrupt_processing = value


def processing_interrupted():
    with _lock:
        return interrupt_processing


def throw_exception_if_processing_interrupted():
    global interrupt_processing
    with _lock:
        if interrupt_processing:
            interrupt_processing = False          # ComfyUI clears the flag when it raises
            raise InterruptProcessingException()


# ----------------------------------------------------------------------------------------------------------------
# Model management of ModelPatcher-wrapped networks (load on the compute device, keep resident, evict)

current_loaded_models = []      # the ModelPatchers currently loaded, most recent first (ComfyUI keeps LoadedModels)
load_models_gpu_calls = []      # test hook: (patchers, memory_required, force_full_load) per call


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False):
    load_models_gpu_calls.append((list(models), memory_required, force_full_load))
    free_memory(sum(m.model_size() for m in models) + memory_required, get_torch_device())
    for m in models:
        resident = any(x is m for x in current_loaded_models) and m.model.device == m.load_device
        if not resident:
            m.load(m.load_device, full_load=force_full_load)
            current_loaded_models.insert(0, m)
        else:
            current_loaded_models.remove(m)
            current_loaded_models.insert(0, m)


def loaded_models(only_currently_used=False):
    return list(current_loaded_models)


def unload_all_models():
    """Evict every loaded model to its offload device (what the host does when a bigger model needs the memory)."""
    while current_loaded_models:
        current_loaded_models.pop().detach()
