"""Benchmark checkpoint loading: safe NVIDIA pickle vs rosinality .pt vs our .safetensors.

Prints the wall time of ``load_generator`` per format (best of ``--repeat``), side by side with loading the same
network from our ``.safetensors`` (ratio). Uses the team fixtures (../shared/fixtures) and a synthetic config-f
1024x1024 generator (random weights, ~30 M parameters) saved as a plain NVIDIA state dict ``.pt`` and as ours.

    PYTHONPATH=. python benchmarks/bench_io_load.py [--shared ../shared] [--repeat 3] [--no-1024]
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

from hrinv.generator.stylegan2 import Generator
from hrinv.io.checkpoints import load_generator, save_generator


def _best(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-1024", action="store_true", help="skip the synthetic config-f 1024 network")
    args = ap.parse_args()
    fx = Path(args.shared) / "fixtures"
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = [("nv_tiny", fx / "nv_tiny" / "network.pkl", "NVIDIA pkl (protocol 2)"),
                 ("nv_tiny", fx / "nv_tiny" / "network_proto4.pkl", "NVIDIA pkl (protocol 4)"),
                 ("nv_small", fx / "nv_small" / "network_proto4.pkl", "NVIDIA pkl (protocol 4)"),
                 ("ros_small", fx / "ros_small" / "checkpoint.pt", "rosinality .pt")]
        for name, path, label in cases:
            if not path.exists():
                print(f"skip {path} (missing)")
                continue
            ours = save_generator(load_generator(path), tmp / f"{name}.safetensors")
            t_src = _best(lambda p=path: load_generator(p), args.repeat)
            t_ours = _best(lambda p=ours: load_generator(p), args.repeat)
            rows.append((f"{name}: {label}", path.stat().st_size, t_src, t_ours))
        if not args.no_1024:
            G = Generator(512, 0, 512, 1024, 3, mapping_kwargs={"num_layers": 8},
                          synthesis_kwargs={"channel_base": 32768, "channel_max": 512, "num_fp16_res": 4,
                                            "conv_clamp": 256})
            pt = tmp / "f1024.pt"
            torch.save(G.state_dict(), pt)
            ours = save_generator(G, tmp / "f1024.safetensors")
            t_src = _best(lambda: load_generator(pt), args.repeat)
            t_ours = _best(lambda: load_generator(ours), args.repeat)
            rows.append(("config-f 1024: NVIDIA state dict .pt (config from shapes)", pt.stat().st_size, t_src,
                         t_ours))
    print(f"{'source':<62} {'MB':>7} {'load s':>8} {'ours s':>8} {'ratio':>6}")
    for label, size, t_src, t_ours in rows:
        print(f"{label:<62} {size / 1e6:7.1f} {t_src:8.3f} {t_ours:8.3f} {t_src / t_ours:6.2f}")


if __name__ == "__main__":
    main()
