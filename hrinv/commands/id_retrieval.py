"""``hrinv id-retrieval``: ID-retrieval accuracy on the authors' layout (content/*, transfer/<content name>/*)."""

import json
import logging
import sys
import time
from pathlib import Path

HELP = ("ID-retrieval accuracy of stylised faces against their content faces (HRInversion Sec. III-D). "
        "Layout: ROOT/content/*.jpg|png and ROOT/transfer/<content name>/*.jpg|png; faces must be aligned "
        "FFHQ/CelebA-HQ style.")

log = logging.getLogger(__name__)


def add_arguments(parser):
    parser.add_argument("root", nargs="?", help="folder holding content/ and transfer/")
    parser.add_argument("--content", dest="content_dir", help="content folder (default ROOT/content)")
    parser.add_argument("--transfer", dest="transfer_dir", help="transfer folder (default ROOT/transfer)")
    parser.add_argument("--network", default="dlib",
                        help="'dlib' (default, dlib_face_recognition_resnet_model_v1.dat), 'arcface' (IR-SE50, "
                             "model_ir_se50.pth, the paper's network), or a path to either weights file")
    parser.add_argument("--weights-dir", action="append", default=None,
                        help="folder to look for named weights in (repeatable; default $HRINV_FACEID_DIR, "
                             "~/.cache/hrinv/faceid)")
    parser.add_argument("--preprocess", default=None,
                        help="arcface: paper (default, whole image -> 112) | psp (pSp crop); dlib: dlib (default, "
                             "chip box of an aligned face) | chip (inputs already dlib chips)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="squared-distance threshold of the thresholded score (default 1.5 arcface, 0.16 dlib)")
    parser.add_argument("--device", default="auto", help="auto (GPU when available) | cpu | cuda | cuda:N | mps")
    parser.add_argument("--batch-size", type=int, default=16, help="images read and embedded together")
    parser.add_argument("--out", default="id_retrieval.json", help="JSON report path ('-' for none)")
    parser.add_argument("--per-image", action="store_true", help="also print every stylised image's nearest match")


def _device(name):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    return torch.device(name)


def run(args):
    from ..errors import DatasetLayoutError
    from ..faceid import load_face_embedder
    from ..metrics.id_retrieval import id_retrieval_from_folders, scan_layout

    if args.root is None and (args.content_dir is None or args.transfer_dir is None):
        raise DatasetLayoutError("give ROOT (holding content/ and transfer/) or both --content and --transfer.")
    scan_layout(args.root, args.content_dir, args.transfer_dir)  # fail on layout problems before loading weights
    device = _device(args.device)
    t0 = time.perf_counter()
    emb = load_face_embedder(args.network, device=device, preprocess=args.preprocess, search_dirs=args.weights_dir)
    tty = sys.stderr.isatty()

    def progress(done, total):
        if tty:
            print(f"\rembedding {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    res = id_retrieval_from_folders(emb, args.root, content_dir=args.content_dir, transfer_dir=args.transfer_dir,
                                    threshold=args.threshold, batch_size=args.batch_size, progress=progress)
    elapsed = time.perf_counter() - t0
    print(res.table())
    if args.per_image:
        print()
        w = max(len(str(n)) for n in res.stylized_names)
        print(f"{'stylised':<{w}}  {'content':<10} {'nearest':<10} {'dist':>7} {'own':>7} rank hit")
        for r in res.to_dict()["per_image"]:
            print(f"{r['stylized']:<{w}}  {r['content']:<10} {r['nearest']:<10} {r['nearest_distance']:7.4f} "
                  f"{r['true_distance']:7.4f} {r['true_rank']:4d} {'yes' if r['hit'] else 'no'}")
    print(f"\n{res.num_content + res.num_stylized} images embedded on {device} in {elapsed:.1f} s")
    if args.out and args.out != "-":
        d = res.to_dict()
        d["root"] = str(Path(args.root).resolve()) if args.root else None
        d["device"] = str(device)
        Path(args.out).write_text(json.dumps(d, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0
