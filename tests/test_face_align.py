"""Face detection, FFHQ alignment and paste-back: the parts that need no real photo (run on a fresh clone).

Real photos and the ground-truth study are in tests/test_face_real.py (they need ../shared).
"""

import json
import math

import pytest
import torch

import hrinv
from hrinv.errors import InvalidSettingError, NoFaceFoundError, ShapeError
from hrinv.face import FaceAlignment, FaceDetection, FaceTransform, ffhq_quad, paste_back, warp_face
from hrinv.face.align import align_faces
from hrinv.face.mtcnn import load_mtcnn, nms, onet_landmarks
from hrinv.face.paste import lab_to_rgb, rgb_to_lab

# Landmarks of an upright face in a 1024 FFHQ crop (left eye, right eye, nose, mouth corners), roughly.
CANON = torch.tensor([[384.0, 480.0], [640.0, 480.0], [512.0, 600.0], [400.0, 720.0], [624.0, 720.0]])


def _rot(deg):
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)


def _photo(rng, h=300, w=400):
    """A smooth random test picture (so resampling errors are small but not zero)."""
    low = torch.rand(3, h // 20 + 2, w // 20 + 2, generator=rng)
    return torch.nn.functional.interpolate(low[None], size=(h, w), mode="bicubic", align_corners=False)[0].clamp(0, 1)


def _det(landmarks):
    lm = torch.as_tensor(landmarks, dtype=torch.float32)
    lo, hi = lm.min(0).values, lm.max(0).values
    pad = (hi - lo).max() * 0.4
    return FaceDetection(box=torch.cat([lo - pad, hi + pad]), score=0.99, landmarks=lm)


def test_ffhq_quad_geometry_follows_the_face():
    q0 = ffhq_quad(CANON)
    side = torch.linalg.vector_norm(q0[3] - q0[0])
    # x scaled by max(2 |e2e|, 1.8 |e2m|) -> side = 2 * that
    assert side == pytest.approx(2 * max(2 * 256, 1.8 * 240), rel=1e-6)
    # the quad is a square (orthogonal equal sides) and upright for an upright face
    assert torch.linalg.vector_norm(q0[1] - q0[0]) == pytest.approx(float(side), rel=1e-9)
    assert float((q0[3] - q0[0]) @ (q0[1] - q0[0])) == pytest.approx(0.0, abs=1e-6)
    assert q0[0, 1] == pytest.approx(q0[3, 1])
    # rotating/scaling/translating the landmarks moves the quad the same way (equivariance)
    R, s, t = _rot(30), 0.7, torch.tensor([55.0, -20.0], dtype=torch.float64)
    q1 = ffhq_quad((CANON.double() @ R.T) * s + t)
    assert torch.allclose(q1, (q0 @ R.T) * s + t, atol=1e-6)


def test_transform_matrices_are_inverse_and_json_round_trips():
    t = FaceTransform(quad=ffhq_quad((CANON.double() @ _rot(-25).T) * 0.3 + 40), photo_size=(500, 600),
                      detection=_det(CANON * 0.3), index=0)
    A, M = t.crop_to_photo(256), t.photo_to_crop(256)
    P = torch.cat([A, torch.tensor([[0, 0, 1.0]], dtype=A.dtype)])
    Q = torch.cat([M, torch.tensor([[0, 0, 1.0]], dtype=M.dtype)])
    assert torch.allclose(P @ Q, torch.eye(3, dtype=A.dtype), atol=1e-9)
    # crop corner (0, 0) is quad[0]; (S, S) is quad[2]
    assert torch.allclose(A @ torch.tensor([0, 0, 1.0], dtype=A.dtype), t.quad[0])
    assert torch.allclose(A @ torch.tensor([256, 256, 1.0], dtype=A.dtype), t.quad[2])
    assert t.angle == pytest.approx(-25, abs=1e-6)
    al = FaceAlignment(crops=None, faces=[t], masks=None, photo_size=(500, 600), size=256)
    back = FaceAlignment.from_json(json.loads(al.to_json()))
    assert torch.allclose(back.faces[0].quad, t.quad) and back.photo_size == (500, 600)
    assert back.faces[0].detection.score == pytest.approx(0.99)
    with pytest.raises(ShapeError):
        FaceAlignment.from_json('{"format": "something else"}')


@pytest.mark.parametrize("angle", [0.0, 37.0])
def test_warp_recovers_a_known_crop(rng, angle):
    """Put a known picture into a bigger canvas with a known similarity transform, warp it out again."""
    S = 96
    src = _photo(rng, S, S)
    quad_crop = torch.tensor([[0, 0], [0, S], [S, S], [S, 0]], dtype=torch.float64)
    R, s, t = _rot(angle), 1.5, torch.tensor([150.0, 120.0], dtype=torch.float64)
    quad = (quad_crop - S / 2) @ R.T * s + t
    T = FaceTransform(quad=quad, photo_size=(300, 320))
    # Render the canvas by inverse mapping with the same coordinate convention
    H, W = 300, 320
    Mi = T.photo_to_crop(S)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                            indexing="ij")
    u = Mi[0, 0] * xs + Mi[0, 1] * ys + Mi[0, 2]
    v = Mi[1, 0] * xs + Mi[1, 1] * ys + Mi[1, 2]
    grid = torch.stack([u / S * 2 - 1, v / S * 2 - 1], -1).float()[None]
    canvas = torch.nn.functional.grid_sample(src[None], grid, mode="bicubic", padding_mode="border",
                                             align_corners=False)[0].clamp(0, 1)
    crop, mask = warp_face(canvas, T, S)
    assert mask.min() == 1.0
    inner = slice(4, S - 4)
    err = (crop[:, inner, inner] - src[:, inner, inner]).pow(2).mean()
    assert -10 * math.log10(float(err)) > 30


def test_warp_pads_where_the_face_leaves_the_photo(rng):
    photo = _photo(rng, 200, 200)
    quad = torch.tensor([[-50.0, -40.0], [-50.0, 110.0], [100.0, 110.0], [100.0, -40.0]], dtype=torch.float64)
    T = FaceTransform(quad=quad, photo_size=(200, 200))
    for padding in ("reflect", "edge", "zeros"):
        crop, mask = warp_face(photo, T, 64, padding=padding)
        assert crop.shape == (3, 64, 64) and torch.isfinite(crop).all()
        assert mask[0, 0, 0] == 0 and mask[0, -1, -1] == 1  # top-left outside, bottom-right inside
        frac_out = 1 - float(mask.mean())
        assert frac_out == pytest.approx(1 - (100 / 150) * (110 / 150), abs=0.03)
        if padding == "zeros":
            assert crop[:, :5, :5].abs().max() == 0
    with pytest.raises(InvalidSettingError):
        warp_face(photo, T, 64, padding="mirror")


def test_align_with_given_landmarks_and_paste_back_round_trip(rng):
    """Align two synthetic faces (given detections, no detector), paste the unchanged crops back."""
    photo = _photo(rng, 320, 480)
    before = photo.clone()
    lm1 = (CANON.double() - 512) @ _rot(20).T * 0.12 + torch.tensor([140.0, 150.0], dtype=torch.float64)
    lm2 = (CANON.double() - 512) @ _rot(-10).T * 0.18 + torch.tensor([330.0, 170.0], dtype=torch.float64)
    al = align_faces(photo, size=128, detections=[_det(lm1), _det(lm2)], min_size=10)
    assert al.crops.shape == (2, 3, 128, 128) and al.crops.min() >= -1 and al.crops.max() <= 1
    assert al.faces[0].size > al.faces[1].size  # largest first
    assert al.faces[0].angle == pytest.approx(-10, abs=1e-3)
    out, mask = paste_back(photo, al.crops, al, feather=0.1)
    assert out.shape == photo.shape and mask.shape == photo.shape[1:]
    assert torch.equal(out[:, mask == 0], photo[:, mask == 0])  # untouched outside the pasted squares
    assert (mask == 0).any() and (mask > 0.999).any()
    inside = mask > 0
    psnr = -10 * torch.log10((out - photo)[:, inside].pow(2).mean())
    assert psnr > 30, psnr
    assert torch.equal(photo, before)  # inputs are never modified
    # select / errors
    assert len(align_faces(photo, size=64, detections=[_det(lm1), _det(lm2)], select="largest", min_size=10)) == 1
    one = align_faces(photo, size=64, detections=[_det(lm1), _det(lm2)], select=1, min_size=10)
    assert one.faces[0].index == 1
    with pytest.raises(NoFaceFoundError, match="has 2 face"):
        align_faces(photo, size=64, detections=[_det(lm1), _det(lm2)], select=5, min_size=10)
    with pytest.raises(NoFaceFoundError, match="no face found"):
        align_faces(photo, size=64, detections=[_det(lm1)], min_size=1000)
    with pytest.raises(ShapeError, match="2 face"):
        paste_back(photo, al.crops[:1], al)
    with pytest.raises(ShapeError, match="photo"):
        paste_back(photo[:, :100], al.crops, al)


def test_paste_back_replaces_and_feathers(rng):
    photo = _photo(rng, 200, 200)
    lm = (CANON.double() - 512) * 0.12 + 100
    al = align_faces(photo, size=64, detections=[_det(lm)], min_size=10)
    white = torch.ones_like(al.crops)
    hard, mh = paste_back(photo, white, al, feather=0.0)
    soft, ms = paste_back(photo, white, al, feather=0.25)
    assert float(ms.sum()) < float(mh.sum())  # feathering replaces less
    c = (100, 100)
    assert hard[:, c[0], c[1]].min() > 0.99 and soft[:, c[0], c[1]].min() > 0.99
    # colour matching pulls a wrongly tinted face towards the original's colours
    tinted = (al.crops + torch.tensor([0.5, -0.3, -0.3]).view(1, 3, 1, 1)).clamp(-1, 1)
    plain, _ = paste_back(photo, tinted, al, feather=0.1)
    matched, _ = paste_back(photo, tinted, al, feather=0.1, color_match=True)
    inner = (slice(None), slice(90, 110), slice(90, 110))
    assert (matched[inner] - photo[inner]).abs().mean() < 0.5 * (plain[inner] - photo[inner]).abs().mean()


def test_lab_round_trip(rng):
    x = torch.rand(3, 8, 8, generator=rng)
    assert torch.allclose(lab_to_rgb(rgb_to_lab(x)), x, atol=1e-4)
    white = rgb_to_lab(torch.ones(3, 1, 1))
    assert white[0].item() == pytest.approx(100, abs=0.01) and white[1:].abs().max() < 0.01


def test_nms():
    boxes = torch.tensor([[0, 0, 9, 9], [1, 1, 10, 10], [20, 20, 29, 29], [0, 0, 4, 4.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 2]
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [3, 2]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


def test_bundled_detector_runs_on_a_generated_image():
    """The bundled weights load (sha256 checked) and run end to end; a picture with no face gives no face."""
    from hrinv.bundled import names
    from hrinv.face.mtcnn import load_mtcnn

    assert "mtcnn.safetensors" in names("detector")
    net = load_mtcnn()
    assert sum(p.numel() for p in net.parameters()) == 495850
    g = torch.Generator().manual_seed(3)
    noise = _photo(g, 120, 160)
    assert hrinv.detect_faces(noise) == []
    with pytest.raises(NoFaceFoundError, match="no face found"):
        hrinv.align_faces(noise, size=32)
    grey = torch.full((1, 40, 40), 0.5)
    assert hrinv.detect_faces(grey) == []
    assert hrinv.detect_faces(torch.zeros(3, 5, 5)) == []  # too small to search: no face, no crash


def test_onet_mirrored_view_maps_back_to_the_photo(rng):
    """The refinement's mirrored O-Net view of a box equals O-Net on the mirrored photo, mapped back (landmarks
    swapped left/right, x reflected): the mirror is undone exactly, not off by a pixel."""
    net = load_mtcnn()
    img = torch.rand(3, 90, 130, generator=rng) * 255
    W = img.shape[-1]
    box = torch.tensor([[20.0, 15.0, 81.0, 76.0]])  # continuous xyxy, whole pixels: the crop is [20, 81) x [15, 76)
    scores, points = onet_landmarks(net, img, box)
    assert scores.shape == (2,) and points.shape == (2, 5, 2)
    m_scores, m_points = onet_landmarks(net, img.flip(-1), torch.tensor([[W - 81.0, 15.0, W - 20.0, 76.0]]),
                                        mirror=False)
    back = m_points[0, [1, 0, 2, 4, 3]]
    back = torch.stack([W - back[:, 0], back[:, 1]], -1)
    assert torch.allclose(points[1], back, atol=1e-3) and torch.allclose(scores[1], m_scores[0], atol=1e-5)
    assert not torch.allclose(points[0], points[1], atol=1e-2)  # the two views do differ (O-Net is not symmetric)


def test_bad_photo_inputs_are_refused_clearly():
    with pytest.raises(ShapeError, match="values in"):
        hrinv.detect_faces(torch.full((3, 30, 30), 2.0))
    with pytest.raises(ShapeError, match="one photo"):
        hrinv.detect_faces(torch.zeros(2, 3, 30, 30))
    with pytest.raises(ShapeError):
        hrinv.detect_faces("photo.jpg")
    with pytest.raises(InvalidSettingError):
        hrinv.detect_faces(torch.zeros(3, 30, 30), thresholds=(0.5, 2.0, 0.5))
