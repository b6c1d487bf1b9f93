"""The execution seam (issue 15): a local executor runs shards in order on its model and returns
results in shard order; `run_shards` counts progress in shards and refuses repeated keys."""

from __future__ import annotations

import pytest

from interp.core.errors import InterpError
from interp.core.execution import LocalExecutor, Shard, run_shards


def _task(model, payload):
    model.append(payload)  # the "model" here records the order shards ran in
    return payload * 10


def test_local_executor_runs_in_order_and_returns_in_shard_order():
    seen: list[int] = []
    got: list[tuple[int, int]] = []
    shards = [Shard(f"s{i}", _task, i) for i in (3, 1, 2)]
    out = LocalExecutor(seen).map(shards, lambda i, r: got.append((i, r)))
    assert out == [30, 10, 20]
    assert seen == [3, 1, 2]
    assert got == [(0, 30), (1, 10), (2, 20)]


class _Reversed:
    """An executor that finishes shards last-first (as a busy cluster may): results must still
    come back in shard order."""

    def map(self, shards, on_result=None):
        results = {}
        for i in reversed(range(len(shards))):
            results[i] = shards[i].fn(None, shards[i].payload)
            if on_result:
                on_result(i, results[i])
        return [results[i] for i in range(len(shards))]


def test_run_shards_order_and_progress():
    progress: list[tuple[int, int]] = []
    out = run_shards(_Reversed(), [Shard(f"k{i}", lambda _m, p: p + 1, i) for i in range(4)],
                     lambda d, t: progress.append((d, t)))
    assert out == [1, 2, 3, 4]
    assert progress == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]


def test_repeated_shard_keys_are_refused():
    with pytest.raises(InterpError, match="shard key 'a' is used twice"):
        run_shards(LocalExecutor(None), [Shard("a", _task, 1), Shard("a", _task, 2)])
