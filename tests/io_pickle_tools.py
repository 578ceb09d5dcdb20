"""Test helpers: write pickles that reference foreign globals (NVIDIA/TF classes, os.system) WITHOUT importing them.

Only used to build hostile or synthetic files for the loader tests; nothing here ever unpickles.
"""

import io
import os
import pickle


class GlobalRef:
    """Pickles as a reference to ``module.name`` (GLOBAL / STACK_GLOBAL). Calling it is a bug."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *a, **k):  # pragma: no cover - pickle requires callables in REDUCE
        raise AssertionError("GlobalRef is a pickling placeholder")


class Call:
    """Pickles as ``REDUCE(fn, args)`` (+ ``BUILD(state)`` when ``state`` is given)."""

    def __init__(self, fn, args, state=None):
        self.fn, self.args, self.state = fn, tuple(args), state


def tf_network_class():
    """A class that pickles by reference as ``dnnlib.tflib.network.Network`` (NEWOBJ + BUILD(state))."""

    class Network:
        def __init__(self, **state):
            self.__dict__.update(state)

        def __getstate__(self):
            return dict(self.__dict__)

    Network.__module__ = "dnnlib.tflib.network"
    Network.__qualname__ = "Network"
    return Network


class _Pickler(pickle._Pickler):  # the pure-Python pickler lets us write globals by hand
    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, GlobalRef):
            return self._write_global(obj.module, obj.name, obj)
        if isinstance(obj, type) and obj.__module__ == "dnnlib.tflib.network":
            return self._write_global(obj.__module__, obj.__qualname__, obj)
        return super().save(obj, save_persistent_id)

    def _write_global(self, module, name, obj):
        if id(obj) in self.memo:
            self.write(self.get(self.memo[id(obj)][0]))
            return
        if self.proto >= 4:
            super().save(module)
            super().save(name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
        self.memoize(obj)

    def reducer_override(self, obj):
        if isinstance(obj, Call):
            return (obj.fn, obj.args) if obj.state is None else (obj.fn, obj.args, obj.state)
        return NotImplemented


def dumps(obj, protocol=4):
    f = io.BytesIO()
    _Pickler(f, protocol=protocol).dump(obj)
    return f.getvalue()


def system_call(command, module="posix"):
    """A pickle payload that would run ``command`` through ``os.system`` if unpickled naively."""
    return Call(GlobalRef(module if os.name != "nt" else "nt", "system"), (command,))


def persistent_obj(meta):
    """REDUCE(torch_utils.persistence._reconstruct_persistent_obj, (meta,)) as in NVIDIA snapshots."""
    return Call(GlobalRef("torch_utils.persistence", "_reconstruct_persistent_obj"), (meta,))
