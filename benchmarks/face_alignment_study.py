"""Proof of detection + FFHQ alignment + paste-back on data we can check (needs ../shared).

    PYTHONPATH=. python benchmarks/face_alignment_study.py [--out DIR] [--size 512] [--limit N] [--only synth,real,bad]

1. synth: every aligned CelebA-HQ face of ../shared/data/faces/celebahq is put into a 1280x960 canvas with a known
   random rotation (±40°), scale (crop side 300-700 px) and translation over a blurred background. Detection +
   alignment must give back the crop: PSNR against the original crop ("absolute": includes the difference between
   CelebA-HQ's landmarks and MTCNN's) and against our own alignment of the unmoved crop ("equivariance": how much
   the placement changes our result), landmark error (NME: mean landmark distance / inter-ocular distance, the
   canvas detections mapped back through the known transform vs the detections on the crop), crop-corner error
   and roll error. Then the paste-back round trip on the canvas (unchanged outside the feather band; PSNR inside).
2. real: every photo of ../shared/data/faces/id-photos: faces found (detection rate), the dlib ID network's
   leave-one-out top-1 identity matching of the largest aligned face across photos (vs chance), the group photos'
   face counts, and the paste-back round trip at 1024 on couple.jpg.
3. bad: grey, RGBA, 16-bit, 20 MP, tiny and no-face inputs: what happens, time and peak memory.

Figures are printed as Markdown tables; ``--out`` also gets results.json and histogram PNGs (drawn here, no photos).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]

import hrinv
from hrinv.errors import HRInvError, NoFaceFoundError
from hrinv.imageio import read_image

SHARED = REPO.parent / "shared"


def psnr(a, b, margin=0.06):
    s = a.shape[-1]
    m = int(round(s * margin))
    d = (a[..., m:s - m, m:s - m] - b[..., m:s - m, m:s - m]).float().pow(2).mean()
    return float(-10 * torch.log10(d.clamp(min=1e-12)))


def rot(deg):
    r = math.radians(deg)
    return torch.tensor([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]], dtype=torch.float64)


def stats(xs):
    a = np.asarray(xs, dtype=np.float64)
    return {"n": int(a.size), "min": float(a.min()), "p5": float(np.percentile(a, 5)),
            "median": float(np.median(a)), "mean": float(a.mean()), "p95": float(np.percentile(a, 95)),
            "max": float(a.max())}


def row(name, s, fmt="{:.2f}"):
    return f"| {name} | {s['n']} | " + " | ".join(fmt.format(s[k]) for k in ("min", "p5", "median", "mean", "p95",
                                                                              "max")) + " |"


def place(face, canvas_hw, side, theta, centre, background):
    """Render ``face`` [3, S, S] (0..1) into ``background`` as a square of ``side`` px rotated by ``theta`` around
    ``centre``. Returns (canvas, A) with A the 2x3 crop->canvas matrix in continuous coordinates."""
    S = face.shape[-1]
    H, W = canvas_hw
    small = F.interpolate(face[None], size=(round(side), round(side)), mode="bilinear", antialias=True,
                          align_corners=False)[0] if side < S else face
    s = side / S
    R = rot(theta)
    half = torch.tensor([S / 2, S / 2], dtype=torch.float64)
    A = torch.cat([R * s, (torch.tensor(centre, dtype=torch.float64) - R @ half * s)[:, None]], 1)
    M = torch.linalg.inv(torch.cat([A, torch.tensor([[0, 0, 1.0]], dtype=torch.float64)]))[:2]
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                            indexing="ij")
    u = M[0, 0] * xs + M[0, 1] * ys + M[0, 2]
    v = M[1, 0] * xs + M[1, 1] * ys + M[1, 2]
    grid = torch.stack([u / S * 2 - 1, v / S * 2 - 1], -1).float()[None]
    warped = F.grid_sample(small[None], grid, mode="bicubic", padding_mode="border", align_corners=False)[0]
    edge = torch.minimum(torch.minimum(u, S - u), torch.minimum(v, S - v)) / (S * 0.01)
    alpha = edge.clamp(0, 1).float()[None]
    return (background * (1 - alpha) + warped.clamp(0, 1) * alpha), A


def apply(A, pts):
    pts = torch.as_tensor(pts, dtype=torch.float64)
    return pts @ A[:, :2].T + A[:, 2]


def invert_affine(A):
    return torch.linalg.inv(torch.cat([A, torch.tensor([[0, 0, 1.0]], dtype=A.dtype)]))[:2]


NAMES = {"psnr_abs": "PSNR vs the original crop (dB)", "psnr_eq": "PSNR vs our alignment of the unmoved crop (dB)",
         "nme": "landmark error NME (% of inter-ocular)", "corner_err_pct": "crop-corner error (% of crop side)",
         "roll_err_deg": "roll error (°)", "paste_psnr": "paste-back round trip PSNR inside the mask (dB)",
         "paste_outside_maxdiff": "paste-back max |Δ| outside the mask", "seconds": "detect+align seconds"}


def synth(args, out):
    files = sorted((SHARED / "data" / "faces" / "celebahq").glob("*.jpg"))[: args.limit or None]
    k, n_shards = (int(v) for v in getattr(args, "shard", "0/1").split("/"))
    H, W = 960, 1280
    S = 1024
    rec = {"psnr_abs": [], "psnr_eq": [], "nme": [], "corner_err_pct": [], "roll_err_deg": [], "paste_psnr": [],
           "paste_outside_maxdiff": [], "paste_band_frac": [], "missed": [], "seconds": []}
    per = []
    for i, f in enumerate(files):
        rng = np.random.default_rng(1000 + i)  # per face, so shards give the same cases
        if i % n_shards != k:
            continue
        face = read_image(f)
        # background: a smooth random colour texture plus fine noise (no faces in it)
        low = torch.tensor(rng.random((1, 3, 6, 8)), dtype=torch.float32)
        bg = F.interpolate(low, size=(H, W), mode="bicubic", align_corners=False)[0]
        bg = (bg + torch.tensor(rng.normal(0, 0.04, (3, H, W)), dtype=torch.float32)).clamp(0, 1)
        theta = float(rng.uniform(-40, 40))
        side = float(rng.uniform(300, 700))
        half = side * 0.5 * (abs(math.cos(math.radians(theta))) + abs(math.sin(math.radians(theta))))
        cx = float(rng.uniform(min(half, W / 2), max(W - half, W / 2)))
        cy = float(rng.uniform(min(half, H / 2), max(H - half, H / 2)))
        canvas, A = place(face, (H, W), side, theta, (cx, cy), bg)
        # the placed faces are 150-350 px wide: min_size=100 skips the fine pyramid levels (the cost, not the result)
        ref = hrinv.align_faces(face, size=args.size, select="largest", min_size=100)
        t0 = time.perf_counter()
        try:
            al = hrinv.align_faces(canvas, size=args.size, select="largest", min_size=100)
        except NoFaceFoundError:
            rec["missed"].append(f.name)
            continue
        rec["seconds"].append(time.perf_counter() - t0)
        crop = (al.crops[0] + 1) / 2
        orig = F.interpolate(face[None], size=(args.size, args.size), mode="bilinear", antialias=True,
                             align_corners=False)[0]
        Ainv = invert_affine(A)
        lm = apply(Ainv, al.faces[0].detection.landmarks)
        lm0 = ref.faces[0].detection.landmarks.double()
        iod = float(torch.linalg.vector_norm(lm0[1] - lm0[0]))
        nme = float(torch.linalg.vector_norm(lm - lm0, dim=1).mean()) / iod
        q = apply(Ainv, al.faces[0].quad)
        corners = torch.tensor([[0, 0], [0, S], [S, S], [S, 0]], dtype=torch.float64)
        corner = float(torch.linalg.vector_norm(q - corners, dim=1).mean()) / S * 100
        roll = (al.faces[0].angle - theta - ref.faces[0].angle + 180) % 360 - 180
        p_abs, p_eq = psnr(crop, orig), psnr(crop, (ref.crops[0] + 1) / 2)
        img, mask = hrinv.paste_back(canvas, al.crops, al, feather=0.1)
        outside = mask == 0
        p_paste = float(-10 * torch.log10((img - canvas)[:, mask > 0].pow(2).mean().clamp(min=1e-12)))
        rec["psnr_abs"].append(p_abs)
        rec["psnr_eq"].append(p_eq)
        rec["nme"].append(nme * 100)
        rec["corner_err_pct"].append(corner)
        rec["roll_err_deg"].append(abs(roll))
        rec["paste_psnr"].append(p_paste)
        rec["paste_outside_maxdiff"].append(float((img - canvas)[:, outside].abs().max()) if outside.any() else 0.0)
        rec["paste_band_frac"].append(float(((mask > 0) & (mask < 1)).float().mean()))
        per.append({"file": f.name, "theta": theta, "side": side, "psnr_abs": p_abs, "psnr_eq": p_eq,
                    "nme_pct": nme * 100, "corner_err_pct": corner, "roll_err_deg": abs(roll), "paste_psnr": p_paste})
        print(f"  {f.name}: θ={theta:+5.1f}° side={side:4.0f}px  PSNR abs {p_abs:5.2f} eq {p_eq:5.2f} dB  NME "
              f"{nme * 100:4.2f}%  corner {corner:4.2f}%  paste {p_paste:5.2f} dB", flush=True)
    n = len(files) // n_shards + (k < len(files) % n_shards)
    print(f"\n### Synthetic ground truth: {n} CelebA-HQ faces, rotation ±40°, crop side 300-700 px in a 1280x960 "
          f"canvas, aligned at {args.size}\n")
    print(f"Detected: {n - len(rec['missed'])}/{n} (missed: {rec['missed'] or 'none'})\n")
    print("| measure | n | min | p5 | median | mean | p95 | max |\n|---|---|---|---|---|---|---|---|")
    names = NAMES
    summary = {}
    for k, label in names.items():
        if rec[k]:
            summary[k] = stats(rec[k])
            print(row(label, summary[k], "{:.3g}" if k in ("paste_outside_maxdiff",) else "{:.2f}"))
    return {"summary": summary, "per_face": per, "missed": rec["missed"], "records": rec}


def merge(dirs):
    """Summary of the synth parts of several ``results.json`` (shards)."""
    rec, per, missed = {}, [], []
    for d in dirs:
        r = json.loads((Path(d) / "results.json").read_text())["synth"]
        per += r["per_face"]
        missed += r["missed"]
        for key, v in r["records"].items():
            rec.setdefault(key, []).extend(v)
    print(f"\n### Synthetic ground truth (merged {len(dirs)} shards): {len(per) + len(missed)} faces\n")
    print(f"Detected: {len(per)}/{len(per) + len(missed)} (missed: {missed or 'none'})\n")
    print("| measure | n | min | p5 | median | mean | p95 | max |\n|---|---|---|---|---|---|---|---|")
    summary = {}
    for key, label in NAMES.items():
        if rec.get(key):
            summary[key] = stats(rec[key])
            print(row(label, summary[key], "{:.3g}" if key == "paste_outside_maxdiff" else "{:.2f}"))
    return {"summary": summary, "per_face": per, "missed": missed, "records": rec}


def real(args, out):
    folder = SHARED / "data" / "faces" / "id-photos"
    ids = {}
    for line in (folder / "identities.txt").read_text().splitlines():
        if line.startswith("id"):
            name, *fs = line.split()
            for f in fs:
                ids[f] = name
    photos = sorted(folder.glob("*.jpg"), key=lambda p: p.name)
    found, counts, crops, labels, times, none = 0, {}, [], [], [], []
    for p in photos:
        img = read_image(p)
        t0 = time.perf_counter()
        try:
            al = hrinv.align_faces(img, size=256)
        except NoFaceFoundError as e:
            none.append(p.name)
            print(f"  {p.name}: no face ({str(e)[:60]}...)")
            continue
        times.append(time.perf_counter() - t0)
        found += 1
        counts[p.name] = len(al)
        if p.name in ids:
            crops.append((al.crops[0] + 1) / 2)
            labels.append(ids[p.name])
    print(f"\n### Real photos: {len(photos)} photos in ../shared/data/faces/id-photos\n")
    print(f"- at least one face: {found}/{len(photos)} ({100 * found / len(photos):.1f} %); no face: {none or 'none'}")
    print(f"- faces per group photo: couple.jpg {counts.get('couple.jpg')}, selfie-many-people.jpg "
          f"{counts.get('selfie-many-people.jpg')}; photos with >1 face: "
          f"{sorted(k for k, v in counts.items() if v > 1)}")
    print(f"- detect+align seconds per photo: median {np.median(times):.2f}, max {max(times):.2f}")
    result = {"photos": len(photos), "found": found, "no_face": none, "faces_per_photo": counts,
              "seconds": stats(times)}
    dat = SHARED / "weights" / "dlib_face_recognition_resnet_model_v1.dat"
    if dat.is_file() and len(crops) > 2:
        emb = hrinv.load_face_embedder(str(dat))
        e = emb.embed(torch.stack(crops))
        d = torch.cdist(e, e).pow(2)
        d.fill_diagonal_(float("inf"))
        nn_idx = d.argmin(1).tolist()
        lab = np.asarray(labels)
        hits = [lab[i] == lab[j] for i, j in enumerate(nn_idx)]
        chance = np.mean([(np.sum(lab == lab[i]) - 1) / (len(lab) - 1) for i in range(len(lab))])
        same = d[torch.tensor(lab[:, None] == lab[None, :])].flatten()
        same = same[torch.isfinite(same)]
        diff = d[torch.tensor(lab[:, None] != lab[None, :])].flatten()
        print(f"- identity (dlib ResNet on the aligned crops, leave-one-out nearest photo): top-1 "
              f"{100 * np.mean(hits):.1f} % over {len(lab)} photos of {len(set(labels))} people; chance "
              f"{100 * chance:.1f} %; median squared distance same person {float(same.median()):.3f} vs different "
              f"{float(diff.median()):.3f} (dlib threshold 0.36 = 0.6²)")
        result["identity"] = {"top1": float(np.mean(hits)), "chance": float(chance), "n": len(lab),
                              "people": len(set(labels)), "median_d2_same": float(same.median()),
                              "median_d2_diff": float(diff.median())}
    # paste-back round trip at 1024 on the two-face photo
    img = read_image(folder / "couple.jpg")
    al = hrinv.align_faces(img, size=1024)
    t0 = time.perf_counter()
    out_img, mask = hrinv.paste_back(img, al.crops, al, feather=0.1)
    dt = time.perf_counter() - t0
    inside = mask > 0
    p_in = float(-10 * torch.log10((out_img - img)[:, inside].pow(2).mean()))
    p_full = float(-10 * torch.log10((out_img - img)[:, mask > 0.999].pow(2).mean()))
    mx = float((out_img - img)[:, ~inside].abs().max())
    print(f"- couple.jpg paste-back round trip (2 faces, crops at 1024): outside the mask max |Δ| = {mx:g} "
          f"({int((~inside).sum())} px unchanged), PSNR inside the mask {p_in:.2f} dB (where mask = 1: "
          f"{p_full:.2f} dB), {dt:.2f} s")
    result["couple_paste"] = {"outside_maxdiff": mx, "psnr_inside": p_in, "psnr_full": p_full, "seconds": dt}
    return result


def bad(args, out):
    from PIL import Image

    src = SHARED / "data" / "faces" / "id-photos" / "img1.jpg"
    tmp = out / "bad_inputs"
    tmp.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im = im.convert("RGB")
        im.convert("L").save(tmp / "grey.png")
        rgba = im.convert("RGBA")
        rgba.putalpha(200)
        rgba.save(tmp / "rgba.png")
        arr16 = (np.asarray(im.convert("L"), dtype=np.uint16) * 257)
        Image.fromarray(arr16).save(tmp / "grey16.png")
        w, h = im.size
        big = im.resize((5472, round(5472 * h / w)), Image.BICUBIC)
        big.save(tmp / "huge_20mp.jpg", quality=90)
        im.resize((40, 30)).save(tmp / "tiny.png")
    rng = np.random.default_rng(1)
    Image.fromarray((rng.random((480, 640, 3)) * 255).astype(np.uint8)).save(tmp / "noise.png")
    print("\n### Bad input\n\n| input | size | result | seconds | peak RSS growth (MB) |\n|---|---|---|---|---|")
    res = {}
    for name in ("grey.png", "rgba.png", "grey16.png", "tiny.png", "noise.png", "huge_20mp.jpg"):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        try:
            img = read_image(tmp / name)
            al = hrinv.align_faces(img, size=512)
            outcome = f"{len(al)} face(s), {al.faces[0].size:.0f} px"
        except HRInvError as e:
            outcome = f"{type(e).__name__}: {str(e)[:90]}..."
            img = None
        dt = time.perf_counter() - t0
        grow = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
        size = f"{img.shape[2]}x{img.shape[1]}" if img is not None else "-"
        print(f"| {name} | {size} | {outcome} | {dt:.2f} | {grow:.0f} |", flush=True)
        res[name] = {"outcome": outcome, "seconds": dt, "rss_growth_mb": grow}
    return res


def histogram(values, title, path, bins=12, unit=""):
    from PIL import Image, ImageDraw

    a = np.asarray(values, dtype=np.float64)
    counts, edges = np.histogram(a, bins=bins)
    Wd, Hd, m = 640, 300, 44
    img = Image.new("RGB", (Wd, Hd), "white")
    d = ImageDraw.Draw(img)
    d.text((m, 8), f"{title} (n={a.size}, median {np.median(a):.2f}{unit})", fill="black")
    bw = (Wd - 2 * m) / bins
    top = max(counts.max(), 1)
    for k, c in enumerate(counts):
        x0 = m + k * bw
        y0 = Hd - m - (Hd - 2 * m - 20) * c / top
        d.rectangle([x0 + 1, y0, x0 + bw - 1, Hd - m], fill=(70, 110, 170))
        if c:
            d.text((x0 + bw / 2 - 4, y0 - 12), str(int(c)), fill="black")
    for k in range(0, bins + 1, 3):
        d.text((m + k * bw - 10, Hd - m + 6), f"{edges[k]:.1f}", fill="black")
    d.line([m, Hd - m, Wd - m, Hd - m], fill="black")
    img.save(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_out/face_study"))
    ap.add_argument("--size", type=int, default=512, help="alignment size of the synthetic study (default 512)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N CelebA-HQ faces (0 = all)")
    ap.add_argument("--only", default="synth,real,bad")
    ap.add_argument("--figures", type=Path, default=None, help="also write the histogram PNGs here")
    ap.add_argument("--shard", default="0/1", help="K/N: only faces i with i %% N == K (run N in parallel)")
    ap.add_argument("--merge", nargs="+", type=Path, default=None, help="merge the synth results of these --out dirs")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = ap.parse_args(argv)
    if not SHARED.is_dir():
        print(f"needs {SHARED} (../shared)")
        return 2
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    parts = args.only.split(",")
    if args.merge:
        results["synth"] = merge(args.merge)
    elif "synth" in parts:
        results["synth"] = synth(args, args.out)
    if "real" in parts:
        results["real"] = real(args, args.out)
    if "bad" in parts:
        results["bad"] = bad(args, args.out)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    if "synth" in results and results["synth"]["per_face"]:
        fig = args.figures or args.out
        fig.mkdir(parents=True, exist_ok=True)
        per = results["synth"]["per_face"]
        histogram([p["psnr_abs"] for p in per], "PSNR vs the original CelebA-HQ crop", fig / "face_psnr_abs.png",
                  unit=" dB")
        histogram([p["psnr_eq"] for p in per], "PSNR vs our alignment of the unmoved crop", fig / "face_psnr_eq.png",
                  unit=" dB")
        histogram([p["nme_pct"] for p in per], "landmark error, % of inter-ocular distance", fig / "face_nme.png",
                  unit=" %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
