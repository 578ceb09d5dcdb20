"""``hrinv download NAME [...]``: fetch real model weights on request into the right models folder.

``--list`` prints the table of known files (folder, size, sha256 or "not published", licence, source). A file
goes to ``--dir DIR``, or ``--comfyui ROOT`` -> ``ROOT/models/<folder>`` (``stylegan2``, ``vgg``, ``facerecog``:
where the pack's loader nodes look), or, when the pack is cloned into ``ComfyUI/custom_nodes``, that ComfyUI's
``models/<folder>``. The work is :func:`hrinv.download.download`: tqdm progress, resume with HTTP Range, sha256
check (a mismatch deletes the file, exit 1), atomic rename. Nothing else in hrinv ever downloads.
"""

import argparse
import sys

HELP = ("fetch real model weights (ffhq.pkl, metfaces.pkl, vgg16, dlib) into ComfyUI/models/<folder> or --dir: "
        "progress, sha256 check, resume")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="file name(s) from --list, e.g. ffhq.pkl")
    parser.add_argument("--list", action="store_true", help="list the known files and exit")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--dir", default=None, metavar="DIR", help="put the file(s) in DIR")
    where.add_argument("--comfyui", default=None, metavar="ROOT",
                       help="ComfyUI root: files go to ROOT/models/<folder> (stylegan2, vgg, facerecog)")
    parser.add_argument("--url", default=None, help="download from this URL instead (a mirror; one NAME only)")
    parser.add_argument("--sha256", default=None, help="expected sha256 (for a file without a published one, or "
                                                       "with --url)")
    parser.add_argument("--force", action="store_true", help="replace an existing file whose sha256 differs")
    parser.add_argument("--retries", type=int, default=3, help="retries after a dropped connection (default 3)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds without data before a retry (default 30)")
    parser.add_argument("--no-resume", action="store_true",
                        help="delete the partial file when the download fails (default: keep it and resume next time)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def _size(n):
    return "?" if n is None else f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n} B"


def print_list(out=None):
    from ..download import MODELS, comfyui_models_dir

    out = out or sys.stdout
    found = comfyui_models_dir()
    print(f"{'file':<44} {'folder':<10} {'size':>7}  sha256 / source", file=out)
    for m in MODELS.values():
        sha = m.sha256 or ("not published" + (" (computed and printed after the download)" if m.url else ""))
        print(f"{m.name:<44} {m.folder:<10} {_size(m.bytes):>7}  {sha}", file=out)
        print(f"{'':<44} {'':<10} {'':>7}  {m.what}; {m.licence}", file=out)
        print(f"{'':<44} {'':<10} {'':>7}  {m.url or 'no direct link: ' + m.page}", file=out)
    print(f"\nDefault destination: {found / '<folder>' if found else 'none (give --dir or --comfyui)'}", file=out)


def run(args) -> int:
    from ..download import MODELS, DownloadError, destination, download

    if args.list:
        print_list()
        return 0
    if not args.names:
        print("hrinv download: error: name a file (see `hrinv download --list`), e.g. `hrinv download ffhq.pkl "
              "--comfyui /path/to/ComfyUI`", file=sys.stderr)
        return 2
    unknown = [n for n in args.names if n not in MODELS]
    if unknown:
        print(f"hrinv download: error: unknown file(s) {', '.join(unknown)}. Known: {', '.join(MODELS)}.",
              file=sys.stderr)
        return 2
    if args.url and len(args.names) != 1:
        print("hrinv download: error: --url works with one NAME only", file=sys.stderr)
        return 2
    if args.retries < 0:
        print("hrinv download: error: --retries must be 0 or more", file=sys.stderr)
        return 2
    rc = 0
    for name in args.names:
        model = MODELS[name]
        try:
            dest = destination(model, dir=args.dir, comfyui=args.comfyui)
            if not args.quiet:
                print(f"{name} -> {dest}", file=sys.stderr)
            path = download(model, dest, url=args.url, sha256=args.sha256, force=args.force, retries=args.retries,
                            timeout=args.timeout, keep_partial=not args.no_resume, quiet=args.quiet)
            print(path)
        except DownloadError as e:
            print(f"hrinv download: error: {e}", file=sys.stderr)
            rc = 1
        except KeyboardInterrupt:
            what = "the partial file was deleted" if args.no_resume else \
                "the partial file is kept; run the same command again to resume"
            print(f"\nhrinv download: interrupted ({what}).", file=sys.stderr)
            return 130
    return rc
