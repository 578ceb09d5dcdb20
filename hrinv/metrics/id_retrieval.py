"""ID retrieval (HRInversion, Sec. III-D): do stylised faces keep the identity of their content face?

For every stylised image, find the nearest content face (Euclidean distance between unit face embeddings; we report
the squared distance ``2 - 2 cos``, which ranks identically) and count a hit when it is the image's own content.

- ``top1``: hits / #stylised (the paper's headline number; chance = 1 / #content).
- ``top1_thresholded``: a hit must also have its nearest squared distance <= ``threshold`` (the authors' evaluator uses
  1.5 with ArcFace, i.e. cos >= 0.25; for dlib's 128-d space we use 0.16, dlib's own same-person rule, see
  docs/id-retrieval.md).
- per image: nearest content index/name, nearest distance, distance to the true content, rank of the true content.

Inputs are tensors (embeddings ``[N, D]`` or images ``[N, 3, H, W]`` in [0, 1] or lists of ``[3, H, W]``) so the
same call serves the CLI (:func:`id_retrieval_from_folders`) and a ComfyUI node.
"""

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import DatasetLayoutError, ShapeError

__all__ = [
    "IDRetrievalResult",
    "default_labels",
    "default_threshold",
    "match_picture",
    "embed_files",
    "id_retrieval",
    "id_retrieval_from_folders",
    "scan_layout",
]

log = logging.getLogger(__name__)


def default_threshold(dim):
    """Default squared-distance threshold for an embedding size: 1.5 for 512-d ArcFace, 0.16 for 128-d dlib."""
    return {512: 1.5, 128: 0.16}.get(int(dim))


@dataclass
class IDRetrievalResult:
    """Outcome of :func:`id_retrieval`. All per-image tensors are on the CPU.

    Attributes:
        top1: fraction of stylised images whose nearest content is their own.
        top1_thresholded: same, also requiring the nearest squared distance <= ``threshold`` (None without one).
        threshold: squared-distance threshold used (None if none).
        chance: 1 / #content, the expected top-1 of a method that keeps no identity.
        num_content, num_stylized: set sizes.
        labels: ``[M]`` true content index of each stylised image.
        nearest: ``[M]`` index of the nearest content.
        nearest_distance: ``[M]`` squared Euclidean distance to it.
        true_distance: ``[M]`` squared distance to the true content.
        true_rank: ``[M]`` 0-based rank of the true content among all contents (0 = retrieved).
        hits: ``[M]`` bool, ``nearest == labels``.
        content_names, stylized_names: names when known.
        embedder: description of the network and preprocessing (``FaceEmbedder.describe()``) when known.
    """

    top1: float
    top1_thresholded: float | None
    threshold: float | None
    chance: float
    num_content: int
    num_stylized: int
    labels: torch.Tensor
    nearest: torch.Tensor
    nearest_distance: torch.Tensor
    true_distance: torch.Tensor
    true_rank: torch.Tensor
    hits: torch.Tensor
    content_names: list = field(default_factory=list)
    stylized_names: list = field(default_factory=list)
    embedder: dict | None = None

    def per_content(self):
        """``{content name: (hits, count)}`` for every content with at least one stylised image."""
        out = {}
        for i in range(self.num_content):
            sel = self.labels == i
            n = int(sel.sum())
            if n:
                out[self._cname(i)] = (int(self.hits[sel].sum()), n)
        return out

    def _cname(self, i):
        return self.content_names[i] if self.content_names else str(i)

    def to_dict(self, per_image=True):
        """JSON-able summary (and per-image records when ``per_image``)."""
        d = {"metric": "id_retrieval", "top1": self.top1, "top1_thresholded": self.top1_thresholded,
             "threshold": self.threshold, "distance": "squared Euclidean between unit embeddings (= 2 - 2 cos)",
             "chance": self.chance, "num_content": self.num_content, "num_stylized": self.num_stylized,
             "mean_true_distance": float(self.true_distance.mean()) if self.num_stylized else None,
             "mean_true_rank": float(self.true_rank.float().mean()) if self.num_stylized else None,
             "embedder": self.embedder,
             "per_content": {k: {"hits": h, "count": n, "top1": h / n} for k, (h, n) in self.per_content().items()}}
        if per_image:
            d["per_image"] = [
                {"stylized": self.stylized_names[j] if self.stylized_names else j,
                 "content": self._cname(int(self.labels[j])), "nearest": self._cname(int(self.nearest[j])),
                 "nearest_distance": round(float(self.nearest_distance[j]), 6),
                 "true_distance": round(float(self.true_distance[j]), 6), "true_rank": int(self.true_rank[j]),
                 "hit": bool(self.hits[j])} for j in range(self.num_stylized)]
        return d

    def to_json(self, path=None, per_image=True):
        """JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(per_image=per_image), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    def table(self, per_content=True):
        """A plain-text table of the headline numbers (and per-content accuracy)."""
        pct = lambda v: "-" if v is None else f"{100 * v:6.2f} %"
        rows = [("ID retrieval (top-1)", pct(self.top1)),
                (f"ID retrieval (thresh {self.threshold:g})" if self.threshold is not None
                 else "ID retrieval (thresholded)", pct(self.top1_thresholded)),
                ("chance level", pct(self.chance)),
                ("content faces / stylised images", f"{self.num_content} / {self.num_stylized}")]
        if self.num_stylized:
            rows.append(("mean sq. distance to own content", f"{float(self.true_distance.mean()):.4f}"))
        if self.embedder:
            rows.append(("network / preprocessing", f"{self.embedder.get('name')} / {self.embedder.get('preprocess')}"))
        w = max(len(r[0]) for r in rows)
        lines = [f"{k:<{w}}  {v}" for k, v in rows]
        if per_content:
            pc = self.per_content()
            if pc:
                lines.append("")
                cw = max(len("content"), max(len(k) for k in pc))
                lines.append(f"{'content':<{cw}}  hits / count   top-1")
                lines += [f"{k:<{cw}}  {h:4d} / {n:<5d}  {pct(h / n)}" for k, (h, n) in pc.items()]
        return "\n".join(lines)


    def report(self) -> str:
        """:meth:`table` followed by one line per stylised image: own content, nearest content, squared distances,
        rank of the own content, hit."""
        lines = [self.table(), "", "stylised | own content | nearest | sq. dist own | sq. dist nearest | rank | hit"]
        for j in range(self.num_stylized):
            name = self.stylized_names[j] if self.stylized_names else j
            lines.append(f"{name} | {self._cname(int(self.labels[j]))} | {self._cname(int(self.nearest[j]))} | "
                         f"{float(self.true_distance[j]):.4f} | {float(self.nearest_distance[j]):.4f} | "
                         f"{int(self.true_rank[j])} | {'yes' if bool(self.hits[j]) else 'NO'}")
        return "\n".join(lines)


def default_labels(n_content: int, n_stylized: int) -> list:
    """Which content each stylised image came from when nobody said: one-to-one when the counts are equal, else
    consecutive groups (all of content 0 first) when they divide, else round-robin."""
    if n_stylized == n_content:
        return list(range(n_content))
    if n_content and n_stylized % n_content == 0:
        k = n_stylized // n_content
        return [i // k for i in range(n_stylized)]
    return [i % n_content for i in range(n_stylized)]


def match_picture(content: torch.Tensor, stylized: torch.Tensor, result: IDRetrievalResult, *,
                  thumb: int = 128) -> torch.Tensor:
    """A picture of the retrieval: one row per stylised image, ``[stylised | its own content | the nearest
    content]``, each tile framed green (hit) or red (miss).

    Args:
        content, stylized: the images given to :func:`id_retrieval`, ``[N|M, 3, H, W]`` in [0, 1].
        result: what :func:`id_retrieval` returned for them.
        thumb: tile size in pixels.

    Returns:
        ``[M, 3, thumb + 8, 3 (thumb + 8)]`` in [0, 1], on the CPU.
    """
    def small(x):
        x = x[:, :3].detach().float().cpu()
        return F.interpolate(x, size=(thumb, thumb), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)

    c, s = small(content), small(stylized)                                              # [N, 3, T, T], [M, 3, T, T]
    rows = []
    for j in range(s.shape[0]):
        colour = torch.tensor([0.1, 0.8, 0.2] if bool(result.hits[j]) else [0.9, 0.15, 0.1]).view(3, 1, 1)
        framed = []
        for tile in (s[j], c[int(result.labels[j])], c[int(result.nearest[j])]):
            f = colour.expand(3, thumb + 8, thumb + 8).clone()
            f[:, 4:-4, 4:-4] = tile
            framed.append(f)
        rows.append(torch.cat(framed, dim=2))                                           # [3, T+8, 3(T+8)]
    return torch.stack(rows)                                                            # [M, 3, T+8, 3(T+8)]


def _embeddings(x, embedder, what, batch_size):
    """Embeddings [N, D] from embeddings or images."""
    if torch.is_tensor(x) and x.ndim == 2:
        if not x.is_floating_point():
            raise ShapeError(f"{what}: embeddings must be float, got {x.dtype}.")
        return torch.nn.functional.normalize(x.float(), dim=1)
    if embedder is None:
        shape = tuple(x.shape) if torch.is_tensor(x) else f"a list of {len(x)} images"
        raise ShapeError(f"{what}: got images ({shape}) but no embedder; pass embedder=load_face_embedder(...) or "
                         f"pass embeddings [N, D].")
    return embedder.embed(x, batch_size=batch_size)


def _labels(labels, m, content_names):
    """Labels (ints or content names) -> LongTensor [M] of content indices."""
    if torch.is_tensor(labels):
        labels = labels.reshape(-1).tolist()
    labels = list(labels)
    if len(labels) != m:
        raise ShapeError(f"labels: expected one label per stylised image ({m}), got {len(labels)}.")
    out = []
    index = {n: i for i, n in enumerate(content_names or [])}
    for j, lab in enumerate(labels):
        if isinstance(lab, str):
            if lab not in index:
                known = ", ".join(list(index)[:10]) or "(no content_names given)"
                raise DatasetLayoutError(f"labels[{j}] = {lab!r} names no content face; known names: {known}.")
            out.append(index[lab])
        else:
            out.append(int(lab))
    return torch.tensor(out, dtype=torch.long)


def id_retrieval(content, stylized, labels, *, embedder=None, threshold=None, content_names=None,
                 stylized_names=None, batch_size=None, chunk=4096):
    """ID-retrieval accuracy of stylised faces against their content faces.

    Args:
        content: N content faces: embeddings ``[N, D]``, or images ``[N, 3, H, W]`` in [0, 1] / a list of
            ``[3, H, W]`` (then ``embedder`` is required).
        stylized: M stylised images (or embeddings), same forms.
        labels: length-M content index (ints) or content name (str, matched against ``content_names``) of each
            stylised image; a list or a tensor.
        embedder: a :class:`hrinv.faceid.FaceEmbedder` (needed for images; also gives the default threshold).
        threshold: squared-distance threshold for ``top1_thresholded`` (default: the embedder's, else 1.5 for
            512-d and 0.16 for 128-d embeddings; otherwise no thresholded variant). ``float('inf')`` disables it.
        content_names, stylized_names: optional names (used for string labels and in reports).
        batch_size: images per forward pass when embedding.
        chunk: stylised embeddings compared at a time (bounds memory to ``chunk x N``).

    Returns:
        IDRetrievalResult.

    Shape:
        embeddings ``[N, D]`` and ``[M, D]``; labels ``[M]``.
    """
    c = _embeddings(content, embedder, "content", batch_size)  # [N, D]
    s = _embeddings(stylized, embedder, "stylized", batch_size)  # [M, D]
    n, m = c.shape[0], s.shape[0]
    if n == 0:
        raise DatasetLayoutError("id_retrieval: the content set is empty; give at least one content face.")
    if m == 0:
        raise DatasetLayoutError("id_retrieval: the stylised set is empty; give at least one stylised image.")
    if c.shape[1] != s.shape[1]:
        raise ShapeError(f"id_retrieval: content embeddings are {c.shape[1]}-d but stylised ones are {s.shape[1]}-d; "
                         f"embed both with the same network.")
    if content_names is not None and len(content_names) != n:
        raise ShapeError(f"content_names: expected {n} names, got {len(content_names)}.")
    if stylized_names is not None and len(stylized_names) != m:
        raise ShapeError(f"stylized_names: expected {m} names, got {len(stylized_names)}.")
    lab = _labels(labels, m, content_names)  # [M]
    if int(lab.min()) < 0 or int(lab.max()) >= n:
        raise ShapeError(f"labels must be content indices in [0, {n - 1}], got values in [{int(lab.min())}, "
                         f"{int(lab.max())}].")
    s = s.to(c.device)
    lab_dev = lab.to(c.device)
    nearest, near_d, true_d, rank = [], [], [], []
    for i in range(0, m, chunk):
        sj, lj = s[i:i + chunk], lab_dev[i:i + chunk]
        d = (2.0 - 2.0 * sj @ c.T).clamp_min(0)  # [m', N] squared distance of unit vectors
        dmin, amin = d.min(dim=1)  # [m'], first index on ties
        dt = d.gather(1, lj[:, None])[:, 0]  # [m']
        nearest.append(amin)
        near_d.append(dmin)
        true_d.append(dt)
        rank.append((d < dt[:, None]).sum(dim=1))
    nearest, near_d = torch.cat(nearest).cpu(), torch.cat(near_d).cpu()
    true_d, rank = torch.cat(true_d).cpu(), torch.cat(rank).cpu()
    hits = nearest == lab
    if threshold is None:
        threshold = embedder.threshold if embedder is not None else default_threshold(c.shape[1])
    thr_hits = None if threshold is None else float((hits & (near_d <= threshold)).float().mean())
    return IDRetrievalResult(
        top1=float(hits.float().mean()), top1_thresholded=thr_hits,
        threshold=None if threshold is None or math.isinf(threshold) else float(threshold), chance=1.0 / n,
        num_content=n, num_stylized=m, labels=lab, nearest=nearest, nearest_distance=near_d, true_distance=true_d,
        true_rank=rank, hits=hits, content_names=list(content_names or []), stylized_names=list(stylized_names or []),
        embedder=embedder.describe() if embedder is not None else None)


# ----------------------------------------------------------------------------------------------------------------
# The authors' directory layout


def scan_layout(root=None, content_dir=None, transfer_dir=None):
    """Find content faces and stylised images in the authors' layout.

    ``root/content/*.{jpg,png,...}`` (recursive, sorted by file name; the label of a content face is its index) and
    ``root/transfer/<content stem>/*`` (recursive). ``content_dir``/``transfer_dir`` override the two folders.

    Returns:
        ``(content_paths, stylized_paths, labels)``.

    Raises:
        DatasetLayoutError: missing/empty folders, duplicate content names, transfer folders with no matching
        content, no stylised image at all.
    """
    from ..imageio import IMAGE_EXTENSIONS, list_images

    root = Path(root) if root is not None else None
    content_dir = Path(content_dir) if content_dir is not None else (root / "content" if root else None)
    transfer_dir = Path(transfer_dir) if transfer_dir is not None else (root / "transfer" if root else None)
    if content_dir is None or transfer_dir is None:
        raise DatasetLayoutError("give a root folder (with content/ and transfer/) or both content and transfer folders.")
    for what, d in (("content", content_dir), ("transfer", transfer_dir)):
        if not d.is_dir():
            raise DatasetLayoutError(f"{what} folder {d} does not exist. Expected the layout root/content/*.jpg|png "
                                     f"and root/transfer/<content name>/*.jpg|png.")
    exts = "|".join(e[1:] for e in IMAGE_EXTENSIONS)
    content = list_images(content_dir, recursive=True)
    if not content:
        raise DatasetLayoutError(f"content folder {content_dir} has no images ({exts}); put the content faces there.")
    stems = {}
    for p in content:
        if p.stem in stems:
            raise DatasetLayoutError(f"two content images share the name {p.stem!r} ({stems[p.stem]} and {p}); "
                                     f"transfer/<name>/ could not tell them apart. Rename one.")
        stems[p.stem] = p
    index = {stem: i for i, stem in enumerate(stems)}
    subdirs = sorted(d for d in transfer_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    unmatched = [d.name for d in subdirs if d.name not in index]
    if unmatched:
        raise DatasetLayoutError(f"transfer folder(s) {', '.join(unmatched[:10])} in {transfer_dir} match no content "
                                 f"image (content names: {', '.join(list(index)[:10])}"
                                 f"{' ...' if len(index) > 10 else ''}). Each transfer/<name>/ must be named after a "
                                 f"content file's stem.")
    loose = list_images(transfer_dir, recursive=False)
    if loose:
        log.warning("ignoring %d image(s) directly in %s (they belong in transfer/<content name>/)", len(loose),
                    transfer_dir)
    stylized, labels = [], []
    for d in subdirs:
        files = list_images(d, recursive=True)
        if not files:
            log.warning("transfer folder %s is empty", d)
        stylized += files
        labels += [index[d.name]] * len(files)
    if not stylized:
        raise DatasetLayoutError(f"no stylised images found under {transfer_dir}/<content name>/ ({exts}).")
    missing = [s for s in index if s not in {d.name for d in subdirs}]
    if missing:
        log.info("%d content face(s) have no stylised images (still used as distractors): %s", len(missing),
                 ", ".join(missing[:10]))
    return content, stylized, labels


def embed_files(embedder, paths, batch_size=16, min_size=None, progress=None):
    """Read and embed image files a batch at a time (never holds more than ``batch_size`` images).

    Args:
        embedder: a FaceEmbedder.
        paths: image files.
        batch_size: files read and embedded together.
        min_size: smallest accepted side (default: what the embedder's preprocessing needs).
        progress: optional ``callback(done, total)``.

    Returns:
        embeddings ``[len(paths), D]``.

    Raises:
        ImageReadError (unreadable file), DatasetLayoutError (an image too small), with the file name.
    """
    from ..faceid.preprocess import MIN_SIZE
    from ..imageio import read_image

    min_size = MIN_SIZE.get(embedder.preprocess, 1) if min_size is None else min_size
    out = []
    for i in range(0, len(paths), batch_size):
        batch = []
        for p in paths[i:i + batch_size]:
            img = read_image(p)  # [3, H, W]
            if min(img.shape[1:]) < min_size:
                raise DatasetLayoutError(f"{p} is {img.shape[2]}x{img.shape[1]} px; the {embedder.name} embedder with "
                                         f"'{embedder.preprocess}' preprocessing needs at least {min_size} px per side. "
                                         f"Use larger aligned faces or remove the file.")
            batch.append(img)
        out.append(embedder.embed(batch, batch_size=batch_size))
        if progress is not None:
            progress(min(i + batch_size, len(paths)), len(paths))
    return torch.cat(out) if out else torch.zeros(0, embedder.dim)


def id_retrieval_from_folders(embedder, root=None, *, content_dir=None, transfer_dir=None, threshold=None,
                              batch_size=16, progress=None):
    """:func:`id_retrieval` on the authors' directory layout (see :func:`scan_layout`).

    Names in the result are file paths relative to the content/transfer folders.
    """
    content, stylized, labels = scan_layout(root, content_dir, transfer_dir)
    tdir = Path(transfer_dir) if transfer_dir is not None else Path(root) / "transfer"
    total = len(content) + len(stylized)
    cb = None if progress is None else (lambda k, _n: progress(k, total))
    c = embed_files(embedder, content, batch_size, progress=cb)
    cb = None if progress is None else (lambda k, _n: progress(len(content) + k, total))
    s = embed_files(embedder, stylized, batch_size, progress=cb)
    return id_retrieval(c, s, labels, embedder=embedder, threshold=threshold,
                        content_names=[p.stem for p in content],
                        stylized_names=[str(p.relative_to(tdir)) for p in stylized])
