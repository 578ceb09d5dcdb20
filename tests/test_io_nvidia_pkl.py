"""NVIDIA snapshot pickles: safe reading (allow-list, module_src audit) and exact weights/config."""

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import extra_fixtures, fixture_path
from io_pickle_tools import Call, GlobalRef, dumps, persistent_obj, system_call
from safetensors.torch import load_file

from hrinv.errors import CheckpointCorruptError, CheckpointFormatError, UnsafeCheckpointError
from hrinv.io.checkpoints import load_generator, read_checkpoint
from hrinv.io.nvidia_pkl import read_nvidia_pickle
from hrinv.io.safe_unpickle import describe_module_source, safe_load_pickle

# committed: a protocol-4 and a protocol-2 snapshot; ../shared adds nv_tiny's protocol-2 copy and the 64 px nv_small
PICKLES = [("nv_tiny", "network_proto4.pkl"), ("nv_clamp32", "network.pkl"),
           *[tuple(p.split("/")) for p in extra_fixtures("nv_tiny/network.pkl", "nv_small/network_proto4.pkl")]]


def _config(d):
    cfg = json.loads((d / "config.json").read_text())
    return {k: v for k, v in cfg.items() if k not in ("num_ws", "fixture")}


def test_committed_snapshots_cover_pickle_protocols_2_and_4():
    """Protocol 2 (GLOBAL, bytes as ``_codecs.encode``, ``__builtin__.set``) and 4 (STACK_GLOBAL, BINBYTES) are both
    proven on a fresh clone."""
    protocols = {fixture_path(name, fname).read_bytes()[:2] for name, fname in PICKLES[:2]}
    assert protocols == {b"\x80\x02", b"\x80\x04"}


@pytest.mark.parametrize("name,fname", PICKLES)
def test_snapshot_reads_exact_state_dict_and_config(name, fname):
    d = fixture_path(name, fname).parent
    init_kwargs, sd, extras = read_checkpoint(d / fname)
    ref = load_file(str(d / "state_dict.safetensors"))
    assert set(sd) == set(ref)
    for k in ref:
        assert sd[k].dtype == ref[k].dtype and torch.equal(sd[k], ref[k]), k
    assert init_kwargs == _config(d)
    assert extras["format"] == "nvidia-pkl" and extras["which"] == "G_ema"
    json.dumps(init_kwargs)  # plain values only (EasyDict/numpy scalars converted)


@pytest.mark.parametrize("name", ["nv_tiny", "nv_clamp32", *extra_fixtures("nv_small")])
def test_globals_in_fixture_pickles_are_exactly_the_allow_listed_ones(name):
    """Every global named in pickle_globals.txt is on our allow-list (and nothing is resolved by import)."""
    from hrinv.io.safe_unpickle import _ALLOWED
    lines = fixture_path(name, "pickle_globals.txt").read_text().splitlines()
    for line in lines:
        if line.startswith(("#", "torch FloatStorage")) or not line.strip():
            continue
        module, attr = line.split()
        assert (module, attr) in _ALLOWED, line


@pytest.mark.parametrize("name,fname", [p for p in PICKLES if p != ("nv_tiny", "network.pkl")])  # same as proto 4
def test_which_G_gives_the_non_ema_generator(name, fname):
    d = fixture_path(name, fname).parent
    io = load_file(str(d / "io.safetensors"))
    G = load_generator(d / fname, which="G")
    G_ema = load_generator(d / fname)
    assert G.meta["which"] == "G"
    n = 2  # samples are independent; two keep the test fast
    with torch.no_grad():
        img = G.synthesis(G.mapping(io["z"][:n], None), noise_mode="const")
        img_ema = G_ema.synthesis(G_ema.mapping(io["z"][:n], None), noise_mode="const")
    assert (img - io["img_snapshot_G_const"][:n]).abs().max() <= 1e-4
    assert (img_ema - io["img_const"][:n]).abs().max() <= 1e-4
    assert (img_ema - io["img_snapshot_G_const"][:n]).abs().max() > 0.5  # the two really differ


def test_loaded_generator_is_frozen_eval_and_described():
    d = fixture_path("nv_tiny", "network_proto4.pkl").parent
    G = load_generator(d / "network_proto4.pkl", dtype=torch.float64)
    assert not G.training and not any(p.requires_grad for p in G.parameters())
    assert G.mapping.fc0.weight.dtype == torch.float64
    assert G.meta["format"] == "nvidia-pkl" and G.meta["source"].endswith("network_proto4.pkl")


# ----------------------------------------------------------------------------------------------------------------------
# Hostile files


@pytest.fixture
def pwned_markers():
    """The fixture payloads write /tmp/pwned and /tmp/pwned2: they must not appear (if absent before)."""
    before = {p: Path(p).exists() for p in ("/tmp/pwned", "/tmp/pwned2")}
    yield
    for p, existed in before.items():
        if not existed:
            assert not Path(p).exists(), f"{p} was created: code from a pickle ran"


@pytest.mark.parametrize("fname", ["evil.pkl", "evil_proto4.pkl"])
def test_fixture_malicious_pickles_are_refused(fname, pwned_markers):
    path = fixture_path("malicious", fname)
    with pytest.raises(UnsafeCheckpointError) as e:
        load_generator(path)
    msg = str(e.value)
    assert "nothing" in msg.lower() and ("posix.system" in msg or "os.system" in msg)


def test_fixture_persistent_pickle_with_hostile_source_never_runs_it(pwned_markers, caplog):
    """Its module_src runs a shell command under NVIDIA's loader; we never execute it. Its Generator record has no
    configuration, so loading fails with a format error, after warning that the stock loader would run the source."""
    path = fixture_path("malicious", "evil_persistent.pkl")
    with caplog.at_level("WARNING"), pytest.raises(CheckpointFormatError, match="_init_kwargs"):
        load_generator(path)
    assert "would execute" in caplog.text


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_own_os_system_payload_is_refused_and_never_runs(tmp_path, protocol):
    marker = tmp_path / "ran"
    data = dumps(system_call(f"touch {marker}"), protocol=protocol)
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        load_generator(path)
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("builtins", "eval"), ("builtins", "exec"), ("builtins", "getattr"),
                                         ("subprocess", "Popen"), ("torch", "load"), ("numpy", "load"),
                                         ("torch._utils", "_rebuild_device_tensor_from_numpy"),
                                         ("dnnlib.util", "call_func_by_name"), ("copyreg", "_reconstructor")])
def test_any_global_off_the_allow_list_is_named_in_the_refusal(tmp_path, module, name):
    data = dumps({"G_ema": Call(GlobalRef(module, name), ("1+1",))}, protocol=2)
    with pytest.raises(UnsafeCheckpointError, match=f"'{module}.{name}'"):
        safe_load_pickle(data)


@pytest.mark.parametrize("src", [
    'import os; os.system("touch {m}")\n',
    'import subprocess\n',
    'class Generator:\n    exec("open(\'{m}\', \'w\')")\n',
    'import torch\nx = torch.os.system("touch {m}")\n',
    '__import__("os").system("touch {m}")\n',
    'def f(a=print("x")): pass\nf()\n',
    'import torch\nvgg = torch.hub.load("someone/repo", "model")\n',
    'import numpy as np\nstate = np.load("{m}.npy", allow_pickle=True)\n',
    'import os\nDATA = os.environ.get("HOME")\nimport json\nCFG = json.loads("{{}}")\n',
])
def test_embedded_source_is_described_and_warned_about_never_run_never_judged(tmp_path, src, caplog):
    """We never execute module_src, so we neither refuse nor 'approve' it (a static check cannot tell hostile from
    benign Python): the file's weights are read, the source is reported, and a warning says NVIDIA's loader would
    run it."""
    marker = tmp_path / "ran"
    text = src.format(m=marker)
    meta = {"type": "class", "version": 6, "class_name": "Generator", "module_src": text,
            "state": {"_init_kwargs": {"z_dim": 4}, "_parameters": {}, "_buffers": {}, "_modules": {}}}
    g = persistent_obj(meta)
    data = dumps({"G": g, "D": g, "G_ema": g, "augment_pipe": None}, protocol=2)
    with caplog.at_level("WARNING"):
        init_kwargs, sd, extras = read_nvidia_pickle(data)
    assert init_kwargs == {"z_dim": 4} and sd == {}
    info = extras["embedded_source"][0]
    assert info["chars"] == len(text) and len(info["sha256"]) == 64
    assert "would execute" in caplog.text and "never runs it" in caplog.text
    assert not marker.exists()


def test_describe_module_source_lists_imports_and_survives_garbage():
    src = ('"""doc"""\nimport numpy as np\nimport torch\nfrom torch_utils import misc, persistence\n'
           'try:\n    import pyspng\nexcept ImportError:\n    pyspng = None\n')
    info = describe_module_source(src)
    assert info["imports"] == ["numpy", "pyspng", "torch", "torch_utils"] and info["parsed"]
    assert describe_module_source("") is None
    bad = describe_module_source("def (:\n" + "(" * 10000)
    assert bad["parsed"] is False and bad["chars"] > 10000


def test_persistent_id_is_refused():
    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return "x" if isinstance(obj, str) and obj == "ref" else None
    import io
    f = io.BytesIO()
    P(f, protocol=2).dump({"G_ema": "ref"})
    with pytest.raises(UnsafeCheckpointError, match="persistent id"):
        safe_load_pickle(f.getvalue())


def test_codecs_encode_only_for_latin1():
    ok = dumps(Call(GlobalRef("_codecs", "encode"), ("\xff\x00", "latin1")), protocol=2)
    assert safe_load_pickle(ok) == b"\xff\x00"
    bad = dumps(Call(GlobalRef("_codecs", "encode"), ("x", "rot13")), protocol=2)
    with pytest.raises(UnsafeCheckpointError):
        safe_load_pickle(bad)


def test_numpy_scalars_and_arrays_are_rebuilt_without_numpy_globals_being_imported():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    obj = {"s": np.float64(0.25), "a": arr, "i": np.int64(-3)}
    for proto in (2, 4, 5):
        out = safe_load_pickle(pickle.dumps(obj, protocol=proto))
        assert out["s"] == 0.25 and out["i"] == -3
        assert isinstance(out["a"], np.ndarray) and np.array_equal(out["a"], arr)
    with pytest.raises(CheckpointFormatError, match="dtype"):
        safe_load_pickle(pickle.dumps(np.array([object()], dtype=object), protocol=2))


def test_plain_dict_pickle_without_g_ema_is_a_format_error(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}, protocol=4))
    with pytest.raises(CheckpointFormatError, match="G_ema"):
        load_generator(path)
    path.write_bytes(pickle.dumps([1, 2], protocol=2))
    with pytest.raises(CheckpointFormatError, match="snapshot"):
        load_generator(path)


def test_snapshot_without_init_kwargs_is_a_format_error():
    g = persistent_obj({"type": "class", "version": 6, "class_name": "Generator", "module_src": "",
                        "state": {"_parameters": {}, "_buffers": {}, "_modules": {}}})
    with pytest.raises(CheckpointFormatError, match="_init_kwargs"):
        read_nvidia_pickle(dumps({"G_ema": g}, protocol=4))


@pytest.mark.parametrize("cut", [1, 2, 100, 50_000, 1_000_000, -1])
def test_truncated_snapshot_is_corrupt_not_a_crash(tmp_path, cut):
    data = fixture_path("nv_tiny", "network_proto4.pkl").read_bytes()
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[:cut] if cut > 0 else data[:len(data) + cut])
    with pytest.raises((CheckpointCorruptError, CheckpointFormatError)):
        load_generator(path)


def test_flipped_bytes_never_crash(tmp_path):
    data = bytearray(fixture_path("nv_tiny", "network_proto4.pkl").read_bytes())
    g = torch.Generator().manual_seed(0)
    pos = torch.randint(2, len(data), (12,), generator=g).tolist()
    for i, p in enumerate(pos):
        bad = bytearray(data)
        bad[p] ^= 0xFF
        path = tmp_path / f"flip{i}.pkl"
        path.write_bytes(bytes(bad))
        try:
            load_generator(path)
        except (CheckpointCorruptError, CheckpointFormatError, UnsafeCheckpointError):
            pass  # a typed error, or (a flip inside float data) a slightly different network: both fine
    assert not os.path.exists(tmp_path / "ran")


def _storage_bytes(values):
    import io
    import warnings
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(torch.tensor(values, dtype=torch.float32).storage(), buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def test_tensor_rebuild_checks_bounds_instead_of_growing_the_storage():
    from collections import OrderedDict
    storage = Call(GlobalRef("torch.storage", "_load_from_bytes"), (_storage_bytes([1.0, 2.0, 3.0, 4.0]),))

    def tensor(offset, size, stride):
        return Call(GlobalRef("torch._utils", "_rebuild_tensor_v2"), (storage, offset, size, stride, False,
                                                                       OrderedDict()))
    ok = safe_load_pickle(dumps(tensor(1, (3,), (1,)), protocol=4))
    assert ok.tolist() == [2.0, 3.0, 4.0]
    param = safe_load_pickle(dumps(Call(GlobalRef("torch._utils", "_rebuild_parameter"),
                                        (tensor(0, (2, 2), (2, 1)), False, OrderedDict())), protocol=2))
    assert param.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    for offset, size, stride in [(0, (10,), (1,)), (3, (2,), (1,)), (0, (2,), (-1,)), (-1, (1,), (1,))]:
        with pytest.raises(CheckpointCorruptError, match="storage"):
            safe_load_pickle(dumps(tensor(offset, size, stride), protocol=4))


@pytest.mark.parametrize("protocol", [2, 4])
def test_tensors_pickled_by_current_torch_are_read(protocol):
    """What a snapshot written with today's torch holds: _rebuild_tensor_v2, _rebuild_parameter(_with_state),
    _rebuild_from_type_v2 (tensors with Python attributes), legacy storage blobs."""
    t = torch.arange(6.0).reshape(2, 3)[:, 1:]  # a strided view
    tagged = torch.ones(3)
    tagged.note = "x"  # forces _rebuild_from_type_v2
    obj = {"t": t, "p": torch.nn.Parameter(torch.full((2,), 0.5)), "tagged": tagged, "h": torch.zeros(2).half()}
    out = safe_load_pickle(pickle.dumps(obj, protocol=protocol))
    assert torch.equal(out["t"], t) and out["t"].stride() == t.stride()
    assert torch.equal(out["p"], obj["p"].detach()) and torch.equal(out["tagged"], tagged)
    assert out["h"].dtype == torch.float16
