"""``hrinv demo [--out DIR]``: stylise a face on a fresh install, offline, with the models bundled in hrinv.

Uses the bundled demo photo (NASA's public-domain portrait of astronaut Eileen Collins), the bundled demo style and
its pre-made target generator, the bundled G_s (a 64 px StyleGAN2 distilled from a 64 px DCGAN) and the bundled
VGG16; ``--photo`` / ``--style`` take your own pictures (a style picture makes the demo fine-tune G_t first, a few
minutes more). Writes ``DIR/stylized.png`` (the whole photo, faces stylised and pasted back), ``DIR/comparison.png``
(input, reconstruction, plain lerp, lerp + LSO, style) and ``DIR/demo.json`` (settings, figures). The work is done
by :func:`hrinv.demo.run_demo`.
"""

import argparse
import sys
import time

from ..losses.perceptual import CALIBRATIONS

HELP = "stylise the bundled demo photo (or --photo) offline with the bundled models: DIR/stylized.png + comparison.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..demo import DemoConfig

    d = DemoConfig()
    parser.add_argument("--out", "-o", default="hrinv_demo", metavar="DIR", help="output folder (default hrinv_demo)")
    parser.add_argument("--photo", default=None, metavar="IMG", help="your photo (default: the bundled demo photo)")
    parser.add_argument("--style", default=None, metavar="IMG",
                        help="your style picture, a face (default: the bundled demo style with its pre-made G_t; "
                             "a picture of yours makes the demo fine-tune G_t from the bundled G_s first)")
    parser.add_argument("--steps", type=int, default=d.steps, help=f"inversion steps (default {d.steps})")
    parser.add_argument("--lso-steps", type=int, default=d.lso_steps, help=f"LSO steps (default {d.lso_steps}; 0 = off)")
    parser.add_argument("--finetune-steps", type=int, default=d.finetune_steps,
                        help=f"fine-tuning steps with --style (default {d.finetune_steps})")
    parser.add_argument("--lam", default=d.lam, help=f"λ per block, b4 first (weight of G_t; default {d.lam})")
    parser.add_argument("--face-size", type=int, default=d.face_size,
                        help=f"side of the rendered faces before pasting back (default {d.face_size})")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed (default 0)")
    parser.add_argument("--calibration", choices=CALIBRATIONS, default=d.calibration,
                        help=f"perceptual-loss calibration (default {d.calibration}: the loss the bundled generators "
                             f"were made with; auto = the library default, see docs/bundled.md)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu; auto, cuda, cuda:1, mps)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads (torch.set_num_threads; default: torch's choice). On a busy or shared CPU "
                             "--threads 1 can be several times faster")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


class _Bars:
    """tqdm bars (a plain printer when tqdm is absent): a new bar per stage, the stage label as its description."""

    def __init__(self, quiet):
        self.quiet, self.bar, self.label, self.fallback = quiet, None, "demo", None

    def on_stage(self, label, steps):
        self.label = label
        if self.bar is not None:
            self.bar.set_description(label)

    def __call__(self, step, total, preview=None):
        if self.quiet:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            from ._common import Progress

            if self.fallback is None or step == 1:
                self.fallback = Progress(self.label)
            self.fallback(step, total, preview)
            return
        if self.bar is None or self.bar.total != total or step < self.bar.n:
            if self.bar is not None:
                self.bar.close()
            self.bar = tqdm(total=total, desc=self.label, unit="step")
        self.bar.update(step - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def run(args) -> int:
    from ._common import torch_threads

    if args.threads is not None and args.threads < 1:
        print(f"hrinv demo: error: --threads must be 1 or more, got {args.threads}", file=sys.stderr)
        return 2
    with torch_threads(args.threads):
        return _run(args)


def _run(args) -> int:
    from ..demo import DemoConfig, run_demo
    from ..errors import HRInvError
    from ._common import require_files, resolve_device

    require_files([args.photo, args.style], "--photo or --style image")
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        print(f"hrinv demo: error: {e}", file=sys.stderr)
        return 2
    cfg = DemoConfig(steps=args.steps, lso_steps=args.lso_steps, finetune_steps=args.finetune_steps, lam=args.lam,
                     face_size=args.face_size, seed=args.seed, calibration=args.calibration)
    bars = _Bars(args.quiet)
    t0 = time.perf_counter()
    try:
        res = run_demo(args.out, photo=args.photo, style=args.style, config=cfg, device=device, callback=bars,
                       on_stage=bars.on_stage)
    except HRInvError as e:
        bars.close()
        print(f"hrinv demo: error: {e}", file=sys.stderr)
        return 1
    bars.close()
    if not args.quiet:
        m = res.metrics
        psnr = ", ".join(f"{v:.1f}" for v in m.get("content_psnr", []))
        print(f"wrote {res.stylized} and {res.comparison} ({m.get('faces')} face(s), reconstruction PSNR {psnr} dB, "
              f"{time.perf_counter() - t0:.0f} s)")
    return 0
