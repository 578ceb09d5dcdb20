"""What a node user reads when something does not fit: node words (inputs, widgets, other nodes), both generators
named, a remedy, and the check made before the long optimisation rather than after it. Stub harness, no ComfyUI."""

import re

import pytest
import torch
from nodes_harness import TINY_KWARGS, face_images, random_vgg, run_node, stubbed_pack, tiny_generators

from tools import hrinv_workflows as wf

LIBRARY_WORDS = re.compile(r"unsqueeze|InversionConfig|--keep-aspect|hrinv invert|w_m batch|Upscale or pad")


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    with stubbed_pack(tmp_path_factory.mktemp("comfy")) as ns:
        from hrinv.generator.stylegan2 import Generator

        types = ns.node_module.types
        G_s, G_t = tiny_generators()
        ns.gs = types.GeneratorHandle(G_s, "tiny_source.safetensors")
        ns.gt = types.GeneratorHandle(G_t, "tiny_target.safetensors")
        torch.manual_seed(0)
        ns.g32 = types.GeneratorHandle(Generator(**{**TINY_KWARGS, "img_resolution": 32}).eval(), "tiny32.pkl")
        ns.gwide = types.GeneratorHandle(Generator(**{**TINY_KWARGS, "w_dim": 16}).eval(), "other_w16.pkl")
        ns.vgg = types.VGGHandle(random_vgg(), "random")
        yield ns


def _invert(h, gen, image, **kw):
    args = dict(generator=gen, image=image, vgg=h.vgg, steps=1, latent_space="W+", noise_maps=False, seed=0)
    args.update(kw)
    return run_node(h.nodes["HRInv_Invert"], **args)


def _error(fn, *args, **kw):
    with pytest.raises(Exception) as info:
        fn(*args, **kw)
    msg = str(info.value)
    assert not LIBRARY_WORDS.search(msg), msg
    return msg


def test_latent_of_another_generator_names_both(h):
    lat, _ = _invert(h, h.gs, face_images(1))
    assert "tiny_source.safetensors" in lat.generator
    msg = _error(run_node, h.nodes["HRInv_RenderAnyResolution"], generator=h.gwide, latent=lat, width=64,
                 height=64)
    assert "tiny_source.safetensors" in msg and "other_w16.pkl" in msg and "invert the image again" in msg
    msg = _error(run_node, h.nodes["HRInv_LocalStyleOptimize"], generator=h.gwide, latent=lat,
                 content=face_images(1), vgg=h.vgg, steps=1)
    assert "tiny_source.safetensors" in msg and "other_w16.pkl" in msg


def test_downsample_refused_at_validation(h):
    v = h.nodes["HRInv_Invert"].validate_inputs
    assert v(downsample=0) is True and v(downsample=256) is True
    for bad in (1, 16, 32):
        msg = v(downsample=bad)
        assert isinstance(msg, str) and "downsample" in msg and "32" in msg and not LIBRARY_WORDS.search(msg)
    assert isinstance(v(downsample=5000), str)         # declaring the input makes the range check ours
    import inspect

    params = inspect.signature(v).parameters                # no **kwargs: ComfyUI would skip every range check
    assert list(params) == ["downsample"]


def test_fit_as_is_says_which_widget_to_change(h):
    msg = _error(_invert, h, h.gs, face_images(1, size=96), fit="as is")
    assert "'fit'" in msg and "crop & resize" in msg and "96x96" in msg


def test_batches_that_do_not_pair_have_a_remedy(h):
    lat2, _ = _invert(h, h.gs, face_images(2))
    lat3, _ = _invert(h, h.gt, face_images(3))
    msg = _error(run_node, h.nodes["HRInv_LerpLatents"], source=lat2, target=lat3, schedule="paper")
    assert "2" in msg and "3" in msg and "same number" in msg
    msg = _error(run_node, h.nodes["HRInv_LocalStyleOptimize"], generator=h.gs, latent=lat3,
                 content=face_images(2), vgg=h.vgg, steps=1)
    assert "'content'" in msg and "same number" in msg


def test_generator_too_small_is_not_blamed_on_the_image(h):
    msg = _error(_invert, h, h.g32, face_images(1, size=64))
    assert "tiny32.pkl" in msg and "64 px or more" in msg and "Resizing the photo does not help" in msg


@pytest.mark.parametrize("side", [1, 8, 31])
def test_tiny_images_are_refused(h, side):
    msg = _error(_invert, h, h.gs, torch.rand(1, side, side, 3))
    assert f"{side}x{side}" in msg and "too small" in msg


def test_alpha_is_mentioned_in_the_tooltip(h):
    image = next(i for i in h.nodes["HRInv_Invert"].GET_SCHEMA().inputs if i.id == "image")
    assert "alpha" in image.tooltip.lower() and "mask" in image.tooltip


def test_incompatible_generators_named_and_checked_early(h):
    import inspect

    msg = _error(run_node, h.nodes["HRInv_LerpGenerators"], source=h.gs, target=h.g32, schedule="paper")
    assert "tiny_source.safetensors" in msg and "tiny32.pkl" in msg and "fine-tuned from the source" in msg
    # ComfyUI 0.3.64 runs ready async nodes first: the loaders and Lerp Generators are async, the inversion is not
    assert inspect.iscoroutinefunction(h.nodes["HRInv_LerpGenerators"].execute)
    assert inspect.iscoroutinefunction(h.nodes["HRInv_LoadStyleINRGAN"].execute)
    assert not inspect.iscoroutinefunction(h.nodes["HRInv_Invert"].execute)


def test_style_batch_mismatch_stops_the_inversion_before_it_runs(h):
    """Contents 2 and references 3 meet in Lerp Latents; the first inversion to run sees it in the queued graph."""
    g = wf.wf_id_retrieval()
    g["16"] = {"class_type": "LoadImage", "inputs": {"image": "r2.png"}}
    g["17"] = {"class_type": "LoadImage", "inputs": {"image": "r3.png"}}
    g["18"] = {"class_type": "ImageBatch", "inputs": {"image1": ["15", 0], "image2": ["16", 0]}}
    g["19"] = {"class_type": "ImageBatch", "inputs": {"image1": ["18", 0], "image2": ["17", 0]}}
    g["13"]["inputs"]["image"] = ["19", 0]
    msg = _error(_invert, h, h.gs, face_images(2), steps=50, _hidden={"prompt": g, "unique_id": "12"})
    assert "2 images" in msg and "3 images" in msg and "node 21" in msg and "node 13" in msg
    assert "stopped before optimising" in msg
    msg = _error(_invert, h, h.gt, face_images(3), steps=50, _hidden={"prompt": g, "unique_id": "13"})
    assert "node 12" in msg
    # matching batches (or a single reference) pass, and graphs the check cannot read are left alone
    lat, _ = _invert(h, h.gs, face_images(2), _hidden={"prompt": wf.wf_id_retrieval(), "unique_id": "12"})
    assert lat.latent.batch_size == 2
