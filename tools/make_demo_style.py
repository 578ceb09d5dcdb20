"""Make the bundled demo style reference ``hrinv/bundled/demo_style.png``: a cartoon face drawn by the project.

A face is taken from a photo (default: the bundled public-domain ``demo_photo.png``, FFHQ-aligned at ``--size`` by
:func:`hrinv.align_faces`) or rendered by a generator (``--generator``, ``--seed``, truncation ``--psi``), and turned
into a flat-colour cartoon with our own code only: Gaussian smoothing, a saturation boost, colour quantisation to ``--colors``
flat colours (k-means with a seeded init), and dark outlines where the smoothed luminance has strong edges (Sobel,
top ``--edge-quantile`` of the gradient, thickened by one pixel). The output is an aligned face (the generator's own
framing), so ``hrinv.finetune`` / ``hrinv.stylize`` use it as is. Deterministic for given arguments.

    python tools/make_demo_style.py                       # from the bundled demo photo -> hrinv/bundled/demo_style.png
    python tools/make_demo_style.py --generator G.safetensors --seed 7 --out style.png
"""

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]


def _gauss(x, sigma):
    r = max(1, int(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _kmeans(pix, k, iters, gen):
    """pix [N, 3] -> (centres [k, 3], labels [N]); k-means++-free: init from k random pixels (seeded)."""
    centres = pix[torch.randperm(pix.shape[0], generator=gen)[:k]].clone()
    for _ in range(iters):
        labels = torch.cdist(pix, centres).argmin(1)
        for j in range(k):
            sel = labels == j
            if sel.any():
                centres[j] = pix[sel].mean(0)
    return centres, torch.cdist(pix, centres).argmin(1)


def cartoonize(img, colors=7, sigma=1.5, saturation=1.35, edge_quantile=0.9, seed=0):
    """img [1, 3, H, W] in [0, 1] -> cartoon [1, 3, H, W] in [0, 1]: flat colours and dark outlines."""
    x = _gauss(img, sigma)
    grey = x.mean(1, keepdim=True)
    x = (grey + saturation * (x - grey)).clamp(0, 1)
    _, _, H, W = x.shape
    pix = x[0].permute(1, 2, 0).reshape(-1, 3)
    centres, labels = _kmeans(pix, colors, 15, torch.Generator().manual_seed(seed))
    flat = centres[labels].reshape(H, W, 3).permute(2, 0, 1)[None]
    flat = _gauss(flat, 0.7)  # soften the staircase between colour regions a little
    lum = _gauss(img, sigma * 1.5).mul(torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    sx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]).view(1, 1, 3, 3)
    gx = F.conv2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), sx)
    gy = F.conv2d(F.pad(lum, (1, 1, 1, 1), mode="replicate"), sx.transpose(2, 3))
    mag = (gx.square() + gy.square()).sqrt()
    edges = (mag > torch.quantile(mag.flatten(), edge_quantile)).float()
    edges = F.max_pool2d(edges, 3, 1, 1)
    edges = _gauss(edges, 0.6).clamp(0, 1)
    ink = torch.tensor([0.08, 0.06, 0.07]).view(1, 3, 1, 1)
    return (flat * (1 - edges) + ink * edges).clamp(0, 1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photo", default=None, help="face photo (default: the bundled demo_photo.png)")
    ap.add_argument("--generator", default=None, help="render the face with this generator instead of a photo")
    ap.add_argument("--seed", type=int, default=7, help="z seed of the face")
    ap.add_argument("--psi", type=float, default=0.7, help="truncation")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--colors", type=int, default=7)
    ap.add_argument("--out", default=str(REPO / "hrinv" / "bundled" / "demo_style.png"))
    ap.add_argument("--sheet", default=None, help="also write a sheet of seeds 0..15 (to choose one)")
    args = ap.parse_args(argv)
    from PIL import Image

    from hrinv.io.checkpoints import load_generator

    torch.set_num_threads(1)
    if args.generator is None:
        from hrinv import bundled
        from hrinv.face import align_faces
        from hrinv.imageio import read_image

        photo = read_image(args.photo or bundled.path("demo_photo.png"))
        crop = align_faces(photo, size=args.size, select="largest").crops[:1]  # [1, 3, S, S] in [-1, 1]
        out = cartoonize(((crop + 1) / 2).clamp(0, 1), colors=args.colors, seed=args.seed)
        Image.fromarray((out[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()).save(args.out, optimize=True)
        print(f"wrote {args.out}")
        return 0
    G = load_generator(args.generator)

    def face(seed):
        z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            img = G(z, truncation_psi=args.psi)  # [1, 3, R, R]
        img = F.interpolate(img, size=(args.size, args.size), mode="bicubic", align_corners=False)
        return cartoonize(((img + 1) / 2).clamp(0, 1), colors=args.colors, seed=seed)

    def to_pil(t):
        return Image.fromarray((t[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())

    if args.sheet:
        tiles = [face(s) for s in range(16)]
        rows = [torch.cat(tiles[i:i + 8], dim=3) for i in (0, 8)]
        to_pil(torch.cat(rows, dim=2)).save(args.sheet)
    to_pil(face(args.seed)).save(args.out, optimize=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
