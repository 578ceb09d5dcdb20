"""FFHQ-style face alignment from five landmarks, as one resampling per face (``grid_sample``), with the transform
kept so the result can be warped back (:mod:`hrinv.face.paste`).

The FFHQ recipe (NVlabs ffhq-dataset, ``recreate_aligned_images``), from the eye centres and the mouth corners:

- ``eye_to_eye = right_eye - left_eye``, ``eye_to_mouth = mouth_centre - eye_centre``;
- ``x = eye_to_eye - rot90(eye_to_mouth)``, normalised, scaled to ``max(2 |eye_to_eye|, 1.8 |eye_to_mouth|)``;
  ``y = rot90(x)``; centre ``c = eye_centre + 0.1 eye_to_mouth``;
- the oriented square ``quad = [c - x - y, c - x + y, c + x + y, c + x - y]`` (top-left, bottom-left, bottom-right,
  top-right) is mapped onto the output square;
- where the quad leaves the photo, the photo is reflect-padded, the padding blurred (sigma = 2 % of the quad) and
  faded towards the median colour.

Differences from the reference script (docs/face-alignment.md): landmarks come from MTCNN (eye centres and mouth
corners directly) instead of dlib's 68 points; the crop is a single resampling (antialiased down-scaling to the
output's pixel size, then one bicubic ``grid_sample``) instead of shrink + crop + pad + 4096-px QUAD + ANTIALIAS
resize; the padding blur/fade only touches pixels near the photo's border, not the edges of the intermediate crop.

Coordinates are continuous (see :mod:`hrinv.face.mtcnn`); a crop of side S has its own continuous coordinates in
[0, S]. ``FaceTransform.crop_to_photo(S)`` is the 2x3 matrix taking crop coordinates to photo coordinates.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import InvalidSettingError, NoFaceFoundError, ShapeError
from .detect import FaceDetection, as_photo, detect_faces

__all__ = ["FaceAlignment", "FaceTransform", "align_faces", "ffhq_quad", "warp_face", "whole_image_alignment"]

log = logging.getLogger(__name__)

PADDING_MODES = ("reflect", "edge", "zeros")


def ffhq_quad(landmarks) -> torch.Tensor:
    """The FFHQ oriented square from five landmarks ``[5, 2]`` (left eye, right eye, nose, left/right mouth corner).

    Returns ``[4, 2]`` float64 corners: top-left, bottom-left, bottom-right, top-right (FFHQ's order).
    """
    lm = torch.as_tensor(landmarks, dtype=torch.float64).reshape(5, 2)
    eye_left, eye_right = lm[0], lm[1]
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[3] + lm[4]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - torch.stack([-eye_to_mouth[1], eye_to_mouth[0]])  # eye_to_eye - flipud(e2m) * [-1, 1]
    x = x / torch.linalg.vector_norm(x).clamp(min=1e-12)
    x = x * max(float(torch.linalg.vector_norm(eye_to_eye)) * 2.0, float(torch.linalg.vector_norm(eye_to_mouth)) * 1.8)
    y = torch.stack([-x[1], x[0]])  # flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return torch.stack([c - x - y, c - x + y, c + x + y, c + x - y])


@dataclass
class FaceTransform:
    """Where one aligned face came from.

    Attributes:
        quad: ``[4, 2]`` photo coordinates of the crop's top-left, bottom-left, bottom-right, top-right corners.
        photo_size: (H, W) of the photo.
        detection: the :class:`FaceDetection` it was made from (box, score, landmarks), or None.
        index: rank of the face in the photo (0 = largest).
    """

    quad: torch.Tensor
    photo_size: tuple
    detection: FaceDetection | None = None
    index: int = 0

    @property
    def size(self) -> float:
        """Side of the quad in photo pixels (FFHQ's ``qsize``)."""
        q = self.quad.double()
        return float(torch.linalg.vector_norm(q[3] - q[0]))

    @property
    def angle(self) -> float:
        """Roll of the face in degrees (0 = upright, positive = the face's top-right corner is lower)."""
        d = self.quad[3].double() - self.quad[0].double()
        return math.degrees(math.atan2(float(d[1]), float(d[0])))

    def crop_to_photo(self, size: int) -> torch.Tensor:
        """``[2, 3]`` float64 A with ``photo_xy = A @ [u, v, 1]`` for continuous coordinates (u, v) in a crop of side
        ``size``."""
        q = self.quad.double()
        ex = (q[3] - q[0]) / size  # photo step per crop pixel along u
        ey = (q[1] - q[0]) / size  # along v
        return torch.stack([torch.stack([ex[0], ey[0], q[0, 0]]), torch.stack([ex[1], ey[1], q[0, 1]])])

    def photo_to_crop(self, size: int) -> torch.Tensor:
        """``[2, 3]`` float64 inverse of :meth:`crop_to_photo`."""
        A = self.crop_to_photo(size)
        M = torch.linalg.inv(A[:, :2])
        return torch.cat([M, -(M @ A[:, 2:])], 1)

    def cv2_affine(self, size: int) -> list:
        """Photo -> crop 2x3 matrix in OpenCV's convention (pixel centres at integers), for ``cv2.warpAffine`` and
        ComfyUI face tools that store 2x3 warps."""
        M = self.photo_to_crop(size)
        # x_cv = x - 0.5 on both sides: u_cv = M (x_cv + 0.5) + t - 0.5
        t = M[:, 2] + M[:, :2] @ torch.tensor([0.5, 0.5], dtype=M.dtype) - 0.5
        return torch.cat([M[:, :2], t[:, None]], 1).tolist()

    def to_dict(self, size: int | None = None) -> dict:
        d = {"index": int(self.index), "quad": self.quad.double().tolist(), "photo_size": list(self.photo_size),
             "qsize": self.size, "angle_deg": self.angle,
             "detection": self.detection.to_dict() if self.detection is not None else None}
        if size is not None:
            d["crop_size"] = int(size)
            d["crop_to_photo"] = self.crop_to_photo(size).tolist()
            d["photo_to_crop"] = self.photo_to_crop(size).tolist()
            d["cv2_photo_to_crop"] = self.cv2_affine(size)
        return d

    @classmethod
    def from_dict(cls, d) -> "FaceTransform":
        det = d.get("detection")
        return cls(quad=torch.tensor(d["quad"], dtype=torch.float64).reshape(4, 2),
                   photo_size=tuple(int(v) for v in d["photo_size"]),
                   detection=FaceDetection.from_dict(det) if det else None, index=int(d.get("index", 0)))


@dataclass
class FaceAlignment:
    """The aligned faces of one photo and how to put them back.

    Attributes:
        crops: ``[N, 3, size, size]`` float in [-1, 1] (the library's image convention), or None when rebuilt from
            JSON.
        faces: list of N :class:`FaceTransform`.
        masks: ``[N, 1, size, size]`` in [0, 1]: 1 where the crop shows the photo, 0 where it is padding.
        photo_size: (H, W) of the photo.
        size: crop side.
        settings: how the faces were found and aligned.
    """

    crops: torch.Tensor | None
    faces: list
    masks: torch.Tensor | None
    photo_size: tuple
    size: int
    settings: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.faces)

    def to_dict(self) -> dict:
        return {"format": "hrinv.face_alignment", "version": 1, "photo_size": list(self.photo_size),
                "size": int(self.size), "settings": self.settings,
                "faces": [f.to_dict(self.size) for f in self.faces]}

    def to_json(self) -> str:
        """The transforms (not the pixels) as a JSON string."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, data) -> "FaceAlignment":
        """Rebuild from :meth:`to_json` output (a string or the parsed dict); ``crops``/``masks`` are None."""
        d = json.loads(data) if isinstance(data, (str, bytes)) else data
        if not isinstance(d, dict) or d.get("format") != "hrinv.face_alignment":
            raise ShapeError("expected the JSON written by FaceAlignment.to_json (format 'hrinv.face_alignment'), "
                             f"got {str(d)[:80]!r}")
        return cls(crops=None, faces=[FaceTransform.from_dict(f) for f in d["faces"]], masks=None,
                   photo_size=tuple(d["photo_size"]), size=int(d["size"]), settings=d.get("settings", {}))

    def select(self, indices) -> "FaceAlignment":
        """A new FaceAlignment with only the given faces (in that order)."""
        idx = list(indices)
        return FaceAlignment(crops=None if self.crops is None else self.crops[idx],
                             faces=[self.faces[i] for i in idx],
                             masks=None if self.masks is None else self.masks[idx],
                             photo_size=self.photo_size, size=self.size, settings=dict(self.settings))


# ----------------------------------------------------------------------------------------------------------------
# Warping


def _index(idx: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """Map integer indices (any range) into [0, n) by reflection (numpy 'reflect', no edge repeat) or clamping."""
    if mode == "reflect" and n > 1:
        period = 2 * (n - 1)
        i = torch.remainder(idx, period)
        return torch.where(i >= n, period - i, i)
    return idx.clamp(0, n - 1)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[C, H, W]`` (reflect borders); large sigmas run on a down-sampled copy."""
    if sigma < 0.3:
        return x
    k = max(1, int(sigma // 4))
    small = F.avg_pool2d(x[None], k, ceil_mode=True)[0] if k > 1 else x
    s = sigma / k
    r = max(1, int(math.ceil(3 * s)))
    r = min(r, min(small.shape[1:]) - 1) if min(small.shape[1:]) > 1 else 0
    if r < 1:
        return x
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-0.5 * (t / s) ** 2)
    g = g / g.sum()
    C = small.shape[0]
    y = F.pad(small[None], (r, r, 0, 0), mode="reflect")
    y = F.conv2d(y, g.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    y = F.pad(y, (0, 0, r, r), mode="reflect")
    y = F.conv2d(y, g.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)[0]
    if k > 1:
        y = F.interpolate(y[None], size=x.shape[1:], mode="bilinear", align_corners=False)[0]
    return y


def warp_face(photo: torch.Tensor, transform: FaceTransform, size: int, padding: str = "reflect",
              device=None) -> tuple:
    """Cut one aligned face out of ``photo`` [3, H, W] in [0, 1].

    The photo is never copied whole: the part under the quad is down-scaled (antialiased) to the crop's pixel size,
    padded where the quad leaves the photo, and resampled once with bicubic ``grid_sample``.

    Returns:
        ``(crop [3, size, size] in [0, 1], mask [1, size, size])``; the mask is 1 where the crop shows the photo.
    """
    if padding not in PADDING_MODES:
        raise InvalidSettingError(f"padding: expected one of {PADDING_MODES}, got {padding!r}")
    device = torch.device(device) if device is not None else photo.device
    H, W = photo.shape[-2:]
    A = transform.crop_to_photo(size)  # crop -> photo, float64
    qsize = transform.size
    s = qsize / size  # photo pixels per crop pixel
    quad = transform.quad.double()
    border = max(int(round(qsize * 0.1)), 3)
    x0 = int(math.floor(float(quad[:, 0].min()))) - border
    y0 = int(math.floor(float(quad[:, 1].min()))) - border
    x1 = int(math.ceil(float(quad[:, 0].max()))) + border
    y1 = int(math.ceil(float(quad[:, 1].max()))) + border
    # Down-scale the in-photo part of the region to ~1 region pixel per crop pixel.
    f = s if s > 1.25 else 1.0
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    pad_needed = x0 < 0 or y0 < 0 or x1 > W or y1 > H
    if cx1 <= cx0 or cy1 <= cy0:  # the face lies entirely outside the photo (corrupt transform)
        raise ShapeError(f"the face quad {quad.tolist()} does not overlap the {W}x{H} photo")
    inner = photo[:, cy0:cy1, cx0:cx1].to(device=device, dtype=torch.float32)
    if f > 1.0:
        nh, nw = max(1, round((cy1 - cy0) / f)), max(1, round((cx1 - cx0) / f))
        inner = F.interpolate(inner[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
    fy, fx = (cy1 - cy0) / inner.shape[1], (cx1 - cx0) / inner.shape[2]  # photo pixels per region pixel
    # Region grid (in region pixels) covering [x0, x1) x [y0, y1), indices relative to the inner block.
    rx0, ry0 = int(math.floor((x0 - cx0) / fx)), int(math.floor((y0 - cy0) / fy))
    rx1, ry1 = int(math.ceil((x1 - cx0) / fx)), int(math.ceil((y1 - cy0) / fy))
    ih, iw = inner.shape[1:]
    if pad_needed:
        mode = "edge" if padding == "zeros" else padding
        iy = _index(torch.arange(ry0, ry1, device=device), ih, mode)
        ix = _index(torch.arange(rx0, rx1, device=device), iw, mode)
        region = inner[:, iy][:, :, ix]
        # signed distance outside the photo, in region pixels (negative inside), per axis then max
        ys = torch.arange(ry0, ry1, device=device, dtype=torch.float32) + 0.5
        xs = torch.arange(rx0, rx1, device=device, dtype=torch.float32) + 0.5
        dy = torch.maximum(-ys, ys - ih)[:, None]
        dx = torch.maximum(-xs, xs - iw)[None, :]
        dist = torch.maximum(dy, dx)  # [h, w]
        if padding == "zeros":
            region = region * (dist <= 0).to(region.dtype)
        elif padding == "reflect":
            pad_w = max(qsize * 0.3 / max(fx, fy), 1.0)  # FFHQ pads at least 0.3 qsize
            m = dist / pad_w
            blurred = _gaussian_blur(region, qsize * 0.02 / max(fx, fy))
            region = region + (blurred - region) * (m * 3.0 + 1.0).clamp(0, 1)
            med = region.reshape(3, -1).median(dim=1).values.view(3, 1, 1)
            region = region + (med - region) * m.clamp(0, 1)
        ox, oy = rx0, ry0
    else:
        region = inner[:, ry0:ry1, rx0:rx1] if (ry0 >= 0 and rx0 >= 0) else inner
        ox, oy = (rx0, ry0) if (ry0 >= 0 and rx0 >= 0) else (0, 0)
    rh, rw = region.shape[1:]
    # Output pixel centres -> photo -> region coordinates -> grid_sample's [-1, 1].
    u = torch.arange(size, dtype=torch.float64, device=device) + 0.5
    uu, vv = u[None, :].expand(size, size), u[:, None].expand(size, size)
    A = A.to(device)
    px = A[0, 0] * uu + A[0, 1] * vv + A[0, 2]
    py = A[1, 0] * uu + A[1, 1] * vv + A[1, 2]
    rx = (px - cx0) / fx - ox
    ry = (py - cy0) / fy - oy
    grid = torch.stack([rx / rw * 2 - 1, ry / rh * 2 - 1], -1).float()[None]
    crop = F.grid_sample(region[None], grid, mode="bicubic", padding_mode="border", align_corners=False)[0]
    # Coverage of the photo: 1 inside, 0 outside, a one-pixel ramp at the border (in crop pixels).
    d_in = torch.minimum(torch.minimum(px, W - px), torch.minimum(py, H - py)) / s
    mask = (d_in + 0.5).clamp(0, 1).float()[None]
    return crop.clamp(0, 1), mask


def align_faces(image, *, size: int = 1024, select="all", min_size: float = 32, device=None,
                padding: str = "reflect", max_faces: int | None = None, detections=None, **detect_kwargs):
    """Detect the faces of a photo and align each one the FFHQ way.

    Args:
        image: the photo, ``[3, H, W]`` float in [0, 1] or a PIL image (grey, 16-bit and RGBA are converted).
        size: side of the aligned crops (normally the generator's resolution).
        select: ``"all"`` (every face, largest first), ``"largest"``, or an int (that face of the largest-first
            order; negative counts from the end).
        min_size: smallest face to keep (box side, photo pixels).
        device: torch device for detection and warping (default: the photo's).
        padding: how the photo is extended where the crop leaves it: ``"reflect"`` (FFHQ: mirrored, blurred and
            faded to the median colour), ``"edge"`` or ``"zeros"``.
        max_faces: keep at most this many faces (largest first).
        detections: use these :class:`FaceDetection` instead of running the detector.
        **detect_kwargs: passed to :func:`detect_faces` (``thresholds``, ``max_side``, ``weights``).

    Returns:
        :class:`FaceAlignment`.

    Raises:
        NoFaceFoundError: no face (of at least ``min_size``) was found, or ``select`` names a face that is not there.
    """
    if int(size) < 8:
        raise InvalidSettingError(f"size: expected an output side of at least 8 pixels, got {size}")
    size = int(size)
    photo = as_photo(image)
    H, W = photo.shape[-2:]
    if detections is None:
        detections = detect_faces(photo, device=device, min_size=min_size, **detect_kwargs)
    else:
        detections = sorted(detections, key=lambda d: -float((d.box[2] - d.box[0]) * (d.box[3] - d.box[1])))
        detections = [d for d in detections if d.size >= float(min_size)]
    if not detections:
        raise NoFaceFoundError(
            f"no face found in the {W}x{H} photo (min_size={min_size:g} px). Expected a photo with at least one "
            f"roughly frontal face of {max(min_size, 20 * max(H, W) / detect_kwargs.get('max_side', 1280)):.0f} px or "
            f"more. Try a lower min_size, a photo where the face is bigger, or pass an already aligned face with "
            f"align=False / --no-align.")
    n_found = len(detections)
    if isinstance(select, str):
        if select == "all":
            chosen = list(range(n_found))
        elif select == "largest":
            chosen = [0]
        else:
            raise InvalidSettingError(f"select: expected 'all', 'largest' or a face index, got {select!r}")
    elif isinstance(select, int) and not isinstance(select, bool):
        if not -n_found <= select < n_found:
            raise NoFaceFoundError(f"select={select}: the photo has {n_found} face(s) (indices 0..{n_found - 1}, "
                                   f"largest first). Pick an index in that range or use 'all'/'largest'.")
        chosen = [select % n_found]
    else:
        raise InvalidSettingError(f"select: expected 'all', 'largest' or an int, got {select!r}")
    if max_faces is not None:
        chosen = chosen[:max(1, int(max_faces))]
    faces, crops, masks = [], [], []
    for k in chosen:
        t = FaceTransform(quad=ffhq_quad(detections[k].landmarks), photo_size=(H, W), detection=detections[k],
                          index=k)
        crop, mask = warp_face(photo, t, size, padding=padding, device=device)
        faces.append(t)
        crops.append(crop)
        masks.append(mask)
    crops = torch.stack(crops) * 2 - 1
    settings = {"detector": "mtcnn", "faces_found": n_found, "select": select, "min_size": min_size,
                "padding": padding, "recipe": "ffhq"}
    return FaceAlignment(crops=crops, faces=faces, masks=torch.stack(masks), photo_size=(H, W), size=size,
                         settings=settings)


def whole_image_alignment(image, *, size: int = 1024, device=None) -> FaceAlignment:
    """A one-"face" :class:`FaceAlignment` whose crop is the centred square of the photo (no detection): the
    fallback for pictures the detector cannot read (drawings, masks, pre-cropped faces) that should still go
    through the same align -> stylise -> paste-back path."""
    photo = as_photo(image)
    H, W = photo.shape[-2:]
    s = float(min(H, W))
    x0, y0 = (W - s) / 2, (H - s) / 2
    quad = torch.tensor([[x0, y0], [x0, y0 + s], [x0 + s, y0 + s], [x0 + s, y0]], dtype=torch.float64)
    t = FaceTransform(quad=quad, photo_size=(H, W), detection=None, index=0)
    crop, mask = warp_face(photo, t, int(size), padding="edge", device=device)
    return FaceAlignment(crops=crop[None] * 2 - 1, faces=[t], masks=mask[None], photo_size=(H, W), size=int(size),
                         settings={"detector": None, "faces_found": 0, "select": "whole image", "recipe": "centre"})
