"""The MTCNN non-maximum suppression as it was before it was vectorised (a Python loop over the kept boxes), kept
only as the reference of ``tests/test_face_nms.py`` and of ``benchmarks/bench_face.py --nms`` (old vs new)."""

import torch


def nms_loop(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, mode: str = "union") -> torch.Tensor:
    """Greedy NMS, one kept box per iteration (hrinv.face.mtcnn.nms until December 2026, verbatim)."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1 + 1).clamp(min=0) * (y2 - y1 + 1).clamp(min=0)
    order = torch.argsort(scores, descending=True)
    keep = []
    while order.numel() > 0:
        i = order[0]
        keep.append(i)
        if order.numel() == 1:
            break
        rest = order[1:]
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest]) + 1).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest]) + 1).clamp(min=0)
        inter = w * h
        if mode == "min":
            overlap = inter / torch.minimum(area[i], area[rest]).clamp(min=1e-12)
        else:
            overlap = inter / (area[i] + area[rest] - inter).clamp(min=1e-12)
        order = rest[overlap <= threshold]
    return torch.stack(keep)
