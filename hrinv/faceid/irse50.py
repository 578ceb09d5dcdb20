"""ArcFace IR-SE50 face-embedding network (the paper's ID-retrieval network), loaded from a local state dict.

The module tree reproduces the parameter names of the reference ``Backbone(50, 0.6, 'ir_se')`` of
TreB1eN/InsightFace_Pytorch, which are also the names in ``model_ir_se50.pth`` (used by the HRInversion authors'
evaluator and by pSp/e4e): ``input_layer.{0,1,2}``, ``body.{0..23}.shortcut_layer.{0,1}``,
``body.N.res_layer.{0..5}`` (``.5`` = squeeze-excitation ``fc1``/``fc2``), ``output_layer.{0,3,4}``.

Architecture: conv3x3(3->64) + BN + PReLU; 3+4+14+3 bottleneck IR-SE units at depths 64/128/256/512, the first of
each stage with stride 2 (residual branch: BN, conv3x3, PReLU, conv3x3/stride, BN, SE(1/16); shortcut: identity
subsampling, or conv1x1/stride + BN when the depth changes); BN2d(512), dropout, flatten, Linear(512*7*7 -> 512),
BN1d(512); L2 normalisation. Input: 112x112 RGB in [-1, 1].
"""

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointCorruptError, CheckpointFormatError, HRInvError, ShapeError, WeightsNotFoundError

__all__ = ["IRSE50", "STAGES", "load_irse50"]

log = logging.getLogger(__name__)

# num_layers -> units per stage; stage depths are fixed.
STAGES = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
DEPTHS = (64, 128, 256, 512)


class _SqueezeExcite(nn.Module):
    def __init__(self, channels, reduction=16, **dd):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False, **dd)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False, **dd)

    def forward(self, x):
        w = x.mean(dim=(2, 3), keepdim=True)  # [B, C, 1, 1]
        w = torch.sigmoid(self.fc2(F.relu(self.fc1(w))))  # [B, C, 1, 1]
        return x * w


class _Subsample(nn.Module):
    """Identity shortcut that keeps every ``stride``-th pixel (a 1x1 max-pool with that stride)."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        return x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x


class _IRUnit(nn.Module):
    """Improved-residual bottleneck unit (optionally with squeeze-excitation)."""

    def __init__(self, in_c, depth, stride, se=True, **dd):
        super().__init__()
        if in_c == depth:
            self.shortcut_layer = _Subsample(stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_c, depth, 1, stride, bias=False, **dd),
                                                nn.BatchNorm2d(depth, **dd))
        layers = [nn.BatchNorm2d(in_c, **dd), nn.Conv2d(in_c, depth, 3, 1, 1, bias=False, **dd),
                  nn.PReLU(depth, **dd), nn.Conv2d(depth, depth, 3, stride, 1, bias=False, **dd),
                  nn.BatchNorm2d(depth, **dd)]
        if se:
            layers.append(_SqueezeExcite(depth, 16, **dd))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE50(nn.Module):
    """ArcFace IR-SE backbone (default 50 layers) with the reference parameter names.

    Args:
        num_layers: 50 (default), 100 or 152.
        se: squeeze-excitation units (``'ir_se'``); False gives the plain ``'ir'`` variant.
        drop_ratio: dropout before the embedding layer (inactive in eval mode).
        device, dtype: where/how to allocate parameters.
    """

    def __init__(self, num_layers=50, se=True, drop_ratio=0.6, device=None, dtype=None):
        super().__init__()
        if num_layers not in STAGES:
            raise ValueError(f"num_layers must be one of {sorted(STAGES)}, got {num_layers}")
        dd = {"device": device, "dtype": dtype}
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False, **dd), nn.BatchNorm2d(64, **dd),
                                         nn.PReLU(64, **dd))
        units, in_c = [], 64
        for depth, n in zip(DEPTHS, STAGES[num_layers]):
            for k in range(n):
                units.append(_IRUnit(in_c, depth, 2 if k == 0 else 1, se=se, **dd))
                in_c = depth
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512, **dd), nn.Dropout(drop_ratio), nn.Flatten(),
                                          nn.Linear(512 * 7 * 7, 512, **dd), nn.BatchNorm1d(512, **dd))
        self.dim = 512
        self.input_size = (112, 112)
        self.meta = {}

    def forward(self, x):
        """Unit-norm embeddings of 112x112 face crops.

        Args:
            x: RGB in [-1, 1].

        Returns:
            L2-normalised embeddings.

        Shape:
            ``[B, 3, 112, 112] -> [B, 512]``.
        """
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != self.input_size:
            raise ShapeError(f"IR-SE50 expects RGB crops [B, 3, 112, 112] in [-1, 1], got {tuple(x.shape)}. Use "
                             f"the embedder's embed() to crop/resize images.")
        x = self.input_layer(x)  # [B, 64, 112, 112]
        x = self.body(x)  # [B, 512, 7, 7]
        x = self.output_layer(x)  # [B, 512]
        return F.normalize(x, dim=1)


def _unwrap(obj, path):
    """Find the state dict in a loaded object: the dict itself, or under 'state_dict'/'model'/'net'."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "net", "backbone"):
            if key in obj and isinstance(obj[key], dict) and not torch.is_tensor(obj[key]):
                obj = obj[key]
                break
        if all(isinstance(k, str) for k in obj) and all(torch.is_tensor(v) for v in obj.values()):
            sd = dict(obj)
            for prefix in ("module.", "facenet.", "backbone."):  # DataParallel / pSp IDLoss / wrappers
                if sd and all(k.startswith(prefix) for k in sd):
                    sd = {k[len(prefix):]: v for k, v in sd.items()}
            return sd
    raise CheckpointFormatError(f"{path}: expected a plain state dict (name -> tensor) of an IR-SE50 network such as "
                                f"model_ir_se50.pth, got a {type(obj).__name__}.")


def load_irse50(path, device=None, dtype=None):
    """Load ``model_ir_se50.pth`` (or a ``.safetensors`` with the same keys) into :class:`IRSE50`.

    The file is read with ``torch.load(weights_only=True)`` (no code runs). Keys are checked strictly: a missing or
    unexpected key, or a shape mismatch, raises with the offending names (``num_batches_tracked`` may be absent).

    Args:
        path: state-dict file.
        device, dtype: where/how to place the network (default CPU, float32).

    Returns:
        IRSE50 in eval mode with gradients disabled.

    Raises:
        WeightsNotFoundError, CheckpointFormatError, CheckpointCorruptError.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"IR-SE50 weights not found at {path}. Expected model_ir_se50.pth (the ArcFace "
                                   f"state dict of TreB1eN/InsightFace_Pytorch, also distributed with pSp/e4e).")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            obj = load_file(str(path))
        else:
            from ..io.safe_unpickle import check_tensor_views, check_torch_zip
            check_torch_zip(path, str(path))
            obj = torch.load(path, map_location="cpu", weights_only=True)
            check_tensor_views(obj, str(path))
    except HRInvError:
        raise
    except Exception as e:  # noqa: BLE001 - torch.load/safetensors raise many types (pickle, zip, globals)
        msg = str(e).splitlines()[0][:300]
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointFormatError(f"{path}: refused to load, the file is not a plain tensor state dict "
                                        f"({msg}). Nothing from it was executed.") from None
        raise CheckpointCorruptError(f"{path}: cannot read the file ({msg}); it may be truncated.") from None
    sd = _unwrap(obj, path)
    se = any(".res_layer.5.fc1.weight" in k for k in sd)
    n_units = len({k.split(".")[1] for k in sd if k.startswith("body.")})
    num_layers = next((n for n, s in STAGES.items() if sum(s) == n_units), 50)
    net = IRSE50(num_layers=num_layers, se=se)
    ref = net.state_dict()
    missing = [k for k in ref if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in ref]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs net {tuple(ref[k].shape)}" for k in ref
              if k in sd and tuple(sd[k].shape) != tuple(ref[k].shape)]
    if missing or unexpected or shapes:
        def few(xs):
            return ", ".join(xs[:8]) + (f" (+{len(xs) - 8} more)" if len(xs) > 8 else "") if xs else "none"
        raise CheckpointFormatError(f"{path}: not an IR-SE{num_layers} state dict with the reference key layout "
                                    f"(input_layer.*, body.N.*, output_layer.*). Missing: {few(missing)}. "
                                    f"Unexpected: {few(unexpected)}. Shape mismatches: {few(shapes)}.")
    net.load_state_dict({k: v for k, v in sd.items()}, strict=False)
    net.meta = {"path": str(path), "num_layers": num_layers, "se": se}
    return net.to(device=device, dtype=dtype).eval().requires_grad_(False)
