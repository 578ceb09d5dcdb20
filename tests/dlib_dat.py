"""Write dlib DNN ``.dat`` files: dlib's face-recognition ResNet-29 with seeded random weights.

Tests that need the file format and the architecture, but not what the network learned, use
:func:`write_random_dlib_dat` instead of the real ``dlib_face_recognition_resnet_model_v1.dat`` (kept in ``../shared``).
The writer follows the serialisation that ``hrinv.faceid.dlib_resnet`` reads (see its module docstring):
``test_faceid_dlib.py`` checks that writing the layers parsed from the real file gives the real file back byte for
byte, so the format here is dlib's own, not just one our reader happens to accept.
"""

import math

import numpy as np

from hrinv.faceid.dlib_resnet import DlibLayer

# dlib's face-recognition network, forward order: stem, then (channels, down?) per residual block.
STEM_FILTERS = 32
BLOCKS = [(32, False)] * 3 + [(64, True)] + [(64, False)] * 3 + [(128, True)] + [(128, False)] * 2 + \
         [(256, True)] + [(256, False)] * 2 + [(256, True)]
DESCRIPTOR_DIM = 128
# the real file's header values (dlib stores them as float32 mantissa/exponent pairs)
META = {"loss": "loss_metric_2", "margin": 0.04, "distance_threshold": 0.6, "input": "input_rgb_image_sized",
        "input_mean": (122.782, 117.001, 104.298), "input_size": (150, 150)}


def _int(n):
    """dlib's integer: a header byte (payload length | 0x80 when negative), then the magnitude, little-endian, at
    least one byte."""
    mag = abs(int(n))
    payload = mag.to_bytes(max(1, (mag.bit_length() + 7) // 8), "little")
    return bytes([len(payload) | (0x80 if n < 0 else 0)]) + payload


def _real(x, digits):
    """dlib's ``float_details``: ``frexp`` mantissa scaled to ``digits`` bits (24 for a float field, 53 for a double),
    then whole zero bytes shifted off the mantissa into the exponent; stored as two integers."""
    m, e = math.frexp(x)
    mantissa, exponent = int(m * (1 << digits)), e - digits
    for _ in range(8):
        if mantissa & 0xFF:
            break
        mantissa >>= 8
        exponent += 8
    return _int(mantissa) + _int(exponent)


def _float(x):
    return _real(float(np.float32(x)), 24)


def _double(x):
    return _real(float(x), 53)


def _string(s):
    return _int(len(s)) + s.encode("ascii")


def _bool(b):
    return b"1" if b else b"0"


def _flat(shape, arr):
    """An array stored with an explicit 4-d shape (dlib's params tensors are [n, 1, 1, 1])."""
    return _int(2) + b"".join(_int(s) for s in shape) + np.asarray(arr, dtype="<f4").tobytes()


def _alias(shape):
    return _int(1) + b"".join(_int(s) for s in shape)


def _layer_bytes(lay, next_kind):
    f, a = lay.fields, lay.arrays
    out = _string(lay.tag)
    kind = lay.tag.rstrip("_0123456789")
    if kind == "con":
        params = np.concatenate([a["weight"].reshape(-1)] + ([a["bias"].reshape(-1)] if a["bias"] is not None else []))
        out += _flat((params.size, 1, 1, 1), params)
        out += b"".join(_int(f[k]) for k in ("num_filters", "nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x"))
        out += _alias(f["filters_shape"]) + _alias(f["biases_shape"])
        out += b"".join(_double(v) for v in (1, 1, 1, 0))
        if lay.tag == "con_5":
            out += _bool(a["bias"] is not None)
    elif kind == "affine":
        params = np.concatenate([a["gamma"].reshape(-1), a["beta"].reshape(-1)])
        n = a["gamma"].size
        out += _flat((params.size, 1, 1, 1), params)
        out += _alias((1, n, 1, 1)) * 2
        out += _int(f["mode"])
    elif kind in ("max_pool", "avg_pool"):
        out += b"".join(_int(f[k]) for k in ("nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x"))
    elif kind == "fc":
        n_in, n_out = f["num_inputs"], f["num_outputs"]
        params = np.concatenate([a["weight"].reshape(-1)] + ([a["bias"].reshape(-1)] if a["bias"] is not None else []))
        has_bias = a["bias"] is not None
        out += _int(n_out) + _int(n_in) + _flat((n_in + has_bias, n_out, 1, 1), params)
        out += _alias((n_in, n_out, 1, 1)) + _alias((1, n_out, 1, 1) if has_bias else (0, 0, 0, 0))
        out += _int(f["bias_mode"]) + b"".join(_double(v) for v in (1, 1, 1, 0))
    elif kind not in ("relu", "add_prev"):
        raise ValueError(f"no writer for layer {lay.tag!r}")
    empty = _int(2) + _int(0) * 4
    # wrapper: setup done, gradient stale, own output buffer disabled (dlib does that when a relu follows: it runs
    # in place), then three empty tensors
    return out + _bool(True) + _bool(True) + _bool(next_kind == "relu") + empty * 3


def _versions(layers):
    """The version integers dlib writes outside-in: 2 per computational layer, 1 per tag/skip layer (``tag1`` before
    every residual block, ``tag2`` + ``skip1`` before a down block's average pool), 3 for the layer over the
    input (it also stores a sample-expansion factor)."""
    kinds = [lay.tag.rstrip("_0123456789") for lay in layers]
    forward = []
    for i, (kind, lay) in enumerate(zip(kinds, layers)):
        if kind == "con" and (kinds[i - 2:i] == ["add_prev", "relu"] or kinds[i - 1:i] == ["max_pool"]):
            forward.append(1)                                 # a residual block's input: tag1 below its first conv
        if kind == "avg_pool" and lay.fields["nr"] != 0:      # a down block's skip: tag2 + skip1 below the pool
            forward += [1, 1]
        forward.append(2)
    forward[0] = 3
    return forward[::-1]


def write_dlib_dat(path, meta, layers):
    """Serialise ``(meta, layers)`` (what ``parse_dlib_dat`` returns for a dlib face ResNet) to ``path``."""
    out = _int(1) + _string(meta["loss"]) + _float(meta["margin"]) + _float(meta["distance_threshold"])
    out += b"".join(_int(v) for v in _versions(layers))
    out += _string(meta["input"]) + b"".join(_float(v) for v in meta["input_mean"])
    if meta["input"] == "input_rgb_image_sized":
        out += _int(meta["input_size"][0]) + _int(meta["input_size"][1])
    kinds = [lay.tag.rstrip("_0123456789") for lay in layers] + [""]
    for i, lay in enumerate(layers):
        out += _layer_bytes(lay, kinds[i + 1])
        if i == 0:
            out += _int(meta.get("sample_expansion_factor", 1))
    path.write_bytes(out)
    return path


def random_dlib_layers(seed=0):
    """dlib's face ResNet-29 (5,614,592 parameters) as a layer list, with seeded random weights (He-scaled convs,
    affines near identity) so activations stay in a sensible range through the 14 residual blocks."""
    g = np.random.default_rng(seed)

    def con(c_in, c_out, k, stride, pad):
        w = g.standard_normal((c_out, c_in, k, k)).astype(np.float32) * np.float32((2.0 / (c_in * k * k)) ** 0.5)
        b = (g.standard_normal(c_out) * 0.01).astype(np.float32)
        return DlibLayer("con_4", {"num_filters": c_out, "nr": k, "nc": k, "stride_y": stride, "stride_x": stride,
                                   "pad_y": pad, "pad_x": pad, "filters_shape": (c_out, c_in, k, k),
                                   "biases_shape": (1, c_out, 1, 1)}, {"weight": w, "bias": b})

    def affine(c, scale=1.0):
        gamma = (scale * (1 + 0.1 * g.standard_normal(c))).astype(np.float32)
        beta = (0.05 * g.standard_normal(c)).astype(np.float32)
        return DlibLayer("affine_", {"mode": 0}, {"gamma": gamma, "beta": beta})

    def pool(tag, k, s, pad=0):
        return DlibLayer(tag, {"nr": k, "nc": k, "stride_y": s, "stride_x": s, "pad_y": pad, "pad_x": pad})

    relu, add = DlibLayer("relu_"), DlibLayer("add_prev_")
    layers = [con(3, STEM_FILTERS, 7, 2, 0), affine(STEM_FILTERS), relu, pool("max_pool_2", 3, 2)]
    c_in = STEM_FILTERS
    for c, down in BLOCKS:
        stride, pad = (2, 0) if down else (1, 1)
        layers += [con(c_in, c, 3, stride, pad), affine(c), relu, con(c, c, 3, 1, 1), affine(c, 0.3)]
        if down:
            layers.append(pool("avg_pool_2", 2, 2))
        layers += [add, relu]
        c_in = c
    w = (g.standard_normal((c_in, DESCRIPTOR_DIM)) / c_in ** 0.5).astype(np.float32)
    layers += [pool("avg_pool_2", 0, 1), DlibLayer("fc_2", {"num_outputs": DESCRIPTOR_DIM, "num_inputs": c_in,
                                                            "bias_mode": 1}, {"weight": w, "bias": None})]
    return layers


def write_random_dlib_dat(path, seed=0):
    """A ``.dat`` file in dlib's format holding its face ResNet with seeded random weights (about 22 MB)."""
    return write_dlib_dat(path, {**META, "sample_expansion_factor": 1}, random_dlib_layers(seed))
