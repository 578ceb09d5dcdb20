"""VGG16 convolutional trunk for the HRInversion perceptual loss, and loaders for its weights.

The trunk is written as explicit ``conv -> functional relu -> ...`` steps. The tensors handed out as taps are never
touched again: the ReLU after a tapped conv makes a *new* tensor (``F.relu``), so the in-place-ReLU trap of the paper's
footnote 2 (a hooked conv output silently overwritten by ``ReLU(inplace=True)``) cannot happen. Only a conv output that
is not a tap, made inside the same call, is rectified in place (``F.relu_``: one activation-sized allocation less;
autograd allows it since a convolution's backward does not need its output), and never the tensor a caller passed in.

Op indices follow torchvision's ``vgg16().features`` exactly: convs at 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28;
ReLUs right after each conv (1, 3, 6, ...); max-pools at 4, 9, 16, 23, 30. A tap index names the *output* of that op,
so tap 2 is conv1_2 before its ReLU and tap 3 is relu1_2.

Weights come from a local file in one of the common layouts (torchvision ``vgg16-*.pth``, timm ``vgg16.tv_in1k``
``.safetensors``/``.pth``, a bare ``features`` state dict, or the Caffe-convention
``vgg16_imagenet_caffe.safetensors``).
Each loaded network carries its input convention (:class:`InputConvention`) and, when the weights are known, a per-tap
calibration (see ``docs/perceptual-loss.md``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hrinv.bufferpool import pooled_like
from hrinv.errors import (
    CheckpointCorruptError,
    CheckpointFormatError,
    InvalidSettingError,
    WeightsNotFoundError,
)
from hrinv.perf import active_weights

__all__ = [
    "CAFFE",
    "CONV_INDICES",
    "POOL_INDICES",
    "RELU_INDICES",
    "TORCHVISION",
    "InputConvention",
    "VGG16Conv",
    "load_vgg16",
    "tap_channels",
    "tap_reduction",
]

log = logging.getLogger(__name__)

# (op index, in channels, out channels) of the 13 convolutions of VGG16 "D", torchvision indexing.
_CONVS = ((0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
          (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512))
CONV_INDICES = tuple(i for i, _, _ in _CONVS)
RELU_INDICES = tuple(i + 1 for i in CONV_INDICES)
POOL_INDICES = (4, 9, 16, 23, 30)
_LAST_OP = 30
_CONV_SHAPES = {i: (cout, cin, 3, 3) for i, cin, cout in _CONVS}


def tap_channels(index: int) -> int:
    """Channels of the output of op ``index`` (torchvision indexing)."""
    last = max(i for i in CONV_INDICES if i <= index)
    return _CONV_SHAPES[last][0]


def tap_reduction(index: int) -> int:
    """Spatial down-sampling factor of the output of op ``index`` relative to the input (1, 2, 4, 8, 16 or 32)."""
    return 2 ** sum(1 for p in POOL_INDICES if p <= index)


# Per-tap calibration of known weight sets, keyed by the weights' fingerprint (see _fingerprint below). Scales are keyed
# by op index (every conv and ReLU output) and equal 1 / RMS of that output on aligned CelebA-HQ faces at 1024² (the
# resolution the paper's λ's were tuned at), i.e. calibrated features have unit RMS on real faces. Measured with
# ``benchmarks/measure_calibration.py --size 1024 --limit 16`` on ../shared/data/faces/celebahq (the first 16 faces;
# 6 faces gave the same values within 6 %); see docs/perceptual-loss.md for
# why and for what this can and cannot reproduce.
KNOWN_CALIBRATIONS: dict = {
    "5b3a598e0c70e1a1": {
        "name": "vgg16_imagenet_caffe: unit RMS on 16 CelebA-HQ faces at 1024^2",
        "convention": "caffe",
        "scales": {0: 0.0173373, 1: 0.0245917, 2: 0.00538419, 3: 0.00569309, 5: 0.00373212, 6: 0.00500868,
                   7: 0.0024886, 8: 0.00372431, 10: 0.00201769, 11: 0.00317487, 12: 0.00192034, 13: 0.00306201,
                   14: 0.00168286, 15: 0.00382221, 17: 0.00224159, 18: 0.00510929, 19: 0.0031355, 20: 0.00898563,
                   21: 0.00439695, 22: 0.0245241, 24: 0.0110994, 25: 0.0363352, 26: 0.0208597, 27: 0.0786935,
                   28: 0.0312767, 29: 0.37009},
    },
}
# The same weights rounded to float16 (the bundled hrinv/bundled/vgg16_caffe_conv_fp16.safetensors) have another
# fingerprint; they share the calibration (fp16 rounding moves the features by ~1e-3 relative, far below its precision).
KNOWN_CALIBRATIONS["22066ee8a8b0d80e"] = dict(KNOWN_CALIBRATIONS["5b3a598e0c70e1a1"],
                                              name="vgg16_caffe_conv_fp16 (bundled): the calibration of vgg16_imagenet_"
                                                   "caffe, unit RMS on 16 CelebA-HQ faces at 1024^2")


@dataclass(frozen=True)
class InputConvention:
    """How a weight set wants its input: ``net_in = (x01 * scale - mean) / std`` in the given channel order.

    ``x01`` is the RGB image in [0, 1] (our images are in [-1, 1], so ``x01 = (x + 1) / 2``); ``mean``/``std`` are
    given in the network's channel order.
    """

    name: str
    channel_order: str  # "rgb" or "bgr"
    scale: float
    mean: tuple
    std: tuple

    def apply(self, img: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Map an image in [-1, 1] to this network's input.

        Args:
            img: RGB image in [-1, 1].
            dtype: dtype of the result (default: the image's).

        Returns:
            The network input, a new tensor (``img`` is not modified).

        Shape:
            img: [B, 3, H, W] -> [B, 3, H, W]
        """
        x = img.to(dtype or img.dtype)
        if self.channel_order == "bgr":
            x = x.flip(1)  # [B, 3, H, W] RGB -> BGR
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return ((x + 1.0) * (0.5 * self.scale) - mean) / std  # [B, 3, H, W]

    def to_json(self) -> dict:
        return {"name": self.name, "channel_order": self.channel_order, "scale": self.scale,
                "mean": list(self.mean), "std": list(self.std)}


TORCHVISION = InputConvention("torchvision", "rgb", 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CAFFE = InputConvention("caffe", "bgr", 255.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0))
_CONVENTION_ALIASES = {"torchvision": TORCHVISION, "timm": TORCHVISION, "rgb": TORCHVISION, "imagenet": TORCHVISION,
                       "caffe": CAFFE, "bgr": CAFFE, "keras": CAFFE}


def _resolve_convention(convention) -> InputConvention:
    if isinstance(convention, InputConvention):
        return convention
    key = str(convention).lower()
    if key not in _CONVENTION_ALIASES:
        raise InvalidSettingError(f"unknown VGG input convention {convention!r}; expected one of "
                                    f"{sorted(_CONVENTION_ALIASES)} or an InputConvention")
    return _CONVENTION_ALIASES[key]


class _ReLU(torch.autograd.Function):
    """``relu(h)``, in place on ``h`` when asked (see :meth:`VGG16Conv._op`), with bitwise the values and gradients
    of ``F.relu`` / ``F.relu_``; inside an optimisation loop on the CPU the new output (out of place) and the gradient
    are written into pooled buffers (:mod:`hrinv.bufferpool`) instead of fresh activation-sized allocations."""

    @staticmethod
    def forward(ctx, h, inplace):
        if inplace:
            out = h.clamp_min_(0)  # what F.relu_ runs
            ctx.mark_dirty(h)
        else:
            buf = pooled_like(h) if h.is_contiguous() else None  # keeps h's memory format
            out = h.clamp_min(0) if buf is None else torch.clamp_min(h, 0, out=buf)  # what F.relu runs
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        buf = pooled_like(out) if grad.dtype == out.dtype and out.is_contiguous() else None
        aten = torch.ops.aten
        if buf is None:
            return aten.threshold_backward(grad, out, 0), None
        return aten.threshold_backward.grad_input(grad, out, 0, grad_input=buf), None


class VGG16Conv(nn.Module):
    """The convolutional trunk of VGG16 (no batch norm), returning the outputs of chosen ops.

    Parameters are ``features.{i}.weight`` / ``features.{i}.bias`` for the 13 conv indices, so ``state_dict()`` has
    exactly torchvision's ``vgg16().features`` keys under a ``features.`` prefix. ReLU and max-pool are functional.

    Attributes:
        convention: :class:`InputConvention` of the weights.
        calibration: ``{tap: scale}`` per-tap multipliers that bring this weight set's features to the scale the
            paper's λ's assume, or ``None`` when unknown/not needed (see :mod:`hrinv.losses.perceptual`).
        meta: dict describing where the weights came from.

    Args:
        convention: input convention (name or :class:`InputConvention`), default torchvision.
        device: parameter device.
        dtype: parameter dtype.
    """

    def __init__(self, convention="torchvision", *, device=None, dtype=None):
        super().__init__()
        self.features = nn.ModuleDict({str(i): nn.Conv2d(cin, cout, 3, padding=1, device=device, dtype=dtype)
                                       for i, cin, cout in _CONVS})
        self.convention = _resolve_convention(convention)
        self.calibration: dict | None = None
        self.meta: dict = {}

    def preprocess(self, img: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] (RGB) -> network input in this weight set's convention and dtype.

        Shape:
            img: [B, 3, H, W] -> [B, 3, H, W]
        """
        return self.convention.apply(img, dtype=self.features["0"].weight.dtype)

    def run(self, h: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Apply ops ``start .. stop`` (inclusive) to ``h``, the output of op ``start - 1`` (or the input for 0).

        Shape:
            h: [B, C, H, W] -> [B, C', H', W']
        """
        for i in range(start, stop + 1):
            h = self._op(i, h, inplace=i > start)  # the caller's h itself is never modified
        return h

    def _op(self, i: int, h: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """Op ``i`` on ``h``. ``inplace=True`` lets a ReLU overwrite ``h``: only for a conv output made inside this
        trunk run that is not handed out (not a tap). A conv's backward needs its input and weight, not its output,
        so autograd allows it."""
        if i in POOL_INDICES:
            return F.max_pool2d(h, 2, 2)
        if i in RELU_INDICES:
            return _ReLU.apply(h, inplace)
        conv = self.features[str(i)]
        cw = active_weights()  # a loop's per-loop weight casts (bf16: cast once, channels_last on the CPU)
        if cw is not None and cw.serves(h):
            return F.conv2d(h, cw.cast(conv.weight), cw.cast(conv.bias), padding=1)
        return F.conv2d(h, conv.weight, conv.bias, padding=1)

    def forward(self, x: torch.Tensor, taps: Iterable[int] = (2, 7, 14, 21, 28)) -> dict:
        """Run the trunk on a *preprocessed* input and return the outputs of the requested ops.

        Computation stops after the largest requested tap.

        Args:
            x: network input (see :meth:`preprocess`).
            taps: op indices (torchvision numbering, 0..30) whose outputs to return.

        Returns:
            ``{tap: tensor}`` in increasing tap order. Conv taps are pre-activation (they hold negative values).

        Shape:
            x: [B, 3, H, W]; out[t]: [B, tap_channels(t), H // tap_reduction(t), W // tap_reduction(t)]
        """
        wanted = sorted({int(t) for t in taps})
        if not wanted or wanted[0] < 0 or wanted[-1] > _LAST_OP:
            raise InvalidSettingError(f"taps must be op indices in 0..{_LAST_OP}, got {list(taps)}")
        out = {}
        h = x
        for i in range(wanted[-1] + 1):
            h = self._op(i, h, inplace=i - 1 not in out)  # a tap is never overwritten (footnote 2)
            if i in wanted:
                out[i] = h
        return out

    def extra_repr(self) -> str:
        return f"convention={self.convention.name}, calibrated={self.calibration is not None}"


# ----------------------------------------------------------------------------------------------------------------
# Loading

_IGNORED_PREFIXES = ("classifier.", "pre_logits.", "head.", "fc.", "fc6.", "fc7.", "fc8.")
_KEY_RE = re.compile(r"^(?:features[._])?(\d+)\.(weight|bias)$")
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "params")
_STRIP_PREFIXES = ("module.", "model.", "backbone.", "vgg.", "net.")


def _read_file(path: Path) -> tuple[dict, dict]:
    """Read a weights file without executing anything. Returns (state_dict, metadata)."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
        except SafetensorError as e:
            raise CheckpointCorruptError(f"{path}: not a readable .safetensors file ({e}). Expected a VGG16 state "
                                         f"dict; re-download or re-export the file.") from e
        return sd, meta
    if suffix in (".pth", ".pt", ".bin", ".ckpt"):
        from ..io.safe_unpickle import torch_load_safe

        # weights only, typed errors for every failure, stride-0 views and zip bombs refused
        obj = torch_load_safe(str(path), what=f"{path} (expected a plain VGG16 state dict)")
        for _ in range(2):  # unwrap {"state_dict": {...}} style containers
            if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
                inner = [obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)]
                if inner:
                    obj = inner[0]
        if not isinstance(obj, dict):
            raise CheckpointFormatError(f"{path}: expected a state dict (dict of tensors), got {type(obj).__name__}")
        return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, {}
    raise CheckpointFormatError(f"{path}: unsupported extension {suffix!r}; expected .safetensors, .pth, .pt or .bin "
                                f"holding VGG16 weights")


def _normalise_keys(sd: dict, source: str) -> dict:
    """Map torchvision / timm / bare-Sequential VGG16 keys to ``{conv_index: (weight, bias)}`` and check them."""
    found: dict = {}
    unexpected = []
    for key, value in sd.items():
        k = key
        for p in _STRIP_PREFIXES:
            k = k.removeprefix(p)
        if k.startswith(_IGNORED_PREFIXES):
            continue
        m = _KEY_RE.match(k)
        if m is None:
            unexpected.append(key)
            continue
        found.setdefault(int(m.group(1)), {})[m.group(2)] = value
    hints = []
    if any("running_mean" in k or "running_var" in k for k in sd):
        hints.append("it has batch-norm statistics: this looks like vgg16_bn, which is a different network")
    if unexpected:
        raise CheckpointFormatError(
            f"{source}: unexpected keys for VGG16 (no batch norm): {sorted(unexpected)[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''}. Expected only features.N.weight/bias (or features_N.*, N.*) "
            f"for N in {list(CONV_INDICES)}, plus classifier/pre_logits/head keys which are ignored."
            + (" Note: " + "; ".join(hints) + "." if hints else ""))
    missing = [f"features.{i}.{p}" for i in CONV_INDICES for p in ("weight", "bias") if p not in found.get(i, {})]
    extra = sorted(set(found) - set(CONV_INDICES))
    if extra or missing:
        if max(found, default=0) > 28:
            hints.append(f"conv indices go up to {max(found)}: this looks like VGG19 or another VGG, not VGG16")
        raise CheckpointFormatError(
            f"{source}: not a VGG16 (no batch norm) conv trunk. Expected conv layers at features indices "
            f"{list(CONV_INDICES)}; missing {missing[:6]}{' ...' if len(missing) > 6 else ''}, unexpected conv "
            f"indices {extra}." + (" Note: " + "; ".join(hints) + "." if hints else "")
            + " Use torchvision's vgg16-397923af.pth, timm's vgg16.tv_in1k, or vgg16_imagenet_caffe.safetensors.")
    bad = []
    for i in CONV_INDICES:
        w, b = found[i]["weight"], found[i]["bias"]
        if tuple(w.shape) != _CONV_SHAPES[i] or tuple(b.shape) != (_CONV_SHAPES[i][0],):
            bad.append(f"features.{i}: weight {tuple(w.shape)} bias {tuple(b.shape)}, expected "
                       f"{_CONV_SHAPES[i]} / ({_CONV_SHAPES[i][0]},)")
    if bad:
        raise CheckpointFormatError(f"{source}: wrong tensor shapes for VGG16: " + "; ".join(bad[:4])
                                    + (" ..." if len(bad) > 4 else "") + ". Is this VGG11/13/19 or a modified VGG?")
    return {i: (found[i]["weight"], found[i]["bias"]) for i in CONV_INDICES}


def _fingerprint(convs: dict) -> str:
    """Short hash identifying a weight set (first conv weights + last conv bias)."""
    h = hashlib.sha256()
    for t in (convs[0][0], convs[28][1]):
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _convention_from_meta(meta: dict, path: Path):
    text = " ".join(str(meta.get(k, "")) for k in ("input_convention", "convention")).lower()
    if "hrinv" in meta:
        try:
            conv = json.loads(meta["hrinv"]).get("convention")
            if conv:
                return _resolve_convention(conv["name"] if isinstance(conv, dict) else conv), "file metadata"
        except (ValueError, AttributeError):
            pass
    if text.strip():
        if "caffe" in text or "bgr" in text:
            return CAFFE, "file metadata"
        if "rgb" in text or "torchvision" in text or "imagenet" in text:
            return TORCHVISION, "file metadata"
    if "caffe" in path.name.lower():
        return CAFFE, "file name"
    return TORCHVISION, "default (torchvision/timm files carry no metadata)"


def _hf_cache_file(repo_id: str) -> Path:
    """Find a model file of ``repo_id`` in the local Hugging Face hub cache. Never touches the network."""
    roots = []
    if os.environ.get("HF_HUB_CACHE"):
        roots.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        roots.append(Path(os.environ["HF_HOME"]) / "hub")
    roots.append(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface" / "hub")
    folder = "models--" + repo_id.replace("/", "--")
    tried = []
    for root in roots:
        base = root / folder
        tried.append(str(base))
        snaps = base / "snapshots"
        if not snaps.is_dir():
            continue
        ref = base / "refs" / "main"
        order = []
        if ref.is_file():
            order.append(snaps / ref.read_text().strip())
        order += sorted((p for p in snaps.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
        for snap in order:
            for name in ("model.safetensors", "pytorch_model.bin"):
                if (snap / name).is_file():
                    return snap / name
    raise WeightsNotFoundError(f"{repo_id} is not in the local Hugging Face cache (looked in {tried}). hrinv never "
                               f"downloads at run time: fetch it once with `huggingface-cli download {repo_id}` or "
                               f"pass "
                               f"a local weights file as path=.")


BUNDLED_VGG16 = "vgg16_caffe_conv_fp16.safetensors"


def _bundled_vgg():
    """Verified path of the bundled caffe VGG16 (``hrinv/bundled``), or ``None`` when this install has none."""
    from hrinv import bundled

    if BUNDLED_VGG16 not in bundled.manifest():
        return None
    return bundled.path(BUNDLED_VGG16)


def load_vgg16(path=None, device=None, dtype=None, *, convention=None, timm_name: str | None = None) -> VGG16Conv:
    """Load VGG16 conv weights from a local file into a frozen :class:`VGG16Conv`.

    Accepted layouts: torchvision ``vgg16-397923af.pth`` (``features.N.*`` + ``classifier.*``, the latter ignored),
    timm ``vgg16.tv_in1k`` (``features.N.*`` or ``features_N.*``, ``pre_logits``/``head`` ignored), a bare
    ``vgg.features.state_dict()`` (``N.*``) and the Caffe-convention ``vgg16_imagenet_caffe.safetensors``. ``.pth``
    files are read with ``torch.load(weights_only=True)``; nothing in a file is executed.

    Args:
        path: weights file. ``None``: the ``HRINV_VGG16`` environment variable, else ``timm_name`` from the local
            Hugging Face cache, else the VGG16 bundled with hrinv (``hrinv/bundled/vgg16_caffe_conv_fp16.safetensors``:
            the caffe-convention ImageNet weights in fp16, sha256-checked, upcast to ``dtype``).
        device: device of the parameters.
        dtype: dtype of the parameters (default float32).
        convention: override the input convention ("torchvision" or "caffe"). By default it is read from the file's
            safetensors metadata, else inferred from a "caffe" file name, else torchvision.
        timm_name: e.g. ``"vgg16.tv_in1k"``: take ``timm/<name>`` from the local Hugging Face hub cache
            (``HF_HUB_CACHE`` / ``HF_HOME`` respected, no network, timm itself is not needed). Used only when ``path``
            is ``None``.

    Returns:
        A ``VGG16Conv`` in eval mode with ``requires_grad_(False)``.

    Raises:
        WeightsNotFoundError, CheckpointFormatError, CheckpointCorruptError, UnsafeCheckpointError.
    """
    if path is None and os.environ.get("HRINV_VGG16") and timm_name is None:
        path = os.environ["HRINV_VGG16"]
    if path is None and timm_name is None:
        path = _bundled_vgg()  # the caffe VGG16 that ships with hrinv (fp16 file, upcast to dtype), if installed
        if path is not None:
            log.info("no VGG16 path given: using the bundled %s", path.name)
    if path is None:
        if timm_name is None:
            raise WeightsNotFoundError(
                "no VGG16 weights given: pass path= (torchvision vgg16-397923af.pth, timm vgg16.tv_in1k "
                "model.safetensors, or vgg16_imagenet_caffe.safetensors), set HRINV_VGG16, or pass "
                "timm_name='vgg16.tv_in1k' to use the local Hugging Face cache")
        repo = timm_name if "/" in timm_name else f"timm/{timm_name}"
        path = _hf_cache_file(repo)
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"VGG16 weights file not found: {path}. Expected a local .pth/.safetensors file "
                                   f"(torchvision vgg16-397923af.pth, timm vgg16.tv_in1k, or the caffe-convention "
                                   f"vgg16_imagenet_caffe.safetensors).")
    sd, meta = _read_file(path)
    convs = _normalise_keys(sd, str(path))
    if convention is not None:
        conv_obj, why = _resolve_convention(convention), "argument"
    else:
        conv_obj, why = _convention_from_meta(meta, path)
    # inference_mode(False): ComfyUI executes nodes under torch.inference_mode(); parameters created there would be
    # inference tensors, which autograd cannot save, so backward through the loss would fail later.
    with torch.inference_mode(False), torch.no_grad():
        vgg = VGG16Conv(conv_obj, device="meta", dtype=dtype or torch.float32)  # no wasted random init
        vgg = vgg.to_empty(device=device or "cpu")
        for i, (w, b) in convs.items():
            vgg.features[str(i)].weight.copy_(w)
            vgg.features[str(i)].bias.copy_(b)
    fp = _fingerprint(convs)

    known = KNOWN_CALIBRATIONS.get(fp)
    vgg.calibration = dict(known["scales"]) if known and known["convention"] == conv_obj.name else None
    vgg.meta = {"path": str(path), "fingerprint": fp, "convention_from": why, "file_metadata": meta,
                "calibration": known["name"] if vgg.calibration else None}
    log.info("loaded VGG16 from %s (convention %s from %s, fingerprint %s, known calibration constants: %s; the "
             "loss applies them as chosen by PerceptualLoss(calibration=...))", path, conv_obj.name, why, fp,
             vgg.meta["calibration"])
    return vgg.eval().requires_grad_(False)
