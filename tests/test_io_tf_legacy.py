"""Legacy TensorFlow StyleGAN2 pickles: a synthetic (G, D, Gs) file in TF layout converts back to the exact network.

No real TF file is available offline, so the test writes one: the nv_tiny weights are turned into TF variables with
the inverse of the documented rules (conv [out,in,kh,kw] -> [kh,kw,in,out], Conv0_up flipped, mod_bias - 1, dense
transposed, noise{i}, dlatent_avg), pickled as dnnlib.tflib.network.Network records without TensorFlow.
"""

import math

import numpy as np
import pytest
import torch
from conftest import fixture_path
from io_pickle_tools import dumps, tf_network_class
from safetensors.torch import load_file

from hrinv.errors import CheckpointFormatError, UnsafeCheckpointError
from hrinv.io.checkpoints import load_generator, read_checkpoint

Network = tf_network_class()


def _tf_variables(sd, res_top, num_mapping):
    def n(t):
        return t.detach().numpy().copy()

    def conv(w, flip=False):  # [out, in, kh, kw] -> [kh, kw, in, out], spatially flipped for Conv0_up
        a = n(w).transpose(2, 3, 1, 0)
        return a[::-1, ::-1] if flip else a

    mapping = []
    for i in range(num_mapping):
        mapping += [(f"Dense{i}/weight", n(sd[f"mapping.fc{i}.weight"]).T),
                    (f"Dense{i}/bias", n(sd[f"mapping.fc{i}.bias"]))]
    synthesis = [("4x4/Const/const", n(sd["synthesis.b4.const"])[None])]

    def layer(tf, nv, noise=None, flip=False):
        out = [(f"{tf}/weight", np.ascontiguousarray(conv(sd[f"{nv}.weight"], flip))),
               (f"{tf}/bias", n(sd[f"{nv}.bias"])),
               (f"{tf}/mod_weight", n(sd[f"{nv}.affine.weight"]).T),
               (f"{tf}/mod_bias", n(sd[f"{nv}.affine.bias"]) - 1)]
        if noise is not None:
            out.append((f"{tf}/noise_strength", n(sd[f"{nv}.noise_strength"])))
            synthesis.append((f"noise{noise}", n(sd[f"{nv}.noise_const"])[None, None]))
        return out

    synthesis += layer("4x4/Conv", "synthesis.b4.conv1", 0)
    synthesis += layer("4x4/ToRGB", "synthesis.b4.torgb")
    for k in range(3, int(math.log2(res_top)) + 1):
        r = 2 ** k
        synthesis += layer(f"{r}x{r}/Conv0_up", f"synthesis.b{r}.conv0", 2 * k - 5, flip=True)
        synthesis += layer(f"{r}x{r}/Conv1", f"synthesis.b{r}.conv1", 2 * k - 4)
        synthesis += layer(f"{r}x{r}/ToRGB", f"synthesis.b{r}.torgb")
    return mapping, synthesis, [("dlatent_avg", n(sd["mapping.w_avg"])), ("lod", np.float32(0))]


def _tf_pickle(sd, static_kwargs, version=4, protocol=3, G_scale=1.0):
    mapping, synthesis, top = _tf_variables(sd, 32, 2)

    def net(name, scale=1.0):
        def s(vs):
            return [(k, v * np.float32(scale) if k.endswith("weight") else v) for k, v in vs]
        comps = {"mapping": Network(version=version, name="G_mapping", static_kwargs={}, components={},
                                    build_module_src="def G_mapping(**kw):\n    pass\n",
                                    build_func_name="G_mapping", variables=s(mapping)),
                 "synthesis": Network(version=version, name="G_synthesis", static_kwargs={}, components={},
                                      build_module_src="def G_synthesis(**kw):\n    pass\n",
                                      build_func_name="G_synthesis", variables=s(synthesis))}
        return Network(version=version, name=name, static_kwargs=dict(static_kwargs), components=comps,
                       build_module_src="def G_main(**kw):\n    pass\n", build_func_name="G_main", variables=top)

    D = Network(version=version, name="D", static_kwargs={}, components={}, build_module_src="",
                build_func_name="D_main", variables=[("4x4/Conv/weight", np.zeros((3, 3, 4, 4), np.float32))])
    return dumps((net("G", G_scale), D, net("Gs")), protocol=protocol)


NV_TINY_TF_KWARGS = {"latent_size": 64, "dlatent_size": 64, "resolution": 32, "num_channels": 3, "label_size": 0,
                     "mapping_layers": 2, "fmap_base": 512, "fmap_max": 64, "truncation_psi": 0.5}


@pytest.fixture(scope="module")
def nv_tiny_sd():
    return load_file(str(fixture_path("nv_tiny", "state_dict.safetensors")))


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_synthetic_tf_pickle_converts_to_the_exact_network(tmp_path, nv_tiny_sd, protocol):
    path = tmp_path / "stylegan2-tiny.pkl"
    path.write_bytes(_tf_pickle(nv_tiny_sd, NV_TINY_TF_KWARGS, protocol=protocol))
    init_kwargs, sd, extras = read_checkpoint(path)
    assert extras["format"] == "tf-legacy"
    assert init_kwargs["synthesis_kwargs"]["channel_base"] == 1024 and init_kwargs["mapping_kwargs"]["num_layers"] == 2
    assert set(sd) == set(nv_tiny_sd)
    for k in nv_tiny_sd:
        assert torch.equal(sd[k], nv_tiny_sd[k]), k
    G = load_generator(path)
    io = load_file(str(fixture_path("nv_tiny", "io.safetensors")))
    with torch.no_grad():
        img = G.synthesis(io["ws"][:2], noise_mode="const")
    assert (img - io["img_const"][:2]).abs().max() <= 1e-4


def test_tf_which_G_takes_the_first_network(tmp_path, nv_tiny_sd):
    path = tmp_path / "tf.pkl"
    path.write_bytes(_tf_pickle(nv_tiny_sd, NV_TINY_TF_KWARGS, G_scale=2.0))
    _, sd_g, _ = read_checkpoint(path, which="G")
    torch.testing.assert_close(sd_g["mapping.fc0.weight"], 2 * nv_tiny_sd["mapping.fc0.weight"])


def test_old_or_unknown_tf_networks_are_refused_with_a_conversion_hint(tmp_path, nv_tiny_sd):
    path = tmp_path / "old.pkl"
    path.write_bytes(_tf_pickle(nv_tiny_sd, NV_TINY_TF_KWARGS, version=3))
    with pytest.raises(CheckpointFormatError, match="hrinv convert"):
        load_generator(path)
    path.write_bytes(_tf_pickle(nv_tiny_sd, {**NV_TINY_TF_KWARGS, "mystery_option": 1}))
    with pytest.raises(CheckpointFormatError, match="mystery_option"):
        load_generator(path)


def test_tf_pickle_with_a_foreign_global_is_still_refused(tmp_path, nv_tiny_sd):
    from io_pickle_tools import Call, GlobalRef
    evil = Network(version=4, name="Gs", static_kwargs={}, components={},
                   variables=[("x", Call(GlobalRef("os", "system"), ("true",)))])
    path = tmp_path / "evil_tf.pkl"
    path.write_bytes(dumps((evil, evil, evil), protocol=3))
    with pytest.raises(UnsafeCheckpointError, match="os.system"):
        load_generator(path)
