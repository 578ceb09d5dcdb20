"""Does bf16 keep the quality of a full inversion? fp32 vs bf16 (and optionally fp16) on real faces, same seeds.

Real CelebA-HQ faces from ../shared, FFHQ-aligned at 64 px, inverted into the bundled 64^2 StyleGAN2 face generator
(``stylegan2_face64``) with the reconstruction setting (W+ and noise maps, paper Eq. 1) and the bundled caffe VGG16
d_conv loss, for ``--steps`` steps in each precision. Printed per face: PSNR of each reconstruction against the
target, the PSNR difference bf16 - fp32 (criterion: |diff| <= 0.3 dB), and identity with dlib (criterion: each
reconstruction retrieves its own face among the targets, and the bf16 and fp32 reconstructions are the same person
by dlib's 0.6 distance threshold), plus the wall time of each run and the load average.

``--control-seeds 1 2`` adds fp32 runs that differ from the first only by the seed of the noise-map init (an equally
valid run of the same method): their PSNR differences from the seed-0 fp32 run show how far two exact runs drift
apart per face, the yardstick for the bf16 - fp32 differences.

    PYTHONPATH=. python benchmarks/bf16_quality.py --faces 4 --steps 1000
    PYTHONPATH=. python benchmarks/bf16_quality.py --faces 4 --steps 1000 --control-seeds 1
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HRINV_SHARED", REPO.parent / "shared"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", type=int, default=4)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--control-seeds", type=int, nargs="*", default=[],
                    help="extra fp32 runs with these noise-init seeds (the seed-to-seed spread of exact runs)")
    args = ap.parse_args(argv)
    if not (SHARED / "data" / "faces" / "celebahq").is_dir():
        print(f"SKIPPED: no ../shared faces at {SHARED} (set HRINV_SHARED)")
        return 0
    torch.set_num_threads(args.threads)
    from hrinv import bundled, perf
    from hrinv.errors import NoFaceFoundError
    from hrinv.face import align_faces
    from hrinv.faceid import load_face_embedder
    from hrinv.imageio import read_image
    from hrinv.inversion import InversionConfig, invert, psnr
    from hrinv.io.checkpoints import load_generator
    from hrinv.losses import PerceptualLoss, load_vgg16

    G = load_generator(bundled.path("stylegan2_face64.safetensors"))
    loss = PerceptualLoss(load_vgg16(bundled.path("vgg16_caffe_conv_fp16.safetensors")), "conv")
    crops, names = [], []
    for f in sorted((SHARED / "data" / "faces" / "celebahq").glob("*.jpg")):
        try:
            crops.append(align_faces(read_image(f), size=64, select="largest").crops[:1])
            names.append(f.stem)
        except NoFaceFoundError:
            continue
        if len(crops) == args.faces:
            break
    x = torch.cat(crops)  # [N, 3, 64, 64] in [-1, 1]
    emb = load_face_embedder(str(SHARED / "weights" / "dlib_face_recognition_resnet_model_v1.dat"))
    up = lambda t: torch.nn.functional.interpolate((t.clamp(-1, 1) + 1) / 2, size=150, mode="bicubic",  # noqa: E731
                                                   align_corners=False).clamp(0, 1)
    e_target = emb.embed(up(x), normalize=False)  # raw dlib descriptors: its 0.6 threshold applies
    load0 = os.getloadavg()
    res = {}
    runs = [(p, p, 0) for p in args.precisions] + [(f"fp32 seed {s}", "fp32", s) for s in args.control_seeds]
    for key, p, seed in runs:
        t0 = time.perf_counter()
        r = invert(G, x, loss, InversionConfig(steps=args.steps, precision=p, seed=seed))
        img = r.image.clamp(-1, 1)
        e = emb.embed(up(img), normalize=False)
        d = torch.cdist(e, e_target)  # [N recon, N targets]
        res[key] = {"img": img, "emb": e, "psnr": [float(v) for v in psnr(img, x)], "own": d.argmin(1).tolist(),
                  "s": time.perf_counter() - t0}
    print(f"# {len(x)} CelebA-HQ faces at 64 px, bundled stylegan2_face64, W+ and noise (Eq. 1), {args.steps} steps, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, CPU native bf16: {perf.cpu_supports_bf16()}; "
          f"load before {tuple(round(v, 2) for v in load0)}, after {tuple(round(v, 2) for v in os.getloadavg())}")
    ref = res["fp32"]
    others = [k for k, _, _ in runs if k != "fp32"]
    head = "| face | fp32 PSNR dB | " + " | ".join(f"{k} PSNR dB | {k} - fp32 dB | dlib dist to fp32 recon"
                                                      for k in others)
    print(head + " | own identity retrieved (fp32 / others) |")
    print("|---" * (head.count("|")) + "|---|")
    ok = True
    for i, name in enumerate(names):
        cells = [name, f"{ref['psnr'][i]:.2f}"]
        own = [ref["own"][i] == i]
        for k in others:
            diff = res[k]["psnr"][i] - ref["psnr"][i]
            dist = float((res[k]["emb"][i] - ref["emb"][i]).norm())
            if not k.startswith("fp32 seed"):  # the control runs are the yardstick, not under test
                ok &= abs(diff) <= 0.3 and dist < 0.6 and res[k]["own"][i] == ref["own"][i]
            cells += [f"{res[k]['psnr'][i]:.2f}", f"{diff:+.2f}", f"{dist:.3f}"]
            own.append(res[k]["own"][i] == i)
        print("| " + " | ".join(cells) + " | " + " / ".join("yes" if o else "no" for o in own) + " |")
    for k, _, _ in runs:
        m = sum(res[k]["psnr"]) / len(names)
        spread = max(abs(a - b) for a, b in zip(res[k]["psnr"], ref["psnr"]))
        print(f"{k}: mean PSNR {m:.2f} dB (mean - fp32 {m - sum(ref['psnr']) / len(names):+.2f} dB, largest per-face "
              f"|diff| {spread:.2f} dB), wall {res[k]['s']:.0f} s")
    print("criterion (per face: |PSNR diff| <= 0.3 dB, dlib distance < 0.6, same retrieved identity):",
          "MET" if ok else "NOT MET")
    return 0


if __name__ == "__main__":
    sys.exit(main())
