"""Issue 14, "No limits": every kind's work estimate, the peak-memory estimate against the
available memory (validate and run refuse it naming the field; --force goes ahead), and the
generators' progress from their first item."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import interp.io.limits as limits
from interp.cli import main
from interp.core.errors import ConfigError
from interp.io.config import load_config, parse_config
from interp.io.registry import get_kind

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def _available(monkeypatch, value: int) -> None:
    monkeypatch.setattr(limits, "available_memory", lambda device="auto": (value, "available (test)"))


# --- work: the kinds that had no estimate ---------------------------------------------------------


@pytest.mark.parametrize(("yaml", "setting", "field"), [
    ("ioi_circuit.yaml", "data.n_prompts=100000000", "data.n_prompts"),
    ("colored_objects.yaml", "intervention.n_random=100000000", "intervention.n_random"),
    ("knowledge_conflicts.yaml", "analyses.ph3.n_random=100000000", "analyses.ph3.n_random"),
    ("speech_saliency.yaml", "data.n_utterances=100000000", "data.n_utterances"),
    ("speech_saliency.yaml", "analyses.deletion.step=0.0000001", "analyses.deletion.step"),
    ("vision_heads.yaml", "data.n_shapes=100000000", "data.n_shapes"),
    ("vision_heads.yaml", "analyses.max_new_tokens=100000000", "analyses.max_new_tokens"),
])
def test_a_huge_setting_of_each_kind_is_refused_by_validate_naming_its_field(yaml, setting, field, capsys,
                                                                             no_weights):
    assert main(["validate", str(EXPERIMENTS / yaml), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {field}:") and "forward passes" in err and "--force" in err
    assert len(err.strip().splitlines()) == 1


def _bundled(name: str):
    L, H, d, vocab, _ = limits.KNOWN_SHAPES[name]
    spec = SimpleNamespace(n_layers=L, n_heads=H, d_model=d, d_vocab=vocab, n_mels=80, n_decoder_layers=L)
    return SimpleNamespace(spec=spec, name=name)


@pytest.mark.parametrize("yaml", sorted(p.name for p in EXPERIMENTS.glob("*.yaml") if not p.name.startswith("grid")))
def test_every_shipped_experiment_is_within_the_limits_on_its_own_model(yaml):
    """With the bundled model's real layer and head counts (not the config-only lower bound),
    every shipped YAML stays under the work limit, and its weights and data fit in 8 GB."""
    cfg = load_config(EXPERIMENTS / yaml)
    kind = get_kind(cfg.kind)
    model = _bundled(cfg.model.name)
    forwards = sum(kind.estimate(cfg, model, None).values()) if kind.estimate else 0
    assert forwards <= limits.MAX_FORWARDS
    shape = limits.model_shape(cfg)
    blocks = kind.memory(cfg, shape, None) if kind.memory and shape else {}
    assert shape is not None and shape.weight_bytes + max(blocks.values(), default=0) < 8 * 2**30


def test_every_kind_has_a_work_estimate():
    from interp.io.registry import load_kinds

    assert [k.name for k in load_kinds().values() if k.estimate is None] == []


# --- memory ---------------------------------------------------------------------------------------


def _ioi(tmp_path: Path, **data) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(json.dumps({"name": "x", "model": {"name": "tiny-llama"}, "data": data,
                                "output": {"runs_dir": str(tmp_path / "runs")}}))
    return path


def test_validate_refuses_a_config_over_the_available_memory_naming_the_field(tmp_path, monkeypatch, capsys,
                                                                                no_weights):
    import interp.io.kinds.patching as patching

    weights = limits.model_shape(parse_config({"name": "x", "model": {"name": "tiny-llama"}})).weight_bytes
    _available(monkeypatch, weights + 100 * 1024)  # 100 KB left after the weights
    made = []
    monkeypatch.setattr(patching, "generate_ioi", lambda *a, **k: made.append(1) or (_ for _ in ()).throw(
        AssertionError("prompts were generated before the memory check")))
    assert main(["validate", str(_ioi(tmp_path, n_prompts=200))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data.n_prompts:") and "of memory at its peak" in err and "--force" in err
    assert "100.0 KB" not in err and "available (test)" in err and len(err.strip().splitlines()) == 1
    assert not made


def test_validate_force_goes_ahead_over_the_memory_limit(tmp_path, monkeypatch, capsys, no_weights):
    _available(monkeypatch, 1024)
    assert main(["validate", str(_ioi(tmp_path, n_prompts=4)), "--force"]) == 0
    assert ": ok" in capsys.readouterr().out


def test_a_model_whose_weights_do_not_fit_is_refused_naming_the_model(tmp_path, monkeypatch, capsys, no_weights):
    _available(monkeypatch, 10 * 2**20)  # 10 MB: less than tiny-llama's weights
    assert main(["validate", str(_ioi(tmp_path, n_prompts=4))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model.name:") and "weights for tiny-llama" in err and "smaller model" in err


def test_the_memory_check_compares_the_estimate_with_the_available_figure(monkeypatch):
    cfg = parse_config({"name": "x", "model": {"name": "tiny-llama"}, "data": {"n_prompts": 1000}})
    kind = get_kind("patching")
    need = limits.check_memory(kind, cfg, None, None)
    assert need == limits.model_shape(cfg).weight_bytes + 1000 * limits.PROMPT_BYTES
    _available(monkeypatch, need)
    assert limits.check_memory(kind, cfg, None, None) == need  # equal: fits
    _available(monkeypatch, need - 1)
    with pytest.raises(ConfigError) as info:
        limits.check_memory(kind, cfg, None, None)
    assert info.value.path == "data.n_prompts"
    assert limits.check_memory(kind, cfg, None, None, force=True) == need
    _available(monkeypatch, 0)  # unknown: no refusal
    assert limits.check_memory(kind, cfg, None, None) == need


def test_run_refuses_after_prepare_when_the_real_activations_do_not_fit(tmp_path, monkeypatch):
    """After the data exist the estimate counts the sweep's activations on the loaded model (its
    weights are already out of the available memory); refused before the run directory exists,
    --force runs."""
    from interp.io.runner import run_experiment
    from interp.models import load_model

    model = load_model("tiny-llama", device="cpu")
    cfg = parse_config({"name": "x", "model": {"name": "tiny-llama"}, "data": {"n_prompts": 4, "position_n_prompts": 2},
                        "analyses": {"residual_patching": {"enabled": False}, "dla": {"enabled": False}}})
    kind = get_kind("patching")
    data = kind.prepare(cfg, model, lambda s: None)
    block = limits.check_memory(kind, cfg, model, data) - limits.model_shape(cfg, model).weight_bytes
    assert block > 4 * limits.PROMPT_BYTES  # the activations are counted, not only the prompts
    calls = []

    def available(device="auto"):
        calls.append(device)  # preflight first (weights + prompts fit), then after prepare: too little
        return (2**40 if len(calls) == 1 else block - 1), "available (test)"

    monkeypatch.setattr(limits, "available_memory", available)
    with pytest.raises(ConfigError) as info:
        run_experiment(cfg, runs_dir=tmp_path / "runs", show_progress=False, log=lambda s: None, model=model)
    assert info.value.path == "data.n_prompts" and "loaded" in str(info.value)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    run = run_experiment(cfg, runs_dir=tmp_path / "runs", show_progress=False, log=lambda s: None, model=model,
                         force=True)
    assert run.read_manifest()["status"] == "complete"


def test_model_shape_without_weights():
    cfg = parse_config({"name": "x", "model": {"name": "smollm2-135m", "dtype": "bfloat16"}})
    shape = limits.model_shape(cfg)
    assert (shape.n_layers, shape.n_heads, shape.d_model, shape.dtype_bytes) == (30, 9, 576, 2)
    assert shape.weight_bytes == 134_515_008 * 2


def test_model_shape_of_a_local_directory(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 64, "num_hidden_layers": 2,
                                                      "num_attention_heads": 4, "vocab_size": 100,
                                                      "intermediate_size": 128, "tie_word_embeddings": False}))
    cfg = SimpleNamespace(model=SimpleNamespace(name=str(tmp_path), dtype="float32"))
    shape = limits.model_shape(cfg)
    assert shape.params == 100 * 64 * 2 + 2 * (4 * 64 * 64 + 3 * 64 * 128)


def test_the_loaded_model_counts_its_own_parameters():
    from interp.models import load_model

    model = load_model("tiny-llama", device="cpu")
    cfg = parse_config({"name": "x", "model": {"name": "tiny-llama"}})
    shape = limits.model_shape(cfg, model)
    assert shape.params == sum(p.numel() for p in model.hf_model.parameters())
    assert shape.weight_bytes <= limits.model_shape(cfg).weight_bytes  # the name-only figure bounds it


def test_available_memory_reads_meminfo(monkeypatch):
    value, where = limits.available_memory("cpu")
    assert value > 0 and "MemAvailable" in where


# --- progress from the start ----------------------------------------------------------------------


def _record():
    calls: list[tuple[int, int]] = []
    return calls, lambda done, total: calls.append((done, total))


def _assert_progress(calls, total):
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) <= total + 3


def test_generators_report_progress_from_their_first_item(tokenizer):
    from interp.data.colored_objects import generate_colored_objects
    from interp.data.ioi import generate_ioi
    from interp.data.mcq import generate_mcq
    from interp.data.shapes import generate_prior_probe, generate_shapes

    for make, n in [(lambda p: generate_ioi(250, tokenizer, progress=p), 250),
                    (lambda p: generate_colored_objects(30, tokenizer, progress=p), 30),
                    (lambda p: generate_mcq(12, tokenizer, progress=p), 12),
                    (lambda p: generate_shapes(5, progress=p, image_size=28), 5),
                    (lambda p: generate_prior_probe(5, progress=p, image_size=28), 5)]:
        calls, fn = _record()
        make(fn)
        _assert_progress(calls, n)
    calls, fn = _record()
    generate_ioi(250, tokenizer, progress=fn)
    assert len(calls) <= 103  # about every 1%: a bar's cost stays small on a million prompts


def test_needle_trials_and_conflicts_report_progress(tokenizer):
    from interp.data.knowledge import load_facts, make_conflicts
    from interp.data.needles import build_trials, load_needles

    needles = load_needles()[:2]
    calls, fn = _record()
    build_trials(tokenizer, needles, [64, 96], [0.5], progress=fn)
    _assert_progress(calls, 4)
    table = load_facts()
    facts = [f for f in table.facts if f.relation == table.facts[0].relation][:5]
    calls, fn = _record()
    make_conflicts(facts, table, tokenizer, progress=fn)
    _assert_progress(calls, len(facts))


def test_the_runner_hands_prepare_a_bar_before_the_run_exists(tmp_path, monkeypatch):
    """`prepare` gets `bars.new`: the IOI generator's bar opens before any analysis runs."""
    from interp.io.runner import ProgressBars, run_experiment
    from interp.models import load_model

    opened = []
    real_new = ProgressBars.new
    monkeypatch.setattr(ProgressBars, "new", lambda self, desc: opened.append(desc) or real_new(self, desc))
    cfg = parse_config({"name": "x", "model": {"name": "tiny-llama"}, "data": {"n_prompts": 2, "position_n_prompts": 2},
                        "analyses": {"head_patching": {"enabled": False}, "residual_patching": {"enabled": False},
                                     "dla": {"enabled": False}}})
    run_experiment(cfg, runs_dir=tmp_path / "runs", show_progress=False, log=lambda s: None,
                   model=load_model("tiny-llama", device="cpu"))
    assert opened[:2] == ["IOI prompts", "IOI prompts (one template)"]


def test_a_kind_whose_prepare_takes_no_progress_still_works():
    from interp.io.registry import Kind

    got = []
    kind = Kind("k", object, lambda cfg, model, log: got.append("plain") or 1, ())  # type: ignore[arg-type]
    assert kind.prepare_data(None, None, print, progress=lambda desc: None) == 1 and got == ["plain"]


def test_a_long_retrieval_context_is_refused_for_memory_naming_data_lengths(capsys, monkeypatch, no_weights):
    """A 1M-token needle context: few forward passes (chunks), but a key/value cache of every
    layer far over 16 GB."""
    _available(monkeypatch, 16 * 2**30)
    assert main(["validate", str(EXPERIMENTS / "retrieval_heads.yaml"), "--set", "data.lengths=[1000000]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data.lengths:") and "of memory at its peak" in err and "16.0 GB" in err


def test_prefill_bytes_counts_the_cache_of_every_layer():
    shape = limits.ModelShape(n_layers=2, n_heads=3, d_model=8, d_vocab=10, params=0, dtype_bytes=4)
    cache = 2 * 2 * 100 * 8 * 4
    assert limits.prefill_bytes(shape, 100, 10) == cache + 2 * 3 * 10 * 100 * 4 + limits.forward_bytes(shape, 1, 10)
    assert limits.forward_bytes(shape, 2, 10) == 4 * 2 * (10 * (12 * 8 + 2 * 3 * 10) + 10)
