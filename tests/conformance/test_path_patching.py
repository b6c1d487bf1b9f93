"""Path patching (`path_patch_senders`) against the raw two-pass computation in reference.py:
senders frozen-except-sender through the output projection's input, MLPs recomputed; receivers
the logits or single heads' q / k / v (grouped-query receivers isolated per query head, swapped
inside the family's own attention function). Per-prompt metric for every sender with a path."""

from __future__ import annotations

import pytest

from interp.analyses.path_patching import Receiver, path_patch_senders

from .support import check, refused_or

RECEIVERS = {
    "logits": [("logits",)],
    "q": [("q", 2, 1)],
    "k": [("k", 2, 1)],  # grouped-query: head 1 shares its KV group with head 0
    "v": [("v", 1, 2)],
    "mixed": [("q", 2, 0), ("k", 2, 3), ("v", 2, 1), ("k", 1, 1)],
}


@pytest.mark.parametrize("receivers", list(RECEIVERS))
def test_path_patching(family, model, raw, pb, receivers):
    recs = RECEIVERS[receivers]
    first = min((r[1] for r in recs if len(r) > 1), default=raw.L)
    senders = [(layer, h) for layer in range(first) for h in range(raw.H)]
    no_path = [(first, 0)] if first < raw.L else []  # at/after the receiver: NaN
    ours = refused_or(path_patch_senders, model, pb, senders + no_path,
                      [Receiver("logits") if r[0] == "logits" else Receiver(*r) for r in recs])
    if no_path:
        assert ours[-1].isnan().all(), f"{family}: sender {no_path[0]} has no path to {recs} but got {ours[-1]}"
    clean_z, corrupt_z = raw.capture(pb.clean)["z"], raw.capture(pb.corrupt)["z"]
    for i, s in enumerate(senders):
        ref = raw.path_patch(pb.clean, pb.corrupt, pb.answer_ids, pb.distractor_ids, s, recs,
                             clean_z=clean_z, corrupt_z=corrupt_z)
        check(ours[i], ref, f"{family} path patching sender L{s[0]}H{s[1]} -> {receivers} {recs}")
