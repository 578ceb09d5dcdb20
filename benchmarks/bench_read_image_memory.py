"""Peak RAM per pixel of ``hrinv.imageio.read_image`` (now) vs the previous float pipeline (before), side by side.

Each measurement runs in a fresh subprocess and reports the growth of the peak resident set size (ru_maxrss) while
reading one generated RGB PNG (and a JPEG through ``load_image``, which decodes JPEG at a reduced scale).

    python benchmarks/bench_read_image_memory.py [--side 6000]
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys
import numpy as np
import torch
from PIL import Image, ImageOps
which, path = sys.argv[1], sys.argv[2]
def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base = rss()
if which == "before":  # the pre-issue-11 read_image for an RGB file
    with Image.open(path) as img:
        img.load(); img = ImageOps.exif_transpose(img)
        rgb = np.asarray(img, dtype=np.float32) / 255.0
        rgb = np.clip(rgb, 0.0, 1.0)
        t = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
elif which == "after":
    from hrinv.imageio import read_image
    t = read_image(path)
else:  # load_image to 1024 px (the CLI path): JPEG is decoded at a reduced scale
    from hrinv.commands._common import load_image
    t = load_image(path, 1024)
print(json.dumps({"peak_bytes": rss() - base, "shape": list(t.shape)}))
"""


def run(which, path):
    out = subprocess.run([sys.executable, "-c", CHILD, which, str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=6000)
    args = ap.parse_args()
    import numpy as np
    from PIL import Image
    n = args.side
    with tempfile.TemporaryDirectory() as d:
        rng = np.random.default_rng(0)
        small = rng.integers(0, 256, (n // 8, n // 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((n, n), Image.BILINEAR)
        png, jpg = Path(d) / "big.png", Path(d) / "big.jpg"
        img.save(png)
        img.save(jpg, quality=90)
        px = n * n
        before, after = run("before", png), run("after", png)
        print(f"read_image, {n}x{n} RGB PNG ({px / 1e6:.0f} MP):")
        print(f"  before: {before['peak_bytes'] / px:5.1f} bytes/pixel ({before['peak_bytes'] / 2**20:.0f} MiB)")
        print(f"  after : {after['peak_bytes'] / px:5.1f} bytes/pixel ({after['peak_bytes'] / 2**20:.0f} MiB)")
        print(f"  ratio after/before: {after['peak_bytes'] / before['peak_bytes']:.2f}")
        lp, lj = run("load", png), run("load", jpg)
        print(f"load_image(.., 1024): PNG {lp['peak_bytes'] / px:5.1f} B/px, JPEG {lj['peak_bytes'] / px:5.1f} B/px "
              f"(JPEG/PNG {lj['peak_bytes'] / lp['peak_bytes']:.2f})")


if __name__ == "__main__":
    main()
