"""Raw reference for exact edge patching: plain torch hooks on a fresh Hugging Face model (via
`reference.RawModel`), no interp code.

Senders: "input" (the first decoder layer's input), a head's contribution (its slice of the
output projection's input times its slice of the weight), an MLP's output. Swapping sender s's
contribution into one receiver's input, on the clean run:

- logits: a pre-hook on the final norm adds (a_s,corrupt - a_s,clean) to its input;
- MLP of layer L: a pre-hook on that layer's MLP norm (its only reader in these pre-norm
  families: the residual is kept before the norm) adds the difference;
- a head's q, k or v at layer L: pass 1 adds the difference in a pre-hook on layer L's attention
  norm (only the attention reads it) and records the q, k, v the family's attention function
  receives; pass 2 is the clean run with only that head's query (or that query head's view of
  its KV group's key / value) replaced inside the attention function (`RawModel.hooked(qkv=)`).
"""

from __future__ import annotations

import torch

from .reference import RawModel, _expand, _get

# per family: (attention input norm, MLP input norm), paths from a decoder layer
_HF = ("input_layernorm", "post_attention_layernorm")
INPUT_NORMS = {
    **{f: _HF for f in ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "gemma", "phi3", "olmo",
                        "stablelm", "starcoder2")},
    "gpt2": ("ln_1", "ln_2"),
    "gpt_neo": ("ln_1", "ln_2"),
}


@torch.no_grad()
def senders(raw: RawModel, tokens: torch.Tensor) -> dict[tuple, torch.Tensor]:
    c = raw.capture(tokens)
    out: dict[tuple, torch.Tensor] = {("input",): c["resid_pre"][0].float()}
    for layer in range(raw.L):
        for h in range(raw.H):
            out[("head", layer, h)] = c["z"][layer][:, :, raw.head_slice(h)].float() @ raw.W_O(layer, h)
        out[("mlp", layer)] = c["mlp_out"][layer].float()
    return out


def _add_pre(module, delta):
    def pre(_m, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        new = x + delta.to(x.dtype)
        return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})

    return module.register_forward_pre_hook(pre, with_kwargs=True)


@torch.no_grad()
def edge_patch(raw: RawModel, clean, corrupt, answer, distractor, sender: tuple, receiver: tuple,
               clean_senders=None, corrupt_senders=None) -> torch.Tensor:
    """Per-prompt metric with one edge swapped. receiver: ("logits",), ("mlp", L) or (kind, L, h)."""
    cs = clean_senders if clean_senders is not None else senders(raw, clean)
    xs = corrupt_senders if corrupt_senders is not None else senders(raw, corrupt)
    delta = xs[sender] - cs[sender]
    attn_norm, mlp_norm = INPUT_NORMS[raw.family]
    if receiver[0] == "logits":
        h = _add_pre(raw.final_norm, delta)
        try:
            return raw.ld(clean, answer, distractor)
        finally:
            h.remove()
    if receiver[0] == "mlp":
        h = _add_pre(_get(raw.layers[receiver[1]], mlp_norm), delta)
        try:
            return raw.ld(clean, answer, distractor)
        finally:
            h.remove()
    kind, layer, head = receiver
    recorded: dict[int, tuple] = {}

    def record(i, q, k, v):
        recorded[i] = (q.clone(), k.clone(), v.clone())
        return q, k, v

    h = _add_pre(_get(raw.layers[layer], attn_norm), delta)
    try:
        raw.ld(clean, answer, distractor, qkv=record)
    finally:
        h.remove()

    def swap(i, q, k, v):
        if i != layer:
            return q, k, v
        q_rec, k_rec, v_rec = recorded[i]
        group = raw.H // k.shape[1]
        q, k, v = q.clone(), _expand(k, raw.H).clone(), _expand(v, raw.H).clone()
        if kind == "q":
            q[:, head] = q_rec[:, head]
        elif kind == "k":
            k[:, head] = k_rec[:, head // group]
        else:
            v[:, head] = v_rec[:, head // group]
        return q, k, v

    return raw.ld(clean, answer, distractor, qkv=swap)
