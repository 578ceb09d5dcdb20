"""Our Generator reproduces the state-dict layout of stock NVIDIA configs (config-f 1024, paper256), built on the meta
device so no weights are allocated."""

import json

import pytest
from conftest import fixture_path

from hrinv.generator.stylegan2 import Generator


@pytest.mark.parametrize("name", ["nv_stock_cfg_stylegan2_res1024.json", "nv_stock_cfg_paper256_res256.json"])
def test_stock_layout(name):
    ref = json.loads(fixture_path("shapes", name).read_text())
    G = Generator(**ref["init_kwargs"], device="meta")
    sd = G.state_dict()
    assert list(sd) == list(ref["state_dict_shapes"])  # same keys, same order
    assert {k: list(t.shape) for k, t in sd.items()} == ref["state_dict_shapes"]
    assert G.num_ws == ref["num_ws"]
    assert G.synthesis.block_resolutions == ref["block_resolutions"]
    assert [r for r in G.synthesis.block_resolutions if getattr(G.synthesis, f"b{r}").use_fp16] == \
        ref["use_fp16_blocks"]
    assert sum(p.numel() for p in G.parameters()) == ref["num_params"]
