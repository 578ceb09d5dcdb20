"""Dataset-scale jobs: a folder or a manifest of items, processed resumably, one results table.

The engine (:func:`run_batch`) is independent of what an item does; a *job* (:class:`InvertJob`, the stylise job in
:mod:`hrinv.commands.batch`) loads its models once and turns one :class:`BatchItem` into output files.

- **Items** come from a folder (images sorted by name) or a manifest (``.csv`` with a header, or ``.jsonl``): one
  row per item with the content path (column ``content``, ``input`` or ``image``), optionally ``reference``,
  ``name`` (the output stem), ``seed``, and any per-row setting the job accepts (e.g. ``steps``). Relative paths in a
  manifest are relative to the manifest's folder. The order is deterministic (sorted folder / manifest order).
- **Seeds** follow the item, not the process: ``seed(item) = (base_seed + crc32(name)) mod 2**31`` unless the row
  gives one, so a result does not depend on sharding, on the other items, or on resuming.
- **Resumable**: an item is done when its done marker ``DIR/.hrinv-batch/done/<name>.json`` exists and every output
  it lists is a file. Every output is written to a temporary file in the same folder and renamed into place
  (``os.replace``, atomic); the marker is written last, the same way. A killed run therefore never leaves a file that
  counts as done; the next run redoes the unfinished items only and deletes stale temporary files.
- **Bad items** (unreadable image, no face, a bad per-row setting, ...) become a row with ``status: "error"`` and
  the error, and the job goes on; they are retried by the next run.
- **Results table** ``DIR/results.jsonl``: one JSON row per item in item order: ``index``, ``name``, ``input``
  (and ``reference``), ``seed``, ``settings``, ``status`` (``ok``/``error``), ``error``, ``error_type``,
  ``outputs`` (role -> path relative to DIR) and ``metrics``. Rows hold no timings, so the table of a run with N
  processes equals the table of a single process bit for bit; timings go to each item's own JSON file.
- **Several processes** (:mod:`hrinv.distributed`, torchrun): rank 0 lists what is left and broadcasts it; rank r
  processes pending items r, r + N, ...; each rank writes its partial table ``.hrinv-batch/part-R-of-N.jsonl``; after
  a barrier rank 0 checks that every pending item appears exactly once and merges the table in item order.
  ``DIR`` must be on a file system every rank sees.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import time
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ._files import TMP_TAG, atomic_write, json_default
from .errors import DatasetLayoutError, HRInvError, InvalidSettingError

__all__ = [
    "BatchItem",
    "BatchSummary",
    "InvertJob",
    "StylizeJob",
    "OutputWriter",
    "atomic_write",
    "finetune_target",
    "collect_items",
    "item_seed",
    "read_results",
    "run_batch",
]

log = logging.getLogger(__name__)

STATE_DIR = ".hrinv-batch"
RESULTS = "results.jsonl"
_CONTENT_KEYS = ("content", "input", "image", "path")
_REFERENCE_KEYS = ("reference", "style")
_NAME_KEYS = ("name",)


# ----------------------------------------------------------------------------------------------------------------
# Items


@dataclass(frozen=True)
class BatchItem:
    """One unit of work. ``index`` = position in the deterministic list; ``name`` = unique output stem."""

    index: int
    name: str
    input: str
    reference: str | None = None
    seed: int = 0
    settings: dict = field(default_factory=dict)

    def row(self) -> dict:
        """The identifying part of a results row."""
        r = {"index": self.index, "name": self.name, "input": self.input}
        if self.reference is not None:
            r["reference"] = self.reference
        r["seed"] = self.seed
        r["settings"] = dict(self.settings)
        return r


def item_seed(base_seed: int, name: str) -> int:
    """Seed of the item called ``name``: ``(base_seed + crc32(name)) mod 2**31`` (stable across runs and shardings)."""
    return (int(base_seed) + zlib.crc32(name.encode("utf-8"))) % 2**31


def _safe_name(name: str, where: str) -> str:
    bad = [c for c in ("/", "\\", "\0") if c in name]
    if not name or bad or name in (".", "..") or name.startswith(".") or TMP_TAG in name:
        raise DatasetLayoutError(f"{where}: output name {name!r} is not a plain file stem (no slashes, not empty, "
                                 f"not starting with '.'); fix the 'name' column or rename the file.")
    return name


def _parse_value(v):
    """CSV cell -> JSON value where it parses (numbers, true/false, null, lists), else the string."""
    if not isinstance(v, str):
        return v
    s = v.strip()
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return json.loads(s)
    except ValueError:
        return s


def _read_manifest(path: Path) -> list[dict]:
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise DatasetLayoutError(f"manifest {path} has no header row; the first line must name the columns "
                                         f"(content[,reference][,name][,seed][,settings...]).")
            rows = []
            for row in reader:
                rows.append({k.strip(): _parse_value(v) for k, v in row.items()
                             if k is not None and v is not None and str(v).strip() != ""})
            return rows
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise DatasetLayoutError(f"manifest {path} line {n} is not JSON ({e}); each line must be one object "
                                         f"like {{\"content\": \"a.png\", \"reference\": \"s.png\"}}.") from None
            if not isinstance(obj, dict):
                raise DatasetLayoutError(f"manifest {path} line {n}: expected a JSON object, got "
                                         f"{type(obj).__name__}.")
            rows.append(obj)
    return rows


def _pick(row: dict, keys, n, path):
    found = [k for k in keys if k in row]
    if len(found) > 1:
        raise DatasetLayoutError(f"manifest {path} row {n}: columns {found} mean the same thing; keep one.")
    return (found[0], row[found[0]]) if found else (None, None)


def collect_items(source, *, references=None, base_seed: int = 0, allowed_settings=None,
                  needs_reference: bool = False) -> list[BatchItem]:
    """The deterministic item list of a folder or a manifest.

    Args:
        source: a folder of images (sorted by file name, not recursive) or a ``.csv`` / ``.jsonl`` manifest.
        references: reference images for a folder (every content with every reference, content-major), or for
            manifest rows without a ``reference`` column.
        base_seed: the job's seed (see :func:`item_seed`).
        allowed_settings: names of per-row settings the job accepts (other extra columns raise).
        needs_reference: every item must have a reference (stylisation).

    Returns:
        list of :class:`BatchItem`, ``index`` = position.

    Raises:
        DatasetLayoutError: missing/empty source, rows without content, duplicate or unsafe names.
        InvalidSettingError: a per-row setting the job does not know.
    """
    from .imageio import IMAGE_EXTENSIONS, list_images

    source = Path(source)
    refs = [str(r) for r in (references or [])]
    specs = []  # (content, reference, name or None, seed or None, settings)
    if source.is_dir():
        files = list_images(source)
        if not files:
            raise DatasetLayoutError(f"input folder {source} has no images ({', '.join(IMAGE_EXTENSIONS)}); put the "
                                     f"content images there or pass a manifest (.csv/.jsonl).")
        for p in files:
            for r in (refs or [None]):
                specs.append((str(p), r, None, None, {}))
    elif source.is_file() and source.suffix.lower() in (".csv", ".jsonl", ".ndjson"):
        rows = _read_manifest(source)
        if not rows:
            raise DatasetLayoutError(f"manifest {source} has no rows; add one row per item.")
        allowed = set(allowed_settings or ())
        for n, row in enumerate(rows, 1):
            row = dict(row)
            ck, content = _pick(row, _CONTENT_KEYS, n, source)
            if not content:
                raise DatasetLayoutError(f"manifest {source} row {n} has no content path; give a column "
                                         f"'content' (or 'input'/'image') with an image path.")
            rk, ref = _pick(row, _REFERENCE_KEYS, n, source)
            name = row.get("name")
            seed = row.get("seed")
            for k in (ck, rk, "name", "seed"):
                row.pop(k, None)
            unknown = sorted(k for k in row if k not in allowed)
            if unknown:
                raise InvalidSettingError(f"manifest {source} row {n}: unknown column(s) {unknown}. Known: content, "
                                          f"reference, name, seed and the per-row settings "
                                          f"{sorted(allowed) or '(none for this job)'}.")
            if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
                raise InvalidSettingError(f"manifest {source} row {n}: seed must be an integer >= 0, got {seed!r}.")
            base = source.parent
            content = str(content if Path(content).is_absolute() else base / content)
            ref_list = [str(ref if Path(ref).is_absolute() else base / ref)] if ref else (refs or [None])
            for r in ref_list:
                specs.append((content, r, None if name is None else str(name), seed, row))
    elif source.is_file():
        raise DatasetLayoutError(f"--input {source}: expected a folder of images or a manifest ending in .csv or "
                                 f".jsonl, got a {source.suffix or 'extension-less'} file.")
    else:
        raise DatasetLayoutError(f"--input {source} does not exist; give a folder of images or a .csv/.jsonl "
                                 f"manifest.")
    if needs_reference and any(r is None for _, r, *_ in specs):
        raise DatasetLayoutError("this job needs a reference image per item: pass --reference IMG... or give the "
                                 "manifest a 'reference' column.")
    items, seen = [], {}
    multi_ref = len({r for _, r, *_ in specs}) > 1
    for index, (content, ref, name, seed, settings) in enumerate(specs):
        if name is None:
            name = Path(content).stem
            if ref is not None and (multi_ref or refs):
                name = f"{name}__{Path(ref).stem}"
        _safe_name(name, f"item {index} ({content})")
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}_{seen[name]}"
            while name in seen:
                name += "_"
            seen[name] = 1
        items.append(BatchItem(index=index, name=name, input=content, reference=ref,
                               seed=item_seed(base_seed, name) if seed is None else int(seed), settings=settings))
    return items


def coerce_settings(cls, settings: dict, where: str = "settings") -> dict:
    """Per-row settings for a config dataclass ``cls``: JSON-ish values converted to the field's type (int/float).

    Raises:
        InvalidSettingError: a name that is not a field of ``cls``.
    """
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for k, v in settings.items():
        if k not in fields:
            raise InvalidSettingError(f"{where}: {k!r} is not a setting of {cls.__name__}; known: {sorted(fields)}.")
        default = fields[k].default
        if isinstance(default, float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if isinstance(default, tuple) and isinstance(v, list):
            v = tuple(v)
        out[k] = v
    return out


# ----------------------------------------------------------------------------------------------------------------
# Atomic files


def _write_text_atomic(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _dumps(obj, indent=None) -> str:
    return json.dumps(obj, indent=indent, default=json_default, allow_nan=True)


class OutputWriter:
    """Writes the outputs of one item atomically under the job folder; ``outputs`` maps role -> relative path."""

    def __init__(self, out_dir: Path, item: BatchItem):
        self.out_dir = Path(out_dir)
        self.item = item
        self.outputs: dict[str, str] = {}

    def path(self, filename: str) -> Path:
        return self.out_dir / filename

    def save(self, role: str, filename: str, write: Callable[[Path], object]) -> Path:
        """Call ``write(tmp_path)`` and move the file into place as ``filename`` (relative to the job folder)."""
        final = self.path(filename)
        with atomic_write(final) as tmp:
            write(tmp)
        self.outputs[role] = filename
        return final

    def save_json(self, role: str, filename: str, obj) -> Path:
        return self.save(role, filename, lambda p: p.write_text(_dumps(obj, indent=2) + "\n", encoding="utf-8"))

    def save_image(self, role: str, filename: str, img) -> Path:
        from .commands._common import save_image

        return self.save(role, filename, lambda p: save_image(img, p))

    def save_latent(self, role: str, filename: str, latent) -> Path:
        return self.save(role, filename, lambda p: latent.save(p))


# ----------------------------------------------------------------------------------------------------------------
# Engine


@dataclass
class BatchSummary:
    """What :func:`run_batch` did. ``rows`` is the merged table on rank 0 (this rank's rows elsewhere)."""

    total: int
    already_done: int
    processed: int
    ok: int
    errors: int
    seconds: float
    rows: list = field(default_factory=list)
    results: Path | None = None


def _state(out: Path) -> Path:
    return out / STATE_DIR


def _marker(out: Path, item: BatchItem) -> Path:
    return _state(out) / "done" / f"{item.name}.json"


def _read_done(out: Path, item: BatchItem) -> dict | None:
    """The ok row of a finished item, or None when it is not (completely) done."""
    m = _marker(out, item)
    try:
        row = json.loads(m.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(row, dict) or row.get("status") != "ok" or row.get("name") != item.name:
        return None
    if row.get("input") != item.input or row.get("reference") != item.reference or row.get("seed") != item.seed:
        return None  # the marker belongs to another item of that name (the folder or manifest changed)
    outs = row.get("outputs") or {}
    if not all((out / rel).is_file() for rel in outs.values()):
        return None
    row = dict(row)
    row["index"] = item.index
    return row


def _clean_stale(out: Path) -> int:
    n = 0
    for folder in (out, _state(out), _state(out) / "done"):
        if folder.is_dir():
            for p in folder.iterdir():
                if TMP_TAG in p.name and p.is_file():
                    with contextlib.suppress(OSError):
                        p.unlink()
                        n += 1
    if n:
        log.info("removed %d unfinished temporary file(s) left by an interrupted run", n)
    return n


def _check_job(out: Path, describe: dict, overwrite: bool) -> None:
    path = _state(out) / "job.json"
    if path.is_file() and not overwrite:
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            old = None
        if old is not None and old != json.loads(_dumps(describe)):
            keys = sorted(k for k in set(old) | set(describe) if old.get(k) != json.loads(_dumps(describe)).get(k))
            raise InvalidSettingError(f"{out} holds a job with other settings (differences: {', '.join(keys)}). "
                                      f"Resuming would mix results. Use another --out folder, or pass --overwrite "
                                      f"to redo every item with the new settings.")
    if overwrite:
        done = _state(out) / "done"
        if done.is_dir():
            for p in done.iterdir():
                with contextlib.suppress(OSError):
                    p.unlink()
    _write_text_atomic(path, _dumps(describe, indent=2) + "\n")


def _process_chunk(job, chunk, out, device):
    """(writers, results) of a few items: ``job.process_many`` when the job batches items, else one by one; a
    result is the item's metrics or the exception that made it a bad item."""
    writers = [OutputWriter(out, item) for item in chunk]
    if len(chunk) > 1 and hasattr(job, "process_many"):
        return writers, job.process_many(chunk, writers, device)
    results = []
    for item, writer in zip(chunk, writers):
        try:
            results.append(job.process(item, writer, device))
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # a bad item: recorded by the caller
            results.append(e)
    return writers, results


def run_batch(job, items: list[BatchItem], out, *, ctx=None, callback: Callable | None = None,
              overwrite: bool = False, max_errors: int | None = None, batch_size: int = 1) -> BatchSummary:
    """Process ``items`` with ``job`` into the folder ``out``, resuming what an earlier run finished.

    Args:
        job: an object with ``kind``, ``describe() -> dict`` (the settings that define the outputs),
            ``prepare(device)`` (load models) and ``process(item, writer, device) -> dict`` (write the outputs with
            the :class:`OutputWriter`; return the row's ``metrics``; raise for a bad item).
        items: from :func:`collect_items`.
        out: job folder (created).
        ctx: :class:`hrinv.distributed.DistContext` (default: a single process on the CPU).
        callback: ``callback(done, total, row)`` after every item of this rank, and ``callback(0, total, None)``
            before the first.
        overwrite: forget earlier results (a job with other settings may then reuse the folder).
        max_errors: stop this rank after so many bad items (default: never).
        batch_size: items of this rank's share handed together to ``job.process_many(items, writers, device)``
            (when the job has it; it returns each item's metrics or exception), e.g. several faces inverted in one
            optimisation. 1 (default): ``job.process`` item by item.

    Returns:
        :class:`BatchSummary`; rank 0 also writes ``out/results.jsonl``.
    """
    from .distributed import DistContext

    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InvalidSettingError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    ctx = ctx or DistContext()
    out = Path(out)
    t0 = time.perf_counter()
    # Rank 0 prepares the folder and lists what is left while the others wait; an error is sent to every rank.
    plan = None
    if ctx.is_main:
        try:
            out.mkdir(parents=True, exist_ok=True)
            (_state(out) / "done").mkdir(parents=True, exist_ok=True)
            _clean_stale(out)
            for old in _state(out).glob("part-*.jsonl"):
                old.unlink()
            _check_job(out, job.describe(), overwrite)
            plan = {"pending": [it.index for it in items if _read_done(out, it) is None]}
        except Exception as e:  # tell the other ranks before failing, so they do not wait at the broadcast
            plan = {"error": f"{type(e).__name__}: {e}", "type": type(e).__name__}
            if not ctx.active or not isinstance(e, HRInvError):
                ctx.broadcast_object(plan)
                raise
    plan = ctx.broadcast_object(plan)
    if "error" in plan:
        if ctx.is_main:
            raise InvalidSettingError(plan["error"])
        raise InvalidSettingError(f"rank 0 refused the job: {plan['error']}")
    pending = plan["pending"]
    from .distributed import shard

    mine = [items[i] for i in shard(pending, ctx.rank, ctx.world_size)]
    already = len(items) - len(pending)
    if ctx.is_main and already:
        log.info("%d of %d item(s) already done; %d left", already, len(items), len(pending))

    part_path = _state(out) / f"part-{ctx.rank:05d}-of-{ctx.world_size:05d}.jsonl"
    rows, n_ok, n_err = [], 0, 0
    if callback is not None:
        callback(0, len(mine), None)
    if mine:
        job.prepare(ctx.device)
    with open(part_path, "w", encoding="utf-8") as part:
        for start in range(0, len(mine), batch_size):
            chunk = mine[start:start + batch_size]
            writers, results = _process_chunk(job, chunk, out, ctx.device)
            for item, writer, result in zip(chunk, writers, results):
                row = item.row()
                if isinstance(result, BaseException):  # a bad item: record it and go on
                    log.debug("item %s failed:\n%s", item.name,
                              "".join(traceback.format_exception(type(result), result, result.__traceback__)))
                    log.warning("item %d (%s) failed: %s: %s", item.index, item.input, type(result).__name__, result)
                    row.update(status="error", error=str(result), error_type=type(result).__name__, outputs={},
                               metrics={})
                    n_err += 1
                else:
                    row.update(status="ok", error=None, error_type=None, outputs=dict(writer.outputs),
                               metrics=result or {})
                    _write_text_atomic(_marker(out, item), _dumps(row) + "\n")  # the done marker, last
                    n_ok += 1
                part.write(_dumps(row) + "\n")
                part.flush()
                rows.append(row)
                if callback is not None:
                    callback(len(rows), len(mine), row)
            if max_errors is not None and n_err >= max_errors:
                log.error("stopping rank %d after %d bad item(s) (--max-errors)", ctx.rank, n_err)
                break
        os.fsync(part.fileno())
    stopped = ctx.all_reduce_max(1.0 if len(rows) < len(mine) else 0.0) > 0
    ctx.barrier()
    summary = BatchSummary(total=len(items), already_done=already, processed=len(rows), ok=n_ok, errors=n_err,
                           seconds=time.perf_counter() - t0, rows=rows)
    if ctx.is_main:
        summary.rows = _merge(out, items, pending, ctx.world_size, partial=stopped)
        summary.results = out / RESULTS
        summary.ok = sum(r["status"] == "ok" for r in summary.rows)
        summary.errors = sum(r["status"] == "error" for r in summary.rows)
    ctx.barrier()
    return summary


def _merge(out: Path, items, pending, world_size: int, partial: bool = False) -> list[dict]:
    """Rank 0: one row per item in item order from the done markers and this run's partial tables."""
    fresh = {}
    for r in range(world_size):
        p = _state(out) / f"part-{r:05d}-of-{world_size:05d}.jsonl"
        if not p.is_file():
            raise DatasetLayoutError(f"partial table {p} of rank {r} is missing; is {out} on a file system all ranks "
                                     f"share? Put --out on shared storage.")
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                if row["index"] in fresh:
                    raise RuntimeError(f"item {row['index']} was processed twice (ranks overlap); please report this.")
                fresh[row["index"]] = row
    todo = set(pending)
    if set(fresh) - todo:
        raise RuntimeError(f"items {sorted(set(fresh) - todo)[:10]} were processed but were not pending.")
    missing = todo - set(fresh)
    if missing and not partial:
        raise RuntimeError(f"items {sorted(missing)[:10]} were not processed by any rank (a gap in the sharding).")
    rows = []
    for it in items:
        if it.index in fresh:
            rows.append(fresh[it.index])
        elif it.index in todo:  # left out by --max-errors
            rows.append({**it.row(), "status": "error", "error": "not processed (the run stopped early)",
                         "error_type": "NotProcessed", "outputs": {}, "metrics": {}})
        else:
            done = _read_done(out, it)
            if done is None:
                raise RuntimeError(f"item {it.index} ({it.name}) was done at the start but its files are gone now.")
            rows.append(done)
    _write_text_atomic(out / RESULTS, "".join(_dumps(r) + "\n" for r in rows))
    for r in range(world_size):
        with contextlib.suppress(OSError):
            (_state(out) / f"part-{r:05d}-of-{world_size:05d}.jsonl").unlink()
    return rows


def read_results(path) -> list[dict]:
    """Rows of a ``results.jsonl`` (``DIR`` or the file)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    if not path.is_file():
        raise DatasetLayoutError(f"results table {path} not found; run `hrinv batch ... --out DIR` first and pass "
                                 f"DIR/{RESULTS}.")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise DatasetLayoutError(f"{path} line {n} is not JSON ({e}).") from None
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Jobs


class InvertJob:
    """Invert every item (paper Eq. 1 / 5) and write ``<name>.png``, ``<name>.latent.safetensors``, ``<name>.json``
    (and ``<name>_target.png`` with ``save_target``), the files of ``hrinv invert``.

    Args:
        generator: a checkpoint path (loaded once per process on its device) or a Generator.
        vgg: VGG16 weights path or a loaded VGG16Conv.
        config: :class:`hrinv.InversionConfig`; its ``seed`` is replaced by each item's seed.
        dtype: generator precision.
        keep_aspect: fit images like ``hrinv invert --keep-aspect``.
        save_target: also write the fitted target.
        align: None (the images are aligned faces) or keyword arguments of :func:`hrinv.align_faces` (``select``,
            ``min_size``, ``padding``, ``max_side``): every face of each photo is aligned and inverted; face k of item
            ``n`` is written as ``n_k.png`` / ``n_k.latent.safetensors`` / ``n_k.json`` / ``n_k_aligned.png`` with the
            transforms in ``n.alignment.json`` (the files of ``hrinv invert``); a photo without a face is a bad item.
        callback: per-step ``callback(step, total, preview)`` for each item (progress within an item).
    """

    kind = "invert"

    def __init__(self, generator, vgg, config=None, *, dtype=None, keep_aspect=False, save_target=False,
                 align=None, callback=None):
        from .inversion import InversionConfig

        self.align = None if align is None else dict(align)
        self.generator_src = generator
        self.vgg_src = vgg
        self.config = config or InversionConfig()
        self.dtype = dtype
        self.keep_aspect = bool(keep_aspect)
        self.save_target = bool(save_target)
        self.callback = callback
        self._G = self._vgg = self._stats = None

    @staticmethod
    def allowed_settings():
        import dataclasses

        from .inversion import InversionConfig

        return {f.name for f in dataclasses.fields(InversionConfig)} - {"seed"}

    def describe(self) -> dict:
        cfg = self.config.to_dict()
        cfg.pop("seed", None)
        return {"kind": self.kind, "generator": _src_name(self.generator_src), "vgg": _src_name(self.vgg_src),
                "inversion": cfg, "keep_aspect": self.keep_aspect, "save_target": self.save_target, "align": self.align,
                "dtype": str(self.dtype) if self.dtype is not None else None}

    def prepare(self, device):
        import torch

        from .inversion import compute_w_stats
        from .io.checkpoints import load_generator
        from .losses import load_vgg16

        if self._G is not None:
            return
        dtype = self.dtype or torch.float32
        if isinstance(self.generator_src, (str, Path)):
            self._G = load_generator(self.generator_src, device=device, dtype=dtype)
        else:
            self._G = self.generator_src
        if isinstance(self.vgg_src, (str, Path)):
            self._vgg = load_vgg16(self.vgg_src, device=device)
        else:
            self._vgg = self.vgg_src
        self._stats = compute_w_stats(self._G, self.config.w_avg_samples, self.config.w_stats_seed, device=device,
                                      dtype=dtype)

    def _load(self, item: BatchItem, device):
        """(item, config, target [N, 3, H, W], output names, alignment or None) of one item; raises for a bad item."""
        import dataclasses

        from .commands._common import load_image

        over = coerce_settings(type(self.config), item.settings, f"item {item.name}")
        config = dataclasses.replace(self.config, **over, seed=item.seed)
        res = self._G.img_resolution
        if self.align is not None:
            from .face import align_faces
            from .imageio import read_image

            al = align_faces(read_image(item.input), size=res, device=device, **self.align)
            target = al.crops.float().cpu()  # [N, 3, res, res]
            return item, config, target, [f"{item.name}_{k}" for k in range(target.shape[0])], al
        target = load_image(item.input, res, keep_aspect=self.keep_aspect)  # [1, 3, H, W]
        return item, config, target, [item.name], None

    def process(self, item: BatchItem, writer: OutputWriter, device) -> dict:
        result = self.process_many([item], [writer], device)[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def process_many(self, items, writers, device) -> list:
        """Invert several items in one optimisation (a batch of independent problems, one seed per image) and write
        each item's files. Items are grouped by their settings and target size (only equal ones share a batch).

        Returns:
            per item: its metrics dict, or the exception that made it a bad item.
        """
        import dataclasses

        import torch

        from .inversion import invert

        results: list = [None] * len(items)
        groups: dict = {}
        for i, item in enumerate(items):
            try:
                loaded = self._load(item, device)
            except Exception as e:  # a bad item: the others go on
                results[i] = e
                continue
            config, target = loaded[1], loaded[2]
            key = (_dumps(dataclasses.replace(config, seed=None).to_dict()), tuple(target.shape[1:]))
            groups.setdefault(key, []).append((i, loaded))
        for members in groups.values():
            targets = torch.cat([m[2] for _, m in members])  # [sum N_i, 3, H, W]
            seeds = [m[0].seed + k for _, m in members for k in range(m[2].shape[0])]  # face k of an item: seed + k
            t0 = time.perf_counter()
            try:
                result = invert(self._G, targets, self._vgg, members[0][1][1], device=device,
                                dtype=self.dtype or torch.float32, w_stats=self._stats, callback=self.callback,
                                seeds=seeds)
            except Exception as e:
                for i, _ in members:
                    results[i] = e
                continue
            seconds = time.perf_counter() - t0
            start = 0
            for i, loaded in members:
                try:
                    results[i] = self._write(loaded, writers[i], device, result, start, seconds, len(targets),
                                             len(members))
                except Exception as e:
                    results[i] = e
                start += loaded[2].shape[0]
        return results

    def _write(self, loaded, writer, device, result, start, seconds, images, items):
        import copy

        import torch

        item, config, target, names, al = loaded
        name = item.name
        if al is not None:
            doc = al.to_dict()
            doc["photo"] = item.input
            writer.save_json("alignment", f"{name}.alignment.json", doc)
        metrics = {"psnr": [], "loss": []}
        seeds = [str(item.seed + k) for k in range(len(names))]
        for k, n in enumerate(names):
            role = "" if al is None else f"face{k}"
            lat = result.latent[start + k]
            # this item's own settings and seeds (a batch of several items shares one settings dict)
            lat.settings = {**copy.deepcopy(lat.settings), "inversion": config.to_dict(), "seeds": seeds,
                            "source_image": item.input}
            lat.metrics = {m: v for m, v in lat.metrics.items() if m != "seconds"}  # timings only in the JSON
            if al is not None:
                writer.save_image(f"{role}_aligned", f"{n}_aligned.png", target[k])
            writer.save_image(role or "image", f"{n}.png", result.image[start + k])
            writer.save_latent(f"{role}_latent" if role else "latent", f"{n}.latent.safetensors", lat)
            if self.save_target and al is None:
                writer.save_image("target", f"{n}_target.png", target[k])
            m = {"psnr": lat.metrics["psnr"][0], "loss": lat.metrics["loss"][0]}
            record = {"image": item.input, "generator": _src_name(self.generator_src),
                      "vgg": _src_name(self.vgg_src), "generator_fingerprint": lat.generator_fingerprint,
                      "device": str(device), "dtype": str(self.dtype or torch.float32), "batch_size": len(names),
                      "seed": item.seed + k, "settings": lat.settings,
                      "metrics": {**m, "seconds": seconds, "seconds_per_image": seconds / images,
                                  "steps_run": result.metrics["steps_run"],
                                  "stopped_early": result.metrics["stopped_early"]}}
            if items > 1:
                record["inverted_with_items"] = items  # --batch-size: items optimised together
            if al is not None:
                record["face"], record["alignment"] = k, f"{name}.alignment.json"
            writer.save_json(f"{role}_record" if role else "record", f"{n}.json", record)
            for key in metrics:
                metrics[key].append(m[key])
        if al is None:
            return {"psnr": metrics["psnr"][0], "loss": metrics["loss"][0]}
        return {"faces": len(names), **metrics}


class StylizeJob:
    """Stylise every (content, reference) item with :func:`hrinv.stylize` (align -> invert -> lerp -> LSO -> render
    -> paste back). Files of item ``n`` (``content__reference`` by default):

    - aligned (default): ``n.png`` (the photo with the stylised faces pasted in; role ``image``, without paste-back
      no such file), ``n_mask.png``, ``n.alignment.json``; per face k: ``n_k.png`` (the stylised face),
      ``n_k_mixed.png`` (before LSO), ``n_k.latent.safetensors`` (code in G_m), ``n_k.json`` (settings + metrics), ``n_k_aligned.png``
      (the aligned content face), ``n_k_inv.png`` (its inversion in G_s);
    - ``align=False`` (the contents are aligned faces): ``n.png``, ``n_mixed.png``, ``n.latent.safetensors``,
      ``n.json``, ``n_inv.png``;
    - always ``n_reference_inv.png`` (the reference's inversion in G_t).

    Each reference is inverted in G_t once per process (with the job's ``seed``, not the item's, so every item of a
    reference uses the same code whichever rank runs it) and kept for the items that use it; the contents are
    inverted per item with the item's seed. Every file is per item, so items are independent and can run on any
    rank.
    """

    kind = "stylize"

    def __init__(self, source, target, vgg, config=None, *, dtype=None, align=True, paste=True, callback=None):
        from .pipeline import StylizeConfig

        self.source_src, self.target_src, self.vgg_src = source, target, vgg
        self.config = config or StylizeConfig()
        self.dtype = dtype
        self.align = bool(align)
        self.paste = bool(paste) and self.align
        self.callback = callback
        self._G_s = self._G_t = self._vgg = None
        self._refs = {}  # (path, reference inversion settings) -> (image [1, 3, res, res], Latent in G_t)
        self.reference_inversions = 0  # how many times this process inverted a reference
        self.finetune = None  # (style paths, FinetuneConfig) of a finetune-then-stylise job (see finetune_target)

    @staticmethod
    def allowed_settings():
        import dataclasses

        from .pipeline import StylizeConfig

        return {f.name for f in dataclasses.fields(StylizeConfig)} - {"seed", "inversion", "reference_inversion",
                                                                       "lso"}

    def describe(self) -> dict:
        cfg = self.config.to_dict()
        cfg.pop("seed", None)
        # "reference_seed": the references are inverted once, with the job's seed. Folders of older versions
        # inverted each item's reference with the item's seed; resuming one is refused as "other settings".
        return {"kind": self.kind, "source": _src_name(self.source_src), "target": _src_name(self.target_src),
                "vgg": _src_name(self.vgg_src), "stylize": cfg, "align": self.align, "paste": self.paste,
                "reference_seed": "job",
                "dtype": str(self.dtype) if self.dtype is not None else None,
                "finetune": None if not self.finetune else
                {"styles": [str(p) for p in self.finetune[0]], "config": _asdict(self.finetune[1])}}

    def prepare(self, device):
        import torch

        from .interpolate import lerp_generators
        from .io.checkpoints import load_generator
        from .losses import load_vgg16

        if self._G_s is not None:
            return
        dtype = self.dtype or torch.float32
        load = lambda src: load_generator(src, device=device, dtype=dtype) if isinstance(src, (str, Path)) else src
        self._G_s, self._G_t = load(self.source_src), load(self.target_src)
        lerp_generators(self._G_s, self._G_t, self.config.lam, mapping_lam=self.config.mapping_lam)  # fail early
        self._vgg = load_vgg16(self.vgg_src, device=device) if isinstance(self.vgg_src, (str, Path)) else self.vgg_src

    _MAX_REFERENCES = 64  # cached reference codes per process (a code is num_ws x w_dim floats)

    def _reference(self, path, config, device):
        """The reference image and its code in G_t, inverted once per (path, settings) in this process."""
        import torch

        from .commands._common import load_image
        from .inversion import invert
        from .losses import PerceptualLoss

        ref_cfg = config.inversion_configs()[1]
        key = (path, _dumps(ref_cfg.to_dict()), str(config.calibration))
        if key not in self._refs:
            img = load_image(path, self._G_s.img_resolution)  # [1, 3, res, res]
            d_conv = PerceptualLoss(self._vgg, layers="conv", calibration=config.calibration)  # as stylize()'s
            inv = invert(self._G_t, img.to(device), d_conv, ref_cfg, device=device, dtype=self.dtype or torch.float32)
            self.reference_inversions += 1
            if len(self._refs) >= self._MAX_REFERENCES:
                self._refs.pop(next(iter(self._refs)))
            self._refs[key] = (img, inv.latent)
        return self._refs[key]

    def process(self, item: BatchItem, writer: OutputWriter, device) -> dict:
        import dataclasses

        import torch

        from .commands._common import load_image
        from .imageio import read_image
        from .pipeline import stylize

        over = coerce_settings(type(self.config), item.settings, f"item {item.name}")
        config = dataclasses.replace(self.config, **over, seed=item.seed)
        # the reference with the job's seed (the same code for every item of that reference, on every rank)
        ref, ref_latent = self._reference(item.reference, dataclasses.replace(self.config, **over), device)
        if self.align:
            content = read_image(item.input)  # [3, H, W] in [0, 1]
        else:
            content = load_image(item.input, self._G_s.img_resolution)  # [1, 3, res, res]
        t0 = time.perf_counter()
        res = stylize(content, ref, self._G_s, self._G_t, self._vgg, config=config, align=self.align,
                      paste=self.paste, callback=self.callback, device=device, dtype=self.dtype or torch.float32,
                      reference_latent=ref_latent)
        seconds = time.perf_counter() - t0
        n = item.name
        faces = res.faces.shape[1]
        names = [f"{n}_{k}" for k in range(faces)] if self.align else [n]
        if res.alignment is not None:
            doc = res.alignment.to_dict()
            doc["photo"] = item.input
            writer.save_json("alignment", f"{n}.alignment.json", doc)
        if res.photo is not None:
            writer.save_image("image", f"{n}.png", res.photo[0] * 2 - 1)
            writer.save_image("mask", f"{n}_mask.png", res.mask[0][None].expand(3, -1, -1) * 2 - 1)
        writer.save_image("reference_inversion", f"{n}_reference_inv.png", res.reference_image[0])
        m_all = res.metrics
        lso_m = m_all["lso"][0]
        out = {"content_psnr": [], "reference_psnr": m_all["reference_psnr"][0], "lso_d_h_after": []}
        for k, fn in enumerate(names):
            role = f"face{k}" if self.align else ""
            pre = f"{role}_" if role else ""
            writer.save_image(role or "image", f"{fn}.png", res.faces[0, k])
            writer.save_image(pre + "mixed", f"{fn}_mixed.png", res.mixed[0, k])
            if self.align:
                writer.save_image(pre + "aligned", f"{fn}_aligned.png", res.content[k])
            writer.save_image(pre + "content_inversion", f"{fn}_inv.png", res.content_image[k])
            lat = res.latents[0][k]
            lat.settings = {"stylize": {"content": item.input, "reference": item.reference,
                                        **({"face": k} if self.align else {})}, **lat.settings}
            lat.metrics = {m: v for m, v in lat.metrics.items() if m != "seconds"}
            writer.save_latent(pre + "latent", f"{fn}.latent.safetensors", lat)
            d_after = lso_m.get("d_h_after", [None] * faces)[k]
            record = {"content": item.input, "face": k if self.align else None, "reference": item.reference,
                      "seed": item.seed, "source": _src_name(self.source_src), "target": _src_name(self.target_src),
                      "vgg": _src_name(self.vgg_src), "device": str(device), "config": res.config,
                      "alignment": res.alignment.faces[k].to_dict(res.alignment.size) if self.align else None,
                      "metrics": {"content_psnr": m_all["content_psnr"][k],
                                  "reference_psnr": m_all["reference_psnr"][0],
                                  "lso_d_h_before": lso_m.get("d_h_before", [None] * faces)[k],
                                  "lso_d_h_after": d_after, "seconds": seconds}}
            writer.save_json(pre + "record", f"{fn}.json", record)
            out["content_psnr"].append(m_all["content_psnr"][k])
            out["lso_d_h_after"].append(d_after)
        if not self.align:
            out = {k: (v[0] if isinstance(v, list) else v) for k, v in out.items()}
        else:
            out["faces"] = faces
        return out


def finetune_target(source, style_paths, vgg, config, out, *, device=None, dtype=None, ctx=None, refit=False,
                    callback=None, calibration="auto") -> Path:
    """The finetune-then-stylise stage: fit G_t once for the whole job and return its file.

    Rank 0 fine-tunes ``source`` on ``style_paths`` (:func:`hrinv.finetune`, one process) and writes
    ``out/generator_t.safetensors`` atomically, unless the file is already there (a resumed job) and ``refit`` is
    False; the other ranks wait at a barrier, then every rank loads the file.
    """
    import torch

    from .distributed import DistContext

    ctx = ctx or DistContext()
    out = Path(out)
    path = out / "generator_t.safetensors"
    error = None
    if ctx.is_main and (refit or not path.is_file()):
        try:
            from .commands._common import load_image
            from .finetuning import finetune
            from .io.checkpoints import load_generator, save_generator
            from .losses import PerceptualLoss, load_vgg16

            dev = device or ctx.device
            G_s = load_generator(source, device=dev, dtype=dtype or torch.float32) \
                if isinstance(source, (str, Path)) else source
            net = load_vgg16(vgg, device=dev) if isinstance(vgg, (str, Path)) else vgg
            styles = torch.cat([load_image(p, G_s.img_resolution) for p in style_paths])  # [K, 3, R, R]
            G_t = finetune(G_s, styles, PerceptualLoss(net, layers=config.loss_layers, calibration=calibration), config, device=dev,
                           dtype=dtype, callback=callback, distributed=False)  # rank 0 alone
            with atomic_write(path) as tmp:
                save_generator(G_t, tmp, extra_meta={"finetune_styles": [str(p) for p in style_paths]})
        except Exception as e:  # let the other ranks stop too
            error = f"{type(e).__name__}: {e}"
            if not ctx.active:
                raise
    error = ctx.broadcast_object(error)
    if error is not None:
        raise InvalidSettingError(f"fine-tuning G_t for the batch failed on rank 0: {error}")
    return path


def _asdict(cfg):
    import dataclasses

    return json.loads(_dumps(dataclasses.asdict(cfg)))


def _src_name(src):
    if isinstance(src, (str, Path)):
        return str(src)
    fp = getattr(src, "fingerprint", None)
    return f"<{type(src).__name__} {fp()}>" if callable(fp) else f"<{type(src).__name__}>"
