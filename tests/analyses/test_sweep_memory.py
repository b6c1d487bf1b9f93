"""Batch size `auto` and out-of-memory retries in the sweep engine: a chunk that runs out of
memory is halved and retried (logged once), giving the same values; `auto` resolves from the
free memory; bad batch sizes are one line."""

from __future__ import annotations

import logging

import pytest
import torch

from interp.analyses.sweep import check_batch_size, resume, sweep
from interp.core.errors import ConfigError, InterpError
from interp.core.metrics import Targets, get_metric, readout
from interp.data.ioi import generate_ioi
from interp.data.pairs import tokenize_pairs
from interp.models.memory import MAX_AUTO, auto_batch_size, free_bytes, variant_bytes


@pytest.fixture(scope="module")
def setup(tokenizer, tiny_models):
    model = tiny_models["tiny-llama"]
    pb = tokenize_pairs(generate_ioi(4, tokenizer, seed=5), tokenizer).largest_batch()
    inputs = model.capture_block_inputs(pb.clean.to(model.device))
    rd = readout(get_metric("logit_diff"), Targets(pb.answer_ids, pb.distractor_ids).to(model.device))
    return model, pb, inputs, rd


def _run_chunk(model, inputs, oom_over=None, error=torch.cuda.OutOfMemoryError, sizes=None):
    """Variant i scales the residual entering its layer by 1 + i/10 (distinct values per variant);
    chunks of more than `oom_over` variants raise `error` before computing."""

    def run_chunk(layer, start, chunk):
        if sizes is not None:
            sizes.append(len(chunk))
        if oom_over is not None and len(chunk) > oom_over:
            raise error("CUDA out of memory. Tried to allocate 2.00 GiB")
        base = inputs.resid_pre[layer][:, start:]
        x = torch.cat([base * (1 + i / 10) for i in chunk])
        return resume(model, inputs, layer, len(chunk), [], start=start, x=x)

    return run_chunk


KEYS = [(layer, 0) for layer in range(4) for _ in range(5)]


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError, RuntimeError])
def test_out_of_memory_halves_and_retries(setup, caplog, error):
    model, pb, inputs, rd = setup
    n = len(pb)
    want = sweep(model, n, KEYS, _run_chunk(model, inputs), rd, batch_size=1)
    sizes: list[int] = []
    with caplog.at_level(logging.WARNING, logger="interp.analyses.sweep"):
        got = sweep(model, n, KEYS, _run_chunk(model, inputs, oom_over=1, error=error, sizes=sizes), rd, batch_size=5)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    assert sizes[:3] == [5, 2, 1] and set(sizes[3:]) == {1}  # halved twice, then kept
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["out of memory with 5 variants per forward; retrying with 2 (and halving again if needed)"]


def test_other_errors_and_one_variant_oom_are_raised(setup):
    model, pb, inputs, rd = setup
    with pytest.raises(RuntimeError, match="shape mismatch"):
        shape_error = _run_chunk(model, inputs, oom_over=0, error=lambda _m: RuntimeError("shape mismatch"))
        sweep(model, len(pb), KEYS, shape_error, rd, batch_size=4)
    with pytest.raises(torch.cuda.OutOfMemoryError):  # nothing smaller to try
        sweep(model, len(pb), KEYS, _run_chunk(model, inputs, oom_over=0), rd, batch_size=4)


def test_auto_resolves_to_a_sane_int_on_cpu(setup, caplog):
    model, pb, inputs, rd = setup
    size = auto_batch_size(model, rows=len(pb), positions=pb.clean.shape[1])
    assert isinstance(size, int) and 1 <= size <= MAX_AUTO
    assert free_bytes("cpu") > 0
    assert variant_bytes(model.spec, 8, 20, torch.float32) == 2 * variant_bytes(model.spec, 4, 20, torch.float32)
    sizes: list[int] = []
    with caplog.at_level(logging.INFO, logger="interp.analyses.sweep"):
        got = sweep(model, len(pb), KEYS, _run_chunk(model, inputs, sizes=sizes), rd, batch_size="auto")
    want = sweep(model, len(pb), KEYS, _run_chunk(model, inputs), rd, batch_size=1)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    assert sizes[0] == 1 and max(sizes) == 5  # one variant first, then whole groups (5 per key here)
    assert any("batch_size auto:" in r.getMessage() for r in caplog.records)


def test_auto_shrinks_with_little_memory(setup, monkeypatch):
    model = setup[0]
    monkeypatch.setattr("interp.models.memory._mem_available", lambda: 10 * variant_bytes(model.spec, 4, 12,
                                                                                         torch.float32))
    assert auto_batch_size(model, rows=4, positions=12) == 5  # half of ten variants' worth


@pytest.mark.parametrize("bad", ["big", 0, -3, 2.5, True])
def test_bad_batch_size_is_one_line(bad):
    with pytest.raises(InterpError, match=r"batch_size must be an integer >= 1 or 'auto', got ") as err:
        check_batch_size(bad)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", ["big", 0])
def test_bad_batch_size_in_a_config_names_the_field(bad):
    from interp.io.config import parse_config

    raw = {"kind": "patching", "name": "x", "model": {"name": "tiny-llama"},
           "analyses": {"head_patching": {"batch_size": bad}}}
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert err.value.path == "analyses.head_patching.batch_size"
    assert "an integer >= 1 or 'auto'" in str(err.value) and "\n" not in str(err.value)
    ok = parse_config({**raw, "analyses": {"head_patching": {"batch_size": "auto"}}})
    assert ok.analyses.head_patching.batch_size == "auto"
