"""Face-embedding throughput: our dlib port and IR-SE50 (embeddings per second), side by side with dlib's C++.

Usage:
    python benchmarks/bench_faceid.py [--dat PATH] [--irse50 PATH] [--device cpu] [--threads N] [--repeats 3]

- dlib port: network only on 150x150 chips, and end to end from 1024x1024 aligned images (crop + resize + network).
- dlib C++ (``import dlib``, e.g. the ``dlib-bin`` wheel), when importable: ``compute_face_descriptor`` on the same
  chips, one at a time and as a batch; the ratio ours/dlib is printed.
- IR-SE50: from ``--irse50`` if given, else randomly initialised (same cost), from 1024x1024 images ("paper"
  preprocessing).
Figures: embeddings/s (best of ``--repeats``), peak RSS growth (CPU) or peak CUDA memory.
"""

import argparse
import os
import resource
import time
from pathlib import Path

import torch

from hrinv.faceid.embedder import FaceEmbedder, load_face_embedder

DEFAULT_DAT = Path(__file__).resolve().parents[2] / "shared" / "weights" / "dlib_face_recognition_resnet_model_v1.dat"


def _best(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _mem_note(device):
    if device.type == "cuda":
        return f"peak CUDA {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    return f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"


def bench_embedder(label, emb, images, batch, repeats, device):
    def run():
        emb.embed(images, batch_size=batch)
        _sync(device)

    t = _best(run, repeats)
    n = images.shape[0]
    print(f"{label:<48} batch {batch:3d}: {n / t:8.1f} emb/s  ({1000 * t / n:7.2f} ms/emb, {_mem_note(device)})")
    return n / t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dat", default=os.environ.get("HRINV_DLIB_DAT", str(DEFAULT_DAT)))
    ap.add_argument("--irse50", default=None, help="model_ir_se50.pth (default: random weights, same cost)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=16, help="images per measurement")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, {args.n} images")
    g = torch.Generator().manual_seed(0)
    chips = (torch.rand(args.n, 3, 150, 150, generator=g) * 255).round() / 255  # exact uint8 values, as dlib sees
    big = torch.rand(args.n, 3, 1024, 1024, generator=g)

    t = time.perf_counter()
    dlib_emb = load_face_embedder(args.dat, device=device)
    print(f"dlib .dat parse + build: {time.perf_counter() - t:.2f} s")
    chip_emb = load_face_embedder(args.dat, device=device, preprocess="chip")
    ours = {}
    for b in sorted({1, 8, args.n}):
        ours[b] = bench_embedder("ours dlib ResNet, 150x150 chips (network only)", chip_emb, chips, b, args.repeats,
                                 device)
    bench_embedder("ours dlib ResNet, 1024x1024 aligned (crop+resize)", dlib_emb, big, 8, args.repeats, device)

    try:
        import dlib
        import numpy as np
    except ImportError:
        print("dlib C++ not importable (pip install dlib-bin to compare); skipped")
    else:
        rec = dlib.face_recognition_model_v1(args.dat)
        arrs = [np.ascontiguousarray((c.permute(1, 2, 0) * 255).round().byte().numpy()) for c in chips]
        t1 = _best(lambda: [rec.compute_face_descriptor(a) for a in arrs], args.repeats)
        tb = _best(lambda: rec.compute_face_descriptor(arrs), args.repeats)
        d1, db = args.n / t1, args.n / tb
        print(f"{'dlib C++ compute_face_descriptor (one at a time)':<48} batch   1: {d1:8.1f} emb/s  -> ours/dlib "
              f"{ours[1] / d1:.2f}x")
        print(f"{'dlib C++ compute_face_descriptor (list)':<48} batch {args.n:3d}: {db:8.1f} emb/s  -> ours/dlib "
              f"{ours[args.n] / db:.2f}x")
        ref = torch.tensor(np.array(rec.compute_face_descriptor(arrs[:4])), dtype=torch.float32)
        mine = chip_emb.embed(chips[:4], normalize=False).cpu()
        print(f"max |ours - dlib| on random chips: {(mine - ref).abs().max():.2e}")

    if args.irse50:
        arc = load_face_embedder(args.irse50, device=device)
    else:
        from hrinv.faceid.irse50 import IRSE50
        arc = FaceEmbedder(IRSE50(device=device).eval().requires_grad_(False), "irse50")
    for b in (1, 8):
        bench_embedder("IR-SE50, 1024x1024 aligned ('paper' 112)", arc, big[:8], b, args.repeats, device)


if __name__ == "__main__":
    main()
