"""Run stores for the app tests, made by real runs on the tiny model.

`app_store`: a tiny-llama IOI run made by the runner (as `interp run` makes it), a live run
saved by `save_live_run`, and two runs holding a hand-written circuit (FORMAT FIXTURES: the
circuit analyses are not written yet; these tables only pin down the documented
`circuit_nodes` / `circuit_edges` format the Circuits page reads).

`broken_store`: a copy of it plus runs broken on purpose (corrupt manifest, old format,
missing table, corrupt table, unloadable model) for the failure-behaviour tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from apptest_helpers import ioi_run_id

IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPT = "When Alice and Bob went to the store, Carl gave a drink to"

TINY_IOI = {
    "name": "tiny_ioi",
    "description": "IOI on tiny-llama (app test fixture)",
    "model": {"name": "tiny-llama", "device": "cpu"},
    "data": {"source": "ioi", "n_prompts": 4, "templates": [0, 1], "position_n_prompts": 2},
    "analyses": {"residual_patching": {"components": ["resid_pre"]}},
}

# FORMAT FIXTURE (hand-written, not produced by an analysis): two small circuits in the
# documented table format, sharing heads (3, 1) and (2, 0) and the edges (2,0)->(3,1).q and
# (3,1)->logits. Heads: A has 4, B has 3, 2 shared -> Jaccard 2/5; edges: A 4, B 3, 2 shared
# -> Jaccard 2/5.
CIRCUIT_A_NODES = pd.DataFrame(
    {"layer": [3, 3, 2, 1], "head": [1, 3, 0, 2], "class": ["name_mover", "name_mover", "s_inhibition", "induction"],
     "score": [0.8, 0.4, 0.3, 0.2]}
)
CIRCUIT_A_EDGES = pd.DataFrame(
    {"sender_layer": [3, 2, 2, 1], "sender_head": [1, 0, 0, 2],
     "receiver_layer": pd.array([None, 3, 3, 2], dtype="Int64"),
     "receiver_head": pd.array([None, 1, 3, 0], dtype="Int64"),
     "receiver_input": ["logits", "q", "q", "k"], "strength": [0.9, 0.5, 0.25, -0.1]}
)
CIRCUIT_B_NODES = pd.DataFrame(
    {"layer": [3, 2, 0], "head": [1, 0, 3], "class": ["name_mover", "s_inhibition", "duplicate_token"],
     "score": [0.7, 0.35, 0.1]}
)
CIRCUIT_B_EDGES = pd.DataFrame(
    {"sender_layer": [3, 2, 0], "sender_head": [1, 0, 3],
     "receiver_layer": pd.array([None, 3, 2], dtype="Int64"), "receiver_head": pd.array([None, 1, 0], dtype="Int64"),
     "receiver_input": ["logits", "q", "v"], "strength": [0.8, 0.45, 0.05]}
)


def _circuit_run(store, name: str, nodes: pd.DataFrame, edges: pd.DataFrame):
    from interp.io.runstore import build_manifest

    run = store.create(name)
    config = {"name": name, "description": "FORMAT FIXTURE: hand-written circuit tables (tests only)"}
    run.write_manifest(build_manifest(config, model_id="tiny-llama", weights_sha256=None, seed=0,
                                      extra={"experiment": "format-fixture", "kind": "circuit_format_fixture"}))
    run.write_table("circuit_nodes", nodes)
    run.write_table("circuit_edges", edges)
    run.mark("complete")
    return run


@pytest.fixture(scope="session")
def tiny_llama(tiny_models):
    return tiny_models["tiny-llama"]


@pytest.fixture(scope="session")
def app_store(tmp_path_factory, tiny_llama) -> Path:
    from interp.io.config import ExperimentConfig
    from interp.io.live import live_patching, save_live_run
    from interp.io.runner import run_experiment
    from interp.io.runstore import RunStore

    root = tmp_path_factory.mktemp("app") / "runs"
    store = RunStore(root)
    _circuit_run(store, "circuit_fixture_b", CIRCUIT_B_NODES, CIRCUIT_B_EDGES)
    _circuit_run(store, "circuit_fixture_a", CIRCUIT_A_NODES, CIRCUIT_A_EDGES)
    live = live_patching(tiny_llama, IOI_CLEAN, IOI_CORRUPT, " Mary", " John")
    save_live_run(live, store, tiny_llama, name="live")
    # the IOI run last, so it is the newest run: the pages open it first
    # ExperimentConfig directly (not parse_config): the test needs only the patching kind
    run_experiment(ExperimentConfig.model_validate(TINY_IOI), runs_dir=root, show_progress=False, log=lambda _m: None,
                   model=tiny_llama)
    return root


def _copy_run(root: Path, src: str, name: str) -> Path:
    dst = root / name
    shutil.copytree(root / src, dst)
    return dst


def _edit_manifest(run_dir: Path, **fields) -> None:
    path = run_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(fields)
    path.write_text(json.dumps(manifest))


@pytest.fixture(scope="session")
def broken_store(tmp_path_factory, app_store) -> Path:
    root = tmp_path_factory.mktemp("broken") / "runs"
    shutil.copytree(app_store, root)
    src = ioi_run_id(root)
    old = "2000-01-01T00:00:00+00:00"  # old dates: the good IOI run stays the newest

    bad = root / "corrupt_manifest-20000101-000000"
    (bad / "tables").mkdir(parents=True)
    (bad / "manifest.json").write_text("{this is not json")

    _edit_manifest(_copy_run(root, src, "old_format-20000101-000000"), format_version=0, created_at=old)

    missing = _copy_run(root, src, "missing_table-20000101-000000")
    (missing / "tables" / "dla.parquet").unlink()
    _edit_manifest(missing, created_at=old)

    corrupt = _copy_run(root, src, "corrupt_table-20000101-000000")
    (corrupt / "tables" / "head_patching.parquet").write_bytes(b"PAR1 definitely not parquet")
    _edit_manifest(corrupt, created_at=old)

    _edit_manifest(_copy_run(root, src, "bad_model-20000101-000000"), model_id="no-such-model", created_at=old)
    return root


@pytest.fixture
def app_env(monkeypatch):
    """Point the app at a run store: `app_env(root)`."""

    def use(root: Path) -> None:
        monkeypatch.setenv("INTERP_RUNS_DIR", str(root))

    return use
