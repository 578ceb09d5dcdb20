"""The only module of the pack that touches ComfyUI (``comfy.*`` and ``folder_paths``).

It provides: the model folders of the pack (registered once, merged with what ``extra_model_paths.yaml`` already
set), file lookup with messages that list where we looked, the compute / offload / intermediate devices, a context
that moves modules onto the compute device (asking the host to free memory first) and always back, the progress
callback (ComfyUI progress bar + live JPEG preview + Cancel), and the gradient context needed because the host runs
every node under ``torch.inference_mode()``.

Everything ComfyUI-specific that may change between host versions lives here, so the node modules stay thin.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import traceback
import weakref
from collections.abc import Callable, Iterator

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths
import torch

log = logging.getLogger(__name__)

# key -> (default sub-folder of ComfyUI/models, accepted extensions). Keys follow the folders where users keep these files.
MODEL_FOLDERS: dict[str, tuple[str, set[str]]] = {
    "hrinv_stylegan": ("stylegan2", {".pkl", ".pt", ".pth", ".safetensors"}),
    "hrinv_vgg": ("vgg", {".pt", ".pth", ".safetensors"}),
    "hrinv_faceid": ("facerecog", {".dat", ".pt", ".pth", ".safetensors"}),
}
LATENT_FOLDER = "hrinv_latents"          # saved latents: <output>/hrinv_latents, <input>/hrinv_latents (+ YAML extras)
LATENT_EXTS = {".safetensors", ".npz"}

InterruptProcessingException = mm.InterruptProcessingException


# ----------------------------------------------------------------------------------------------------------------
# Folders


def _merge_folder(key: str, path: str, exts: set[str]) -> None:
    """Add ``path`` under ``key`` without dropping folders another config (extra_model_paths.yaml) registered."""
    entry = folder_paths.folder_names_and_paths.get(key)
    if entry is None:
        folder_paths.folder_names_and_paths[key] = ([path], set(exts))
        return
    paths, old_exts = entry
    if path not in paths:
        paths.append(path)
    # A key created by the YAML has an empty extension set (= every file); give it ours so junk is hidden.
    folder_paths.folder_names_and_paths[key] = (paths, set(old_exts) | set(exts))


def register_model_folders() -> None:
    """Register the pack's folders (idempotent). Existing entries, e.g. from extra_model_paths.yaml, are kept."""
    for key, (sub, exts) in MODEL_FOLDERS.items():
        _merge_folder(key, os.path.join(folder_paths.models_dir, sub), exts)
    _latent_folders()


def _latent_folders() -> list[str]:
    # The output/input folders can be moved by command-line flags, so they are (re)added at each use.
    for base in (folder_paths.get_output_directory(), folder_paths.get_input_directory()):
        _merge_folder(LATENT_FOLDER, os.path.join(base, LATENT_FOLDER), LATENT_EXTS)
    return folder_paths.get_folder_paths(LATENT_FOLDER)


def search_paths(key: str) -> list[str]:
    """Every folder searched for ``key`` (defaults plus extra_model_paths.yaml entries)."""
    if key == LATENT_FOLDER:
        return _latent_folders()
    return folder_paths.get_folder_paths(key)


# Models that ship inside hrinv (hrinv/bundled, sha256 in its manifest.json) are listed after the user's own files
# as "bundled/<name>"; the user's folders are not touched. key -> the manifest "kind" listed under it.
BUNDLED_KINDS = {"hrinv_stylegan": "generator", "hrinv_vgg": "vgg16"}
BUNDLED_PREFIX = "bundled/"


def bundled_files(key: str) -> list[str]:
    """``bundled/<name>`` for every file bundled with hrinv that belongs in the ``key`` list."""
    kind = BUNDLED_KINDS.get(key)
    if kind is None:
        return []
    from hrinv import bundled

    return [BUNDLED_PREFIX + n for n in bundled.names(kind)]


def list_files(key: str) -> list[str]:
    """File names (relative to their folder) available for ``key``, then the bundled ones; the host caches the
    folder listing on mtimes."""
    if key == LATENT_FOLDER:
        _latent_folders()
    try:
        files = list(folder_paths.get_filename_list(key))
    except KeyError:                       # folder not registered (should not happen after register_model_folders)
        files = []
    return files + [b for b in bundled_files(key) if b not in files]


def _bundled_path(key: str, name: str) -> str | None:
    """Verified path of a ``bundled/<name>`` entry (sha256 checked once per process), else None."""
    if name and name in bundled_files(key):
        from hrinv import bundled

        return str(bundled.path(name[len(BUNDLED_PREFIX):]))
    return None


def _extensions(key: str) -> list[str]:
    return sorted(folder_paths.folder_names_and_paths.get(key, ([], set()))[1])


def not_found_message(key: str, name: str, what: str) -> str:
    """A message that says which file was asked for, every folder we looked in, and what to do."""
    folders = search_paths(key)
    found = list_files(key)
    where = "\n".join(f"  - {p}{'' if os.path.isdir(p) else '  (does not exist)'}" for p in folders)
    have = ", ".join(found[:12]) + (" ..." if len(found) > 12 else "") if found else "none"
    from hrinv.download import MODELS

    fetch = ""
    if name in MODELS and MODELS[name].url:        # a file `hrinv download` knows: say how to fetch it (never here)
        fetch = (f"\nTo fetch it: python -m hrinv download {name} --comfyui {os.path.dirname(folder_paths.models_dir)}"
                 f" (run in the node pack's folder).")
    return (f"{what} {name!r} was not found. Looked in:\n{where}\nFiles found there ({', '.join(_extensions(key))}): "
            f"{have}.\nPut the file in one of these folders (or add a folder for '{key}' in extra_model_paths.yaml), "
            f"then press R in the editor to refresh the list.{fetch}")


def resolve(key: str, name: str, what: str) -> str:
    """Full path of ``name`` in the ``key`` folders, or FileNotFoundError with :func:`not_found_message`."""
    if key == LATENT_FOLDER:
        _latent_folders()
    path = folder_paths.get_full_path(key, name) if name else None
    if path is None:
        path = _bundled_path(key, name)
    if path is None:
        from hrinv.errors import WeightsNotFoundError

        raise WeightsNotFoundError(not_found_message(key, name, what))
    return path


def latent_save_path(filename_prefix: str) -> tuple[str, str]:
    """(full path, path relative to the output folder) of the next free ``<prefix>_NNNNN_.safetensors`` under
    ``<output>/hrinv_latents``."""
    out_dir = folder_paths.get_output_directory()
    prefix = os.path.join(LATENT_FOLDER, filename_prefix)
    folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, out_dir)
    name = f"{filename}_{counter:05}_.safetensors"
    return os.path.join(folder, name), os.path.join(subfolder, name)


def file_signature(key: str, name: str) -> str:
    """Path + size + mtime of a model file, for ``fingerprint_inputs`` (a replaced file reloads)."""
    path = folder_paths.get_full_path(key, name) if name else None
    if path is None:
        path = _bundled_path(key, name)
    if path is None:
        return f"missing:{key}/{name}"
    st = os.stat(path)
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


# ----------------------------------------------------------------------------------------------------------------
# Devices and memory


def compute_device() -> torch.device:
    """The host's compute device (cpu under ``--cpu``)."""
    return mm.get_torch_device()


def offload_device() -> torch.device:
    """Where idle networks live between nodes (the host's model offload device, usually cpu)."""
    return mm.unet_offload_device()


def intermediate_device() -> torch.device:
    """Where IMAGE tensors are handed to other nodes."""
    return mm.intermediate_device()


def module_bytes(*modules: torch.nn.Module) -> int:
    return int(sum(mm.module_size(m) for m in modules if m is not None))


_patchers: "weakref.WeakKeyDictionary[torch.nn.Module, object]" = weakref.WeakKeyDictionary()


def patcher_for(module: torch.nn.Module):
    """The host's ``ModelPatcher`` for one of our networks (one per network object, kept while the network lives),
    so ComfyUI's model management can keep it resident on the GPU between runs and evict it when a diffusion model
    needs the memory."""
    p = _patchers.get(module)
    if p is None:
        p = comfy.model_patcher.ModelPatcher(module, load_device=compute_device(), offload_device=offload_device())
        _patchers[module] = p
    return p


def load_on_device(*modules: torch.nn.Module | None, working_bytes: int = 0) -> None:
    """Load ``modules`` on the compute device through the host (``load_models_gpu``): resident ones are reused, and
    the host frees memory (unloading its own or our idle models) for the weights plus ``working_bytes``.

    Fully loaded (our networks have no ComfyUI weight-casting layers for partial loading). Run outside
    ``inference_mode`` so the moved weights are normal tensors that autograd can save."""
    mods = [m for m in modules if m is not None]
    if not mods:
        return
    with torch.inference_mode(False):
        mm.load_models_gpu([patcher_for(m) for m in mods], memory_required=int(working_bytes), force_full_load=True)


@contextlib.contextmanager
def device_session(*modules: torch.nn.Module | None, working_bytes: int = 0) -> Iterator[torch.device]:
    """Yield the compute device for a block of work on ``modules``. On a GPU the networks are loaded there through
    the host's model management (:func:`load_on_device`): the second run of a workflow finds them resident instead
    of copying them again, and the host can evict them when it needs the memory. The hrinv loops use a resident
    network in place (read-only; see ``hrinv.perf.frozen_on``). After the block (also on error or Cancel) the
    traceback's frames are cleared and the device cache is emptied, so no activation or optimiser state stays on
    the device; only the host-managed weights do, until the host evicts them."""
    device = compute_device()
    try:
        if device.type != "cpu":
            load_on_device(*modules, working_bytes=working_bytes)
        yield device
    except BaseException as exc:
        # The traceback keeps the failed call's frames, and with them its device copies of the networks and its
        # activations, alive for as long as the host holds the exception. Drop their locals (the report's file /
        # line information stays) so that an error or Cancel leaves nothing on the device.
        traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        if device.type != "cpu":
            mm.soft_empty_cache()


def device_copy(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` itself when it already lives on ``device`` as normal tensors (read-only use), else a private
    copy there (a shared, cached network is never moved in place)."""
    p = next(iter(list(module.parameters()) + list(module.buffers())), None)
    if p is not None and p.device == device and not p.is_inference():
        return module
    with torch.inference_mode(False):
        return copy.deepcopy(module).to(device)


def no_inference_mode():
    """``inference_mode(False)`` only: networks built or converted here hold normal tensors, usable by later
    optimisation nodes (an inference tensor can never join autograd)."""
    return torch.inference_mode(False)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, mm.OOM_EXCEPTION)


# ----------------------------------------------------------------------------------------------------------------
# Progress, preview, Cancel


def check_interrupt() -> None:
    """Raise the host's InterruptProcessingException when the user pressed Cancel."""
    mm.throw_exception_if_processing_interrupted()


def _preview_image(preview: torch.Tensor, max_size: int):
    from PIL import Image

    img = preview[0].detach().float().clamp(-1, 1).add(1).mul(127.5)       # [C, H, W] in 0..255
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    arr = img[:3].permute(1, 2, 0).round().to(torch.uint8).cpu().numpy()   # [H, W, 3]
    return ("JPEG", Image.fromarray(arr), max_size)


def progress(total: int, max_preview: int = 512) -> Callable[[int, int, torch.Tensor | None], None]:
    """The ``callback(step, total, preview)`` the hrinv loops take: checks Cancel first, then advances the node's
    progress bar in the editor, with the preview (``[B, 3, H, W]`` in [-1, 1], first sample shown) as a live image."""
    bar = comfy.utils.ProgressBar(max(int(total), 1))

    def callback(step: int, total_: int, preview: torch.Tensor | None = None) -> None:
        check_interrupt()
        pv = _preview_image(preview, max_preview) if preview is not None else None
        bar.update_absolute(int(step), int(total_) if total_ else None, pv)

    return callback
