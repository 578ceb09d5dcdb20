"""``detect_faces``: MTCNN on a down-scaled copy of the photo, results in the photo's own pixel coordinates."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InvalidSettingError, ShapeError

__all__ = ["FaceDetection", "as_photo", "detect_faces"]

log = logging.getLogger(__name__)

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass
class FaceDetection:
    """One detected face, in continuous pixel coordinates of the photo (pixel (i, j) covers [j, j+1) x [i, i+1)).

    Attributes:
        box: ``[4]`` x1, y1, x2, y2.
        score: O-Net face probability.
        landmarks: ``[5, 2]`` (x, y) of the left eye, right eye, nose tip, left and right mouth corner ("left" =
            smaller x in an upright face, i.e. the person's right side).
    """

    box: torch.Tensor
    score: float
    landmarks: torch.Tensor

    @property
    def size(self) -> float:
        """Face size in pixels: the longer side of the box."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    def to_dict(self) -> dict:
        return {"box": [float(v) for v in self.box], "score": float(self.score),
                "landmarks": [[float(x), float(y)] for x, y in self.landmarks.tolist()]}

    @classmethod
    def from_dict(cls, d) -> "FaceDetection":
        return cls(torch.tensor(d["box"], dtype=torch.float32), float(d["score"]),
                   torch.tensor(d["landmarks"], dtype=torch.float32).reshape(5, 2))


def as_photo(image, name: str = "image") -> torch.Tensor:
    """A photo as ``[3, H, W]`` float32 in [0, 1] (a new tensor or the input itself; never modified).

    Accepts a PIL image of any mode (grey, 16-bit, RGBA composited over white, palette), or a tensor ``[C, H, W]`` /
    ``[1, C, H, W]`` with C = 1 (grey), 3 or 4 (alpha composited over white); float in [0, 1], or uint8 (0..255) /
    int16/int32 (0..65535).
    """
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        from ..imageio import pil_to_tensor

        return pil_to_tensor(image)
    if not isinstance(image, torch.Tensor):
        raise ShapeError(f"{name}: expected a PIL image or a tensor [3, H, W] in [0, 1], got {type(image).__name__}")
    x = image
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[0] not in (1, 3, 4):
        raise ShapeError(f"{name}: expected one photo [3, H, W] (or [1|4, H, W]) in [0, 1], got shape "
                         f"{tuple(image.shape)}. For a ComfyUI IMAGE [B, H, W, C] take one image and permute it.")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif not x.is_floating_point():
        x = x.float() / 65535.0
    else:
        x = x.float()
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise ShapeError(f"{name}: the photo is empty ({tuple(image.shape)})")
    if x.numel() and (x.min() < -1e-3 or x.max() > 1 + 1e-3):
        raise ShapeError(f"{name}: expected values in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]. "
                         f"Library images in [-1, 1] convert with (x + 1) / 2.")
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    elif x.shape[0] == 4:
        x = x[:3] * x[3:] + (1 - x[3:])
    return x.clamp(0, 1)


def detect_faces(image, *, device=None, min_size: float = 20, thresholds=(0.6, 0.7, 0.7), max_side: int = 1280,
                 factor: float = 0.709, weights=None, refine: int = 2) -> list:
    """Find faces and their five landmarks with MTCNN (pure PyTorch, bundled weights).

    Detection runs on a copy of the photo whose longer side is at most ``max_side`` pixels, so a 20 MP photo costs
    about as much as a 1 MP one and memory stays bounded; boxes and landmarks are mapped back to the photo.

    Args:
        image: the photo: ``[3, H, W]`` float in [0, 1], or a PIL image (see :func:`as_photo` for other forms).
        device: torch device for the networks (default: the tensor's device, else cpu).
        min_size: smallest face (box side) to report, in pixels of the photo. Faces smaller than about 20 px of
            the detection copy (``20 * longer side / max_side`` photo pixels) cannot be found.
        thresholds: face-probability thresholds of the P-, R- and O-Net stages.
        max_side: longer side of the detection copy (photos smaller than this are used as they are).
        factor: scale step of the image pyramid.
        weights: MTCNN weights file or facenet-pytorch folder (default: the bundled ``mtcnn.safetensors``).
        refine: landmark refinement passes (default 2): each face is cut out upright (de-rotated with its own
            landmarks, the FFHQ square at 192 px), its box there is found once by the cascade, and O-Net alone runs
            on that box and on four copies shifted by 5 % of its side, each view also mirrored; the landmarks of
            the ten views are averaged. MTCNN was trained on mostly upright faces; this keeps rolled faces (±40°) as accurate as
            upright ones and halves the landmark noise. 0 = off (plain MTCNN).

    Returns:
        list of :class:`FaceDetection`, largest face first (by box area).
    """
    from .mtcnn import load_mtcnn, run_mtcnn

    if len(thresholds) != 3 or not all(0.0 <= float(t) <= 1.0 for t in thresholds):
        raise InvalidSettingError(f"thresholds: expected three probabilities in [0, 1], got {thresholds!r}")
    if max_side < 48:
        raise InvalidSettingError(f"max_side: expected at least 48 pixels, got {max_side}")
    if not 0.1 <= factor < 1.0:
        raise InvalidSettingError(f"factor: expected a pyramid step in [0.1, 1), got {factor}")
    photo = as_photo(image)
    if device is None:
        device = photo.device
    device = torch.device(device)
    net = load_mtcnn(weights, device=device)
    H, W = photo.shape[-2:]
    scale = min(1.0, float(max_side) / max(H, W))
    if scale < 1.0:
        small = F.interpolate(photo[None].to(device), size=(max(1, round(H * scale)), max(1, round(W * scale))),
                              mode="area")[0]
        sy, sx = small.shape[1] / H, small.shape[2] / W
    else:
        small, sy, sx = photo.to(device), 1.0, 1.0
    det_min = max(float(min_size) * min(sx, sy), 12.0)
    if det_min > float(min_size) * min(sx, sy) + 1e-6 and scale < 1.0:
        log.debug("detect_faces: the smallest findable face is %.0f px in this %dx%d photo (max_side=%d)",
                  det_min / min(sx, sy), W, H, max_side)
    if min(small.shape[1:]) < 12:
        return []
    boxes, scores, points = run_mtcnn(net, small * 255.0, min_size=det_min, thresholds=tuple(thresholds),
                                      factor=factor)
    if boxes.shape[0] == 0:
        return []
    div = torch.tensor([sx, sy, sx, sy])
    boxes = boxes / div
    points = points / torch.tensor([sx, sy])
    out = [FaceDetection(b, float(s), p) for b, s, p in zip(boxes, scores, points)]
    out = [d for d in out if d.size >= float(min_size)]
    if int(refine) > 0:
        out = [_refine(net, photo, d, device, factor, int(refine)) for d in out]
    out.sort(key=lambda d: -float((d.box[2] - d.box[0]) * (d.box[3] - d.box[1])))
    return out


_REFINE_SIZE = 192
# Where the mean of the five landmarks falls in an FFHQ crop (fraction of the side), used to pick the right face.
_LANDMARK_CENTRE = (0.5, 0.58)
# The refinement's O-Net views: the box and four copies shifted by 5 % of its side, each view also mirrored;
# averaging them halves O-Net's landmark noise.
_SHIFTS = ((0.0, 0.0), (-0.05, 0.0), (0.05, 0.0), (0.0, -0.05), (0.0, 0.05))


def _refine(net, photo, det: FaceDetection, device, factor, passes: int) -> FaceDetection:
    """Re-detect the landmarks of one face on an upright FFHQ crop of it (see ``refine`` of :func:`detect_faces`).

    The first pass finds the face's box in the upright crop with one MTCNN cascade; every pass then runs O-Net
    alone on that box (the crop is normalised by the landmarks, so the box stays put in it) and on four shifted
    copies, each also mirrored: one batch of ten 48 px crops instead of six cascades."""
    from .align import FaceTransform, ffhq_quad, warp_face
    from .mtcnn import onet_landmarks

    S = _REFINE_SIZE
    target = torch.tensor(_LANDMARK_CENTRE) * S
    box = None
    for _ in range(passes):
        t = FaceTransform(quad=ffhq_quad(det.landmarks), photo_size=tuple(photo.shape[-2:]))
        crop = warp_face(photo, t, S, padding="edge", device=device)[0] * 255.0
        box = _upright_box(net, crop, target, factor) if box is None else box
        if box is None:
            return det  # no face there that is this one: keep the first-pass landmarks
        centre, side = (box[:2] + box[2:]) / 2, float((box[2:] - box[:2]).max())  # square, as O-Net's boxes
        centres = centre + side * torch.tensor(_SHIFTS)  # [5, 2]
        scores, points = onet_landmarks(net, crop, torch.cat([centres - side / 2, centres + side / 2], 1))  # [10]
        ok = (scores > 0.6) & (torch.linalg.vector_norm(points.mean(1) - target, dim=1) <= 0.15 * S)
        if not ok.any():
            return det
        A = t.crop_to_photo(S).float()
        det = FaceDetection(det.box, det.score, points[ok].mean(0) @ A[:, :2].T + A[:, 2])  # photo coordinates
    return det


def _upright_box(net, crop, target, factor):
    """The box ``[4]`` (continuous xyxy) of the face that the upright crop is centred on, or None."""
    from .mtcnn import run_mtcnn

    boxes, _, points = run_mtcnn(net, crop, min_size=crop.shape[-1] / 8, thresholds=(0.5, 0.6, 0.6), factor=factor)
    if points.shape[0] == 0:
        return None
    dist = torch.linalg.vector_norm(points.mean(1) - target, dim=1)
    k = int(dist.argmin())
    return boxes[k] if float(dist[k]) <= 0.15 * crop.shape[-1] else None
