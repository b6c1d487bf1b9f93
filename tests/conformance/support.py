"""Helpers shared by the conformance tests: the family list, seeded prompt pairs, the
refusal rule and the comparison with a reference."""

from __future__ import annotations

import re

import pytest
import torch

from interp.models.zoo import FAMILY_CONFIGS

FAMILIES: list[str] = list(FAMILY_CONFIGS)
N_PROMPTS, SEQ_LEN = 3, 12  # SEQ_LEN > the zoo's sliding window (4)


def _names_family_or_site(message: str) -> bool:
    low = message.lower()
    for fam in FAMILIES:
        for name in (fam, fam.replace("_", "-"), f"tiny-{fam.replace('_', '-')}", fam.replace("_", "")):
            if re.search(rf"(?<![a-z0-9]){re.escape(name)}(?![a-z0-9_])", low):
                return True
    if re.search(r"\bsite\b", low) or re.search(r"\b[a-z_]+\.l\d+", low):
        return True
    return re.search(r"for(causallm| causal)", low) is not None  # an HF architecture name


def refused_or(fn, *args, **kwargs):
    """fn(*args, **kwargs); a documented refusal skips the test with reason 'refused: ...'."""
    from interp.core.errors import InterpError

    try:
        return fn(*args, **kwargs)
    except InterpError as e:
        pytest.skip(f"refused: {type(e).__name__}: {e}")
    except NotImplementedError as e:
        if _names_family_or_site(str(e)):
            pytest.skip(f"refused: NotImplementedError: {e}")
        raise


def make_pairs(vocab: int, n: int = N_PROMPTS, T: int = SEQ_LEN, seed: int = 0):
    """Seeded random prompt pairs: corrupt differs from clean at 2-3 positions, one of them
    early (0..2, beyond the sliding window of the last position), never the last one."""
    from interp.data.pairs import PairBatch, TokenizedPairs

    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1000, vocab, (n, T), generator=g)
    corrupt = clean.clone()
    for i in range(n):
        early = int(torch.randint(0, 3, (1,), generator=g))
        later = (torch.randperm(T - 4, generator=g)[: 1 + i % 2] + 3).tolist()  # positions 3..T-2
        for p in [early, *later]:
            shift = int(torch.randint(1, vocab - 1000, (1,), generator=g))
            corrupt[i, p] = 1000 + (clean[i, p] - 1000 + shift) % (vocab - 1000)
    answer = torch.randint(1000, vocab, (n,), generator=g)
    distractor = 1000 + (answer - 1000 + torch.randint(1, vocab - 1000, (n,), generator=g)) % (vocab - 1000)
    pb = PairBatch(clean=clean, corrupt=corrupt, answer_ids=answer, distractor_ids=distractor,
                   indices=list(range(n)), key=(T, None))
    return TokenizedPairs(batches=[pb], n=n)


def check(ours, ref, what: str, *, atol: float = 1e-4, rtol: float = 1e-4) -> None:
    from .reference import isclose_report

    msg = isclose_report(torch.as_tensor(ours), torch.as_tensor(ref), atol=atol, rtol=rtol)
    assert msg is None, f"{what}: {msg}"
