"""How well do real aligned faces invert into the bundled G_s? PSNR of the reconstructions and dlib ID retrieval of
the reconstructions against the originals (docs/id-retrieval.md), side by side with a randomly initialised generator
of the same architecture (what the distillation bought) and with the chance level.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bundled_gs_inversion.py --faces 12 --steps 150

Needs ../shared (CelebA-HQ test faces, the dlib weights). The faces are FFHQ-aligned with hrinv.align_faces at 64 px.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HRINV_SHARED", REPO.parent / "shared"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", type=int, default=12)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from hrinv import bundled
    from hrinv.errors import NoFaceFoundError
    from hrinv.face import align_faces
    from hrinv.faceid import load_face_embedder
    from hrinv.generator.stylegan2 import Generator
    from hrinv.imageio import read_image
    from hrinv.inversion import InversionConfig, invert
    from hrinv.io.checkpoints import load_generator
    from hrinv.losses import PerceptualLoss, load_vgg16
    from hrinv.metrics.id_retrieval import id_retrieval

    G_s = load_generator(bundled.path("stylegan2_face64.safetensors"))
    torch.manual_seed(0)
    G_rand = Generator(**G_s.init_kwargs).eval().requires_grad_(False)
    with torch.no_grad():
        from hrinv.inversion import compute_w_stats

        G_rand.mapping.w_avg.copy_(compute_w_stats(G_rand)[0])
    loss = PerceptualLoss(load_vgg16(bundled.path("vgg16_caffe_conv_fp16.safetensors")), "conv")
    crops = []
    for f in sorted((SHARED / "data" / "faces" / "celebahq").glob("*.jpg")):
        try:
            crops.append(align_faces(read_image(f), size=64, select="largest").crops[:1])
        except NoFaceFoundError:
            continue
        if len(crops) == args.faces:
            break
    x = torch.cat(crops)  # [N, 3, 64, 64] in [-1, 1]
    emb = load_face_embedder(str(SHARED / "weights" / "dlib_face_recognition_resnet_model_v1.dat"))
    up = lambda t: torch.nn.functional.interpolate((t.clamp(-1, 1) + 1) / 2, size=150, mode="bicubic",  # noqa: E731
                                                   align_corners=False).clamp(0, 1)
    content = emb.embed(up(x))
    rows = {}
    for name, G in (("bundled G_s", G_s), ("random init, same architecture", G_rand)):
        t0 = time.time()
        r = invert(G, x, loss, InversionConfig(steps=args.steps, optimize_noise=False))
        psnr = [float(v) for v in r.latent.metrics["psnr"]]
        ids = id_retrieval(content, emb.embed(up(r.image)), list(range(len(x))), embedder=emb)
        rows[name] = {"psnr_mean": sum(psnr) / len(psnr), "psnr": psnr, "id_top1": ids.top1,
                      "seconds": round(time.time() - t0, 1)}
    rows["chance"] = {"id_top1": 1 / len(x)}
    print(f"{len(x)} CelebA-HQ faces aligned at 64 px, W+ inversion (Eq. 5), {args.steps} steps, caffe VGG d_conv")
    print(f"{'generator':34s} {'PSNR dB':>8s} {'ID top-1 (dlib)':>16s} {'s':>6s}")
    for name, r in rows.items():
        print(f"{name:34s} {r.get('psnr_mean', float('nan')):8.2f} {r['id_top1']:16.3f} {r.get('seconds', 0):6.0f}")
    a, b = rows["bundled G_s"], rows["random init, same architecture"]
    print(f"ratio G_s / random: PSNR {a['psnr_mean'] - b['psnr_mean']:+.2f} dB, ID top-1 x{a['id_top1'] / max(b['id_top1'], 1e-9):.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
