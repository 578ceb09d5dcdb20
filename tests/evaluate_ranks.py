"""``torchrun --nproc-per-node N tests/evaluate_ranks.py RESULTS OUT.json``: :func:`hrinv.evaluate_results` under
torchrun with the suite's seeded random VGG and tiny face network (the same weights on every rank; the CLI cannot
load these test networks from a file). Rank 0 writes the report to OUT.json."""

import json
import sys

import torch

from hrinv.distributed import init_distributed
from hrinv.metrics.evaluate import evaluate_results
from nodes_harness import random_vgg, tiny_face_embedder

if __name__ == "__main__":
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    try:
        report = evaluate_results(sys.argv[1], vgg=random_vgg(), embedder=tiny_face_embedder(), ctx=ctx)
        assert (report is None) != ctx.is_main, "rank 0 alone gets the report"
        if ctx.is_main:
            with open(sys.argv[2], "w", encoding="utf-8") as f:
                json.dump(report, f)
    finally:
        ctx.close()
