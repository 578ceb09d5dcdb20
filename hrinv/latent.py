"""``Latent``: an inverted W+ code (plus optional noise maps) that knows which generator it belongs to.

A latent holds a batch: ``ws [B, num_ws, w_dim]`` and, when the noise maps were optimised,
``noise = {layer_name: [B, 1, res, res]}`` with layer names from ``G.synthesis.noise_names`` (``"b8.conv0"``, ...).
``noise = None`` means "use the generator's own constant noise buffers" (``noise_mode="const"``).

Files: ``save(path)`` / ``Latent.load(path)`` use ``.safetensors`` (tensors ``ws`` and ``noise.<layer>``, JSON
metadata under the key ``hrinv``). ``Latent.load`` also reads the projectors' ``.npz`` outputs: NVIDIA's
``projected_w.npz`` and HRInversion's ``*_w.npz`` / ``*_wn.npz`` (key ``w`` [1, num_ws, w_dim]). HRInversion stores
its noise maps as a *pickled* dict (``noise_bufs``); that is refused unless ``allow_pickled_noise=True``, and even
then it is decoded by a restricted unpickler that can only rebuild numpy arrays (it never imports or calls anything
else), so loading a latent never executes code from the file.
"""

import io
import json
import logging
import math
import struct
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._files import atomic_write, json_default
from .errors import (
    HRInvError,
    IncompatibleGeneratorsError,
    LatentFileError,
    ShapeError,
    UnsafeCheckpointError,
    WeightsNotFoundError,
)

__all__ = ["LATENT_FORMAT", "Latent"]

log = logging.getLogger(__name__)

LATENT_FORMAT = "hrinv.latent"
_VERSION = 1


@dataclass
class Latent:
    """A batch of W+ codes (+ optional per-layer noise maps) for one generator.

    Attributes:
        ws: W+ codes. Shape: ``[B, num_ws, w_dim]``.
        noise: ``{layer_name: [B, 1, res, res]}`` or None (= the generator's constant noise buffers).
        generator_fingerprint: ``G.fingerprint()`` of the generator the codes were found in ("" if unknown).
        settings: JSON-able settings that produced the latent (e.g. the InversionConfig).
        metrics: JSON-able metrics (e.g. ``{"psnr": [..], "loss": [..], "seconds": ..}``); per-sample lists are
            indexed along with ``ws``.
    """

    ws: torch.Tensor
    noise: dict[str, torch.Tensor] | None = None
    generator_fingerprint: str = ""
    settings: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.ws, torch.Tensor) or self.ws.ndim != 3:
            got = tuple(self.ws.shape) if isinstance(self.ws, torch.Tensor) else type(self.ws).__name__
            raise ShapeError(f"Latent.ws must be a tensor [B, num_ws, w_dim], got {got}")
        if self.noise is not None:
            noise = dict(self.noise)
            for name, n in noise.items():
                if not isinstance(n, torch.Tensor) or n.ndim != 4 or n.shape[0] != self.batch_size or n.shape[1] != 1:
                    got = tuple(n.shape) if isinstance(n, torch.Tensor) else type(n).__name__
                    raise ShapeError(f"Latent.noise[{name!r}] must be [B={self.batch_size}, 1, res, res], got {got}")
            self.noise = noise

    # ------------------------------------------------------------------------------------------------------------------
    # Basic properties and tensor-like helpers

    @property
    def batch_size(self) -> int:
        return int(self.ws.shape[0])

    @property
    def num_ws(self) -> int:
        return int(self.ws.shape[1])

    @property
    def w_dim(self) -> int:
        return int(self.ws.shape[2])

    @property
    def device(self) -> torch.device:
        return self.ws.device

    def __len__(self) -> int:
        return self.batch_size

    def _map(self, fn) -> "Latent":
        noise = None if self.noise is None else {k: fn(v) for k, v in self.noise.items()}
        return Latent(fn(self.ws), noise, self.generator_fingerprint, json.loads(json.dumps(self.settings)),
                      json.loads(json.dumps(self.metrics)))

    def to(self, device=None, dtype=None) -> "Latent":
        """A copy on ``device`` / in ``dtype`` (floating tensors only)."""
        return self._map(lambda t: t.to(device=device, dtype=dtype))

    def clone(self) -> "Latent":
        """A deep copy (tensors cloned and detached, dicts copied)."""
        return self._map(lambda t: t.detach().clone())

    def __getitem__(self, index) -> "Latent":
        """Select samples: ``latent[i]`` (keeps the batch dim), ``latent[1:3]``, ``latent[[0, 2]]``."""
        if isinstance(index, int):
            if not -self.batch_size <= index < self.batch_size:
                raise IndexError(f"latent index {index} out of range for a batch of {self.batch_size}")
            index = slice(index % self.batch_size, index % self.batch_size + 1)
        idx = torch.arange(self.batch_size)[index]
        rows = idx.tolist() if idx.ndim else [int(idx)]
        out = self._map(lambda t: t[rows].clone())
        out.metrics = {k: ([v[i] for i in rows] if _is_per_sample(v, self.batch_size) else v)
                       for k, v in self.metrics.items()}
        return out

    @staticmethod
    def cat(latents: Iterable["Latent"]) -> "Latent":
        """Concatenate along the batch. All parts must share num_ws, w_dim, noise layers and fingerprint."""
        parts = list(latents)
        if not parts:
            raise ValueError("Latent.cat needs at least one latent")
        first = parts[0]
        for p in parts[1:]:
            if p.ws.shape[1:] != first.ws.shape[1:]:
                raise ShapeError(f"cannot concatenate latents of W+ shapes {tuple(first.ws.shape[1:])} and "
                                 f"{tuple(p.ws.shape[1:])}: they belong to different generators")
            if (p.noise is None) != (first.noise is None) or (p.noise and set(p.noise) != set(first.noise)):
                raise ShapeError("cannot concatenate a latent with optimised noise maps and one without (or with "
                                 "different noise layers); drop the noise of all (latent.noise = None) first")
            if p.generator_fingerprint and first.generator_fingerprint and \
                    p.generator_fingerprint != first.generator_fingerprint:
                raise IncompatibleGeneratorsError(
                    f"cannot concatenate latents of different generators (fingerprints "
                    f"{first.generator_fingerprint} and {p.generator_fingerprint})")
        ws = torch.cat([p.ws.to(first.ws.device) for p in parts])
        noise = None
        if first.noise is not None:
            noise = {k: torch.cat([p.noise[k].to(first.ws.device) for p in parts]) for k in first.noise}
        metrics = {}
        for k in first.metrics:
            if all(_is_per_sample(p.metrics.get(k), p.batch_size) for p in parts):
                metrics[k] = [x for p in parts for x in p.metrics[k]]
        fp = next((p.generator_fingerprint for p in parts if p.generator_fingerprint), "")
        return Latent(ws, noise, fp, json.loads(json.dumps(first.settings)), metrics)

    # ------------------------------------------------------------------------------------------------------------------
    # Generator compatibility

    def check_compatible(self, G, strict_fingerprint: bool = False) -> None:
        """Raise a clear error if this latent cannot drive ``G``.

        Args:
            G: a :class:`hrinv.generator.stylegan2.Generator` (``num_ws``, ``w_dim``, ``synthesis.noise_buffers()``).
            strict_fingerprint: raise :class:`IncompatibleGeneratorsError` (instead of logging a warning) when the
                latent records a different generator fingerprint. Shapes may match across fine-tuned generators,
                which is exactly what cross-domain stylisation uses, hence the default warning.

        Raises:
            ShapeError: W+ or noise shapes do not fit ``G``.
        """
        want = (int(G.num_ws), int(G.w_dim))
        if tuple(self.ws.shape[1:]) != want:
            raise ShapeError(f"this latent has W+ shape [B, {self.num_ws}, {self.w_dim}] but the generator expects "
                             f"[B, {want[0]}, {want[1]}] ({G.img_resolution} px); invert the image again with this "
                             f"generator or load the generator it was made with")
        if self.noise is not None:
            bufs = G.synthesis.noise_buffers()
            for name, n in self.noise.items():
                if name not in bufs:
                    raise ShapeError(f"latent noise layer {name!r} does not exist in the generator (its layers: "
                                     f"{', '.join(bufs)}); drop the noise (latent.noise = None) to use G's own")
                if tuple(n.shape[2:]) != tuple(bufs[name].shape[-2:]):
                    raise ShapeError(f"latent noise {name!r} is {tuple(n.shape[2:])} but the generator's is "
                                     f"{tuple(bufs[name].shape[-2:])}")
        fp = G.fingerprint() if hasattr(G, "fingerprint") else ""
        if self.generator_fingerprint and fp and fp != self.generator_fingerprint:
            msg = (f"this latent was made with generator {self.generator_fingerprint}, not with this one ({fp}); "
                   f"the result is only meaningful if the generator was fine-tuned from that one")
            if strict_fingerprint:
                raise IncompatibleGeneratorsError(msg)
            log.warning(msg)

    def synthesis_kwargs(self, device=None, dtype=None) -> dict:
        """Keyword arguments for ``G.synthesis(ws, **kwargs)`` that reproduce this latent's image."""
        if self.noise is None:
            return {"noise_mode": "const"}
        return {"noise_mode": "const", "noise": {k: v.to(device=device, dtype=dtype) for k, v in self.noise.items()}}

    # ------------------------------------------------------------------------------------------------------------------
    # Files

    def save(self, path: str | Path) -> Path:
        """Write ``.safetensors``: tensors ``ws`` and ``noise.<layer>`` (float32, CPU) + JSON metadata ``hrinv``."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {"ws": self.ws.detach().to("cpu", torch.float32).contiguous()}
        for k, v in (self.noise or {}).items():
            tensors[f"noise.{k}"] = v.detach().to("cpu", torch.float32).contiguous()
        meta = {"format": LATENT_FORMAT, "version": _VERSION, "generator_fingerprint": self.generator_fingerprint,
                "settings": self.settings, "metrics": self.metrics,
                "noise_layers": None if self.noise is None else list(self.noise)}
        with atomic_write(path) as tmp:
            save_file(tensors, str(tmp), metadata={"hrinv": json.dumps(meta, default=json_default)})
        return path

    @classmethod
    def load(cls, path: str | Path, device=None, *, allow_pickled_noise: bool = False) -> "Latent":
        """Read a latent from ``.safetensors`` (ours) or ``.npz`` (NVIDIA / HRInversion projector outputs).

        Untrusted files are safe to pass: sizes are checked against the file before anything is allocated (at most
        ``MAX_LATENT_FILE_BYTES`` per array), nothing is unpickled with real numpy constructors, values must be
        finite, and every failure is a typed error.

        Args:
            path: the file.
            device: where to put the tensors (default CPU).
            allow_pickled_noise: HRInversion's ``*_wn.npz`` store the noise maps as a pickled dict. When True, they
                are decoded by :func:`hrinv.io.safe_unpickle.numpy_only_load` (arrays rebuilt from their bytes, no
                numpy constructor ever reaches the pickle); when False (default), a file that has them raises
                :class:`UnsafeCheckpointError` explaining the option.

        Raises:
            WeightsNotFoundError (a FileNotFoundError): no such file. LatentFileError: truncated, damaged, not a
            latent, unknown type or non-finite values. ShapeError: arrays of the wrong shape.
            UnsafeCheckpointError: pickled content without ``allow_pickled_noise``, or outside the numpy allow-list.
        """
        path = Path(path)
        if not path.is_file():
            raise WeightsNotFoundError(f"latent file not found: {path} (expected a .safetensors written by hrinv or a "
                                       f"projector .npz); check the path")
        suffix = path.suffix.lower()
        try:
            if suffix == ".safetensors":
                lat = cls._load_safetensors(path)
            elif suffix == ".npz":
                lat = cls._load_npz(path, allow_pickled_noise)
            else:
                raise LatentFileError(f"unknown latent file type {suffix!r} ({path}); expected .safetensors (hrinv) "
                                      f"or .npz (NVIDIA projected_w.npz / HRInversion *_w.npz, *_wn.npz)")
            for name, t in [("ws", lat.ws)] + [(f"noise[{k!r}]", v) for k, v in (lat.noise or {}).items()]:
                if not torch.isfinite(t).all():
                    raise LatentFileError(f"{path}: {name} holds NaN or infinite values; the latent is damaged. "
                                          f"Invert the image again")
        except HRInvError:
            raise
        except (RecursionError, MemoryError, OverflowError, ValueError, KeyError, TypeError, IndexError, EOFError,
                OSError, RuntimeError, zipfile.BadZipFile, struct.error) as e:
            raise LatentFileError(f"{path} could not be read as a latent ({type(e).__name__}: {str(e)[:200]}); it is "
                                  f"truncated or damaged. Save or copy it again") from None
        return lat.to(device) if device is not None else lat

    @classmethod
    def _load_safetensors(cls, path: Path) -> "Latent":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get("hrinv")
                names = list(f.keys())
                wanted = [k for k in names if k == "ws" or k.startswith("noise.")] if raw is not None else []
                tensors = {k: f.get_tensor(k) for k in wanted}
        except SafetensorError as e:
            raise LatentFileError(f"{path} is not a readable .safetensors file ({str(e)[:200]}); it is truncated or "
                                  f"damaged. Save or copy it again") from None
        if raw is None:
            raise LatentFileError(f"{path} is a .safetensors file without hrinv latent metadata (expected key 'hrinv' "
                                  f"with format {LATENT_FORMAT!r}); is it a generator or VGG weights file?")
        try:
            meta = json.loads(raw)
        except (ValueError, RecursionError):
            raise LatentFileError(f"{path}: the 'hrinv' metadata is not valid JSON (or nests too deeply); the file is "
                                  f"damaged") from None
        if not isinstance(meta, dict) or meta.get("format") != LATENT_FORMAT:
            got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise LatentFileError(f"{path} holds {got!r}, not a latent ({LATENT_FORMAT!r}); load generators with "
                                  f"hrinv.load_generator")
        version = meta.get("version", 0)
        if not isinstance(version, int) or version > _VERSION:
            raise LatentFileError(f"{path} is latent format version {str(version)[:20]}, newer than this hrinv "
                                  f"understands ({_VERSION}); update hrinv")
        for key in ("settings", "metrics"):
            if not isinstance(meta.get(key, {}), dict) or _depth(meta.get(key, {})) > _MAX_META_DEPTH:
                raise LatentFileError(f"{path}: metadata {key!r} must be a JSON object at most {_MAX_META_DEPTH} "
                                      f"levels deep; the file is damaged")
        if "ws" not in tensors:
            raise ShapeError(f"{path} has no 'ws' tensor (tensors: {names[:8]})")
        ws = tensors["ws"]
        if not ws.is_floating_point():
            raise LatentFileError(f"{path}: 'ws' must be floating point, got {ws.dtype}")
        layers = meta.get("noise_layers")
        noise = None
        if layers is not None:
            if not isinstance(layers, list) or not all(isinstance(k, str) for k in layers):
                raise LatentFileError(f"{path}: metadata 'noise_layers' must be a list of layer names")
            missing = [k for k in layers if f"noise.{k}" not in tensors]
            if missing:
                raise LatentFileError(f"{path}: the metadata lists noise layers {missing[:4]} that the file does not "
                                      f"hold; the file is damaged")
            noise = {k: tensors[f"noise.{k}"] for k in layers}
        fp = meta.get("generator_fingerprint", "")
        return cls(ws, noise, fp if isinstance(fp, str) else "", meta.get("settings", {}), meta.get("metrics", {}))

    @classmethod
    def _load_npz(cls, path: Path, allow_pickled_noise: bool) -> "Latent":
        with zipfile.ZipFile(path) as zf:
            keys = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
            if "w" not in keys:
                raise ShapeError(f"{path} has no array 'w' (keys: {keys[:8]}); expected an NVIDIA projected_w.npz or "
                                 f"an HRInversion *_w.npz / *_wn.npz")
            w, _ = _read_npy_member(zf, "w", path)
            if w is None:
                raise UnsafeCheckpointError(f"{path}: array 'w' is pickled, refused (expected float32)")
            bufs = None
            if "noise_bufs" in keys:
                if not allow_pickled_noise:
                    raise UnsafeCheckpointError(
                        f"{path} stores its noise maps as a pickled dict ('noise_bufs'), which we do not unpickle by "
                        f"default. Load it with Latent.load(path, allow_pickled_noise=True) (CLI/node: the 'allow "
                        f"pickled noise' option) to decode it with a restricted numpy-only unpickler, or use the "
                        f"W+ alone from the matching *_w.npz.")
                bufs = _read_pickled_npz_member(zf, "noise_bufs", path)
        if w.dtype.kind != "f":
            raise ShapeError(f"{path}: 'w' must be floating point, got {w.dtype}")
        if w.ndim == 2:
            w = w[None]
        if w.ndim != 3:
            raise ShapeError(f"{path}: 'w' must be [1, num_ws, w_dim] (or [num_ws, w_dim]), got {w.shape}")
        ws = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
        noise = None
        if bufs is not None:
            noise = {}
            for name, arr in bufs.items():
                layer = str(name)[:100]
                layer = layer.removeprefix("synthesis.")
                layer = layer.removesuffix(".noise_const")
                a = np.asarray(arr, dtype=np.float32)
                if a.ndim < 2 or a.size != a.shape[-1] * a.shape[-2]:
                    raise ShapeError(f"{path}: noise map {layer!r} has shape {a.shape}, expected [res, res]")
                a = a.reshape(a.shape[-2:])
                noise[layer] = torch.from_numpy(a.copy())[None, None].expand(ws.shape[0], 1, *a.shape).clone()
        source = "hrinversion" if bufs is not None or path.stem.endswith(("_w", "_wn")) else "nvidia"
        return cls(ws, noise, "", {"source": source, "file": path.name}, {})


# ----------------------------------------------------------------------------------------------------------------------
# Helpers


def _is_per_sample(value, batch: int) -> bool:
    return isinstance(value, list) and len(value) == batch


# No latent array is anywhere near this (1000 samples of 18 x 512 float32 is 37 MB).
MAX_LATENT_FILE_BYTES = 256 * 2 ** 20
_MAX_META_DEPTH = 32


def _depth(obj, limit=_MAX_META_DEPTH + 1):
    """Nesting depth of a JSON value (iterative; stops counting at ``limit``)."""
    stack, deepest = [(obj, 1)], 0
    while stack:
        x, d = stack.pop()
        deepest = max(deepest, d)
        if deepest >= limit:
            return deepest
        if isinstance(x, dict):
            stack.extend((v, d + 1) for v in x.values())
        elif isinstance(x, list):
            stack.extend((v, d + 1) for v in x)
    return deepest


def _npy_member(zf: zipfile.ZipFile, key: str, path: Path):
    """The bytes of ``key.npy`` (size checked against the zip directory and the cap before reading) and its header."""
    from numpy.lib import format as npformat

    info = zf.getinfo(f"{key}.npy")
    if info.file_size > MAX_LATENT_FILE_BYTES:
        raise LatentFileError(f"{path}: {key!r} declares {info.file_size} bytes, more than any latent "
                              f"(limit {MAX_LATENT_FILE_BYTES}); the file is damaged or crafted")
    with zf.open(info) as member:
        raw = member.read(MAX_LATENT_FILE_BYTES + 1)
    if len(raw) > MAX_LATENT_FILE_BYTES:
        raise LatentFileError(f"{path}: {key!r} is larger than any latent; the file is damaged or crafted")
    fp = io.BytesIO(raw)
    version = npformat.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = npformat.read_array_header_1_0(fp)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = npformat.read_array_header_2_0(fp)
    else:
        raise LatentFileError(f"{path}: {key!r} is .npy format {version}, which we do not read")
    return raw, fp, shape, fortran, dtype


def _read_npy_member(zf: zipfile.ZipFile, key: str, path: Path):
    """``(array, header)`` of a numeric ``key.npy`` rebuilt from its bytes (``None`` when it is an object array)."""
    raw, fp, shape, fortran, dtype = _npy_member(zf, key, path)
    if dtype.hasobject:
        return None, (shape, dtype)
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise LatentFileError(f"{path}: {key!r} has dtype {dtype}; a latent is a plain float array")
    data = raw[fp.tell():]
    count = math.prod(shape)
    if count * dtype.itemsize != len(data):
        raise LatentFileError(f"{path}: {key!r} declares shape {shape} ({dtype}, {count * dtype.itemsize} bytes) but "
                              f"holds {len(data)} bytes; the file is truncated or damaged")
    arr = np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order="F" if fortran else "C")
    return arr.copy(), (shape, dtype)


def _read_pickled_npz_member(zf: zipfile.ZipFile, key: str, path: Path) -> dict:
    """Decode the object array ``key`` of an ``.npz`` with :func:`hrinv.io.safe_unpickle.numpy_only_load`."""
    from .io.safe_unpickle import numpy_only_load

    raw, fp, _shape, _fortran, dtype = _npy_member(zf, key, path)
    if not dtype.hasobject:
        raise ShapeError(f"{path}: {key!r} was expected to be a pickled dict, got a plain {dtype} array")
    try:
        obj = numpy_only_load(io.BytesIO(raw[fp.tell():]), what=f"{path}: {key!r}")
    except UnsafeCheckpointError:
        raise
    except HRInvError as e:
        raise LatentFileError(f"{path}: could not decode {key!r}: {e}") from None
    if isinstance(obj, list) and len(obj) == 1:
        obj = obj[0]
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise ShapeError(f"{path}: {key!r} must hold a dict of name -> array, got {type(obj).__name__}")
    return obj
