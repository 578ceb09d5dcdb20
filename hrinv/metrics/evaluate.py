"""The paper's metrics over a whole batch job (``DIR/results.jsonl`` of ``hrinv batch``).

For every row with ``status: "ok"``, the output image (``outputs.image``) is compared with the item's input; when the
job aligned faces from photos, each stylised / reconstructed face (``outputs.face{k}``) is compared with its aligned
content face (``outputs.face{k}_aligned``) instead, as in the paper (which evaluates aligned faces):

- **PSNR** (dB) on the 8-bit files as floats in [0, 1] (peak 1; the same number as peak-to-peak 2 in [-1, 1]).
  The input is fitted to the output's size the way the single-run commands fit it (centre-crop to the output's
  aspect ratio, LANCZOS resize).
- **perceptual distance**: our HRInversion loss ``d_conv`` (:class:`hrinv.PerceptualLoss`, all five conv taps, at
  full resolution) between output and input, with the given VGG16; lower is closer.
- **ID retrieval** (paper Sec. III-D): the inputs (fitted as above) are the content faces (each distinct input once),
  the outputs the stylised faces, the label of an output its own input; top-1 with the chosen face network
  (:mod:`hrinv.metrics.id_retrieval`).

For an ``invert`` job these measure reconstruction (the paper's Table II); for a ``stylize`` job PSNR and the
perceptual distance measure how far the stylisation moved away from the content, and ID retrieval is the paper's
identity metric (Table III).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch

from ..errors import DatasetLayoutError

__all__ = ["evaluate_results", "markdown_table"]

log = logging.getLogger(__name__)


def _fit_to(img, width: int, height: int):
    """PIL image centre-cropped to ``width/height``'s aspect ratio and LANCZOS-resized to it."""
    from PIL import Image

    w, h = img.size
    if w * height != h * width:
        if w * height > h * width:  # too wide
            nw = max(1, round(h * width / height))
            left = (w - nw) // 2
            img = img.crop((left, 0, left + nw, h))
        else:
            nh = max(1, round(w * height / width))
            top = (h - nh) // 2
            img = img.crop((0, top, w, top + nh))
    return img if img.size == (width, height) else img.resize((width, height), Image.LANCZOS)


def _load_pair(output_path, input_path):
    """(output, input) as float ``[3, H, W]`` in [0, 1], the input fitted to the output's size."""
    import numpy as np
    from PIL import Image

    from ..imageio import read_image

    out = read_image(output_path)  # [3, H, W]
    inp = read_image(input_path)
    h, w = out.shape[1:]
    if tuple(inp.shape[1:]) != (h, w):
        arr = (inp.permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
        pil = _fit_to(Image.fromarray(arr, "RGB"), w, h)
        inp = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return out, inp


def _stats(values):
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return None
    t = torch.tensor(v, dtype=torch.float64)
    return {"mean": float(t.mean()), "std": float(t.std()) if len(v) > 1 else 0.0, "median": float(t.median()),
            "min": float(t.min()), "max": float(t.max()), "count": len(v)}


def evaluate_results(results, *, vgg=None, embedder=None, device=None, threshold=None, progress=None,
                     ctx=None) -> dict | None:
    """PSNR, perceptual distance and ID retrieval over a batch job.

    Args:
        results: ``DIR/results.jsonl`` (or ``DIR``).
        vgg: a VGG16 (:func:`hrinv.load_vgg16`) for the perceptual distance; None skips it.
        embedder: a :class:`hrinv.faceid.FaceEmbedder` for ID retrieval; None skips it.
        device: where the VGG runs (default: the VGG's device).
        threshold: ID-retrieval squared-distance threshold (default: the embedder's).
        progress: ``callback(done, total)`` per item (of this rank).
        ctx: a :class:`hrinv.distributed.DistContext` (torchrun): every rank computes the metrics and embeddings of
            its share of the pairs (pairs ``rank, rank + N, ...``), rank 0 gathers them and computes the summary and
            ID retrieval over the whole set. Every rank must call with the same arguments.

    Returns:
        JSON-able dict: ``summary`` (``psnr``, ``perceptual`` stats; ``id_retrieval``), ``per_item`` rows, counts;
        None on ranks other than 0.

    Raises:
        DatasetLayoutError: no table, or no successful item.
    """
    from ..batch import read_results

    path = Path(results)
    rows = read_results(path)
    root = path if path.is_dir() else path.parent
    ok = [r for r in rows if r.get("status") == "ok" and _pairs(r, root)]
    if not ok:
        raise DatasetLayoutError(f"{path}: no successful item with an output image (of {len(rows)} rows); nothing "
                                 f"to evaluate. Check the 'error' column of the table.")
    loss = None
    if vgg is not None:
        from ..losses import PerceptualLoss

        if device is None:
            device = next(vgg.parameters()).device
        loss = PerceptualLoss(vgg.to(device), layers="conv")
    from ..distributed import DistContext, shard

    ctx = ctx or DistContext()
    pairs = [p for r in ok for p in _pairs(r, root)]
    first_of: dict = {}  # identity -> index of its first pair: that pair's input is the identity's content face
    for k, p in enumerate(pairs):
        first_of.setdefault(p[3], k)
    items, out_emb, content_emb, pending = {}, {}, {}, []

    def flush():  # embed a chunk of (pair, output, input-or-None); keeps at most `chunk` images in memory
        if embedder is None or not pending:
            return
        outs = embedder.embed([o for _, o, _ in pending]).cpu()
        firsts = [(k, i) for k, _, i in pending if i is not None]
        firsts_emb = embedder.embed([i for _, i in firsts]).cpu() if firsts else None
        for j, (k, _, _) in enumerate(pending):
            out_emb[k] = outs[j]
        for j, (k, _) in enumerate(firsts):
            content_emb[k] = firsts_emb[j]
        pending.clear()

    mine = shard(range(len(pairs)), ctx.rank, ctx.world_size)
    error = None
    try:
        for n, k in enumerate(mine):
            r, out_path, in_path, ident = pairs[k]
            out, inp = _load_pair(out_path, in_path)
            mse = float(((out - inp) ** 2).mean())
            psnr = 10.0 * math.log10(1.0 / mse) if mse > 0 else float("inf")
            item = {"index": r.get("index"), "name": r.get("name"), "input": str(in_path), "output": str(out_path),
                    "identity": ident, "psnr": psnr, "perceptual": None}
            if loss is not None:
                with torch.no_grad():
                    a = (out[None] * 2 - 1).to(device)
                    b = (inp[None] * 2 - 1).to(device)
                    item["perceptual"] = float(loss(a, loss.target(b))[0])
            items[k] = item
            if embedder is not None:
                pending.append((k, out, inp if first_of[ident] == k else None))
                if len(pending) >= 16:
                    flush()
            if progress is not None:
                progress(n + 1, len(mine))
        flush()
    except Exception as e:
        if not ctx.active:
            raise
        error = f"rank {ctx.rank}: {type(e).__name__}: {e}"
    if ctx.active:  # rank 0 gathers every rank's share; an error on any rank stops all of them
        parts = ctx.gather_object((items, out_emb, content_emb, error))
        if ctx.is_main:
            error = next((p[3] for p in parts if p[3] is not None), None)
            for it, oe, ce, _ in parts:
                items.update(it)
                out_emb.update(oe)
                content_emb.update(ce)
        error = ctx.broadcast_object(error)
        if error is not None:
            raise DatasetLayoutError(f"evaluate failed on {error}")
        if not ctx.is_main:
            return None
    per_item = [items[k] for k in range(len(pairs))]

    summary = {"psnr": _stats([p["psnr"] for p in per_item]),
               "perceptual": _stats([p["perceptual"] for p in per_item]) if loss is not None else None,
               "id_retrieval": None}
    if embedder is not None:
        from .id_retrieval import id_retrieval

        contents = sorted(first_of, key=first_of.get)  # identities in order of first appearance
        content_index = {ident: j for j, ident in enumerate(contents)}
        labels = [content_index[p["identity"]] for p in per_item]
        res = id_retrieval(torch.stack([content_emb[first_of[c]] for c in contents]),
                           torch.stack([out_emb[k] for k in range(len(pairs))]), labels, embedder=embedder,
                           threshold=threshold, content_names=contents, stylized_names=[p["output"] for p in per_item])
        d = res.to_dict(per_image=False)
        d.pop("per_content", None)
        summary["id_retrieval"] = d
        for j, p in enumerate(per_item):
            p["id_hit"] = bool(res.hits[j])
            p["id_true_distance"] = float(res.true_distance[j])
    return {"results": str(path), "kind": _kind(root), "items": len(rows), "ok": len(ok), "pairs": len(per_item),
            "errors": sum(r.get("status") == "error" for r in rows), "summary": summary,
            "vgg": getattr(vgg, "fingerprint", None) if vgg is not None else None,
            "perceptual_distance": "HRInversion d_conv (VGG16 conv1_1..conv5_1, full resolution)",
            "per_item": per_item}


def _pairs(row: dict, root: Path) -> list:
    """``[(row, output file, compared-with file, identity key)]`` of a results row: the aligned faces
    (``face{k}`` vs ``face{k}_aligned``) when the job aligned photos, else ``image`` vs the input."""
    outs = row.get("outputs") or {}
    faces = sorted(int(k[4:]) for k in outs if k.startswith("face") and k[4:].isdigit())
    if faces:
        return [(row, root / outs[f"face{k}"], root / outs[f"face{k}_aligned"], f"{row['input']}#{k}")
                for k in faces if f"face{k}_aligned" in outs]
    if outs.get("image"):
        return [(row, root / outs["image"], Path(row["input"]), row["input"])]
    return []


def _kind(root: Path):
    try:
        return json.loads((root / ".hrinv-batch" / "job.json").read_text()).get("kind")
    except (OSError, ValueError):
        return None


def markdown_table(report: dict) -> str:
    """The headline numbers of :func:`evaluate_results` as a Markdown table."""
    s = report["summary"]
    lines = [f"# Evaluation of `{report['results']}`", "",
             f"{report['ok']} of {report['items']} item(s) evaluated, {report['pairs']} image pair(s) "
             f"({report['errors']} item(s) failed in the job)"
             + (f"; job: {report['kind']}" if report.get("kind") else "") + ".", "",
             "| metric | mean | std | median | min | max | n |", "|---|---:|---:|---:|---:|---:|---:|"]
    for key, label in (("psnr", "PSNR (dB) ↑"), ("perceptual", "perceptual distance d_conv ↓")):
        st = s.get(key)
        if st is None:
            lines.append(f"| {label} | - | - | - | - | - | 0 |")
        else:
            lines.append(f"| {label} | {st['mean']:.4f} | {st['std']:.4f} | {st['median']:.4f} | {st['min']:.4f} | "
                         f"{st['max']:.4f} | {st['count']} |")
    idr = s.get("id_retrieval")
    lines += ["", "| ID retrieval | value |", "|---|---:|"]
    if idr is None:
        lines.append("| top-1 | - (no face network given) |")
    else:
        pct = lambda v: "-" if v is None else f"{100 * v:.2f} %"
        emb = idr.get("embedder") or {}
        lines += [f"| top-1 ↑ | {pct(idr['top1'])} |",
                  f"| top-1 within threshold {idr['threshold']} | {pct(idr['top1_thresholded'])} |",
                  f"| chance | {pct(idr['chance'])} |",
                  f"| content faces / outputs | {idr['num_content']} / {idr['num_stylized']} |",
                  f"| network / preprocessing | {emb.get('name')} / {emb.get('preprocess')} |"]
    return "\n".join(lines) + "\n"
