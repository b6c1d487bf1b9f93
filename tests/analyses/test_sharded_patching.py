"""Sharded sweeps (issue 15): head and residual patching split into (prompt batch x layer)
shards on a local executor give bit-identical results to the unsharded sweep, with stable keys."""

from __future__ import annotations

import pytest
import torch

from interp.analyses.patching import patch_heads, patch_residual
from interp.analyses.path_patching import Receiver, path_patching
from interp.analyses.sweep import layer_groups
from interp.core.errors import InterpError
from interp.core.execution import LocalExecutor
from interp.data.ioi import generate_ioi
from interp.data.pairs import tokenize_pairs


class Recording(LocalExecutor):
    def __init__(self, model):
        super().__init__(model)
        self.keys: list[str] = []

    def map(self, shards, on_result=None):
        self.keys += [s.key for s in shards]
        return super().map(shards, on_result)


@pytest.fixture(scope="module")
def pairs(tiny_models):
    model = tiny_models["tiny-llama"]
    return tokenize_pairs(generate_ioi(6, model.tokenizer, seed=0), model.tokenizer)


def test_layer_groups():
    assert layer_groups([0, 0, 1, 1, 2, None]) == [(0, [0, 1]), (1, [2, 3]), (2, [4])]
    assert layer_groups([2, 0, 1, 0], per_shard=2) == [(0, [1, 2, 3]), (2, [0])]
    with pytest.raises(InterpError, match="layers per shard must be >= 1"):
        layer_groups([0], per_shard=0)


def test_head_patching_shards_equal_unsharded(tiny_models, pairs):
    model = tiny_models["tiny-llama"]
    ex = Recording(model)
    plain, sharded = patch_heads(model, pairs), patch_heads(model, pairs, executor=ex)
    assert torch.equal(plain.values, sharded.values)  # bit-identical: same chunks in every sweep
    assert (plain.clean_metric, plain.corrupt_metric) == (sharded.clean_metric, sharded.corrupt_metric)
    L, nb = model.spec.n_layers, len(pairs.by_length().batches)
    assert len(ex.keys) == nb * (L + 1)
    assert ex.keys[: L + 1] == ["head_patching-b0-baseline", *(f"head_patching-b0-L{la}" for la in range(L))]


def test_residual_patching_shards_equal_unsharded(tiny_models, pairs):
    model = tiny_models["tiny-llama"]
    ex = Recording(model)
    plain = patch_residual(model, pairs, components=("resid_pre", "mlp_out"))
    sharded = patch_residual(model, pairs, components=("resid_pre", "mlp_out"), executor=ex)
    assert torch.equal(plain.values, sharded.values)
    assert ex.keys[0] == "residual_patching-b0-baseline" and len(ex.keys) == model.spec.n_layers + 1


@pytest.mark.parametrize("receivers", [[Receiver("logits")], [Receiver("q", 2, 1), Receiver("v", 3, 0)]],
                         ids=["logits", "heads"])
def test_path_patching_shards_equal_unsharded(tiny_models, pairs, receivers):
    model = tiny_models["tiny-llama"]
    ex = Recording(model)
    plain = path_patching(model, pairs, receivers)
    sharded = path_patching(model, pairs, receivers, executor=ex)
    assert torch.equal(plain.values.nan_to_num(-9.0), sharded.values.nan_to_num(-9.0))
    assert plain.clean_metric == sharded.clean_metric
    first = min((r.layer for r in receivers if r.layer is not None), default=model.spec.n_layers)
    assert ex.keys[: first + 1] == ["path_patching-b0-baseline", *(f"path_patching-b0-L{la}" for la in range(first))]
