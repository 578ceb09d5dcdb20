"""Face detection + FFHQ alignment and paste-back time per photo, side by side with dlib's HOG detector.

Usage:
    python benchmarks/bench_face.py [--photo PATH] [--device cpu] [--threads N] [--repeats 3] [--size 1024]
        [--megapixels 1,12]

For a 1 MP and a 12 MP version of the photo (default ../shared/data/faces/id-photos/couple.jpg, two faces):

- ours: ``hrinv.detect_faces`` (MTCNN on a <= 1280 px copy + landmark refinement) and ``hrinv.align_faces`` (the
  same + one warp per face at ``--size``), then ``hrinv.paste_back`` of the crops into the full photo;
- dlib (``import dlib``, e.g. the ``dlib-bin`` wheel, a dev-only install) when importable: the HOG frontal-face
  detector (boxes only, no landmarks) on the full photo and on the same <= 1280 px copy ours uses; the ratio
  ours / dlib is printed (below 1 = we are faster).

Figures: best-of-``--repeats`` seconds, faces found, peak RSS growth.

Then the non-maximum suppression of the MTCNN cascade, old vs new, per photo size: every NMS call of one
``detect_faces`` run is recorded and replayed through the old Python loop (kept as the tests' reference,
``tests/nms_reference.py``) and through ``hrinv.face.mtcnn.nms`` (vectorised), then ``detect_faces`` is timed
whole with each (runs interleaved, best of ``--repeats``); ratio = old / new (above 1 = the new one is faster). ``--only-nms`` prints only that table.
"""

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import hrinv
from hrinv.face import mtcnn
from hrinv.imageio import read_image

DEFAULT_PHOTO = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "id-photos" / "couple.jpg"


def _best(fn, repeats):
    out = fn()  # warm-up (loads the weights once)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def _resize(photo, megapixels):
    h, w = photo.shape[-2:]
    s = (megapixels * 1e6 / (h * w)) ** 0.5
    size = (round(h * s), round(w * s))
    mode = "area" if s < 1 else "bicubic"
    kw = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(photo[None], size=size, mode=mode, **kw)[0].clamp(0, 1)


def _nms_rows(photo, repeats):
    """(cells of the NMS table) for one photo: recorded calls replayed through both, and detect_faces with each."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the old loop: the tests' reference
    from nms_reference import nms_loop

    new, calls = mtcnn.nms, []

    def record(boxes, scores, threshold, mode="union"):
        calls.append((boxes, scores, threshold, mode))
        return new(boxes, scores, threshold, mode)

    mtcnn.nms = record
    try:
        hrinv.detect_faces(photo)
    finally:
        mtcnn.nms = new
    same = all(nms_loop(*c).tolist() == new(*c).tolist() for c in calls)
    t_old, _ = _best(lambda: [nms_loop(*c) for c in calls], repeats)
    t_new, _ = _best(lambda: [new(*c) for c in calls], repeats)
    d_old, d_new = [], []
    try:
        for _ in range(repeats):                    # interleaved, so that a change of load hits both alike
            for fn, times in ((nms_loop, d_old), (new, d_new)):
                mtcnn.nms = fn
                t = time.perf_counter()
                hrinv.detect_faces(photo)
                times.append(time.perf_counter() - t)
    finally:
        mtcnn.nms = new
    d_old, d_new = min(d_old), min(d_new)
    return [str(len(calls)), str(max((c[0].shape[0] for c in calls), default=0)), f"{t_old:.3f}", f"{t_new:.3f}",
            f"{t_old / t_new:.1f}", "yes" if same else "NO", f"{d_old:.2f}", f"{d_new:.2f}", f"{d_old / d_new:.2f}"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=1024, help="aligned crop size (default 1024)")
    ap.add_argument("--megapixels", default="1,12", help="photo sizes to measure, comma-separated (default 1,12)")
    ap.add_argument("--only-nms", action="store_true", help="only the NMS table (old loop vs vectorised)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.photo.is_file():
        print(f"needs a photo with faces: {args.photo} is missing (pass --photo)")
        return 2
    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    try:
        import dlib

        hog = dlib.get_frontal_face_detector()
    except ImportError:
        hog = None
    base = read_image(args.photo)
    print(f"photo {args.photo.name} {base.shape[2]}x{base.shape[1]}, device {device}, torch threads "
          f"{torch.get_num_threads()}, best of {args.repeats}; dlib HOG: {'yes' if hog else 'not installed'}\n")
    sizes = [float(v) for v in args.megapixels.split(",")]
    if not args.only_nms:
        _main_table(base, sizes, device, hog, args)
    print("\n| photo | NMS calls | largest call (boxes) | old loop (s) | vectorised (s) | old/new | same boxes | "
          "detect_faces, old (s) | detect_faces, new (s) | old/new |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mp in sizes:
        photo = _resize(base, mp).to(device)
        h, w = photo.shape[-2:]
        print("| " + " | ".join([f"{w}x{h} ({h * w / 1e6:.1f} MP)"] + _nms_rows(photo, args.repeats)) + " |",
              flush=True)
    return 0


def _main_table(base, sizes, device, hog, args):
    print("| photo | ours detect (s) | ours detect+align (s) | faces | paste-back (s) | dlib HOG full (s) | faces | "
          "ours/HOG | dlib HOG on our 1280 copy (s) | ours/HOG |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mp in sizes:
        photo = _resize(base, mp).to(device)
        h, w = photo.shape[-2:]
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t_det, dets = _best(lambda: hrinv.detect_faces(photo), args.repeats)
        t_al, al = _best(lambda: hrinv.align_faces(photo, size=args.size), args.repeats)
        t_paste, _ = _best(lambda: hrinv.paste_back(photo, al.crops, al), args.repeats)
        rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
        cells = [f"{w}x{h} ({h * w / 1e6:.1f} MP)", f"{t_det:.2f}", f"{t_al:.2f}", str(len(dets)), f"{t_paste:.2f}"]
        if hog is not None:
            arr = (photo.permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
            t_hog, boxes = _best(lambda: hog(arr, 0), args.repeats)
            s = min(1.0, 1280 / max(h, w))
            small = arr if s == 1.0 else (F.interpolate(photo[None].cpu(), scale_factor=s, mode="area")[0]
                                          .permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
            t_hog_s, _ = _best(lambda: hog(small, 0), args.repeats)
            cells += [f"{t_hog:.2f}", str(len(boxes)), f"{t_det / t_hog:.2f}", f"{t_hog_s:.2f}",
                      f"{t_det / t_hog_s:.2f}"]
        else:
            cells += ["-"] * 5
        print("| " + " | ".join(cells) + " |", flush=True)
        print(f"<!-- peak RSS growth during the {mp:g} MP rows: {rss:.0f} MB -->")


if __name__ == "__main__":
    raise SystemExit(main())
