"""``hrinv evaluate DIR/results.jsonl [--vgg VGG] [--network dlib|arcface|FILE]``: the paper's metrics over a batch.

PSNR always; the perceptual distance (our d_conv) with ``--vgg``; ID retrieval with ``--network``. Writes
``evaluation.json`` (summary + one record per item) and ``evaluation.md`` (Markdown table) next to the table, or at
``--out PREFIX`` (``PREFIX.json`` / ``PREFIX.md``). Under ``torchrun --nproc-per-node N -m hrinv evaluate ...`` each
rank measures and embeds its share of the faces and rank 0 gathers them and writes the files.
"""

import json
from pathlib import Path

HELP = ("PSNR, perceptual distance (d_conv) and ID retrieval over a `hrinv batch` results table -> JSON + Markdown")


def add_arguments(parser):
    from ._common import add_device_arguments

    parser.add_argument("results", metavar="RESULTS", help="DIR/results.jsonl of `hrinv batch` (or DIR)")
    parser.add_argument("--vgg", default=None, metavar="VGG_WEIGHTS",
                        help="VGG16 weights for the perceptual distance (omit to skip it)")
    parser.add_argument("--network", default=None,
                        help="face network for ID retrieval: dlib, arcface (the paper's), or a weights file "
                             "(omit to skip ID retrieval)")
    parser.add_argument("--weights-dir", action="append", default=None,
                        help="folder with named face-network weights (repeatable; see `hrinv id-retrieval`)")
    parser.add_argument("--preprocess", default=None, help="face-network preprocessing (see `hrinv id-retrieval`)")
    parser.add_argument("--threshold", type=float, default=None, help="ID-retrieval squared-distance threshold")
    parser.add_argument("--out", default=None, metavar="PREFIX",
                        help="write PREFIX.json and PREFIX.md (default: DIR/evaluation.json and DIR/evaluation.md)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_device_arguments(parser)


def run(args) -> int:
    from ._common import device_or_torchrun

    with device_or_torchrun(args) as (device, ctx):  # under torchrun: each rank its share of the faces, rank 0 writes
        return _run(args, device, ctx)


def _run(args, device, ctx) -> int:
    from ..batch import atomic_write
    from ..metrics.evaluate import evaluate_results, markdown_table

    vgg = emb = None
    if args.vgg:
        from ..losses import load_vgg16

        vgg = load_vgg16(args.vgg, device=device)
    if args.network:
        from ..faceid import load_face_embedder

        emb = load_face_embedder(args.network, device=device, preprocess=args.preprocess,
                                 search_dirs=args.weights_dir)
    bar = None
    if not args.quiet:
        from .batch import _StepBar

        bar = _StepBar("evaluate", False)

    report = evaluate_results(args.results, vgg=vgg, embedder=emb, device=device, threshold=args.threshold,
                              progress=bar, ctx=ctx)
    if report is None:  # a rank other than 0 under torchrun
        return 0
    root = Path(args.results)
    root = root if root.is_dir() else root.parent
    prefix = Path(args.out) if args.out else root / "evaluation"
    md = markdown_table(report)
    for suffix, text in ((".json", json.dumps(report, indent=2) + "\n"), (".md", md)):
        with atomic_write(prefix.with_name(prefix.name + suffix)) as tmp:
            tmp.write_text(text, encoding="utf-8")
    print(md)
    print(f"wrote {prefix}.json and {prefix}.md")
    return 0
