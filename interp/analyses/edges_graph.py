"""The edge graph of a decoder model (MIB / EAP-IG naming) and the index layout the edge
analyses share.

Nodes: the input embedding (``"input"``: the residual entering block 0, positional embeddings
included where the family adds them), every attention head ``"a{L}.h{H}"`` (its contribution
z_h @ W_O[h] to the residual stream), every MLP ``"m{L}"`` and the logits. Receivers: each
head's query, key and value input (``"a1.h0<q>"``), each MLP's input and the logits' input (the
final residual). An edge (s, r) exists for every sender s upstream of receiver r: the heads of
layer L receive from the input, the heads and MLPs of layers < L; the MLP of layer L also
receives from layer L's heads; the logits from everything. Grouped-query models: a key/value
receiver is one query head's view of its KV group's input.

Index layout (`Layout`): senders in order input, (a{L}.h0..h{H-1}, m{L}) per layer; receivers
in order (a{L}.h0<q>, <k>, <v>, a{L}.h1<q>, ..., m{L}) per layer, then the logits. Every
receiver's senders are a prefix of the sender order, and edges are listed receiver by
receiver, senders in order - so the edges into receiver r are `graph.edges[first[r]:first[r]
+ n_up[r]]`.

Exact or refuse: `edge_graph` raises `UnsupportedError` for families where a receiver's input is
not the sum of its senders' outputs (post-sublayer norms: Gemma 2/3, OLMo 2; a residual
multiplier) or whose block layout the edge runs have not been proven exact on (parallel
attention + MLP, families outside `PROVEN`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from interp.core.capabilities import LanguageModel, Resumable, require
from interp.core.errors import InterpError, UnsupportedError
from interp.core.model import HookedModel

KINDS = ("q", "k", "v")
# Families the edge runs are checked exact on against the raw reference (tests/conformance/
# test_edges.py, TransformerLens backend). Others refuse until proven: parallel blocks (GPT-J,
# GPT-NeoX, Falcon, Phi, Cohere), post-norms (Gemma 2/3, OLMo 2), Granite's residual multiplier,
# and Phi-3, whose grouped-query scores cannot be recomputed from its rotated q/k sites (key
# receivers refuse there).
PROVEN = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "gemma", "olmo", "stablelm",
                    "starcoder2", "gpt2", "gpt_neo"})


@dataclass(frozen=True)
class Layout:
    """Sender / receiver indices of a model with `n_layers` blocks of `n_heads` heads."""

    n_layers: int
    n_heads: int

    @property
    def n_senders(self) -> int:
        return 1 + self.n_layers * (self.n_heads + 1)

    @property
    def per_layer(self) -> int:
        """Receivers per layer: q, k, v of each head, then the MLP."""
        return 3 * self.n_heads + 1

    @property
    def n_receivers(self) -> int:
        return self.n_layers * self.per_layer + 1

    def head_sender(self, layer: int, head: int) -> int:
        return 1 + layer * (self.n_heads + 1) + head

    def mlp_sender(self, layer: int) -> int:
        return 1 + layer * (self.n_heads + 1) + self.n_heads

    def head_receiver(self, layer: int, head: int, kind: str) -> int:
        return layer * self.per_layer + 3 * head + KINDS.index(kind)

    def mlp_receiver(self, layer: int) -> int:
        return layer * self.per_layer + 3 * self.n_heads

    @property
    def logits_receiver(self) -> int:
        return self.n_layers * self.per_layer

    def receiver_layer(self, r: int) -> int:
        """The block a receiver sits in (n_layers for the logits)."""
        return r // self.per_layer

    def n_upstream(self, r: int) -> int:
        """How many senders (a prefix of the sender order) feed receiver r."""
        layer, slot = divmod(r, self.per_layer)
        if layer == self.n_layers:
            return self.n_senders
        first = 1 + layer * (self.n_heads + 1)
        return first + self.n_heads if slot == 3 * self.n_heads else first

    def sender_name(self, s: int) -> str:
        if s == 0:
            return "input"
        layer, slot = divmod(s - 1, self.n_heads + 1)
        return f"m{layer}" if slot == self.n_heads else f"a{layer}.h{slot}"

    def receiver_name(self, r: int) -> tuple[str, str]:
        """(node, input): ("a1.h0", "q"), ("m2", ""), ("logits", "")."""
        layer, slot = divmod(r, self.per_layer)
        if layer == self.n_layers:
            return "logits", ""
        if slot == 3 * self.n_heads:
            return f"m{layer}", ""
        head, k = divmod(slot, 3)
        return f"a{layer}.h{head}", KINDS[k]


@dataclass(frozen=True)
class EdgeGraph:
    n_layers: int
    n_heads: int
    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str, str], ...]  # (sender, receiver, input "q"|"k"|"v"|"")
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def layout(self) -> Layout:
        return Layout(self.n_layers, self.n_heads)

    def edge_name(self, i: int) -> str:
        """MIB's edge key: "input->a1.h0<q>", "a0.h3->m2", "m2->logits"."""
        s, r, kind = self.edges[i]
        return f"{s}->{r}<{kind}>" if kind else f"{s}->{r}"

    def index(self, name: str) -> int:
        if not self._index:
            self._index.update({self.edge_name(i): i for i in range(len(self.edges))})
        if name not in self._index:
            raise InterpError(f"no edge {name!r} in this graph ({len(self)} edges); edge names look like "
                              "'input->a1.h0<q>', 'a0.h3->m2', 'm2->logits'")
        return self._index[name]

    def __len__(self) -> int:
        return len(self.edges)

    def receiver_spans(self) -> list[tuple[int, int]]:
        """(first edge, number of senders) of each receiver, in receiver order."""
        lay, out, first = self.layout, [], 0
        for r in range(lay.n_receivers):
            k = lay.n_upstream(r)
            out.append((first, k))
            first += k
        return out


def build_graph(n_layers: int, n_heads: int) -> EdgeGraph:
    """The graph of a sequential pre-norm decoder of this shape (no model needed)."""
    lay = Layout(n_layers, n_heads)
    senders = [lay.sender_name(s) for s in range(lay.n_senders)]
    edges: list[tuple[str, str, str]] = []
    for r in range(lay.n_receivers):
        node, kind = lay.receiver_name(r)
        edges += [(senders[s], node, kind) for s in range(lay.n_upstream(r))]
    return EdgeGraph(n_layers, n_heads, (*senders, "logits"), tuple(edges))


def check_edges_supported(model: HookedModel) -> None:
    """`UnsupportedError` unless every edge of `model` can be patched exactly."""
    lm = require(model, LanguageModel, "edge attribution")
    require(model, Resumable, "edge attribution")
    facts = getattr(lm, "facts", None)
    arch = lm.spec.architecture
    if facts is None:
        raise UnsupportedError(f"edge attribution on {arch}: the family's block layout is unknown")
    if facts.attn_post_norm or facts.mlp_post_norm:
        raise UnsupportedError(
            f"edge attribution on {arch} ({facts.model_type}): a norm is applied to each attention and MLP output "
            f"before the residual add ({facts.attn_post_norm}), so a receiver's input is not the sum of its "
            "senders' outputs - per-head contributions stop adding up at that post-norm; edges are not exact here")
    if facts.residual_multiplier != 1.0:
        raise UnsupportedError(f"edge attribution on {arch} ({facts.model_type}): outputs are scaled by a residual "
                               f"multiplier ({facts.residual_multiplier:g}) before the add; not proven exact")
    if facts.parallel_block:
        raise UnsupportedError(f"edge attribution on {arch} ({facts.model_type}): parallel attention + MLP blocks "
                               "are not proven exact yet (supported: sequential pre-norm decoders such as Llama)")
    if facts.model_type not in PROVEN:
        raise UnsupportedError(f"edge attribution on {arch} ({facts.model_type}): not proven exact on this family "
                               f"yet; proven: {', '.join(sorted(PROVEN))}")


def edge_graph(model: HookedModel) -> EdgeGraph:
    """The edge graph of `model` (raises `UnsupportedError` where edges would not be exact)."""
    check_edges_supported(model)
    spec = model.spec
    return build_graph(spec.n_layers, spec.n_heads)
