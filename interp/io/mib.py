"""Edge circuits in MIB's submission format (hannamw/MIB-circuit-track, README "Submitting to the
MIB Leaderboard"; the layout of its example `circuits/ioi-eap-ig.json`, written by
hannamw/EAP-IG `Graph.to_json` and read by `Graph.from_json`):

    {"cfg": {"n_layers": L, "n_heads": H, "parallel_attn_mlp": false, "d_model": D},
     "nodes": {"input": {"in_graph": true}, "a0.h0": {"in_graph": false}, ..., "m0": {...}, ...,
               "logits": {"in_graph": true}},
     "edges": {"input->a0.h0<q>": {"score": -0.0003, "in_graph": false}, ..., "m11->logits": {...}}}

One file per task and model, in a folder named `<task>_<model>` (`mib_folder`), holding the
importance scores (MIB then selects its circuits at each edge fraction itself).

Scores are written in MIB's sign: MIB attributes the loss -m (`run_attribution.py`: the metric
with loss=True) and its signed selection keeps the largest scores, while ours are
m(edge corrupted) - m(clean) (important edges negative): the file holds -score, and reading
negates back, so MIB's signed selection picks the same edges as ours and a round trip is exact.
A node is in the graph when it is an end of a kept edge; the logits always are (as in MIB).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Protocol

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.core.errors import InterpError

__all__ = ["mib_dict", "mib_json", "write_mib_circuit", "read_mib_circuit", "mib_folder"]


class _Graph(Protocol):
    n_layers: int
    n_heads: int
    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str, str], ...]

    def edge_name(self, i: int) -> str: ...


def mib_folder(task: str, model: str) -> str:
    """MIB's folder name for one task and model (`ioi_gpt2`, `arc-easy_llama3`: '_' in the task
    becomes '-', as run_evaluation.py spells it)."""
    return f"{task.replace('_', '-')}_{model.replace('_', '-')}"


def _parallel(graph: _Graph) -> bool:
    """Parallel attention and MLP: no head of a layer feeds that layer's MLP."""
    return not any(r == f"m{s[1:].split('.')[0]}" for s, r, _ in graph.edges if s.startswith("a"))


def _check(graph: _Graph, scores: Tensor, in_graph: Tensor) -> None:
    n = len(graph.edges)
    if scores.shape != (n,) or in_graph.shape != (n,):
        raise InterpError(f"scores {tuple(scores.shape)} and in_graph {tuple(in_graph.shape)} must both have "
                          f"one entry per edge ({n})")


def mib_dict(graph: _Graph, scores: Float[Tensor, " edge"], in_graph: Bool[Tensor, " edge"], *,
             d_model: int) -> dict[str, Any]:
    """The circuit as MIB's JSON object (see the module doc)."""
    _check(graph, scores, in_graph)
    names = [graph.edge_name(i) for i in range(len(graph.edges))]
    kept = in_graph.tolist()
    nodes_in = {"logits"} | {n for (s, r, _), k in zip(graph.edges, kept, strict=True) if k for n in (s, r)}
    cfg = {"n_layers": graph.n_layers, "n_heads": graph.n_heads, "parallel_attn_mlp": _parallel(graph),
           "d_model": int(d_model)}
    return {
        "cfg": cfg,
        "nodes": {n: {"in_graph": n in nodes_in} for n in graph.nodes},
        "edges": {name: {"score": -float(s), "in_graph": bool(k)}
                  for name, s, k in zip(names, scores.tolist(), kept, strict=True)},
    }


def mib_json(graph: _Graph, scores: Float[Tensor, " edge"], in_graph: Bool[Tensor, " edge"], *,
             d_model: int) -> str:
    return json.dumps(mib_dict(graph, scores, in_graph, d_model=d_model))


def write_mib_circuit(path: str | Path, graph: _Graph, scores: Float[Tensor, " edge"],
                      in_graph: Bool[Tensor, " edge"], *, d_model: int) -> Path:
    """Write the circuit to `path` (e.g. `<dir>/<mib_folder(task, model)>/importances.json`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(mib_json(graph, scores, in_graph, d_model=d_model))
    return path


def _load(source: str | Path | dict) -> dict:
    if isinstance(source, dict):
        return source
    try:
        d = json.loads(Path(source).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InterpError(f"cannot read MIB circuit {source}: {e}") from None
    missing = [k for k in ("cfg", "nodes", "edges") if not isinstance(d, dict) or k not in d]
    if missing:
        raise InterpError(f"{source}: not an MIB circuit file: missing key(s) {', '.join(missing)} "
                          "(expected cfg, nodes, edges)")
    return d


def _edge_entry(name: str, entry: Any, where: str) -> tuple[float, bool]:
    if not isinstance(entry, dict) or not isinstance(entry.get("in_graph"), bool):
        raise InterpError(f"{where}: edge {name!r} needs a boolean 'in_graph'")
    score = entry.get("score", math.nan)
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise InterpError(f"{where}: edge {name!r} has a non-numeric score {score!r}")
    return -float(score), entry["in_graph"]


def read_mib_circuit(source: str | Path | dict, graph: _Graph) -> tuple[Float[Tensor, " edge"], Bool[Tensor, " edge"]]:
    """(scores in our sign, in_graph) in the graph's edge order, from an MIB circuit file (or its
    parsed dict). The file must be for the same graph: same layers, heads and edge names.
    Edges without a score (MIB's binary-membership circuits) read as NaN."""
    d = _load(source)
    where = str(source) if not isinstance(source, dict) else "MIB circuit"
    cfg = d["cfg"]
    for key in ("n_layers", "n_heads"):
        if cfg.get(key) != getattr(graph, key):
            raise InterpError(f"{where}: cfg {key} = {cfg.get(key)!r} but the model has {getattr(graph, key)}")
    names = [graph.edge_name(i) for i in range(len(graph.edges))]
    extra = set(d["edges"]) - set(names)
    missing = [n for n in names if n not in d["edges"]]
    if extra or missing:
        raise InterpError(f"{where}: edge names differ from the model's graph ({len(missing)} missing, e.g. "
                          f"{missing[:1]}; {len(extra)} unknown, e.g. {sorted(extra)[:1]})")
    pairs = [_edge_entry(n, d["edges"][n], where) for n in names]
    scores = torch.tensor([s for s, _ in pairs], dtype=torch.float64)
    return scores, torch.tensor([k for _, k in pairs], dtype=torch.bool)
