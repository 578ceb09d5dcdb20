"""Hostile and damaged files for the loader tests, generated on the fly (nothing hostile is committed as a binary).

Every builder writes one small file into a folder and returns a :class:`Case`: the path, the loader that must read it
(``generator`` / ``latent`` / ``latent_pickled`` / ``image`` / ``dlib`` / ``pickle``) and what it is. Nothing here
ever unpickles, imports or runs anything from a file; :func:`measure` runs a loader and reports the error, the time and
the peak memory (traced Python allocations and, on Linux, the growth of the resident set's high-water mark).
"""

import io
import json
import struct
import time
import tracemalloc
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from io_pickle_tools import Call, GlobalRef, dumps, persistent_obj, system_call

SMALL = {"z_dim": 8, "c_dim": 0, "w_dim": 8, "img_resolution": 8, "img_channels": 3,
         "mapping_kwargs": {"num_layers": 2}, "synthesis_kwargs": {"channel_base": 64, "channel_max": 16}}


@dataclass
class Case:
    path: Path
    loader: str
    what: str
    bomb: bool = False  # a tiny file declaring a huge allocation or loop: must be refused in < 1 s, < 300 MB


# ----------------------------------------------------------------------------------------------------------------------
# loaders


def load(case):
    """Run the loader of ``case`` (returns its result; raises what it raises)."""
    from hrinv.faceid.dlib_resnet import load_dlib_resnet
    from hrinv.imageio import read_image
    from hrinv.io.checkpoints import load_generator
    from hrinv.io.safe_unpickle import safe_load_pickle
    from hrinv.latent import Latent

    p = case.path
    if case.loader == "generator":
        return load_generator(p)
    if case.loader == "latent":
        return Latent.load(p)
    if case.loader == "latent_pickled":
        return Latent.load(p, allow_pickled_noise=True)
    if case.loader == "image":
        return read_image(p)
    if case.loader == "dlib":
        return load_dlib_resnet(p)
    if case.loader == "pickle":
        return safe_load_pickle(p.read_bytes(), what=p.name)
    if case.loader == "vgg":
        from hrinv.losses import load_vgg16
        return load_vgg16(p)
    if case.loader == "irse50":
        from hrinv.faceid.irse50 import load_irse50
        return load_irse50(p)
    raise AssertionError(case.loader)


def _vm(field):
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def measure(fn, trace=False):
    """``(error or None, seconds, peak bytes)``: peak = growth of the resident set's high-water mark (Linux; reset
    through /proc/self/clear_refs), and with ``trace`` (slower) at least tracemalloc's peak of Python/numpy
    allocations. Without /proc, tracing is always on."""
    rss0 = _vm("VmRSS")  # (no gc.collect() here: with torch imported it costs ~0.5 s per call)
    traced = 0
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
        hwm_ok = True
    except OSError:
        hwm_ok = False
    trace = trace or not hwm_ok
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    err = None
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - the caller judges the type
        err = e
    dt = time.perf_counter() - t0
    if trace:
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    hwm = (_vm("VmHWM") - rss0) if hwm_ok and rss0 is not None else 0
    return err, dt, max(traced, hwm or 0)


# ----------------------------------------------------------------------------------------------------------------------
# small valid files (the base of many hostile ones)


def small_generator():
    from hrinv.generator.stylegan2 import Generator
    return Generator(**json.loads(json.dumps(SMALL))).eval()


def write_generator_safetensors(path, init_kwargs=None, extra_info=None, sd=None):
    """Our .safetensors format with the given (possibly lying) init_kwargs over a small generator's tensors."""
    from safetensors.torch import save_file
    G = small_generator()
    sd = {k: v.contiguous() for k, v in (sd or G.state_dict()).items()}
    info = {"format": "hrinv.generator", "version": 1, "init_kwargs": init_kwargs or SMALL, "inr": None}
    info.update(extra_info or {})
    save_file(sd, str(path), metadata={"hrinv": json.dumps(info)})
    return path


def nvidia_snapshot_bytes(init_kwargs, params, protocol=2, module_src=""):
    g = persistent_obj({"type": "class", "version": 6, "class_name": "Generator", "module_src": module_src,
                        "state": {"_init_kwargs": init_kwargs, "_parameters": params, "_buffers": {},
                                  "_modules": {}}})
    return dumps({"G": g, "D": None, "G_ema": g, "augment_pipe": None}, protocol=protocol)


def write_latent(path, b=1, noise=True):
    from hrinv.latent import Latent
    g = torch.Generator().manual_seed(0)
    nz = {"b4.conv1": torch.randn(b, 1, 4, 4, generator=g)} if noise else None
    return Latent(torch.randn(b, 4, 8, generator=g), nz, "abc", {"s": 1}, {"psnr": [1.0] * b}).save(path)


def write_latent_npz(path, noise=True):
    w = np.zeros((1, 4, 8), np.float32)
    if noise:
        bufs = {"synthesis.b4.conv1.noise_const": np.ones((4, 4), np.float32)}
        np.savez(path, w=w, noise_bufs=bufs)
    else:
        np.savez(path, w=w)
    return path


def write_png(path, w=16, h=12):
    from PIL import Image
    arr = (np.arange(w * h * 3) % 251).astype(np.uint8).reshape(h, w, 3)
    Image.fromarray(arr).save(path)
    return path


def write_jpeg(path, w=32, h=24):
    from PIL import Image
    arr = (np.arange(w * h * 3) % 251).astype(np.uint8).reshape(h, w, 3)
    Image.fromarray(arr).save(path, quality=90)
    return path


def benign_pickle_bytes(protocol=2):
    """Exercises every stand-in of the restricted unpickler: tensors + storages, numpy dtype/scalar/array, sets,
    bytearray, OrderedDict, an NVIDIA-style persistent record."""
    obj = {"t": torch.arange(6, dtype=torch.float32).view(2, 3), "n": np.float32(1.5), "a": np.arange(3.0),
           "s": {1, 2}, "f": frozenset({3}), "b": bytearray(b"xy"), "o": OrderedDict(k=1), "c": complex(1, 2)}
    return dumps(obj, protocol=protocol)


def check_benign(obj):
    assert torch.equal(obj["t"], torch.arange(6, dtype=torch.float32).view(2, 3))
    assert obj["n"] == np.float32(1.5) and np.array_equal(obj["a"], np.arange(3.0))
    assert obj["s"] == {1, 2} and obj["f"] == frozenset({3}) and obj["b"] == bytearray(b"xy")
    assert obj["o"] == {"k": 1} and obj["c"] == complex(1, 2)


# ----------------------------------------------------------------------------------------------------------------------
# raw pickle assembly (for opcodes no Pickler writes on its own)


def _g(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _s(text):
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _long(n):
    b = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(b)]) + b


P2 = b"\x80\x02"


def build_on_global(module, name, state):
    """``GLOBAL module.name; BUILD(state)``: tries to set attributes on the loader's own object."""
    if state == "slot_defaults":
        st = b"N}" + _s("__defaults__") + b")s\x86"  # (None, {'__defaults__': ()})
    elif state == "dict":
        st = b"}" + _s("poisoned") + b"\x88s"  # {'poisoned': True}
    else:
        st = b"N}" + _s("__module__") + _s("os") + b"s\x86"
    return P2 + _g(module, name) + st + b"b."


# ----------------------------------------------------------------------------------------------------------------------
# the hostile set


def hostile_cases(d, marker):
    """All hostile files, written into folder ``d``. ``marker``: a path no payload may ever create."""
    from safetensors.torch import save_file

    from hrinv.io.safe_unpickle import _ALLOWED

    d = Path(d)
    cases = []

    def add(name, data, loader, what, bomb=False):
        p = d / name
        if isinstance(data, (bytes, bytearray)):
            p.write_bytes(data)
        cases.append(Case(p, loader, what, bomb))

    G = small_generator()
    sd = G.state_dict()
    big = {"z_dim": 20000, "w_dim": 20000}

    # 1. declared configs far larger than the tensors (generator)
    for tag, cfg in [("zw20000", {**SMALL, **big}),
                     ("chan", {**SMALL, "synthesis_kwargs": {"channel_base": 1 << 26, "channel_max": 16384}}),
                     ("layers1e7", {**SMALL, "mapping_kwargs": {"num_layers": 10 ** 7}}),
                     ("res2e30", {**SMALL, "img_resolution": 1 << 30}),
                     ("res16384", {**SMALL, "img_resolution": 16384}),
                     ("bool_dims", {**SMALL, "z_dim": True}),
                     ("str_dims", {**SMALL, "w_dim": "512"})]:
        write_generator_safetensors(d / f"meta_{tag}.safetensors", cfg)
        cases.append(Case(d / f"meta_{tag}.safetensors", "generator", f"safetensors metadata {tag}", bomb=True))
        add(f"nv_{tag}.pkl", nvidia_snapshot_bytes(cfg, dict(sd)), "generator", f"NVIDIA _init_kwargs {tag}", True)
    inr = {"type": "hrinv.inr_head", "version": 1, "in_channels": 16, "img_resolution": 8, "img_channels": 3,
           "hidden": 10 ** 6}
    write_generator_safetensors(d / "meta_inr_hidden.safetensors", extra_info={"inr": inr})
    cases.append(Case(d / "meta_inr_hidden.safetensors", "generator", "INR head hidden=1e6", bomb=True))
    deep_inr = json.dumps({**inr, "hidden": 8})[:-1] + ', "fit_info": ' + '{"x": ' * 50000 + "{}" + "}" * 50000 + "}"
    meta = '{"format": "hrinv.generator", "version": 1, "init_kwargs": ' + json.dumps(SMALL) + ', "inr": ' + \
        deep_inr + "}"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(d / "deep_fit_info.safetensors"),
              metadata={"hrinv": meta})
    cases.append(Case(d / "deep_fit_info.safetensors", "generator", "fit_info nested 50000 deep", bomb=True))

    # sidecar JSON next to a plain NVIDIA state dict
    side = d / "side"
    side.mkdir()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(side / "net.safetensors"))
    (side / "net.json").write_text(json.dumps({"init_kwargs": {**SMALL, **big}}))
    cases.append(Case(side / "net.safetensors", "generator", "sidecar JSON z_dim=w_dim=20000", bomb=True))
    side2 = d / "side2"
    side2.mkdir()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(side2 / "net.safetensors"))
    (side2 / "net.json").write_text("[" * 100000 + "]" * 100000)
    (side2 / "config.json").write_text(json.dumps({**SMALL, "img_resolution": 1 << 30}))
    cases.append(Case(side2 / "net.safetensors", "generator", "sidecar JSON nested 1e5 deep (ignored; config.json "
                      "then refused)", bomb=True))

    # stride-0 tensors declaring 20000 x 20000 (pickle and torch zip)
    storage = Call(GlobalRef("torch.storage", "_load_from_bytes"),
                   (torch.zeros(1).storage().__reduce__()[1][0],))
    view = Call(GlobalRef("torch._utils", "_rebuild_tensor_v2"), (storage, 0, (20000, 20000), (0, 0), False,
                                                                   OrderedDict()))
    params = dict(sd)
    params["mapping.fc0.weight"] = view
    add("nv_stride0.pkl", nvidia_snapshot_bytes(SMALL, params), "generator", "pickle stride-0 20000x20000", True)
    ros = {"g_ema": {"style.1.weight": torch.zeros(1).expand(20000, 20000), "input.input": torch.zeros(1, 4, 4, 4),
                     "conv1.conv.weight": torch.zeros(1, 4, 4, 3, 3)}}
    torch.save(ros, d / "ros_stride0.pt")
    cases.append(Case(d / "ros_stride0.pt", "generator", "torch zip stride-0 20000x20000", bomb=True))

    # the same through the VGG and face-network loaders, and a torch zip whose record declares 3 GB (a zip bomb)
    torch.save({"features.0.weight": torch.zeros(1).expand(20000, 20000)}, d / "vgg_stride0.pth")
    cases.append(Case(d / "vgg_stride0.pth", "vgg", "VGG .pth stride-0 20000x20000", bomb=True))
    torch.save({"input_layer.0.weight": torch.zeros(1).expand(20000, 20000)}, d / "irse_stride0.pth")
    cases.append(Case(d / "irse_stride0.pth", "irse50", "IR-SE50 .pth stride-0 20000x20000", bomb=True))
    torch.save({"g_ema": {"style.1.weight": torch.zeros(64)}}, d / "zipbomb.pt")
    data = bytearray((d / "zipbomb.pt").read_bytes())
    i = data.find(b"PK\x01\x02", data.find(b"data/0") - 200)  # the central directory entry of a data record
    data[i + 24:i + 28] = struct.pack("<I", 3_000_000_000)
    add("zipbomb.pt", bytes(data), "generator", "torch zip record declaring 3 GB", True)
    for loader in ("vgg", "irse50"):
        add(f"{loader}_system.pth", _zip_pickle(dumps(system_call(f"touch {marker}"), protocol=2)), loader,
            f"{loader}: os.system payload in a torch zip", True)

    # 2. allow-listed builtins as memory / CPU bombs, EXT opcodes, classic payloads
    add("bytearray3e9.pkl", P2 + _g("builtins", "bytearray") + _long(3_000_000_000) + b"\x85R.", "generator",
        "bytearray(3e9)", True)
    add("frozenset_bytearray.pkl", P2 + _g("builtins", "frozenset") + _g("builtins", "bytearray") +
        _long(3_000_000_000) + b"\x85R\x85R.", "generator", "frozenset(bytearray(3e9))", True)
    add("set_bytearray.pkl", P2 + _g("__builtin__", "set") + _g("__builtin__", "bytearray") +
        _long(10 ** 12) + b"\x85R\x85R.", "generator", "set(bytearray(1e12))", True)
    add("ext1.pkl", P2 + b"\x82\xf0.", "generator", "EXT1 opcode", True)
    add("ext2.pkl", P2 + b"\x83\xf0\x00.", "generator", "EXT2 opcode", True)
    add("ext4.pkl", P2 + b"\x84\xf0\x00\x00\x00.", "generator", "EXT4 opcode", True)
    add("binbytes8_lie.pkl", b"\x80\x05\x8e" + struct.pack("<Q", 3_000_000_000) + b"ab.", "generator",
        "BINBYTES8 declaring 3 GB", True)
    add("bytearray8_lie.pkl", b"\x80\x05\x96" + struct.pack("<Q", 3_000_000_000) + b"ab.", "generator",
        "BYTEARRAY8 declaring 3 GB", True)
    for proto in (0, 2, 4):
        add(f"system_p{proto}.pkl", dumps(system_call(f"touch {marker}"), protocol=proto), "generator",
            f"os.system payload, protocol {proto}", True)
    add("nv_module_src.pkl", nvidia_snapshot_bytes(SMALL, dict(sd), module_src=f"import os\nos.system('touch "
                                                                                f"{marker}')\n"),
        "generator", "module_src running os.system (loads; warned)", False)
    # shared references: a config / module tree that expands exponentially when walked naively
    cfg = [1]
    for _ in range(60):
        cfg = [cfg, cfg]
    add("nv_cfg_expand.pkl", nvidia_snapshot_bytes({**SMALL, "extra": cfg}, dict(sd)), "generator",
        "_init_kwargs of 2^60 shared references", True)

    # 3. numpy stand-ins: the object-dtype read past the buffer that crashed numpy, and friends
    odt = Call(GlobalRef("numpy", "dtype"), ("O8", False, True), state=(3, "|", None, None, None, -1, -1, 63))
    segv = Call(GlobalRef("numpy.core.multiarray", "_reconstruct"), (GlobalRef("numpy", "ndarray"), (0,), b"b"),
                state=(1, (10 ** 6,), odt, False, b"x" * 16))
    fdt = Call(GlobalRef("numpy", "dtype"), ("f4", False, True), state=(3, "<", None, None, None, -1, -1, 0))
    huge = Call(GlobalRef("numpy.core.multiarray", "_reconstruct"), (GlobalRef("numpy", "ndarray"), (0,), b"b"),
                state=(1, (2 ** 40, 2 ** 40), fdt, False, b"\0" * 16))
    twice = Call(GlobalRef("numpy.core.multiarray", "_reconstruct"), (GlobalRef("numpy", "ndarray"), (0,), b"b"),
                 state=(1, (4,), fdt, False, b"\0" * 16))
    for tag, payload in [("segv", segv), ("huge", huge), ("sys", system_call(f"touch {marker}")),
                         ("bytearray", Call(GlobalRef("builtins", "bytearray"), (3_000_000_000,)))]:
        _write_pickled_noise_npz(d / f"latent_{tag}_wn.npz", dumps({"b4.conv1": payload}, protocol=3))
        cases.append(Case(d / f"latent_{tag}_wn.npz", "latent_pickled", f"pickled noise: {tag}", bomb=True))
    raw = dumps([twice], protocol=2)
    raw = raw[:-2] + b"N" + raw[-2:]  # (not a valid second BUILD; exercises the state checks)
    add("np_state_twice.pkl", raw, "pickle", "numpy array state layout games", True)

    # 4. BUILD on every allow-listed global (process-state poisoning)
    for (module, name) in sorted(_ALLOWED):
        for st in ("slot_defaults", "dict", "slot_module"):
            add(f"build_{module}.{name}.{st}.pkl", build_on_global(module, name, st), "pickle",
                f"BUILD {st} on {module}.{name}", True)

    # 5. latents: truncated/lying/adversarial
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {"descr": "<f4", "fortran_order": False, "shape": (10 ** 6, 18, 512)})
    npy.write(b"\0" * 64)
    with zipfile.ZipFile(d / "latent_shape_lie.npz", "w") as z:
        z.writestr("w.npy", npy.getvalue())
    cases.append(Case(d / "latent_shape_lie.npz", "latent", "npz header declaring 37 GB", bomb=True))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("w.npy", npy.getvalue())
    data = bytearray(buf.getvalue())
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # declare 3 GB uncompressed (a zip bomb's header)
        i = data.find(sig)
        data[i + off:i + off + 4] = struct.pack("<I", 3_000_000_000)
    add("latent_zipbomb.npz", bytes(data), "latent", "npz member declaring 3 GB uncompressed", True)
    for tag, meta in [("deep", '{"format": "hrinv.latent", "version": 1, "settings": ' + "[" * 100000 +
                       "]" * 100000 + "}"),
                      ("notdict", "[1, 2]"), ("version", '{"format": "hrinv.latent", "version": "9"}'),
                      ("layers_missing", '{"format": "hrinv.latent", "version": 1, "noise_layers": ["zz"]}'),
                      ("layers_bad", '{"format": "hrinv.latent", "version": 1, "noise_layers": 5}'),
                      ("nested_settings", '{"format": "hrinv.latent", "version": 1, "settings": ' +
                       '{"a": ' * 200 + "1" + "}" * 200 + "}"),
                      ("badjson", "{")]:
        save_file({"ws": torch.zeros(1, 4, 8)}, str(d / f"latent_{tag}.safetensors"), metadata={"hrinv": meta})
        cases.append(Case(d / f"latent_{tag}.safetensors", "latent", f"latent metadata {tag}", bomb=True))
    for tag, ws in [("nan", torch.full((1, 4, 8), float("nan"))), ("inf", torch.full((1, 4, 8), float("inf"))),
                    ("int", torch.zeros(1, 4, 8, dtype=torch.int32)), ("2d", torch.zeros(4, 8))]:
        save_file({"ws": ws}, str(d / f"latent_ws_{tag}.safetensors"),
                  metadata={"hrinv": '{"format": "hrinv.latent", "version": 1}'})
        cases.append(Case(d / f"latent_ws_{tag}.safetensors", "latent", f"latent ws {tag}", bomb=True))
    np.savez(d / "latent_objw.npz", w=np.array([{"a": 1}], dtype=object))
    cases.append(Case(d / "latent_objw.npz", "latent", "npz object-dtype w", bomb=True))
    np.savez(d / "latent_strw.npz", w=np.array(["abc"]))
    cases.append(Case(d / "latent_strw.npz", "latent", "npz string w", bomb=True))

    # 6. images: lying headers
    add("png_50000.png", _png_header(50000, 50000), "image", "PNG header 50000x50000", True)
    add("png_12600x13000.png", _png_header(12600, 13000), "image", "PNG header 164 MP (over our cap)", True)
    add("png_zero.png", _png_header(0, 10), "image", "PNG header 0 px wide", True)
    add("gif_garbage.gif", b"GIF89a" + b"\xff" * 40, "image", "GIF garbage", True)

    # 7. dlib .dat
    head = _dlib_int(1) + _dlib_int(12) + b"loss_metric_"
    add("dlib_overflow.dat", head + _dlib_int(1) + _dlib_int(5000) + _dlib_int(1) + _dlib_int(0), "dlib",
        "dlib double 2^5000", True)
    add("dlib_shape.dat", head + _dlib_int(1) + _dlib_int(0) + _dlib_int(1) + _dlib_int(0) + _dlib_int(12) +
        b"input_rgb_image" + b"\x00" * 3 + _dlib_int(2) + b"".join(_dlib_int(2 ** 62) for _ in range(4)), "dlib",
        "dlib tensor shape 2^248", True)
    add("dlib_garbage.dat", bytes(range(256)) * 4, "dlib", "dlib garbage", True)
    return cases


def _zip_pickle(pickle_bytes):
    """A torch-zip-shaped archive (``archive/data.pkl``) holding the given pickle."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/version", "3\n")
        z.writestr("archive/byteorder", "little")
    return buf.getvalue()


def _dlib_int(n):
    b = abs(n).to_bytes(max(1, (abs(n).bit_length() + 7) // 8), "little")
    if len(b) > 8:
        b = b[:8]
    return bytes([len(b) | (0x80 if n < 0 else 0)]) + b


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header(w, h):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) +
            _png_chunk(b"IEND", b""))


def _write_pickled_noise_npz(path, pickle_bytes):
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {"descr": "|O", "fortran_order": False, "shape": ()})
    npy.write(pickle_bytes)
    w = io.BytesIO()
    np.lib.format.write_array(w, np.zeros((1, 4, 8), np.float32))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("w.npy", w.getvalue())
        z.writestr("noise_bufs.npy", npy.getvalue())


# ----------------------------------------------------------------------------------------------------------------------
# valid files for the truncation sweep and the "benign load still works" checks


def valid_files(d):
    """Small valid files of every kind we load, generated: ``[Case]``."""
    from hrinv.io.checkpoints import save_generator
    d = Path(d)
    G = small_generator()
    out = [Case(save_generator(G, d / "gen.safetensors"), "generator", "hrinv generator"),
           Case(d / "gen_nv.pkl", "generator", "NVIDIA-style snapshot"),
           Case(write_latent(d / "lat.safetensors"), "latent", "latent safetensors"),
           Case(write_latent_npz(d / "lat_w.npz", noise=False), "latent", "projector npz"),
           Case(write_latent_npz(d / "lat_wn.npz"), "latent_pickled", "HRInversion npz with pickled noise"),
           Case(write_png(d / "img.png"), "image", "PNG"),
           Case(write_jpeg(d / "img.jpg"), "image", "JPEG"),
           Case(d / "benign.pkl", "pickle", "benign pickle with every stand-in")]
    (d / "gen_nv.pkl").write_bytes(nvidia_snapshot_bytes(SMALL, dict(G.state_dict())))
    (d / "benign.pkl").write_bytes(benign_pickle_bytes())
    torch.save({"g_ema": {}}, d / "ros_empty.pt")
    return out


def shared_fixture_cases(shared_fixtures):
    """The small reference fixtures in a fixture folder (``tests/data`` or ../shared/fixtures) with the loader each
    needs: those the folder has."""
    f = Path(shared_fixtures)
    cands = [("nv_tiny/network.pkl", "generator"), ("nv_tiny/network_proto4.pkl", "generator"),
             ("nv_tiny/state_dict.safetensors", "generator"), ("ros_cm2_32/checkpoint.pt", "generator"),
             ("nv_clamp32/network.pkl", "generator"), ("ros_cm1_64/checkpoint.pt", "generator"),
             ("ros_small/checkpoint.pt", "generator"), ("nv_small/state_dict.safetensors", "generator")]
    return [Case(f / rel, loader, rel) for rel, loader in cands if (f / rel).is_file()]


def truncation_offsets(n, count=10):
    """``count`` distinct cut points in [0, n): the empty file, a few header bytes, then spread to the last byte."""
    cuts = [0, 1, 8, 16, 64, n // 10, n // 4, n // 2, (9 * n) // 10, n - 1]
    out = sorted({c for c in cuts if 0 <= c < n})
    k = 2
    while len(out) < min(count, n):
        out = sorted(set(out) | {n * k // (k + 1)})
        k += 1
    return out[:count]
