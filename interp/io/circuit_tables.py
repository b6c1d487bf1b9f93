"""Circuits as run tables: the format circuit analyses write, reading it back, comparing two.

A run holding a circuit has two tidy tables:

    circuit_nodes  layer, head, class, score
                   one row per head in the circuit; `class` is its role ("name mover",
                   "s-inhibition", ...), `score` its importance (e.g. its patching effect)
    circuit_edges  sender_layer, sender_head, receiver_layer, receiver_head, receiver_input,
                   strength
                   one row per path-patching edge: the sender head's effect through the
                   receiver head's `receiver_input` ("q", "k", "v"), or straight into the
                   output (`receiver_input` "logits", receiver layer/head empty); `strength`
                   may be negative

Comparing two circuits: heads in both, only in one, Jaccard index |A & B| / |A | B| of the
head sets, and of the edge sets (edges of |strength| >= threshold, keyed by sender, receiver
and input).

    circuit = read_circuit(store.open("ioi_circuit-20250101-120000"))
    strong = circuit.filter(threshold=0.05)
    compare_circuits(circuit, other).node_jaccard
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from interp.io.runstore import FORMAT_VERSION, Run, RunStore, RunStoreError

__all__ = [
    "NODES_TABLE",
    "EDGES_TABLE",
    "NODE_COLUMNS",
    "EDGE_COLUMNS",
    "Circuit",
    "CircuitComparison",
    "read_circuit",
    "find_circuits",
    "compare_circuits",
    "extent",
]

NODES_TABLE = "circuit_nodes"
EDGES_TABLE = "circuit_edges"
NODE_COLUMNS = ("layer", "head", "class", "score")
EDGE_COLUMNS = (
    "sender_layer", "sender_head", "receiver_layer", "receiver_head", "receiver_input", "strength",
)


@dataclass(frozen=True)
class Circuit:
    """Nodes and edges of one run's circuit (`run_id`, `model` from its manifest)."""

    run_id: str
    model: str | None
    nodes: pd.DataFrame
    edges: pd.DataFrame

    @property
    def label(self) -> str:
        return f"{self.run_id} ({self.model or 'unknown model'})"

    @property
    def heads(self) -> set[tuple[int, int]]:
        return set(self.nodes[["layer", "head"]].itertuples(index=False, name=None))

    def edge_keys(self) -> set[tuple]:
        """(sender layer, sender head, receiver layer, receiver head, input); -1 for the logits."""
        e = self.edges
        return {
            (int(sl), int(sh), -1 if pd.isna(rl) else int(rl), -1 if pd.isna(rh) else int(rh), str(ri))
            for sl, sh, rl, rh, ri in zip(e["sender_layer"], e["sender_head"], e["receiver_layer"],
                                          e["receiver_head"], e["receiver_input"], strict=True)
        }

    @property
    def max_strength(self) -> float:
        return float(self.edges["strength"].abs().max()) if len(self.edges) else 0.0

    def filter(self, threshold: float = 0.0, drop_isolated: bool = False) -> Circuit:
        """Edges with |strength| >= threshold; with `drop_isolated`, only heads on such edges."""
        edges = self.edges[self.edges["strength"].abs() >= threshold].reset_index(drop=True)
        nodes = self.nodes
        if drop_isolated:
            on_edges = set(edges[["sender_layer", "sender_head"]].itertuples(index=False, name=None))
            on_edges |= set(edges[["receiver_layer", "receiver_head"]].dropna().astype("int64")
                            .itertuples(index=False, name=None))
            keep = [(lay, h) in on_edges for lay, h in nodes[["layer", "head"]].itertuples(index=False, name=None)]
            nodes = nodes[keep].reset_index(drop=True)
        return Circuit(self.run_id, self.model, nodes, edges)


def _check(df: pd.DataFrame, columns: tuple[str, ...], table: str, run_id: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise RunStoreError(
            f"run {run_id}: table {table!r} lacks column(s) {', '.join(missing)}; "
            f"the circuit format needs {', '.join(columns)}"
        )
    out = df[list(columns)].copy()
    for c in columns:
        if c in ("class", "receiver_input"):
            out[c] = out[c].astype(str)
        elif c in ("score", "strength"):
            out[c] = pd.to_numeric(out[c]).astype("float64")
        elif c in ("receiver_layer", "receiver_head"):  # empty for edges into the logits
            out[c] = pd.to_numeric(out[c]).astype("Int64")
        else:
            out[c] = pd.to_numeric(out[c]).astype("int64")
    return out


def read_circuit(run: Run) -> Circuit:
    """The circuit in `run`'s tables; `RunStoreError` if they are absent or malformed."""
    tables = run.tables()
    if NODES_TABLE not in tables:
        raise RunStoreError(f"run {run.run_id} has no {NODES_TABLE!r} table")
    try:
        nodes = run.read_table(NODES_TABLE)
        edges = run.read_table(EDGES_TABLE) if EDGES_TABLE in tables else pd.DataFrame(columns=list(EDGE_COLUMNS))
    except RunStoreError:
        raise
    except Exception as exc:  # corrupt parquet: arrow raises several types
        raise RunStoreError(f"run {run.run_id}: circuit tables unreadable ({type(exc).__name__}: {exc})") from None
    try:
        nodes = _check(nodes, NODE_COLUMNS, NODES_TABLE, run.run_id)
        edges = _check(edges, EDGE_COLUMNS, EDGES_TABLE, run.run_id)
    except (TypeError, ValueError) as exc:  # e.g. text in a layer column
        raise RunStoreError(f"run {run.run_id}: circuit tables malformed ({exc})") from None
    try:
        model = run.read_manifest().get("model_id")
    except RunStoreError:
        model = None
    return Circuit(run.run_id, model if isinstance(model, str) else None, nodes, edges)


def find_circuits(store: RunStore) -> tuple[list[Circuit], list[str]]:
    """Every readable circuit in the store (newest run first) and notes on the ones skipped."""
    circuits, notes = [], []
    for row in store.list_runs().itertuples():
        run = Run(row.path)
        if NODES_TABLE not in run.tables():
            continue
        try:
            version = run.read_manifest().get("format_version")
            if version != FORMAT_VERSION:
                raise RunStoreError(f"run {row.run_id} has format_version {version!r}, not {FORMAT_VERSION}")
            circuits.append(read_circuit(run))
        except RunStoreError as exc:
            notes.append(str(exc))
    return circuits, notes


@dataclass(frozen=True)
class CircuitComparison:
    shared: list[tuple[int, int]]
    only_a: list[tuple[int, int]]
    only_b: list[tuple[int, int]]
    node_jaccard: float
    shared_edges: int
    edge_jaccard: float

    def to_frame(self) -> pd.DataFrame:
        """One row per head of either circuit: layer, head, in (both | a | b)."""
        rows = [(lay, h, where) for where, heads in (("both", self.shared), ("a", self.only_a), ("b", self.only_b))
                for lay, h in heads]
        return pd.DataFrame(rows, columns=["layer", "head", "in"])


def extent(*circuits: Circuit) -> tuple[int, int]:
    """(layers, heads) spanned by the heads of all `circuits`, for drawing them on one grid."""
    layers = heads = 0
    for c in circuits:
        for lay, h in c.heads | {k[:2] for k in c.edge_keys()}:
            layers, heads = max(layers, lay + 1), max(heads, h + 1)
    return layers, heads


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def compare_circuits(a: Circuit, b: Circuit, threshold: float = 0.0) -> CircuitComparison:
    """Head and edge overlap of two circuits (edges of |strength| >= threshold)."""
    ha, hb = a.heads, b.heads
    ea, eb = a.filter(threshold).edge_keys(), b.filter(threshold).edge_keys()
    return CircuitComparison(
        shared=sorted(ha & hb), only_a=sorted(ha - hb), only_b=sorted(hb - ha),
        node_jaccard=_jaccard(ha, hb), shared_edges=len(ea & eb), edge_jaccard=_jaccard(ea, eb),
    )
