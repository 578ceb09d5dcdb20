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
                                                            ``module_src`` is only parsed (``ast``), never executed
``dnnlib.util.EasyDict``                                    a plain ``dict`` subclass
``dnnlib.tflib.network.Network`` (TensorFlow pickles)       :class:`TFNetworkStub` (a record of the network's state)
``collections.OrderedDict``, ``builtins.set/frozenset``     the builtins themselves (no side effects)
``_codecs.encode`` (protocol-2 bytes)                       ``str.encode`` restricted to latin-1
``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter`` our re-implementation over an already-loaded storage
``torch._tensor._rebuild_from_type_v2`` (+ ``torch.Tensor``,  only around the two rebuild functions above
``torch.nn.parameter.Parameter`` as type markers)
``torch.storage._load_from_bytes``                          ``torch.load(..., weights_only=True)`` on the bytes
``numpy.dtype``, ``numpy(._)core.multiarray.scalar`` /      numeric dtypes only, rebuilt with ``np.frombuffer``
``_reconstruct``, ``numpy.ndarray``
==========================================================  ===========================================================
"""

import ast
import io
import logging
import pickle
import warnings
from collections import OrderedDict

import numpy as np
import torch

from ..errors import CheckpointCorruptError, CheckpointFormatError, UnsafeCheckpointError

__all__ = [
    "PersistentObject",
    "RestrictedUnpickler",
    "TFNetworkStub",
    "audit_module_source",
    "materialize",
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

    __slots__ = ("class_name", "state", "version")

    def __init__(self, class_name, state, version):
        self.class_name = class_name
        self.state = state
        self.version = version

    def __repr__(self):
        return f"PersistentObject({self.class_name!r})"


_AUDITED = set()  # sources that passed audit_module_source (only safe ones are ever added)


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
    if src not in _AUDITED:  # every module of a snapshot repeats the same (memoised) source string
        audit_module_source(src, class_name)  # parsed only, never executed
        if len(_AUDITED) < 64:
            _AUDITED.add(src)
    return PersistentObject(class_name, state, meta.get("version"))


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


_NUMERIC_KINDS = "biufc"


class _NpDtype:
    """``numpy.dtype(name, align, copy)`` followed by ``BUILD(state)``: numeric dtypes only."""

    def __init__(self, name, align=False, copy=True):
        try:
            dt = np.dtype(str(name))
        except TypeError as e:
            raise CheckpointFormatError(f"the pickle holds a numpy dtype {name!r} we do not read: {e}") from None
        if dt.kind not in _NUMERIC_KINDS:
            raise CheckpointFormatError(f"the pickle holds a numpy dtype {name!r}; only numeric arrays and scalars "
                                        f"are expected in a network pickle")
        self.dtype = dt

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) >= 2 and state[1] in ("<", ">", "|", "="):
            order = state[1]
            if order in ("<", ">"):
                self.dtype = self.dtype.newbyteorder(order)


def _as_dtype(dt):
    if isinstance(dt, _NpDtype):
        return dt.dtype
    raise CheckpointFormatError(f"expected a numpy dtype in the pickle, got {type(dt).__name__}")


def _np_scalar(dtype, data=None):
    dt = _as_dtype(dtype)
    if not isinstance(data, (bytes, bytearray)) or len(data) != dt.itemsize:
        raise CheckpointCorruptError(f"a numpy {dt} scalar in the pickle has {len(data or b'')} bytes instead of "
                                     f"{dt.itemsize}; the file is damaged")
    return np.frombuffer(bytes(data), dtype=dt)[0].copy()


class _NDArrayMarker:
    """Stands for the ``numpy.ndarray`` class argument of ``_reconstruct``."""


class _NpArrayStub:
    """``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')`` + ``BUILD(state)``; see :func:`materialize`."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        # state = (version, shape, dtype, is_fortran, raw bytes)
        if not (isinstance(state, tuple) and len(state) == 5):
            raise CheckpointFormatError("a numpy array in the pickle has an unexpected state layout")
        _, shape, dtype, fortran, raw = state
        dt = _as_dtype(dtype)
        if not isinstance(raw, (bytes, bytearray)):
            raise CheckpointFormatError("a numpy array in the pickle is not stored as raw bytes (object arrays are "
                                        "not read)")
        shape = tuple(int(s) for s in shape)
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * dt.itemsize != len(raw):
            raise CheckpointCorruptError(f"a numpy array of shape {shape} ({dt}) in the pickle has {len(raw)} bytes "
                                         f"instead of {count * dt.itemsize}; the file is damaged")
        arr = np.frombuffer(bytes(raw), dtype=dt, count=count)
        self.array = arr.reshape(shape, order="F" if fortran else "C").copy()


def _np_reconstruct(cls, shape=(0,), typecode=b"b"):
    if cls is not _NDArrayMarker:
        raise UnsafeCheckpointError("the pickle asks numpy to reconstruct a class other than ndarray; refused. "
                                    "Nothing was executed")
    return _NpArrayStub()


def _np_frombuffer(buf, dtype, shape, order):
    dt = _as_dtype(dtype)
    arr = np.frombuffer(bytes(buf), dtype=dt)
    return arr.reshape(tuple(shape), order=order).copy()


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


def _rebuild_from_type_v2(func, new_type, args, state=None):
    # torch >= 1.8 writes tensors that carry Python attributes as _rebuild_from_type_v2(func, type, args, state)
    if func not in (_rebuild_tensor, _rebuild_parameter) or new_type is not _TensorTypeMarker:
        raise UnsafeCheckpointError("the pickle rebuilds a tensor through a function or type outside the allow-list; "
                                    "refused. Nothing was executed")
    return func(*args)  # the Python attributes (state) are dropped: only values are needed


def _load_from_bytes(b):
    if not isinstance(b, (bytes, bytearray)):
        raise CheckpointFormatError("torch.storage._load_from_bytes got something other than bytes")
    return torch_load_safe(io.BytesIO(bytes(b)), what="a tensor storage inside the pickle")


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
        ("numpy", "dtype"): _NpDtype,
        ("numpy", "ndarray"): _NDArrayMarker,
    }
    for b in ("builtins", "__builtin__"):
        allowed.update({(b, "set"): set, (b, "frozenset"): frozenset, (b, "bytearray"): bytearray,
                        (b, "complex"): complex})
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "scalar")] = _np_scalar
        allowed[(f"{core}.multiarray", "_reconstruct")] = _np_reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = _np_frombuffer
    return allowed


_ALLOWED = _allowed_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose globals come only from the allow-list above (see the module docstring).

    Any other global, and any persistent id, raises :class:`~hrinv.errors.UnsafeCheckpointError` naming it; nothing
    from the file is imported or called.
    """

    def find_class(self, module, name):
        fn = _ALLOWED.get((module, name))
        if fn is None:
            raise UnsafeCheckpointError(
                f"refused to load: the pickle references the global '{module}.{name}', which is not on the allow-list "
                f"of a StyleGAN2 network pickle (nothing was imported or executed). If this file is a network from a "
                f"source you trust in a layout we do not read, convert it with its own code into a state dict and "
                f"save that as .safetensors")
        return fn

    def persistent_load(self, pid):
        raise UnsafeCheckpointError(f"refused to load: the pickle uses a persistent id ({str(pid)[:80]!r}), which a "
                                    f"network pickle does not; nothing was executed")


def safe_load_pickle(data, what="the file"):
    """Unpickle ``data`` (bytes or a binary file object) with :class:`RestrictedUnpickler`, then :func:`materialize`.

    Args:
        data: the pickle bytes, or a readable binary file object.
        what: how to name the source in error messages.

    Returns:
        The unpickled object tree (dicts, lists, tensors, numpy values, :class:`PersistentObject`, ...).

    Raises:
        UnsafeCheckpointError: a global outside the allow-list, or suspicious embedded source.
        CheckpointCorruptError: truncated or damaged data.
        CheckpointFormatError: readable but of a shape we do not read.
    """
    f = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
            obj = materialize(RestrictedUnpickler(f).load())
    except (UnsafeCheckpointError, CheckpointFormatError, CheckpointCorruptError):
        raise
    except RecursionError:
        raise CheckpointCorruptError(f"{what} nests objects too deeply to be a network pickle; it is damaged or not "
                                     f"a checkpoint") from None
    except MemoryError:
        raise CheckpointCorruptError(f"{what} asks for more memory than is available while decoding; it is damaged "
                                     f"or not a network pickle") from None
    except Exception as e:  # noqa: BLE001 - every decoding failure of untrusted bytes becomes a typed error
        raise CheckpointCorruptError(f"{what} could not be decoded as a pickle ({type(e).__name__}: {e}); it is "
                                     f"truncated or damaged. Download or copy it again") from None
    return obj


def materialize(obj):
    """Replace the numpy/EasyDict stand-ins in an unpickled tree by real values (in place where possible).

    ``_NpArrayStub`` -> ``np.ndarray``; ``EasyDict`` -> ``dict``. Shared and cyclic references are preserved.
    """
    memo = {}

    def walk(x):
        key = id(x)
        if key in memo:
            return memo[key]
        if isinstance(x, _NpArrayStub):
            if x.array is None:
                raise CheckpointCorruptError("a numpy array in the pickle has no data (BUILD missing); the file is "
                                             "damaged")
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
        memo[key] = x
        return x

    return walk(obj)


# ----------------------------------------------------------------------------------------------------------------------
# module_src audit

# ``os``/``sys`` are allowed (custom forks import them for paths); calling os.system & co. is not (below).
_DANGEROUS_MODULES = {"subprocess", "socket", "shutil", "ctypes", "builtins", "__builtin__", "importlib", "pty",
                      "urllib", "http", "requests", "pickle", "marshal", "runpy", "multiprocessing", "posix", "nt",
                      "signal", "webbrowser", "ftplib", "smtplib", "telnetlib", "code", "codeop", "zipimport"}
# builtins that run code or touch files when called by name
_DANGEROUS_BUILTINS = {"eval", "exec", "compile", "__import__", "open", "breakpoint", "globals"}
# methods that spawn processes or delete files, whatever object they are reached through (``torch.os.system``)
_DANGEROUS_METHODS = {"system", "popen", "Popen", "execv", "execve", "execl", "execlp", "execvp", "spawnv", "spawnl",
                      "rmtree", "check_output", "check_call", "getoutput", "getstatusoutput", "startfile", "kill",
                      "load_module", "exec_module", "__import__"}
_DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign,
                ast.AnnAssign, ast.Pass)


# roots of calls that may stand alone at module level in a real network module
_BENIGN_IMPORT_TIME_CALLS = {"warnings", "logging", "log", "logger", "print"}
# callee names that load or fetch something when called at import time
_FETCH_NAMES = {"load", "loads", "hub", "urlopen", "urlretrieve", "download", "request", "get"}


def _root_name(node):
    while isinstance(node, (ast.Attribute, ast.Call)):
        node = node.value if isinstance(node, ast.Attribute) else node.func
    return node.id if isinstance(node, ast.Name) else None


def _fetches(func):
    parts = _short(func).replace("(", ".").split(".")
    return any(p in _FETCH_NAMES for p in parts)


def _short(node):
    try:
        return ast.unparse(node)[:60]
    except Exception:  # noqa: BLE001
        return type(node).__name__


def audit_module_source(src, class_name="?"):
    """Statically check the ``module_src`` embedded in an NVIDIA persistent object. Never executes it.

    We never run this source (we rebuild the network ourselves), so it cannot harm us; but a source that would run
    code when imported marks a file crafted to attack the stock loader, and we refuse such a file rather than hand
    it on. Real StyleGAN sources (checked against stylegan2-ada-pytorch and stylegan3 ``training/*.py``) only
    import numeric libraries and define functions and classes.

    Raises:
        UnsafeCheckpointError: the source imports a system module, calls ``exec``/``eval``/``os.system``-like
            functions, or calls functions at import time.
    """
    src = src.lstrip("\ufeff")
    if not src.strip():
        return
    try:
        tree = ast.parse(src)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        # It cannot run anywhere either; we never needed it.
        log.warning("The source embedded for persistent class %r does not parse (%s); ignored (it is never run).",
                    class_name, type(e).__name__)
        return

    def refuse(node, why):
        line = getattr(node, "lineno", "?")
        raise UnsafeCheckpointError(
            f"refused to load: the Python source embedded in this pickle for class {class_name!r} {why} (line {line}). "
            f"NVIDIA's own loader would execute that source; this file looks crafted to run code. Nothing was "
            f"executed. Only use network files from sources you trust")

    def check_block(stmts):  # statements that run at import time
        for node in stmts:
            if isinstance(node, ast.Expr):
                if isinstance(node.value, ast.Constant):
                    continue  # docstring
                if isinstance(node.value, ast.Call) and _root_name(node.value.func) in _BENIGN_IMPORT_TIME_CALLS:
                    continue  # e.g. warnings.filterwarnings(...)
                if isinstance(node.value, ast.Call):
                    refuse(node, f"calls '{_short(node.value.func)}' at import time")
                refuse(node, "evaluates an expression at import time")
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                # ``logger = logging.getLogger(...)``, ``_cache = dict()`` are fine; loading or fetching is not
                for sub in ast.walk(node.value):
                    if isinstance(sub, ast.Call) and _fetches(sub.func):
                        refuse(node, f"calls '{_short(sub.func)}' at import time")
            if isinstance(node, ast.Try):
                check_block(node.body + node.orelse + node.finalbody)
                for h in node.handlers:
                    check_block(h.body)
            elif isinstance(node, ast.If):
                check_block(node.body + node.orelse)
            elif isinstance(node, ast.ClassDef):
                check_block(node.body)  # a class body runs when the class is defined
            elif not isinstance(node, _DEFINITIONS):
                refuse(node, f"runs a '{type(node).__name__}' statement at import time")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in _DANGEROUS_MODULES:
                    refuse(node, f"imports the system module '{alias.name}'")
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] in _DANGEROUS_MODULES:
                refuse(node, f"imports from the system module '{node.module}'")
        elif isinstance(node, ast.Call):
            fn = node.func
            if isinstance(fn, ast.Name) and fn.id in _DANGEROUS_BUILTINS:
                refuse(node, f"calls '{fn.id}'")
            if isinstance(fn, ast.Attribute) and fn.attr in _DANGEROUS_METHODS:
                refuse(node, f"calls '{_short(fn)}'")
    check_block(tree.body)


# ----------------------------------------------------------------------------------------------------------------------
# torch.load, weights only

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
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
            with torch.serialization.safe_globals(list(extra_safe_globals)):
                return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg or "weights_only" in msg:
            import re
            m = re.search(r"GLOBAL ([\w.]+)", msg)
            name = m.group(1) if m else None
            detail = f"the global '{name}'" if name else "an operation outside the weights-only allow-list"
            raise UnsafeCheckpointError(
                f"refused to load {what}: it references {detail}, which a plain weights file does not need "
                f"(nothing was executed). If the file is from a source you trust, load it with its own code and "
                f"save the generator's state dict as .safetensors") from None
        raise CheckpointCorruptError(f"{what} could not be decoded ({e}); it is truncated or damaged") from None
    except (UnsafeCheckpointError, CheckpointFormatError, CheckpointCorruptError):
        raise
    except Exception as e:  # noqa: BLE001
        raise CheckpointCorruptError(f"{what} could not be read by torch.load ({type(e).__name__}: "
                                     f"{str(e).splitlines()[0] if str(e) else ''}); it is truncated or damaged. "
                                     f"Download or copy it again") from None
