"""CHAIR-style hallucination scores and answer accuracy for generated answers about shapes images.

CHAIR (Rohrbach et al. 2018) counts the objects a caption mentions that are not in the image; here
the vocabulary is the attributes the synthetic images have (colours, shapes, counts, positions;
`interp.data.shapes`): CHAIR_i = hallucinated attribute words / attribute words mentioned,
CHAIR_s = share of answers with at least one. For the prior-contradicting probe (a blue banana)
`prior_rate` is the share of answers that name the colour the object's name suggests.

    scores = score_answers(texts, items, "baseline")    # items: [(set name, ShapeItem)]
    summarise(scores)                                    # accuracy, chair_i, chair_s, prior_rate
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from interp.data.shapes import ShapeItem, answer_correct, attribute_mentions, hallucinated_mentions

SUMMARY_COLUMNS = ["condition", "set", "n", "accuracy", "chair_i", "chair_s", "prior_rate"]


def score_answers(texts: Sequence[str], items: Sequence[tuple[str, ShapeItem]], condition: str) -> pd.DataFrame:
    """Per answer: correct, attribute mentions, hallucinated mentions, the prior colour said."""
    rows = []
    for i, (text, (set_, it)) in enumerate(zip(texts, items, strict=True)):
        men, hal = attribute_mentions(text), hallucinated_mentions(text, it.scene)
        rows.append({"item": i, "condition": condition, "set": set_, "qtype": it.qtype, "question": it.question,
                     "truth": it.answer, "prior": it.prior, "text": text, "correct": answer_correct(text, it),
                     "n_mentions": len(men), "n_hallucinated": len(hal), "hallucinated": ", ".join(w for w, *_ in hal),
                     "said_prior": bool(it.prior) and it.prior in {v for _, k, v, _, _ in men if k == "colour"}})
    return pd.DataFrame(rows)


def _aggregate(g: pd.DataFrame) -> pd.Series:
    probe = g[g["prior"].notna()]
    return pd.Series({"n": len(g), "accuracy": g["correct"].mean(),
                      "chair_i": g["n_hallucinated"].sum() / max(1, g["n_mentions"].sum()),
                      "chair_s": (g["n_hallucinated"] > 0).mean(),
                      "prior_rate": probe["said_prior"].mean() if len(probe) else np.nan})


def summarise(scores: pd.DataFrame) -> pd.DataFrame:
    """Per condition over all answers (set "all") and per condition and set."""
    parts = [scores.groupby("condition", sort=False).apply(_aggregate, include_groups=False).reset_index()
             .assign(set="all"),
             scores.groupby(["condition", "set"], sort=False).apply(_aggregate, include_groups=False).reset_index()]
    return pd.concat(parts, ignore_index=True)[SUMMARY_COLUMNS]


def attribute_spans(texts: Sequence[str], items: Sequence[tuple[str, ShapeItem]]) -> list[list[tuple[int, int, str]]]:
    """Per answer, (start, end, "correct" | "hallucinated") for each attribute word it mentions."""
    out = []
    for text, (_, it) in zip(texts, items, strict=True):
        truth = it.scene.attributes()
        out.append([(s, e, "correct" if v in truth[k] else "hallucinated")
                    for _, k, v, s, e in attribute_mentions(text)])
    return out
