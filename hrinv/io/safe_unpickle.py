"""A restricted unpickler: reads network pickles as data and never runs anything from them.

Python's ``pickle`` can call any importable function while loading (``GLOBAL`` + ``REDUCE``), which is how a
malicious ``.pkl`` runs code. NVIDIA's snapshots add a second vector: every network module carries the source of its
Python module (``module_src``) and the stock loader ``exec``s it. :class:`RestrictedUnpickler` resolves every global
through a small allow-list of *our own* stand-ins and refuses everything else with
:class:`~hrinv.errors.UnsafeCheckpointError` before anything is called:

==========================================================  ===========================================================
global in the file                                          what we use instead
==========================================================  ===========================================================
``torch_utils.persistence._reconstruct_persistent_obj``     :class:`PersistentObject` (class name + ``__dict__``);
                                                            ``module_src`` is described, never executed
``dnnlib.util.EasyDict``                                    a plain ``dict`` subclass
``dnnlib.tflib.network.Network`` (TensorFlow pickles)       :class:`TFNetworkStub` (a record of the network's state)
``collections.OrderedDict``, ``builtins.set/frozenset``     the builtins themselves (no side effects; their argument
                                                            is already in memory, so bounded by the file)
``builtins.bytearray``                                      only from bytes / a latin-1 string, never from a size
``_codecs.encode`` (protocol-2 bytes)                       ``str.encode`` restricted to latin-1
``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter`` our re-implementation over an already-loaded storage
``torch._tensor._rebuild_from_type_v2`` (+ ``torch.Tensor``,  only around the two rebuild functions above
``torch.nn.parameter.Parameter`` as type markers)
``torch.storage._load_from_bytes``                          ``torch.load(..., weights_only=True)`` on the bytes
``numpy.dtype``, ``numpy(._)core.multiarray.scalar`` /      numeric dtypes only, rebuilt with ``np.frombuffer``
``_reconstruct``, ``numpy.ndarray``
==========================================================  ===========================================================

Hardening against hostile files:

* ``EXT1/EXT2/EXT4`` opcodes are refused by a pre-scan (:func:`prescan_pickle`, ``pickletools.genops`` over a reader
  that never returns more than the file holds): ``_pickle`` would serve them from ``copyreg``'s extension cache
  without calling ``find_class``. The pre-scan also checks every declared length against the file, so a truncated
  or lying file is refused before anything is built.
* ``find_class`` never hands out one of our module-level objects: functions come wrapped in a fresh
  :class:`_Global` per load, classes as a fresh subclass per load, so a ``BUILD`` opcode applied to a global can only
  touch a throw-away object (or is refused), never the process (a later, benign load is unaffected).
* Records (:class:`PersistentObject`, markers, wrappers) refuse ``BUILD``; the numpy stand-ins only accept the state
  layout numpy writes.
* No stand-in allocates from a declared size: ``bytearray`` is only rebuilt from bytes that are in the file, numpy
  arrays and tensors must fit the bytes / storage they come with (no stride-0 or overlapping views bigger than their
  storage), and the configuration tree is copied with a node budget.
"""

import ast
import hashlib
import io
import logging
import math
import os
import pickle
import pickletools
import warnings
from collections import OrderedDict

import numpy as np
import torch

from ..errors import CheckpointCorruptError, CheckpointFormatError, UnsafeCheckpointError

__all__ = [
    "PersistentObject",
    "RestrictedUnpickler",
    "TFNetworkStub",
    "check_tensor_views",
    "check_torch_zip",
    "describe_module_source",
    "materialize",
    "numpy_only_load",
    "prescan_pickle",
    "safe_load_pickle",
    "torch_load_safe",
]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------------
# Stand-ins for the globals a network pickle may reference.

class PersistentObject:
    """What ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` stands for: a record, not an instance.

    Attributes:
        class_name: e.g. ``"Generator"``, ``"SynthesisLayer"``.
        state: the module's ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``, ``_init_kwargs``, ...).
        version: the persistence format version written in the file.
    """

    __slots__ = ("class_name", "state", "version", "source")

    def __init__(self, class_name, state, version, source=None):
        self.class_name = class_name
        self.state = state
        self.version = version
        self.source = source  # the embedded module_src (a string, never executed; see describe_module_source)

    def __setstate__(self, state):
        raise UnsafeCheckpointError("refused to load: the pickle applies BUILD to a persistent network record, which "
                                    "a real snapshot never does (nothing was executed)")

    def __repr__(self):
        return f"PersistentObject({self.class_name!r})"


def _reconstruct_persistent_obj(meta):
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise CheckpointFormatError(f"expected a persistent-class record (dict with type='class') in the pickle, got "
                                    f"{type(meta).__name__}; this is not a stylegan2-ada-pytorch snapshot we can read")
    class_name = meta.get("class_name")
    state = meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise CheckpointFormatError("a persistent-class record lacks 'class_name' or 'state'; the snapshot is damaged "
                                    "or of an unknown layout")
    src = meta.get("module_src", "")
    if not isinstance(src, str):
        raise CheckpointFormatError(f"'module_src' of persistent class {class_name!r} is not a string")
    return PersistentObject(class_name, state, meta.get("version"), src)


class TFNetworkStub:
    """What ``dnnlib.tflib.network.Network`` stands for in a legacy TensorFlow pickle: the pickled state only.

    Attributes are those of the TF ``Network.__getstate__`` dict (``version``, ``name``, ``static_kwargs``,
    ``components``, ``variables`` = list of ``(name, ndarray)``, ``build_func_name``, ...). ``build_module_src`` is
    kept as a string and never executed.
    """

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise CheckpointFormatError("a TensorFlow Network record in the pickle has no state dict")
        self.__dict__.update(state)

    def __repr__(self):
        return f"TFNetworkStub({self.__dict__.get('name')!r})"


class _EasyDict(dict):
    """``dnnlib.util.EasyDict`` read as a plain dict (``materialize`` turns it into ``dict``)."""


def _codecs_encode(text, encoding="utf-8"):
    # Protocol-2 pickles write bytes as _codecs.encode(<latin-1 str>, 'latin1').
    if not isinstance(text, str) or encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise UnsafeCheckpointError(f"the pickle calls _codecs.encode with encoding {encoding!r}; only latin-1 byte "
                                    f"strings are expected in a network pickle. Nothing was executed")
    return text.encode("latin-1")


def _bytearray(source=b"", encoding=None, errors=None):
    """``bytearray`` as pickles write it (protocol 2: ``(str, 'latin-1')``; 3+: ``(bytes,)``), never from a size.

    ``bytearray(3_000_000_000)`` would zero 3 GB before anything could check it; a network pickle never needs that.
    """
    if isinstance(source, (bytes, bytearray)) and encoding is None:
        return bytearray(source)
    if isinstance(source, str) and isinstance(encoding, str):
        return bytearray(_codecs_encode(source, encoding))
    raise UnsafeCheckpointError(f"refused to load: the pickle builds a bytearray from a {type(source).__name__} "
                                f"(e.g. a size), not from bytes stored in the file; nothing was executed")


_NUMERIC_KINDS = "biufc"


class _NpDtype:
    """``numpy.dtype(name, align, copy)`` followed by ``BUILD(state)``: numeric dtypes only."""

    kinds = _NUMERIC_KINDS

    def __init__(self, name, align=False, copy=True):
        if not isinstance(name, str) or len(name) > 8:
            raise CheckpointFormatError(f"the pickle holds a numpy dtype {str(name)[:20]!r} we do not read")
        try:
            dt = np.dtype(name)
        except TypeError as e:
            raise CheckpointFormatError(f"the pickle holds a numpy dtype {name!r} we do not read: {e}") from None
        if dt.kind not in self.kinds:
            raise CheckpointFormatError(f"the pickle holds a numpy dtype {name!r}; only numeric arrays and scalars "
                                        f"are expected in a network pickle")
        self.dtype = dt

    def __setstate__(self, state):
        # numpy writes (version, byteorder, subdtype, names, fields, elsize, alignment, flags); only the byte order
        # of a plain numeric dtype matters to us
        if not (isinstance(state, tuple) and len(state) >= 2 and state[1] in ("<", ">", "|", "=")):
            raise CheckpointFormatError("a numpy dtype in the pickle has a state layout numpy does not write; the file "
                                        "is damaged or crafted")
        if len(state) >= 5 and (state[2] is not None or state[3] is not None or state[4] is not None):
            raise CheckpointFormatError("the pickle holds a structured or sub-array numpy dtype; only plain numeric "
                                        "arrays are expected in a network pickle")
        if state[1] in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(state[1])


def _as_dtype(dt):
    if isinstance(dt, _NpDtype):
        return dt.dtype
    raise CheckpointFormatError(f"expected a numpy dtype in the pickle, got {type(dt).__name__}")


def _np_scalar(dtype, data=None):
    dt = _as_dtype(dtype)
    if not isinstance(data, (bytes, bytearray)) or len(data) != dt.itemsize:
        data = data if isinstance(data, (bytes, bytearray)) else b""
        raise CheckpointCorruptError(f"a numpy {dt} scalar in the pickle has {len(data or b'')} bytes instead of "
                                     f"{dt.itemsize}; the file is damaged")
    return np.frombuffer(bytes(data), dtype=dt)[0].copy()


class _ObjectArray:
    """An object-dtype numpy array as plain Python: ``materialize`` gives its element (0-d) or a list."""

    __slots__ = ("items", "scalar")

    def __init__(self, items, scalar):
        self.items, self.scalar = items, scalar


class _NpDtypeWithObject(_NpDtype):
    kinds = _NUMERIC_KINDS + "O"


class _NDArrayMarker:
    """Stands for the ``numpy.ndarray`` class argument of ``_reconstruct``."""


class _NpArrayStub:
    """``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`` + ``BUILD(state)``; see :func:`materialize`."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        # state = (version, shape, dtype, is_fortran, raw bytes); applied once, to a fresh stub
        if self.array is not None:
            raise UnsafeCheckpointError("refused to load: the pickle sets the state of one numpy array twice; nothing "
                                        "was executed")
        if not (isinstance(state, tuple) and len(state) == 5):
            raise CheckpointFormatError("a numpy array in the pickle has an unexpected state layout")
        _, shape, dtype, fortran, raw = state
        dt = _as_dtype(dtype)
        if dt.kind == "O":  # only through numpy_only_load: a small list of Python objects, kept as a list
            if not isinstance(raw, list) or not isinstance(shape, (tuple, list)) or len(shape) > 1 or \
                    len(raw) != (shape[0] if shape else 1) or len(raw) > 1024:
                raise CheckpointFormatError("an object array in the pickle has an unexpected state layout")
            self.array = _ObjectArray(raw, scalar=not shape)
            return
        if not isinstance(raw, (bytes, bytearray)):
            raise CheckpointFormatError("a numpy array in the pickle is not stored as raw bytes (object arrays are "
                                        "not read)")
        if not isinstance(shape, (tuple, list)) or len(shape) > 32 or \
                not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2 ** 62 for n in shape):
            raise CheckpointFormatError(f"a numpy array in the pickle has an invalid shape {str(shape)[:80]}")
        shape = tuple(shape)
        count = math.prod(shape)  # exact Python ints: no int64 overflow
        if count * dt.itemsize != len(raw):
            raise CheckpointCorruptError(f"a numpy array of shape {shape} ({dt}) in the pickle has {len(raw)} bytes "
                                         f"instead of {count * dt.itemsize}; the file is damaged")
        arr = np.frombuffer(bytes(raw), dtype=dt, count=count)
        self.array = arr.reshape(shape, order="F" if fortran else "C").copy()


def _np_reconstruct(cls, shape=(0,), typecode=b"b"):
    if _target(cls) is not _NDArrayMarker:
        raise UnsafeCheckpointError("the pickle asks numpy to reconstruct a class other than ndarray; refused. "
                                    "Nothing was executed")
    return _NpArrayStub()


def _np_frombuffer(buf, dtype, shape, order):
    dt = _as_dtype(dtype)
    if not isinstance(buf, (bytes, bytearray)) or len(buf) % dt.itemsize or order not in ("C", "F"):
        raise CheckpointCorruptError("a numpy array in the pickle (_frombuffer) has no matching raw bytes; the file is "
                                     "damaged")
    arr = np.frombuffer(bytes(buf), dtype=dt)
    try:
        return arr.reshape(tuple(int(n) for n in shape), order=order).copy()
    except (TypeError, ValueError) as e:
        raise CheckpointCorruptError(f"a numpy array in the pickle does not fit its bytes ({e})") from None


def _storage_of(obj):
    if isinstance(obj, torch.storage.TypedStorage):
        return obj._untyped_storage, obj.dtype
    raise CheckpointFormatError(f"expected a tensor storage inside the pickle, got {type(obj).__name__}")


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    untyped, dtype = _storage_of(storage)
    try:
        size, stride, offset = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(storage_offset)
        numel = untyped.nbytes() // torch.empty(0, dtype=dtype).element_size()
        if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size + stride):
            raise ValueError(f"size {size} / stride {stride} / offset {offset} are invalid")
        if all(s > 0 for s in size):  # set_ would silently grow the storage with uninitialised memory
            last = offset + sum((s - 1) * st for s, st in zip(size, stride))
            if last >= numel:
                raise ValueError(f"it needs element {last} of a storage of {numel}")
        if math.prod(size) > max(numel, 1):  # a stride-0 / overlapping view bigger than its storage: an allocation
            raise ValueError(f"it declares {math.prod(size)} elements over a storage of {numel}")  # bomb on copy
        t = torch.empty(0, dtype=dtype).set_(untyped, offset, size, stride)
    except (RuntimeError, TypeError, ValueError) as e:
        raise CheckpointCorruptError(f"a tensor in the pickle does not fit its storage ({e}); the file is damaged") \
            from None
    return t  # hooks and requires_grad are dropped on purpose: we only want the values


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, torch.Tensor):
        raise CheckpointFormatError(f"a parameter in the pickle wraps {type(data).__name__}, not a tensor")
    return data


class _TensorTypeMarker:
    """Stands for ``torch.Tensor`` / ``torch.nn.Parameter`` as the type argument of ``_rebuild_from_type_v2``."""


def _target(obj):
    """The module-level stand-in behind a per-load wrapper (function) or fresh subclass (class), else ``obj``."""
    if isinstance(obj, _Global):
        return obj.fn
    if isinstance(obj, type) and getattr(obj, "_hrinv_fresh", False):
        return obj.__mro__[1]
    return obj


def _rebuild_from_type_v2(func, new_type, args, state=None):
    # torch >= 1.8 writes tensors that carry Python attributes as _rebuild_from_type_v2(func, type, args, state)
    if _target(func) not in (_rebuild_tensor, _rebuild_parameter) or _target(new_type) is not _TensorTypeMarker \
            or not isinstance(args, tuple):
        raise UnsafeCheckpointError("the pickle rebuilds a tensor through a function or type outside the allow-list; "
                                    "refused. Nothing was executed")
    return _target(func)(*args)  # the Python attributes (state) are dropped: only values are needed


def _load_from_bytes(b):
    if not isinstance(b, (bytes, bytearray)):
        raise CheckpointFormatError("torch.storage._load_from_bytes got something other than bytes")
    return torch_load_safe(io.BytesIO(bytes(b)), what="a tensor storage inside the pickle")


class _Global:
    """A per-load wrapper around one allow-listed function: calls go through, ``BUILD`` is refused.

    ``find_class`` hands these out instead of our module-level functions, so a pickle can never set attributes
    (``__defaults__``, ``__dict__``, ...) on an object that outlives the load.
    """

    __slots__ = ("fn", "name")

    def __init__(self, fn, name):
        self.fn, self.name = fn, name

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __setstate__(self, state):
        raise UnsafeCheckpointError(f"refused to load: the pickle applies BUILD to the global {self.name!r} (it tries "
                                    f"to change a function of the loader); nothing was executed")

    def __reduce__(self):  # pragma: no cover - never pickled
        raise TypeError("not picklable")


def _fresh_class(cls, name):
    """A throw-away subclass of one of our stand-in classes (``BUILD`` on it cannot reach ``cls``)."""
    return type(cls.__name__, (cls,), {"_hrinv_fresh": True, "__module__": __name__,
                                       "__qualname__": f"{cls.__qualname__}<{name}>"})


# numpy names (1.x and 2.x module paths), shared with the latent reader (numpy_only_load)
_NUMPY_GLOBALS = {("numpy", "dtype"): _NpDtype, ("numpy", "ndarray"): _NDArrayMarker}
for _core in ("numpy.core", "numpy._core"):
    _NUMPY_GLOBALS[(f"{_core}.multiarray", "scalar")] = _np_scalar
    _NUMPY_GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = _np_reconstruct
    _NUMPY_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = _np_frombuffer


def _allowed_globals():
    allowed = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): _EasyDict,
        ("dnnlib", "EasyDict"): _EasyDict,
        ("dnnlib.tflib.network", "Network"): TFNetworkStub,
        ("collections", "OrderedDict"): OrderedDict,
        ("_codecs", "encode"): _codecs_encode,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _load_from_bytes,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        ("torch", "Tensor"): _TensorTypeMarker,
        ("torch.nn.parameter", "Parameter"): _TensorTypeMarker,
        **_NUMPY_GLOBALS,
    }
    for b in ("builtins", "__builtin__"):
        # C types (immutable: BUILD on them fails); their argument is already in memory, i.e. bounded by the file
        allowed.update({(b, "set"): set, (b, "frozenset"): frozenset, (b, "complex"): complex,
                        (b, "bytearray"): _bytearray})
    return allowed


_ALLOWED = _allowed_globals()

# opcodes that fetch objects from copyreg's process-wide extension registry without calling find_class
_EXT_OPCODES = {"EXT1", "EXT2", "EXT4"}


class _BoundedReader:
    """A read-only view of a binary file that never returns (or allocates for) more than the file holds."""

    def __init__(self, f, size):
        self.f, self.left = f, size

    def read(self, n=-1):
        n = self.left if n is None or n < 0 else min(n, self.left)
        out = self.f.read(n)
        self.left -= len(out)
        return out

    def readline(self):
        out = self.f.readline(self.left)
        self.left -= len(out)
        return out


def prescan_pickle(f, what="the file"):
    """Walk the opcodes of one pickle (``pickletools.genops``) without building anything; restore the position.

    Refuses ``EXT1/EXT2/EXT4`` (served from ``copyreg``'s extension cache without ``find_class``), and checks that
    every declared length fits in the file (a truncated or lying file is refused before any object is built).

    Raises:
        UnsafeCheckpointError: an EXT opcode. CheckpointCorruptError: truncated / not a pickle.
    """
    start = f.tell()
    end = f.seek(0, io.SEEK_END)
    f.seek(start)
    try:
        for op, _arg, pos in pickletools.genops(_BoundedReader(f, end - start)):
            if op.name in _EXT_OPCODES:
                raise UnsafeCheckpointError(
                    f"refused to load {what}: it uses the pickle opcode {op.name} (at byte {pos}), which fetches an "
                    f"object from Python's process-wide extension registry instead of naming it; network pickles "
                    f"never do that. Nothing was executed")
    except UnsafeCheckpointError:
        raise
    except (ValueError, EOFError, OverflowError, MemoryError, UnicodeDecodeError) as e:
        raise CheckpointCorruptError(f"{what} is not a complete pickle ({type(e).__name__}: {str(e)[:160]}); it is "
                                     f"truncated or damaged. Download or copy it again") from None
    finally:
        f.seek(start)


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come only from the allow-list above (see the module docstring).

    Any other global, and any persistent id, raises :class:`~hrinv.errors.UnsafeCheckpointError` naming it; nothing
    from the file is imported or called. Every global is a fresh object of this load (see :class:`_Global`).
    """

    allowed = _ALLOWED
    kind = "a StyleGAN2 network pickle"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._fresh = {}

    def find_class(self, module, name):
        key = (module, name)
        if key in self._fresh:
            return self._fresh[key]
        fn = self.allowed.get(key)
        if fn is None:
            raise UnsafeCheckpointError(
                f"refused to load: the pickle references the global '{module}.{name}', which is not on the allow-list "
                f"of {self.kind} (nothing was imported or executed). If this file is a network from a "
                f"source you trust in a layout we do not read, convert it with its own code into a state dict and "
                f"save that as .safetensors")
        if fn in (set, frozenset, complex, OrderedDict):
            out = fn  # C types: immutable
        elif isinstance(fn, type):
            out = _fresh_class(fn, f"{module}.{name}")
        else:
            out = _Global(fn, f"{module}.{name}")
        self._fresh[key] = out
        return out

    def persistent_load(self, pid):
        raise UnsafeCheckpointError(f"refused to load: the pickle uses a persistent id ({str(pid)[:80]!r}), which a "
                                    f"network pickle does not; nothing was executed")


def _as_file(data):
    return io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data


def _unpickle(unpickler_cls, data, what):
    f = _as_file(data)
    prescan_pickle(f, what)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
            obj = materialize(unpickler_cls(f).load())
    except (UnsafeCheckpointError, CheckpointFormatError, CheckpointCorruptError):
        raise
    except RecursionError:
        raise CheckpointCorruptError(f"{what} nests objects too deeply to be a network pickle; it is damaged or not "
                                     f"a checkpoint") from None
    except MemoryError:
        raise CheckpointCorruptError(f"{what} asks for more memory than is available while decoding; it is damaged "
                                     f"or not a network pickle") from None
    except Exception as e:  # noqa: BLE001 - every decoding failure of untrusted bytes becomes a typed error
        raise CheckpointCorruptError(f"{what} could not be decoded as a pickle ({type(e).__name__}: {str(e)[:200]}); "
                                     f"it is truncated or damaged. Download or copy it again") from None
    return obj


def safe_load_pickle(data, what="the file"):
    """Unpickle ``data`` (bytes or a seekable binary file object) with :class:`RestrictedUnpickler`, then
    :func:`materialize`. The opcodes are pre-scanned first (:func:`prescan_pickle`).

    Args:
        data: the pickle bytes, or a readable, seekable binary file object.
        what: how to name the source in error messages.

    Returns:
        The unpickled object tree (dicts, lists, tensors, numpy values, :class:`PersistentObject`, ...).

    Raises:
        UnsafeCheckpointError: a global outside the allow-list, an EXT opcode, BUILD on a global or record.
        CheckpointCorruptError: truncated or damaged data.
        CheckpointFormatError: readable but of a shape we do not read.
    """
    return _unpickle(RestrictedUnpickler, data, what)


class _NumpyOnlyUnpickler(RestrictedUnpickler):
    """Rebuilds numpy arrays / scalars (from their bytes, with our stand-ins) and plain containers, nothing else."""

    allowed = {**_NUMPY_GLOBALS, ("numpy", "dtype"): _NpDtypeWithObject, ("collections", "OrderedDict"): OrderedDict}
    kind = "a pickled dict of numpy arrays"


def numpy_only_load(data, what="the pickled data"):
    """Unpickle a tree of numpy arrays (e.g. HRInversion's pickled ``noise_bufs``) without giving the pickle any real
    numpy constructor: arrays are rebuilt from their raw bytes with ``np.frombuffer`` (numeric dtypes only).

    Raises:
        UnsafeCheckpointError, CheckpointCorruptError, CheckpointFormatError (as :func:`safe_load_pickle`).
    """
    return _unpickle(_NumpyOnlyUnpickler, data, what)


def materialize(obj, max_nodes=10_000_000):
    """Replace the numpy/EasyDict stand-ins in an unpickled tree by real values (in place where possible).

    ``_NpArrayStub`` -> ``np.ndarray``; ``EasyDict`` -> ``dict``. Shared and cyclic references are preserved. The walk
    is iterative where it matters and visits every object once (no exponential blow-up through shared references).
    """
    memo = {}
    budget = [max_nodes]

    def walk(x):
        key = id(x)
        if key in memo:
            return memo[key]
        budget[0] -= 1
        if budget[0] < 0:
            raise CheckpointCorruptError(f"the pickle holds more than {max_nodes} objects; it is not a network pickle")
        if isinstance(x, _NpArrayStub):
            if x.array is None:
                raise CheckpointCorruptError("a numpy array in the pickle has no data (BUILD missing); the file is "
                                             "damaged")
            if isinstance(x.array, _ObjectArray):
                items = [None] * len(x.array.items)
                memo[key] = items
                items[:] = [walk(v) for v in x.array.items]
                out = items[0] if x.array.scalar else items
                memo[key] = out
                return out
            memo[key] = x.array
            return x.array
        if isinstance(x, _EasyDict):
            out = {}
            memo[key] = out
            for k, v in x.items():
                out[k] = walk(v)
            return out
        if isinstance(x, dict):
            memo[key] = x
            for k in list(x.keys()):
                x[k] = walk(x[k])
            return x
        if isinstance(x, list):
            memo[key] = x
            for i, v in enumerate(x):
                x[i] = walk(v)
            return x
        if isinstance(x, tuple):
            out = tuple(walk(v) for v in x)
            memo[key] = out
            return out
        if isinstance(x, PersistentObject):
            memo[key] = x
            x.state = walk(x.state)
            return x
        if isinstance(x, TFNetworkStub):
            memo[key] = x
            for k in list(x.__dict__):
                x.__dict__[k] = walk(x.__dict__[k])
            return x
        if isinstance(x, (_Global, _NDArrayMarker, _TensorTypeMarker)) or \
                (isinstance(x, type) and getattr(x, "_hrinv_fresh", False)):
            raise UnsafeCheckpointError("refused to load: the pickle returns one of the loader's globals as data, "
                                        "which a network pickle never does; nothing was executed")
        memo[key] = x
        return x

    return walk(obj)


# ----------------------------------------------------------------------------------------------------------------------
# Embedded source: described, never executed, never judged

_MAX_PARSE_CHARS = 2_000_000  # the real networks.py is ~40 kB


def describe_module_source(src):
    """What an embedded ``module_src`` / ``build_module_src`` holds, for the user's information. Never executes it.

    We rebuild networks ourselves, so the source is never run here, whatever it contains. NVIDIA's own loader (and
    TensorFlow's ``dnnlib``) *would* execute it: a static check cannot tell benign from hostile Python reliably
    (aliasing, ``getattr``, decorators, default arguments, f-strings, ... all run code), so we do not pretend to.

    Returns:
        ``{"chars", "sha256", "imports" (top-level modules imported, sorted, at most 50), "parsed"}`` or ``None``
        for an empty source.
    """
    if not isinstance(src, str) or not src.strip():
        return None
    info = {"chars": len(src), "sha256": hashlib.sha256(src.encode("utf-8", "replace")).hexdigest(),
            "imports": [], "parsed": False}
    if len(src) <= _MAX_PARSE_CHARS:
        try:
            tree = ast.parse(src.lstrip("\ufeff"))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return info
        mods = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                mods.add(node.module.split(".")[0])
        info["imports"], info["parsed"] = sorted(mods)[:50], True
    return info


EMBEDDED_SOURCE_WARNING = ("{what} embeds Python source ({n} module(s), e.g. {chars} characters importing {imports}). "
                           "hrinv never runs it (the network is rebuilt from its weights), but NVIDIA's/TensorFlow's "
                           "own loaders would execute it: only open this file with those tools if you trust its "
                           "origin.")


# ----------------------------------------------------------------------------------------------------------------------
# torch.load, weights only

def check_torch_zip(path, what="the file"):
    """Refuse a ``torch.save`` zip whose records inflate to much more than the file (a zip bomb).

    ``torch.save`` stores its records uncompressed, so a real checkpoint's records add up to about its own size.
    """
    import zipfile
    try:
        if not zipfile.is_zipfile(path):
            return
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as z:
            total = sum(i.file_size for i in z.infolist())
            packed = [i.filename for i in z.infolist()
                      if i.compress_type != zipfile.ZIP_STORED and i.file_size > 1 << 20]
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as e:
        raise CheckpointCorruptError(f"{what} is a damaged zip archive ({e}); it is truncated or damaged") from None
    if total > 2 * size + (1 << 20) or packed:
        raise CheckpointCorruptError(f"{what}: its zip records declare {total} bytes (uncompressed) in a {size}-byte "
                                     f"file{f', compressed: {packed[:2]}' if packed else ''}; torch.save stores records "
                                     f"uncompressed, so this is a zip bomb or a damaged file. Refused before reading")


def check_tensor_views(obj, what="the file", max_nodes=1_000_000):
    """Refuse tensors that declare more elements than their storage holds (stride-0 / overlapping views).

    Such a view costs nothing to load but turns into a huge allocation as soon as it is copied (``.contiguous()``,
    ``.to(dtype)``): a few bytes in the file declaring 20000 x 20000 would need 1.6 GB.
    """
    stack, seen = [obj], set()
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if len(seen) > max_nodes:
            raise CheckpointCorruptError(f"{what} holds more than {max_nodes} objects; it is not a weights file")
        if isinstance(x, torch.Tensor):
            need = x.numel() * x.element_size()
            have = x.untyped_storage().nbytes()
            if need > max(have, x.element_size()):
                raise CheckpointCorruptError(
                    f"{what} holds a tensor of shape {list(x.shape)[:6]} that declares {need} bytes over a storage of "
                    f"{have} bytes (a stride-0 view); a weights file never does that. The file is damaged or crafted")
        elif isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
        elif hasattr(x, "__dict__") and not isinstance(x, type):
            stack.extend(vars(x).values())


def torch_load_safe(f, what="the file", extra_safe_globals=()):
    """``torch.load(f, weights_only=True, map_location="cpu")`` with typed errors.

    Args:
        f: a path or a binary file object (zip or legacy ``torch.save`` stream).
        what: how to name the source in error messages.
        extra_safe_globals: classes additionally allowed for this call only (e.g. ``argparse.Namespace``), via
            ``torch.serialization.safe_globals`` (a local context; the process-wide list is untouched).

    Raises:
        UnsafeCheckpointError: the file references a global outside torch's weights-only allow-list (named).
        CheckpointCorruptError: truncated or damaged data.
    """
    try:
        if isinstance(f, (str, os.PathLike)):
            check_torch_zip(f, what)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
            with torch.serialization.safe_globals(list(extra_safe_globals)):
                obj = torch.load(f, map_location="cpu", weights_only=True)
        check_tensor_views(obj, what)
        return obj
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg or "weights_only" in msg:
            import re
            m = re.search(r"GLOBAL ([\w.]+)", msg)
            name = m.group(1) if m else None
            detail = f"the global '{name}'" if name else "an operation outside the weights-only allow-list"
            raise UnsafeCheckpointError(
                f"refused to load {what}: it references {detail}, which a plain weights file does not need "
                f"(torch.load(weights_only=True) refused it; nothing was executed). If the file is from a source you "
                f"trust, load it with its own code and save the network's state dict as .safetensors") from None
        raise CheckpointCorruptError(f"{what} could not be decoded ({e}); it is truncated or damaged") from None
    except (UnsafeCheckpointError, CheckpointFormatError, CheckpointCorruptError):
        raise
    except Exception as e:  # noqa: BLE001
        raise CheckpointCorruptError(f"{what} could not be read by torch.load ({type(e).__name__}: "
                                     f"{str(e).splitlines()[0] if str(e) else ''}); it is truncated or damaged. "
                                     f"Download or copy it again") from None
