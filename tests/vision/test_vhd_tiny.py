"""VHD, T-VHD and VHR on a tiny random LLaVA, checked against an independent computation: the raw
HF `LlavaForConditionalGeneration` run on input ids + pixel values (HF merges the image itself),
full forwards without a KV cache, and plain torch pre-hooks on W_O."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp.analyses.vhd import head_divergence, paper_layers, reinforce_heads, token_vhd
from interp.core.sites import Site


class RawLlava:
    """The reference: per-head W_O inputs at the last position, optionally scaling heads."""

    def __init__(self, model):
        self.m, self.hf = model, model.hf_model
        self.L, self.H, self.dh = model.spec.n_layers, model.spec.n_heads, model.spec.d_head

    @torch.no_grad()
    def heads(self, ids, pixel_values=None, scale=None):
        """(last-position logits, {layer: (head, d_head) W_O input at the last position})."""
        store, handles = {}, []
        for layer in range(self.L):
            proj = self.hf.model.language_model.layers[layer].self_attn.o_proj

            def pre(_m, args, layer=layer):
                x = args[0]
                if scale is not None and layer in scale:
                    x = x.clone().view(*x.shape[:-1], self.H, self.dh)
                    x[..., scale[layer], :] *= scale["alpha"]
                    x = x.flatten(-2)
                store[layer] = x[0, -1].view(self.H, self.dh).clone()
                return (x,)

            handles.append(proj.register_forward_pre_hook(pre))
        try:
            kw = {"pixel_values": pixel_values} if pixel_values is not None else {}
            logits = self.hf(input_ids=torch.tensor([ids]), **kw).logits[0, -1]
        finally:
            for h in handles:
                h.remove()
        return logits, store

    def vhd(self, q, image, generated, scale=None):
        pv = self.m.pixel_values([image])
        _, a = self.heads(self.m.prompt(q) + generated, pv, scale)
        _, b = self.heads(self.m.prompt(q, with_image=False) + generated, None, scale)
        return np.stack([(a[lay] - b[lay]).norm(dim=-1).numpy() for lay in range(self.L)]), \
            np.stack([b[lay].norm(dim=-1).numpy() for lay in range(self.L)])

    def greedy(self, q, image, n, scale=None):
        ids, pv = self.m.prompt(q), self.m.pixel_values([image])
        out = []
        for _ in range(n):
            logits, _ = self.heads(ids + out, pv, scale)
            t = int(logits.argmax())
            if t in self.m.end_ids:
                break
            out.append(t)
        return out


def test_vhd_matches_raw_hf_at_every_step(tiny_llava, tiny_items):
    ref = RawLlava(tiny_llava)
    items = tiny_items[:4]
    res = head_divergence(tiny_llava, [it.image for it in items], [it.question for it in items],
                          max_new_tokens=4, batch_size=3)
    for i, it in enumerate(items):
        assert res.token_ids[i] == ref.greedy(it.question, it.image, 4)
        assert res.vhd[i].shape == (len(res.token_ids[i]), 2, 4)
        for step in range(len(res.token_ids[i])):
            vhd, norm = ref.vhd(it.question, it.image, res.token_ids[i][:step])
            np.testing.assert_allclose(res.vhd[i][step], vhd, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(res.text_norm[i][step], norm, rtol=1e-4, atol=1e-5)
    frame = res.to_frame()
    assert set(frame.columns) >= {"item", "step", "layer", "head", "vhd"}
    assert len(frame) == sum(v.size for v in res.vhd)


def test_token_vhd_sums_top_k_per_layer():
    v = np.array([[[1.0, 5.0, 2.0], [0.5, 0.1, 3.0]]])  # (step, layer, head)
    assert token_vhd(v, 1).tolist() == [8.0]
    assert token_vhd(v, 2).tolist() == [5.0 + 2.0 + 3.0 + 0.5]
    assert token_vhd(v, 9).tolist() == [v.sum()]


def _reference_vhr(ref: RawLlava, q, image, layers, alpha):
    """VHR's selection done the slow way: one pair of full forwards per selected layer."""
    scale = {"alpha": alpha}
    for layer in layers:
        d, t = ref.vhd(q, image, [], scale)
        d, t = d[layer].copy(), t[layer]
        d[(d > d.mean() + d.std(ddof=1)) & (t > t.mean() + t.std(ddof=1))] = 0.0
        picked = [h for h in range(ref.H) if d[h] > np.sort(d)[(len(d) - 1) // 2]]
        scale[layer] = picked
    return scale


def test_vhr_selection_and_generation_match_reference(tiny_llava, tiny_items):
    ref = RawLlava(tiny_llava)
    items = tiny_items[:3]
    vhr = reinforce_heads(tiny_llava, [it.image for it in items], [it.question for it in items], alpha=3.0,
                          layers=[0, 1], max_new_tokens=4, batch_size=2)
    for i, it in enumerate(items):
        scale = _reference_vhr(ref, it.question, it.image, [0, 1], 3.0)
        assert vhr.selected[i] == {0: scale[0], 1: scale[1]}
        assert vhr.token_ids[i] == ref.greedy(it.question, it.image, 4, scale)
    assert all(0 < n <= 4 for c in vhr.counts() for n in c.values())


def test_random_control_matches_counts_and_reference(tiny_llava, tiny_items):
    ref = RawLlava(tiny_llava)
    items = tiny_items[:3]
    imgs, qs = [it.image for it in items], [it.question for it in items]
    vhr = reinforce_heads(tiny_llava, imgs, qs, alpha=3.0, layers=[0, 1], max_new_tokens=3)
    ctl = reinforce_heads(tiny_llava, imgs, qs, alpha=3.0, layers=[0, 1], control_counts=vhr.counts(),
                          seed=5, max_new_tokens=3)
    assert ctl.condition == "random" and ctl.counts() == vhr.counts()
    again = reinforce_heads(tiny_llava, imgs, qs, alpha=3.0, layers=[0, 1], control_counts=vhr.counts(),
                            seed=5, max_new_tokens=3)
    assert again.selected == ctl.selected  # seeded
    for i, it in enumerate(items):
        scale = {"alpha": 3.0, **ctl.selected[i]}
        assert ctl.token_ids[i] == ref.greedy(it.question, it.image, 3, scale)


def test_vhr_with_alpha_one_changes_nothing(tiny_llava, tiny_items):
    imgs, qs = [it.image for it in tiny_items], [it.question for it in tiny_items]
    base = head_divergence(tiny_llava, imgs, qs, max_new_tokens=5)
    vhr = reinforce_heads(tiny_llava, imgs, qs, alpha=1.0, layers=[0, 1], max_new_tokens=5)
    assert vhr.token_ids == base.token_ids
    assert [g.token_ids for g in tiny_llava.generate(imgs, qs, max_new_tokens=5)] == base.token_ids
    assert any(vhr.selected[i][0] for i in range(len(qs)))  # heads were selected, scaled by 1
    ref = RawLlava(tiny_llava)
    it = tiny_items[0]
    plain, _ = ref.heads(tiny_llava.prompt(it.question), tiny_llava.pixel_values([it.image]))
    scaled, _ = ref.heads(tiny_llava.prompt(it.question), tiny_llava.pixel_values([it.image]),
                          {"alpha": 1.0, 0: [0, 1, 2, 3], 1: [0, 1, 2, 3]})
    assert torch.equal(plain, scaled)


def test_hooks_are_removed_after_an_error(tiny_llava, tiny_items):
    def boom(z, site):
        raise RuntimeError("boom")

    L = tiny_llava.spec.n_layers
    with pytest.raises(RuntimeError), tiny_llava.hooks([(Site("z", layer=layer), boom) for layer in range(L)]):
        tiny_llava.generate([tiny_items[0].image], [tiny_items[0].question], max_new_tokens=1)
    for layer in range(L):
        assert not tiny_llava.attn_out_proj(layer)._forward_pre_hooks


def test_llava_sites_and_hooks(tiny_llava, tiny_items):
    """LLaVA's sites are ordinary `Site`s: z in the language model, the vision tower's residual."""
    from interp.core.errors import SiteError

    pv = tiny_llava.pixel_values([tiny_items[0].image])
    seen = {}
    with tiny_llava.hooks([(Site("resid_post", layer=1, stack="vision"), lambda t, s: seen.setdefault(s, t))]):
        tiny_llava.image_features(pv)
    assert seen[Site("resid_post", layer=1, stack="vision")].shape[-1] == 32
    with pytest.raises(SiteError, match="layer 2 out of range 0..1"):
        tiny_llava.validate_site(Site("z", layer=2))
    with pytest.raises(SiteError, match="offers no 'resid_pre' in its decoder stack"):
        tiny_llava.validate_site(Site("resid_pre", layer=0))
    with pytest.raises(SiteError, match="has no encoder stack"):
        tiny_llava.validate_site(Site("resid_pre", layer=0, stack="encoder"))


def test_paper_layers_and_bad_layers(tiny_llava, tiny_items):
    assert paper_layers(32) == [1, *range(18, 32)]
    assert paper_layers(30) == [1, *range(16, 30)]
    assert paper_layers(2) == [0, 1]
    with pytest.raises(ValueError, match="layers 0..1"):
        reinforce_heads(tiny_llava, [tiny_items[0].image], [tiny_items[0].question], layers=[5])


def test_vision_model_is_a_hooked_model_with_image_input(tiny_llava):
    from interp.core.capabilities import Generates, ImageInput, Resumable, has
    from interp.core.model import HookedModel

    assert isinstance(tiny_llava, HookedModel) and has(tiny_llava, ImageInput) and has(tiny_llava, Generates)
    assert not has(tiny_llava, Resumable)
