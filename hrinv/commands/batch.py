"""``hrinv batch {invert,stylize} --input DIR_OR_MANIFEST --out DIR [the single-run options]``: dataset-scale jobs.

Resumable (finished items are skipped), atomic outputs, bad items recorded in ``DIR/results.jsonl`` and skipped,
a progress bar with an ETA. The same command runs on several processes / GPUs / machines under
``torchrun --nproc-per-node N -m hrinv batch ...`` (items sharded over the ranks, rank 0 merges the table).
See docs/batch.md.
"""

import argparse
import logging
import sys

HELP = ("dataset-scale invert / stylize over a folder or a CSV/JSONL manifest: resumable, atomic outputs, one "
        "results table; runs under torchrun on several GPUs/machines (docs/batch.md)")

log = logging.getLogger(__name__)

# Options of the single-run commands that the batch replaces with its own.
_SKIP = {"images", "out", "batch_size", "content", "quiet", "device", "save_generator"}


def _inherit(parser, module_name):
    """Copy the single-run command's options (except the inputs / output folder) into ``parser``."""
    import importlib

    module = importlib.import_module(f"hrinv.commands.{module_name}")
    tmp = argparse.ArgumentParser(add_help=False)
    module.add_arguments(tmp)
    for action in tmp._actions:  # argparse has no public API to copy options between parsers
        if action.dest in _SKIP or isinstance(action, argparse._HelpAction):
            continue
        if any(s in parser._option_string_actions for s in action.option_strings):
            continue
        if action.dest == "seed":
            action.help = ("base seed (default 0): item NAME uses (seed + crc32(NAME)) mod 2**31, or its manifest "
                           "'seed'; the same on any number of processes")
        parser._add_action(action)
    return module


def _common(p):
    p.add_argument("--input", "-i", required=True, metavar="DIR_OR_MANIFEST",
                   help="a folder of images (sorted by name) or a manifest .csv/.jsonl with columns content "
                        "[,reference][,name][,seed][,per-row settings such as steps]")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="job folder: outputs, results.jsonl, state")
    p.add_argument("--device", default="auto",
                   help="auto (cuda:LOCAL_RANK under torchrun when CUDA exists, else cpu), cpu, cuda, cuda:N (one "
                        "process only), mps")
    p.add_argument("--overwrite", action="store_true",
                   help="redo every item (default: resume, skipping items whose outputs and done marker exist)")
    p.add_argument("--max-errors", type=int, default=None, metavar="N",
                   help="stop (each rank) after N bad items (default: record them all and go on)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads per process (torch.set_num_threads); torchrun defaults to 1 per process")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="job", metavar="JOB", required=True)
    p = sub.add_parser("invert", help="invert every image (the files of `hrinv invert`)",
                       description="invert every image of a folder/manifest; per item: NAME.png, "
                                   "NAME.latent.safetensors, NAME.json")
    _common(p)
    p.add_argument("--batch-size", type=int, default=1, metavar="N",
                   help="items each process inverts together in one optimisation (default 1); faster per item on a "
                        "GPU; each item keeps its own seed, results equal single runs to float rounding "
                        "(docs/batch.md)")
    _inherit(p, "invert")
    p = sub.add_parser("stylize", help="stylise every content (x every reference) (the files of `hrinv stylize`)",
                       description="stylise every content image with its reference (manifest column 'reference') or "
                                   "with every --reference image")
    _common(p)
    p.add_argument("--reference", "-r", nargs="+", default=None, metavar="IMG",
                   help="reference image(s) for a folder input (every content with every reference), or for "
                        "manifest rows without a 'reference' column")
    _inherit(p, "stylize")
    for action in p._actions:
        if action.dest == "target":  # not needed when G_t is fine-tuned by the job
            action.required = False
            action.help += " (or fine-tune one with --finetune-style)"
    p.add_argument("--finetune-style", nargs="+", default=None, metavar="IMG",
                   help="finetune-then-stylise: fine-tune G_t from G_s on these style images first (hrinv finetune, "
                        "once per job, rank 0; saved as DIR/generator_t.safetensors and reused when resuming)")
    p.add_argument("--finetune-steps", type=int, default=None, help="fine-tuning steps (default: hrinv finetune's)")
    p.add_argument("--finetune-invert-steps", type=int, default=None,
                   help="inversion steps of the style images into G_s before fine-tuning (default: hrinv finetune's)")


class _Bar:
    """tqdm progress of this rank's items (ETA from tqdm), on rank 0 only; other ranks log one line per item."""

    def __init__(self, total, rank, world, quiet):
        self.bar = None
        self.rank = rank
        self.errors = 0
        if quiet or rank != 0 or total == 0:
            return
        desc = "items" if world == 1 else f"rank 0/{world} items"
        self.bar = _tqdm(total, desc, "item")

    def __call__(self, done, total, row):
        if row["status"] == "error":
            msg = f"item {row['index']} {row['input']}: {row['error_type']}: {row['error']}"
            if self.bar is not None:
                self.bar.write("error: " + msg, file=sys.stderr)
                self.errors += 1
            else:
                log.warning("rank %d: %s", self.rank, msg)
        else:
            log.debug("rank %d: item %d done", self.rank, row["index"])
        if self.bar is not None:
            self.bar.update(1)
            if self.errors:
                self.bar.set_postfix(errors=self.errors)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _align_kwargs(args):
    from .align import parse_select

    if not getattr(args, "align", True):
        return None
    return {"select": parse_select(args.faces), "min_size": float(args.min_face), "padding": args.padding,
            "max_side": int(args.detect_max_side)}


class _Printer:
    """The few tqdm calls used here, printed by :class:`hrinv.commands._common.Progress` (tqdm is optional)."""

    def __init__(self, total, desc):
        from ._common import Progress

        self.n, self.total, self.progress = 0, total, Progress(desc)

    def update(self, k=1):
        self.n += k
        self.progress(self.n, self.total)

    def write(self, text, file=None):
        print(text, file=file or sys.stderr)

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def _tqdm(total, desc, unit):
    """A tqdm bar with an ETA on stderr, or a plain printer with ETA when tqdm is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _Printer(total, desc)
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)


class _StepBar:
    """``callback(step, total, preview)`` for a long single stage (the fine-tuning)."""

    def __init__(self, desc, quiet):
        self.desc, self.quiet, self.bar = desc, quiet, None

    def __call__(self, step, total, preview=None):
        if self.quiet:
            return
        if self.bar is None:
            self.bar = _tqdm(total, self.desc, "step")
        self.bar.update(step - self.bar.n)
        if step >= total:
            self.bar.close()


def _invert_job(args):
    from ..batch import InvertJob
    from ._common import resolve_dtype
    from .invert import _config

    return InvertJob(args.generator, args.vgg, _config(args), dtype=resolve_dtype(args.dtype),
                     keep_aspect=args.keep_aspect, save_target=args.save_target, align=_align_kwargs(args))


def _stylize_job(args):
    from ..batch import StylizeJob
    from ._common import resolve_dtype
    from .stylize import config_from_args

    config = config_from_args(args)
    if (args.target is None) == (not args.finetune_style):
        raise ValueError("give --target G_t, or --finetune-style IMG... to fine-tune G_t first (not both)")
    job = StylizeJob(args.source, args.target, args.vgg, config, dtype=resolve_dtype(args.dtype), align=args.align,
                     paste=args.paste)
    if args.finetune_style:
        from ..finetuning import FinetuneConfig

        over = {"seed": int(args.seed)}
        if args.finetune_steps is not None:
            over["steps"] = int(args.finetune_steps)
        if args.finetune_invert_steps is not None:
            over["invert_steps"] = int(args.finetune_invert_steps)
        job.finetune = (list(args.finetune_style), FinetuneConfig(**over))
    return job


def run(args) -> int:
    from ._common import torch_threads

    with torch_threads(args.threads):
        return _run_job(args)


def _run_job(args):
    if args.max_errors is not None and args.max_errors < 1:
        print("hrinv batch: error: --max-errors must be >= 1", file=sys.stderr)
        return 2
    if getattr(args, "batch_size", 1) < 1:
        print("hrinv batch: error: --batch-size must be >= 1", file=sys.stderr)
        return 2
    try:
        job = _invert_job(args) if args.job == "invert" else _stylize_job(args)
    except ValueError as e:
        print(f"hrinv batch {args.job}: error: {e}", file=sys.stderr)
        return 2
    # One INFO line per inverted image would drown the progress bar; --verbose (hrinv -v batch ...) keeps them.
    logger = logging.getLogger("hrinv")  # the parent of every module logger in the library
    level = logger.level
    if not getattr(args, "verbose", False):
        logger.setLevel(logging.WARNING)
    try:
        return _run(args, job)
    finally:
        logger.setLevel(level)


def _run(args, job):
    from ..batch import collect_items, run_batch
    from ..distributed import init_distributed

    items = collect_items(args.input, references=getattr(args, "reference", None), base_seed=int(args.seed),
                          allowed_settings=job.allowed_settings(), needs_reference=args.job == "stylize")
    ctx = init_distributed(args.device)
    try:
        if getattr(job, "finetune", None):
            from ..batch import finetune_target
            from ._common import resolve_dtype

            styles, ft_config = job.finetune
            job.target_src = finetune_target(job.source_src, styles, job.vgg_src, ft_config, args.out, ctx=ctx,
                                             dtype=resolve_dtype(args.dtype), refit=args.overwrite,
                                             calibration=getattr(job.config, "calibration", "auto"),
                                             callback=_StepBar("finetune G_t", args.quiet or not ctx.is_main))
        if ctx.is_main and not args.quiet:
            print(f"hrinv batch {args.job}: {len(items)} item(s) from {args.input} -> {args.out}; "
                  f"{ctx.world_size} process(es), device {ctx.device}" + (f" (rank 0 of {ctx.world_size})"
                                                                         if ctx.world_size > 1 else ""),
                  file=sys.stderr, flush=True)
        bar = None

        def progress(done, total, row):
            nonlocal bar
            if row is None:  # start of this rank's share
                bar = _Bar(total, ctx.rank, ctx.world_size, args.quiet)
            else:
                bar(done, total, row)

        summary = run_batch(job, items, args.out, ctx=ctx, callback=progress, overwrite=args.overwrite,
                            max_errors=args.max_errors, batch_size=getattr(args, "batch_size", 1))
        if bar is not None:
            bar.close()
        if ctx.is_main:
            if not args.quiet:
                print(f"{summary.ok} ok, {summary.errors} error(s) of {summary.total} item(s) "
                      f"({summary.already_done} already done before this run); {summary.seconds:.1f}s; table "
                      f"{summary.results}", file=sys.stderr, flush=True)
        return 0
    finally:
        ctx.close()
