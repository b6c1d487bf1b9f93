"""A hand-made edge graph with MIB's node and edge names (no model), for selection tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ToyGraph:
    n_layers: int
    n_heads: int
    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str, str], ...]

    def edge_name(self, i: int) -> str:
        s, r, inp = self.edges[i]
        return f"{s}->{r}" + (f"<{inp}>" if inp else "")

    def index(self, name: str) -> int:
        return [self.edge_name(i) for i in range(len(self.edges))].index(name)

    def __len__(self) -> int:
        return len(self.edges)


def toy_graph(n_layers: int = 2, n_heads: int = 2) -> ToyGraph:
    """MIB's layout (hannamw/EAP-IG Graph.from_model, parallel_attn_mlp=False): every upstream
    sender feeds each head's q, k, v, then each MLP, then the logits."""
    nodes, edges, upstream = ["input"], [], ["input"]
    for layer in range(n_layers):
        heads = [f"a{layer}.h{h}" for h in range(n_heads)]
        edges += [(s, h, x) for s in upstream for h in heads for x in "qkv"]
        upstream = upstream + heads
        edges += [(s, f"m{layer}", "") for s in upstream]
        upstream = upstream + [f"m{layer}"]
        nodes += heads + [f"m{layer}"]
    edges += [(s, "logits", "") for s in upstream]
    return ToyGraph(n_layers, n_heads, tuple(nodes + ["logits"]), tuple(edges))
