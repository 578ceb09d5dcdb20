"""The vectorised MTCNN non-maximum suppression keeps exactly the boxes the old Python loop kept, in the same order:
on many random box sets (ties, empty, one box, identical boxes, touching and degenerate boxes, NaN, every dtype the
detector runs in, several block sizes) and on every call of real detection runs."""

import pytest
import torch
from nms_reference import nms_loop

import hrinv
from hrinv.errors import InvalidSettingError
from hrinv.face import mtcnn
from hrinv.face.mtcnn import nms

MODES = ("union", "min")
THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 1.0)
pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # many tiny ops: oversubscribed threads only cost time


def _same(boxes, scores, thr, mode, **kw):
    old = nms_loop(boxes, scores, thr, mode)
    new = nms(boxes, scores, thr, mode, **kw)
    assert new.dtype == torch.long and new.device == boxes.device
    assert new.tolist() == old.tolist(), (boxes.shape[0], thr, mode, kw)
    return new


def _random_set(g, n, kind):
    """Box sets the detector makes and the corner cases: MTCNN-like integer boxes in clusters with quantised
    scores (many exact ties), free float boxes, one box repeated, degenerate (x2 < x1) boxes."""
    if kind == "clusters":
        centres = torch.rand(max(1, n // 8), 2, generator=g) * 200
        c = centres[torch.randint(len(centres), (n,), generator=g)] + torch.randn(n, 2, generator=g) * 6
        side = torch.randint(8, 40, (n, 1), generator=g).float()
        boxes = torch.floor(torch.cat([c - side / 2, c + side / 2], 1))
        scores = torch.randint(0, 6, (n,), generator=g).float() / 5             # 6 values: ties everywhere
    elif kind == "float":
        xy = torch.rand(n, 2, generator=g) * 100
        wh = torch.rand(n, 2, generator=g) * 40 + 0.5
        boxes, scores = torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)
    elif kind == "identical":
        boxes = torch.tensor([[3.0, 4.0, 30.0, 40.0]]).repeat(n, 1)
        scores = torch.full((n,), 0.9) if n % 2 else torch.rand(n, generator=g)
    else:  # degenerate: some boxes with x2 < x1 or y2 < y1 (area clamps to 0)
        xy = torch.rand(n, 2, generator=g) * 50
        wh = torch.randn(n, 2, generator=g) * 10
        boxes, scores = torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g).round(decimals=1)
    return boxes, scores


@pytest.mark.parametrize("kind", ["clusters", "float", "identical", "degenerate"])
def test_same_boxes_as_the_loop_on_random_sets(kind):
    g = torch.Generator().manual_seed({"clusters": 1, "float": 2, "identical": 3, "degenerate": 4}[kind])
    sizes = [0, 1, 2, 3, 5, 8, 17, 40, 100] * 3 + [400]                  # 400: more than one default block
    cases = 0
    for n in sizes:
        boxes, scores = _random_set(g, n, kind)
        for mode in MODES:
            for thr in THRESHOLDS:
                old = nms_loop(boxes, scores, thr, mode).tolist()
                for block in ((1, 7, 256) if n <= 100 else (7, 256)):           # many blocks, and one
                    assert nms(boxes, scores, thr, mode, block=block).tolist() == old, (n, mode, thr, block)
                    cases += 1
    assert cases == (len(sizes) - 1) * len(MODES) * len(THRESHOLDS) * 3 + len(MODES) * len(THRESHOLDS) * 2


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_same_boxes_in_the_detector_dtypes(dtype):
    """The detector computes its boxes in the network's dtype (float16 / bfloat16 nets give half boxes): every
    overlap is rounded the same way as in the loop."""
    g = torch.Generator().manual_seed(5)
    for n in (1, 4, 30, 120, 400):
        for kind in ("clusters", "float"):
            boxes, scores = _random_set(g, n, kind)
            for mode in MODES:
                for thr in (0.5, 0.7):
                    _same(boxes.to(dtype), scores.to(dtype), thr, mode, block=64)


def test_ties_exact_thresholds_nan_and_edge_cases():
    # overlap exactly at the threshold is kept (<=): IoU of these two is 100 / 200 = 0.5
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 9.0, 19.0]])
    scores = torch.tensor([0.9, 0.8])
    assert _same(boxes, scores, 0.5, "union").tolist() == [0, 1]
    assert _same(boxes, scores, 0.49, "union").tolist() == [0]
    assert _same(boxes, scores, 1.0, "min").tolist() == [0, 1] and _same(boxes, scores, 0.99, "min").tolist() == [0]
    # equal scores: the order is torch.argsort's, for both
    same_score = torch.full((6,), 0.5)
    far = torch.tensor([[i * 100.0, 0.0, i * 100.0 + 10, 10.0] for i in range(6)])
    assert sorted(_same(far, same_score, 0.5, "union").tolist()) == list(range(6))
    # a NaN overlap suppresses (the loop kept only overlap <= threshold); NaN scores sort where argsort puts them
    nan_box = torch.tensor([[0.0, 0.0, 10.0, 10.0], [float("nan"), 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    for s in (torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0.8, 0.9, 0.7]), torch.tensor([float("nan"), 0.9, 0.7])):
        for mode in MODES:
            _same(nan_box, s, 0.5, mode)
            _same(nan_box, s, 0.5, mode, block=1)
    # one box, empty, results on the boxes' device and as long
    assert _same(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([0.3]), 0.5, "min").tolist() == [0]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []
    with pytest.raises(InvalidSettingError, match="'union' or 'min'"):
        nms(boxes, scores, 0.5, mode="iou")


def test_block_size_does_not_change_the_result():
    g = torch.Generator().manual_seed(9)
    boxes, scores = _random_set(g, 500, "clusters")
    ref = nms(boxes, scores, 0.5, block=500).tolist()
    assert ref == nms_loop(boxes, scores, 0.5).tolist()
    for block in (1, 2, 13, 64, 100, 499, 10_000):
        assert nms(boxes, scores, 0.5, block=block).tolist() == ref


@pytest.mark.parametrize("photo", ["two_faces", "demo_photo"])
def test_real_detection_runs_keep_the_same_boxes(photo, two_face_photo, monkeypatch):
    """Every NMS call of a real detection (P-Net per pyramid level, across levels, R-Net, O-Net 'min', and the
    landmark refinement's runs) gives the loop's result, and the detections are bit-identical to the loop's."""
    from hrinv import bundled
    from hrinv.imageio import read_image

    img = read_image(two_face_photo if photo == "two_faces" else bundled.path("demo_photo.png"))
    calls, new = [], mtcnn.nms

    def both(boxes, scores, threshold, mode="union"):
        kept = new(boxes, scores, threshold, mode)
        assert kept.tolist() == nms_loop(boxes, scores, threshold, mode).tolist()
        calls.append((boxes.shape[0], mode))
        return kept

    with torch.no_grad():
        monkeypatch.setattr(mtcnn, "nms", both)
        got = hrinv.detect_faces(img)
        monkeypatch.setattr(mtcnn, "nms", nms_loop)
        ref = hrinv.detect_faces(img)
    assert len(got) == len(ref) >= 1
    for a, b in zip(got, ref):
        assert torch.equal(a.box, b.box) and a.score == b.score and torch.equal(a.landmarks, b.landmarks)
    assert {m for _, m in calls} == {"union", "min"} and max(n for n, _ in calls) > 50
