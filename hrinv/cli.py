"""The ``hrinv`` command line: headless and batch use of the library.

Each sub-command lives in its own module under :mod:`hrinv.commands` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their command runs, so
``hrinv --help`` is instant and a broken optional part only breaks its own command.
"""

import argparse
import importlib
import logging
import sys

from . import __version__
from .errors import HRInvError

# command name -> module under hrinv.commands
COMMANDS = {
    "convert": "convert",
    "fit-inr": "fit_inr",
    "invert": "invert",
    "stylize": "stylize",
    "render": "render",
    "id-retrieval": "id_retrieval",
    "batch": "batch",
    "evaluate": "evaluate",
    "align": "align",
    "finetune": "finetune",
    "demo": "demo",
    "download": "download",
}

# One-line help shown by `hrinv --help` without importing the modules.
_SUMMARY = {
    "convert": "convert a StyleGAN2 checkpoint (.pkl, .pt, .safetensors) into our .safetensors format",
    "fit-inr": "give a StyleGAN2 checkpoint an INR head (distilled from its own output) for any-resolution rendering",
    "invert": "invert images into a generator's W+ (+noise) space with the HRInversion loss",
    "stylize": "content + reference + source/target generators -> invert, lerp, LSO, render",
    "render": "render a saved latent at any width x height",
    "id-retrieval": "ID-retrieval accuracy of stylised faces against their content faces",
    "batch": "dataset-scale invert/stylize over a folder or manifest: resumable, one results table, torchrun-ready",
    "evaluate": "PSNR, perceptual distance and ID retrieval over a batch results table -> JSON + Markdown",
    "align": "detect faces in photos and align them like FFHQ (DIR/<stem>_<k>.png + DIR/<stem>.json transforms)",
    "finetune": "fine-tune a target generator G_t from 1-10 style images (JoJoGAN recipe, HRInversion loss)",
    "demo": "stylise a face offline with the bundled models: DIR/stylized.png + DIR/comparison.png",
    "download": "fetch real model weights on request (--list): progress, sha256 check, resume, ComfyUI models folder",
}


def build_parser():
    parser = argparse.ArgumentParser(prog="hrinv", description="HRInversion: high-resolution GAN inversion and "
                                     "cross-domain face stylisation.")
    parser.add_argument("--version", action="version", version=f"hrinv {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        sub.add_parser(name, help=_SUMMARY[name], add_help=False)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse only the global options and the command name first; the command module adds its own arguments.
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if args.command is None:
        parser.print_help(sys.stderr)  # a usage error: stderr, exit 2 (as argparse does)
        return 2
    try:
        module = importlib.import_module(f"hrinv.commands.{COMMANDS[args.command]}")
    except ImportError as e:
        print(f"hrinv {args.command}: this command is not available ({e}).", file=sys.stderr)
        return 2
    sub = argparse.ArgumentParser(prog=f"hrinv {args.command}", description=getattr(module, "HELP", None))
    module.add_arguments(sub)
    sub_args = sub.parse_args(rest)
    sub_args.verbose = args.verbose
    try:
        return int(module.run(sub_args) or 0)
    except HRInvError as e:
        print(f"hrinv {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hrinv {args.command}: interrupted", file=sys.stderr)
        return 130
    except (OSError, MemoryError) as e:  # disk full, permissions, out of memory: the message is the useful part
        print(f"hrinv {args.command}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - no input may end in a bare traceback; -v shows it for a bug report
        if args.verbose:
            raise
        print(f"hrinv {args.command}: error: unexpected {type(e).__name__}: {str(e)[:300]} (this is a bug or an "
              f"input no check anticipated; run with -v for the traceback and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
