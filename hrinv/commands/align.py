"""``hrinv align PHOTO [PHOTO ...] --out DIR [--size N]``: detect every face and align it the FFHQ way.

For a photo ``<stem>.<ext>`` it writes ``DIR/<stem>_<k>.png`` for face k (0 = the first face found, largest first)
and ``DIR/<stem>.json`` with the transforms (``FaceAlignment.to_json``: quad, crop<->photo matrices, landmarks), which
``hrinv stylize``/``hrinv.paste_back`` use to put faces back. A photo without a face gets a clear message (and no
files); the exit code is 1 when any photo had no face, 0 otherwise.
"""

import argparse
import logging
import sys
from pathlib import Path

HELP = "detect faces in photos and align each one like FFHQ (DIR/<stem>_<k>.png + DIR/<stem>.json with the transforms)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._common import add_device_arguments

    parser.add_argument("photos", nargs="+", metavar="PHOTO", help="photo files (any size, any number of faces)")
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--size", type=int, default=1024, help="side of the aligned crops (default 1024)")
    add_alignment_arguments(parser)
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    add_device_arguments(parser)


def add_alignment_arguments(parser) -> None:
    """Face-choice options shared by align / invert / stylize."""
    parser.add_argument("--faces", default="all",
                        help="which faces: all (default, largest first), largest, or an index (0 = largest)")
    parser.add_argument("--min-face", type=float, default=32, metavar="PX",
                        help="ignore faces smaller than this many pixels (box side, default 32)")
    parser.add_argument("--padding", default="reflect", choices=["reflect", "edge", "zeros"],
                        help="how the photo is extended where a crop leaves it (default reflect, like FFHQ)")
    parser.add_argument("--detect-max-side", type=int, default=1280, metavar="PX",
                        help="detection runs on a copy of the photo at most this big (default 1280)")


def parse_select(text):
    s = str(text).strip().lower()
    if s in ("all", "largest"):
        return s
    try:
        return int(s)
    except ValueError:
        raise ValueError(f"--faces must be all, largest or a face index, got {text!r}") from None


def align_photo(path, size, args, device):
    """``(photo [3, H, W] in [0, 1], FaceAlignment)`` for one photo file (raises NoFaceFoundError)."""
    from ..face import align_faces
    from ..imageio import read_image

    photo = read_image(path)
    al = align_faces(photo, size=size, select=parse_select(args.faces), min_size=args.min_face, device=device,
                     padding=args.padding, max_side=args.detect_max_side)
    return photo, al


def run(args) -> int:
    from ..errors import NoFaceFoundError
    from ._common import require_files, resolve_device, save_image

    try:
        parse_select(args.faces)
    except ValueError as e:
        print(f"hrinv align: error: {e}", file=sys.stderr)
        return 2
    if args.size < 8:
        print(f"hrinv align: error: --size must be at least 8, got {args.size}", file=sys.stderr)
        return 2
    require_files(args.photos, "photo")
    device = resolve_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        def tqdm(x, **_):
            return x
    for p in tqdm(args.photos, desc="align", unit="photo", disable=args.quiet or len(args.photos) < 2):
        p = Path(p)
        try:
            photo, al = align_photo(p, args.size, args, device)
        except NoFaceFoundError as e:
            failed += 1
            print(f"{p}: no face: {e}", file=sys.stderr)
            continue
        for k, crop in enumerate(al.crops):
            save_image(crop, out / f"{p.stem}_{k}.png")
        doc = al.to_dict()
        doc["photo"] = str(p)
        doc["files"] = [f"{p.stem}_{k}.png" for k in range(len(al))]
        (out / f"{p.stem}.json").write_text(__import__("json").dumps(doc, indent=2) + "\n")
        if not args.quiet:
            sizes = ", ".join(f"{f.size:.0f}px {f.angle:+.0f}°" for f in al.faces)
            print(f"{p.name}: {len(al)} face(s) of {al.settings['faces_found']} found ({sizes}) -> "
                  f"{out / (p.stem + '_0.png')}{' ...' if len(al) > 1 else ''}")
    return 1 if failed else 0
