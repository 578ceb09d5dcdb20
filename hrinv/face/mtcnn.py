"""MTCNN face detector (Zhang et al. 2016, "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks") in plain PyTorch: boxes, scores and five landmarks.

The three networks (P-Net, R-Net, O-Net) use the parameter names of the MIT-licensed facenet-pytorch state dicts, so
those weights load strictly. The bundled ``hrinv/bundled/mtcnn.safetensors`` holds all three (keys ``pnet.*``,
``rnet.*``, ``onet.*``). No compiled ops: non-maximum suppression is written here in torch.

Coordinates returned by :func:`run_mtcnn` are *continuous* pixel coordinates: the pixel with index ``(i, j)`` covers
``[j, j+1) x [i, i+1)``, so its centre is ``(j + 0.5, i + 0.5)`` (the convention of ``grid_sample`` with
``align_corners=False`` and of PIL's transforms). MTCNN's own 1-based box corners and 0-based landmark indices are
converted once, at the end.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointFormatError, InvalidSettingError

__all__ = ["PNet", "RNet", "ONet", "MTCNN", "load_mtcnn", "nms", "onet_landmarks", "run_mtcnn"]

log = logging.getLogger(__name__)


class PNet(nn.Module):
    """Proposal network: fully convolutional, 12x12 receptive field, stride 2. Returns (box offsets, face prob)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.prelu1 = nn.PReLU(10)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x):  # x [B, 3, H, W] normalised -> reg [B, 4, h, w], prob [B, h, w]
        x = self.prelu1(self.conv1(x))
        x = F.max_pool2d(x, 2, 2, ceil_mode=True)
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)[:, 1]


class _CropNet(nn.Module):
    """R-Net and O-Net: layers ``conv{i}`` + ``prelu{i}`` (each followed by a stride-2 max-pool of the size in
    ``pools``, 0 = none), one dense + PReLU layer, then the heads ``dense{n}_{j}``: face logits, box offsets (and
    landmarks). Returns the heads after the logits, then the face probability."""

    def __init__(self, convs, pools, dense, heads):
        super().__init__()
        self.pools = pools
        for i, (cin, cout, k) in enumerate(convs, 1):
            self.add_module(f"conv{i}", nn.Conv2d(cin, cout, k))
            self.add_module(f"prelu{i}", nn.PReLU(cout))
        n = len(convs) + 1
        self.add_module(f"dense{n}", nn.Linear(*dense))
        self.add_module(f"prelu{n}", nn.PReLU(dense[1]))
        for j, out in enumerate(heads, 1):
            self.add_module(f"dense{n + 1}_{j}", nn.Linear(dense[1], out))
        self.n_heads = len(heads)

    def forward(self, x):
        layer = self.get_submodule
        for i, pool in enumerate(self.pools, 1):
            x = layer(f"prelu{i}")(layer(f"conv{i}")(x))
            if pool:
                x = F.max_pool2d(x, pool, 2, ceil_mode=True)
        n = len(self.pools) + 1
        # The weights were converted from Caffe, whose flatten order is (C, W, H).
        x = layer(f"prelu{n}")(layer(f"dense{n}")(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        logits, *rest = (layer(f"dense{n + 1}_{j}")(x) for j in range(1, self.n_heads + 1))
        return (*rest, torch.softmax(logits, dim=1)[:, 1])


class RNet(_CropNet):
    """Refinement network on 24x24 crops. Returns (box offsets [B, 4], face prob [B])."""

    def __init__(self):
        super().__init__(convs=[(3, 28, 3), (28, 48, 3), (48, 64, 2)], pools=(3, 3, 0), dense=(576, 128),
                         heads=(2, 4))


class ONet(_CropNet):
    """Output network on 48x48 crops. Returns (box offsets [B, 4], landmarks [B, 10] = 5 x then 5 y, prob [B])."""

    def __init__(self):
        super().__init__(convs=[(3, 32, 3), (32, 64, 3), (64, 64, 3), (64, 128, 2)], pools=(3, 3, 2, 0),
                         dense=(1152, 256), heads=(2, 4, 10))


class MTCNN(nn.Module):
    """The three MTCNN stages in one module (state-dict keys ``pnet.*``, ``rnet.*``, ``onet.*``)."""

    def __init__(self):
        super().__init__()
        self.pnet = PNet()
        self.rnet = RNet()
        self.onet = ONet()


_CACHE: dict = {}
_LOCK = threading.Lock()


def _default_path() -> Path:
    from .. import bundled

    return bundled.path("mtcnn.safetensors")


def load_mtcnn(path=None, device=None, dtype=torch.float32) -> MTCNN:
    """Load the MTCNN weights (default: the bundled ``mtcnn.safetensors``), cached per (file, device, dtype).

    ``path`` may also be a folder holding facenet-pytorch's ``pnet.pt``, ``rnet.pt`` and ``onet.pt`` (read with
    ``torch.load(weights_only=True)``). The returned module is frozen and in eval mode; do not modify it.
    """
    path = Path(path) if path is not None else _default_path()
    device = torch.device(device or "cpu")
    key = (str(path.resolve()), str(device), str(dtype))
    with _LOCK:
        net = _CACHE.get(key)
        if net is None:
            net = MTCNN()
            sd = read_mtcnn_state_dict(path)
            try:
                net.load_state_dict(sd, strict=True)
            except RuntimeError as e:
                raise CheckpointFormatError(
                    f"{path} is not an MTCNN checkpoint with facenet-pytorch's parameter names ({e}). Use the bundled "
                    f"hrinv/bundled/mtcnn.safetensors or facenet-pytorch's pnet.pt/rnet.pt/onet.pt.") from None
            net = net.to(device=device, dtype=dtype).eval().requires_grad_(False)
            _CACHE[key] = net
    return net


def read_mtcnn_state_dict(path) -> dict:
    """State dict with ``pnet.``/``rnet.``/``onet.`` prefixes from our .safetensors or a folder of facenet .pt files."""
    path = Path(path)
    if path.is_dir():
        sd = {}
        for name in ("pnet", "rnet", "onet"):
            f = path / f"{name}.pt"
            if not f.is_file():
                raise CheckpointFormatError(f"{path} has no {name}.pt; expected facenet-pytorch's pnet.pt, rnet.pt "
                                            f"and onet.pt in that folder")
            part = torch.load(f, map_location="cpu", weights_only=True)
            sd.update({f"{name}.{k}": v for k, v in part.items()})
        return sd
    if path.suffix != ".safetensors":
        raise CheckpointFormatError(f"{path}: expected mtcnn.safetensors or a folder with pnet.pt/rnet.pt/onet.pt")
    from safetensors.torch import load_file

    return load_file(str(path))


# ----------------------------------------------------------------------------------------------------------------
# Box utilities (all boxes here are MTCNN's 1-based inclusive corners until the final conversion)


def _overlap(b1, a1, b2, a2, mode):
    """[K, M] overlap of boxes ``b1`` [K, 4] (areas ``a1``) with ``b2`` [M, 4]: IoU, or intersection over the smaller
    box with ``mode="min"``. Element by element the same operations, in the same order, as the pairwise formula of
    MTCNN's NMS, so each value is bit-identical to it."""
    w = (torch.minimum(b1[:, None, 2], b2[None, :, 2]) - torch.maximum(b1[:, None, 0], b2[None, :, 0]) + 1).clamp(min=0)
    h = (torch.minimum(b1[:, None, 3], b2[None, :, 3]) - torch.maximum(b1[:, None, 1], b2[None, :, 1]) + 1).clamp(min=0)
    inter = w * h
    if mode == "min":
        return inter / torch.minimum(a1[:, None], a2[None, :]).clamp(min=1e-12)
    return inter / (a1[:, None] + a2[None, :] - inter).clamp(min=1e-12)


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: str = "union", *,
        block: int = 256) -> torch.Tensor:
    """Greedy non-maximum suppression. ``boxes`` [N, 4] xyxy (inclusive pixel corners, MTCNN convention: width =
    x2 - x1 + 1), ``scores`` [N]. ``mode`` "union" (IoU) or "min" (intersection over the smaller box). Returns the
    kept indices, best first.

    Greedy in the order ``torch.argsort(scores, descending=True)`` (ties: that sort's order): a box is kept unless a
    box kept before it overlaps it by more than ``threshold`` (an overlap that is NaN counts as more). Vectorised
    and exact: the boxes are taken ``block`` at a time (best first); each block is checked against every box kept
    so far in one [kept, block] comparison, then resolved inside itself by iterating ``keep[q] = not any(keep[p] and
    p suppresses q, p < q)`` to its fixed point (unique, since box q depends only on the boxes before it; the
    iteration count is the longest chain of suppressions in the block, not the block size). ``block`` bounds the
    memory (about ``kept x block`` overlaps at a time) and does not change the result."""
    if mode not in ("union", "min"):
        raise InvalidSettingError(f"nms mode must be 'union' or 'min', got {mode!r}")
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1 + 1).clamp(min=0) * (y2 - y1 + 1).clamp(min=0)
    order = torch.argsort(scores, descending=True)
    b, a = boxes[order], area[order]
    n, block = b.shape[0], max(1, int(block))
    kept = []                                            # positions in `order` of the kept boxes, best first
    kept_b, kept_a = b[:0], a[:0]
    for s in range(0, n, block):
        cb, ca = b[s:s + block], a[s:s + block]
        m = cb.shape[0]
        alive = torch.ones(m, dtype=torch.bool, device=b.device)
        for k in range(0, kept_b.shape[0], 4096):       # suppressed by a box kept in an earlier block
            alive &= (_overlap(kept_b[k:k + 4096], kept_a[k:k + 4096], cb, ca, mode) <= threshold).all(0)
        if m > 1:
            sup = ~(_overlap(cb, ca, cb, ca, mode) <= threshold)
            sup &= torch.ones(m, m, dtype=torch.bool, device=b.device).triu(1)   # only p < q suppresses q
            sup &= alive[:, None]
            keep = alive
            while True:
                new = alive & ~(sup & keep[:, None]).any(0)
                if torch.equal(new, keep):
                    break
                keep = new
        else:
            keep = alive
        idx = keep.nonzero()[:, 0]
        if idx.numel():
            kept.append(idx + s)
            kept_b, kept_a = torch.cat([kept_b, cb[idx]]), torch.cat([kept_a, ca[idx]])
    return order[torch.cat(kept)] if kept else torch.zeros(0, dtype=torch.long, device=boxes.device)


def _square(boxes):
    """Make boxes square around their centre (MTCNN's ``rerec``); returns a new tensor."""
    out = boxes.clone()
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes, reg):
    """Apply the networks' box offsets (``bbreg``): offsets are in units of the box size."""
    out = boxes.clone()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, 0] = boxes[:, 0] + reg[:, 0] * w
    out[:, 1] = boxes[:, 1] + reg[:, 1] * h
    out[:, 2] = boxes[:, 2] + reg[:, 2] * w
    out[:, 3] = boxes[:, 3] + reg[:, 3] * h
    return out


def _pyramid(img, levels=6):
    """[img, img/2, img/4, ...] by 2x2 averaging (used to crop big boxes cheaply)."""
    out = [img]
    for _ in range(levels):
        if min(out[-1].shape[-2:]) < 4:
            break
        out.append(F.avg_pool2d(out[-1][None], 2, ceil_mode=True)[0])
    return out


def _crops(pyr, boxes, size):
    """Crop every box (1-based inclusive corners, truncated to ints like MTCNN) out of the image (``pyr[0]``,
    [3, H, W] in 0..255), zero-padding where a box leaves the image, and area-resize to ``size``. A big box is cut
    from the pyramid level where it is still at least ``size`` pixels wide, so the cost does not grow with the
    photo's resolution. Returns [N, 3, size, size]."""
    out = []
    for x1, y1, x2, y2 in boxes[:, :4].trunc().long().tolist():
        x1, y1 = x1 - 1, y1 - 1  # 0-based inclusive
        w, h = max(x2 - x1, 1), max(y2 - y1, 1)
        k = 0
        while k + 1 < len(pyr) and min(w, h) >> (k + 1) >= size:
            k += 1
        img = pyr[k]
        _, H, W = img.shape
        if k:
            f = 1 << k
            x1, y1, w, h = x1 // f, y1 // f, max(w // f, 1), max(h // f, 1)
        sx0, sy0 = max(x1, 0), max(y1, 0)
        sx1, sy1 = min(x1 + w, W), min(y1 + h, H)
        if sx0 == x1 and sy0 == y1 and sx1 == x1 + w and sy1 == y1 + h:
            patch = img[:, y1:y1 + h, x1:x1 + w]
        else:
            patch = img.new_zeros((3, h, w))
            if sx1 > sx0 and sy1 > sy0:
                patch[:, sy0 - y1:sy1 - y1, sx0 - x1:sx1 - x1] = img[:, sy0:sy1, sx0:sx1]
        out.append(F.interpolate(patch[None], size=(size, size), mode="area"))
    return torch.cat(out)


def _normalise(x):
    return (x - 127.5) * 0.0078125


def _stage(fn, pyr, boxes, size, chunk):
    """Run the refinement network ``fn`` (R-Net or O-Net) on the ``size`` x ``size`` crops of ``boxes``, ``chunk``
    crops at a time; returns its outputs, concatenated."""
    outs = [fn(_normalise(_crops(pyr, boxes[s:s + chunk], size))) for s in range(0, boxes.shape[0], chunk)]
    return tuple(torch.cat(o) for o in zip(*outs))


def _landmarks(boxes, lm):
    """O-Net's landmark outputs ``lm [N, 10]`` (relative to the truncated crop it saw) -> 0-based pixel indices
    ``[N, 5, 2]``."""
    bt = boxes.trunc()
    bw = bt[:, 2] - bt[:, 0] + 1
    bh = bt[:, 3] - bt[:, 1] + 1
    px = bw[:, None] * lm[:, :5] + bt[:, 0:1] - 1
    py = bh[:, None] * lm[:, 5:] + bt[:, 1:2] - 1
    return torch.stack([px, py], 2)


@torch.no_grad()
def onet_landmarks(net: MTCNN, img: torch.Tensor, boxes: torch.Tensor, mirror: bool = True):
    """O-Net alone on known boxes: MTCNN's last stage without the search of the first two.

    Args:
        net: a loaded :class:`MTCNN`.
        img: ``[3, H, W]`` float in 0..255 on the network's device.
        boxes: ``[N, 4]`` xyxy in continuous pixel coordinates of ``img`` (square boxes, as O-Net was trained on).
        mirror: also run O-Net on the mirror image of every crop and map its landmarks back (left/right swapped),
            which cancels most of O-Net's left/right bias when the two are averaged.

    Returns:
        ``(scores [M], landmarks [M, 5, 2])`` in continuous coordinates of ``img``, on the CPU, float32; ``M = N``,
        or ``2N`` with ``mirror`` (the mirrored views last).
    """
    dtype = next(net.parameters()).dtype
    b = boxes.to(device=img.device, dtype=dtype)
    b = torch.stack([b[:, 0] + 1, b[:, 1] + 1, b[:, 2], b[:, 3]], 1)  # continuous -> MTCNN 1-based corners
    x = _normalise(_crops(_pyramid(img.to(dtype)), b, 48))  # [N, 3, 48, 48]
    if mirror:
        x = torch.cat([x, x.flip(-1)])
    _, lm, prob = net.onet(x)
    points = _landmarks(b.repeat(2 if mirror else 1, 1), lm) + 0.5  # [M, 5, 2] continuous
    if mirror:
        n = b.shape[0]
        start = b[:, 0].trunc() - 1  # the crop spans [start, start + width) in continuous x
        width = b[:, 2].trunc() - b[:, 0].trunc() + 1
        flipped = points[n:, [1, 0, 2, 4, 3]]
        flipped = torch.stack([2 * start[:, None] + width[:, None] - flipped[..., 0], flipped[..., 1]], -1)
        points = torch.cat([points[:n], flipped])
    return prob.float().cpu(), points.float().cpu()


@torch.no_grad()
def run_mtcnn(net: MTCNN, img: torch.Tensor, min_size: float = 20.0, thresholds=(0.6, 0.7, 0.7),
              factor: float = 0.709, chunk: int = 256):
    """Run the MTCNN cascade on one image.

    Args:
        net: a loaded :class:`MTCNN`.
        img: ``[3, H, W]`` float in 0..255 on the network's device.
        min_size: smallest face side searched, in pixels of ``img``.
        thresholds: face-probability thresholds of the P-, R- and O-Net stages.
        factor: scale step of the image pyramid.
        chunk: crops per R-/O-Net batch.

    Returns:
        ``(boxes [N, 4] xyxy, scores [N], landmarks [N, 5, 2])`` in continuous pixel coordinates of ``img``
        (see the module docstring), on the CPU, float32, in no particular order.
    """
    dtype = next(net.parameters()).dtype
    img = img.to(dtype)
    _, H, W = img.shape
    empty = (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, 5, 2))
    m = 12.0 / float(min_size)
    minl = min(H, W) * m
    scale = m
    props = []
    # Stage 1: P-Net on an image pyramid
    while minl >= 12:
        hs, ws = int(H * scale + 1), int(W * scale + 1)
        x = _normalise(F.interpolate(img[None], size=(hs, ws), mode="area"))
        reg, prob = net.pnet(x)
        reg, prob = reg[0], prob[0]  # [4, h, w], [h, w]
        mask = prob >= thresholds[0]
        if mask.any():
            idx = mask.nonzero()  # [K, 2] (y, x)
            score = prob[mask]
            r = reg[:, mask].t()  # [K, 4]
            xy = idx.flip(1).to(dtype)  # (x, y)
            q1 = torch.floor((2 * xy + 1) / scale)
            q2 = torch.floor((2 * xy + 12) / scale)
            b = torch.cat([q1, q2], 1)
            keep = nms(b, score, 0.5)
            props.append(torch.cat([b[keep], score[keep, None], r[keep]], 1))
        scale *= factor
        minl *= factor
    if not props:
        return empty
    boxes = torch.cat(props)
    keep = nms(boxes[:, :4], boxes[:, 4], 0.7)
    boxes = boxes[keep]
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    refined = torch.stack([boxes[:, 0] + boxes[:, 5] * w, boxes[:, 1] + boxes[:, 6] * h,
                           boxes[:, 2] + boxes[:, 7] * w, boxes[:, 3] + boxes[:, 8] * h], 1)
    boxes = _square(refined)

    # Stage 2: R-Net on 24x24 crops
    pyr = _pyramid(img)
    reg, prob = _stage(net.rnet, pyr, boxes, 24, chunk)
    ok = prob > thresholds[1]
    if not ok.any():
        return empty
    boxes, reg, prob = boxes[ok], reg[ok], prob[ok]
    keep = nms(boxes, prob, 0.7)
    boxes = _square(_regress(boxes[keep], reg[keep]))

    # Stage 3: O-Net on 48x48 crops -> scores, box offsets, landmarks
    reg, lm, prob = _stage(net.onet, pyr, boxes, 48, chunk)
    ok = prob > thresholds[2]
    if not ok.any():
        return empty
    boxes, reg, lm, prob = boxes[ok], reg[ok], lm[ok], prob[ok]
    points = _landmarks(boxes, lm)
    boxes = _regress(boxes, reg)
    keep = nms(boxes, prob, 0.7, mode="min")
    boxes, prob, points = boxes[keep], prob[keep], points[keep]
    # MTCNN 1-based inclusive corners -> continuous; 0-based pixel indices -> continuous (centre = index + 0.5).
    boxes = torch.stack([boxes[:, 0] - 1, boxes[:, 1] - 1, boxes[:, 2], boxes[:, 3]], 1)
    points = points + 0.5
    return boxes.float().cpu(), prob.float().cpu(), points.float().cpu()
