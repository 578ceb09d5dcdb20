"""Stub of ``comfy.model_patcher.ModelPatcher``: the part the pack uses (wrap a plain ``nn.Module`` so the host's
model management can load it on the compute device, keep it resident and evict it). Our own minimal code with the
same constructor signature and observable behaviour as ComfyUI 0.3.64 for fully loaded models."""

import torch


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.model = model
        self.load_device = torch.device(load_device)
        self.offload_device = torch.device(offload_device)
        self.size = size
        self.weight_inplace_update = weight_inplace_update
        self.parent = None
        if getattr(model, "device", None) is None:
            model.device = self.offload_device          # ComfyUI sets this attribute on the wrapped module too
        self.model.model_loaded_weight_memory = 0
        self.loads = 0                                  # test hook: how often the weights were moved to the device

    def model_size(self):
        if self.size <= 0:
            self.size = sum(t.nelement() * t.element_size() for t in self.model.state_dict().values())
        return self.size

    def loaded_size(self):
        return self.model.model_loaded_weight_memory

    def is_clone(self, other):
        return getattr(other, "model", None) is self.model

    def model_patches_models(self):
        return []

    def current_loaded_device(self):
        return self.model.device

    def load(self, device_to=None, lowvram_model_memory=0, force_patch_weights=False, full_load=False):
        device_to = self.load_device if device_to is None else torch.device(device_to)
        self.model.to(device_to)
        self.model.device = device_to
        self.model.model_loaded_weight_memory = self.model_size()
        self.loads += 1

    def detach(self, unpatch_all=True):
        self.model.to(self.offload_device)
        self.model.device = self.offload_device
        self.model.model_loaded_weight_memory = 0
        return self.model
