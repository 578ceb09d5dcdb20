"""Add (or refresh) a file in hrinv/bundled/manifest.json: computes sha256 and size, records licence/source/card.

    python tools/bundle_add.py hrinv/bundled/NAME --kind generator --licence "MIT" --source "..." --card NAME.md
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "hrinv" / "bundled"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", type=Path)
    ap.add_argument("--kind", required=True, choices=["generator", "vgg16", "detector", "image", "other"])
    ap.add_argument("--licence", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--card", required=True, help="Markdown file in hrinv/bundled/ that describes the file")
    args = ap.parse_args(argv)
    f = args.file.resolve()
    if f.parent != ROOT:
        ap.error(f"{f} is not in {ROOT}")
    if not (ROOT / args.card).is_file():
        ap.error(f"the card {ROOT / args.card} does not exist: write it first")
    import hashlib
    h = hashlib.sha256(f.read_bytes()).hexdigest()
    mpath = ROOT / "manifest.json"
    m = json.loads(mpath.read_text(encoding="utf-8"))
    m["files"][f.name] = {"sha256": h, "bytes": f.stat().st_size, "kind": args.kind, "licence": args.licence,
                          "source": args.source, "card": args.card}
    m["files"] = dict(sorted(m["files"].items()))
    mpath.write_text(json.dumps(m, indent=2) + "\n", encoding="utf-8")
    total = sum(e["bytes"] for e in m["files"].values())
    print(f"{f.name}: sha256 {h}, {f.stat().st_size} bytes; bundle total {total / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
