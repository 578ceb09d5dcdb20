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
