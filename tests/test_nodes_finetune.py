"""HRInv_Finetune called the way ComfyUI calls it (inference mode, EXECUTE_NORMALIZED) over the comfy stubs, with
tiny seeded networks: it returns a G_t that interpolates with its source without a warning, reports progress with
previews, stops on Cancel and leaves its inputs untouched."""

import warnings

import pytest
import torch
from nodes_harness import face_images, random_vgg, run_node, stubbed_pack, tiny_generators


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy")
    with stubbed_pack(base) as ns:
        types = ns.node_module.types
        G_s, _ = tiny_generators()
        ns.gen = types.GeneratorHandle(G_s.requires_grad_(False).eval(), "tiny")
        ns.vgg = types.VGGHandle(random_vgg(), "random")
        ns.hooks = []
        ns.utils.set_progress_bar_global_hook(lambda v, t, p, node_id=None: ns.hooks.append((v, t, p)))
        yield ns
        ns.utils.set_progress_bar_global_hook(None)


def test_finetune_node_returns_a_related_generator(h):
    img = face_images(2, size=80)                                           # not the generator's size
    before = img.clone()
    sd = {k: v.clone() for k, v in h.gen.model.state_dict().items()}
    h.hooks.clear()
    gen_t, shown = run_node(h.nodes["HRInv_Finetune"], generator=h.gen, style_images=img, vgg=h.vgg, steps=3,
                            invert_steps=2, batch_size=1, preserve_color=True, seed=1, mix_rows="")
    G_s, G_t = h.gen.model, gen_t.model
    assert torch.equal(img, before) and all(torch.equal(v, sd[k]) for k, v in G_s.state_dict().items())
    assert G_t is not G_s and G_t.meta["parent_fingerprint"] == G_s.fingerprint() != G_t.fingerprint()
    assert G_t.meta["finetune"]["config"]["preserve_color"] is True and "tiny" in gen_t.label
    assert shown.shape == (2, 64, 64, 3) and 0 <= float(shown.min()) and float(shown.max()) <= 1
    assert not any(p.requires_grad for p in G_t.parameters()) and not any(t.is_inference() for t in G_t.parameters())
    from hrinv.interpolate import lerp_generators

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lerp_generators(G_s, G_t, 0.5)
    assert h.hooks[-1][0] == h.hooks[-1][1] == 5                            # 2 inversion + 3 fine-tuning steps
    assert any(p is not None for _, _, p in h.hooks)


def test_finetune_node_cancel_and_bad_rows(h):
    def hook(v, t, p, node_id=None):
        if v >= 2:
            h.mm.interrupt_current_processing(True)                         # Cancel during fine-tuning

    h.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(h.mm.InterruptProcessingException):
            run_node(h.nodes["HRInv_Finetune"], generator=h.gen, style_images=face_images(1), vgg=h.vgg, steps=50,
                     invert_steps=1, batch_size=1)
    finally:
        h.utils.set_progress_bar_global_hook(lambda v, t, p, node_id=None: h.hooks.append((v, t, p)))
    assert not h.mm.processing_interrupted()
    with pytest.raises(Exception, match="mix_rows"):
        run_node(h.nodes["HRInv_Finetune"], generator=h.gen, style_images=face_images(1), vgg=h.vgg, steps=1,
                 invert_steps=1, mix_rows="40")
