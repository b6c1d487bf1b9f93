"""Multiple-choice questions as prompt pairs, for finding the heads that write the answer letter.

After Lieberum et al. 2023 ("Does Circuit Analysis Interpretability Scale?"): a question with four
options labelled A-D; the model's next token is the label of the correct option. Items (question,
correct answer, three distractors) come from ``data/mcq_items.jsonl``; `generate_mcq` shuffles the
options per seed and builds one `PromptPair` per question:

- clean: the prompt (a chat turn when ``chat=True``; the assistant turn is prefilled so that the
  very next token is the label),
- answer: the correct option's label token; distractor: the label of another (random) option,
- corrupt: the same prompt with the correct option's content and the distractor's swapped, so
  the correct label becomes the distractor's (same tokens, reordered: equal token lengths are
  checked and unequal pairs dropped, counted in ``source["n_dropped_unequal_length"]``).

Two prompt formats (``fmt``):

- ``"letter"``: Lieberum's format. Options ``A. blue``, the instruction "Answer with the letter
  of the correct option.", the assistant turn prefilled with ``Answer:``; the answer is `` B``.
  SmolLM2-135M-Instruct is at chance on it (it has no multiple-choice symbol binding).
- ``"content_letter"`` (default): the assistant states the answer's content first and then its
  label, options written ``blue (B)`` and the assistant turn prefilled with ``blue (``; the
  answer is ``B``. The model must find which label goes with the stated content, the
  letter-moving half of the MCQ task, which SmolLM2-135M does well above chance.

``random_labels=True`` draws four distinct labels per prompt from letters outside A-D (e.g.
``Q, X, K, Z``): Lieberum's "randomised labels" control.

    >>> ds = generate_mcq(40, tokenizer, seed=0)
    >>> ds[0].answer, ds[0].distractor, ds[0].meta["labels"]    # e.g. ('C', 'A', ['A', 'B', 'C', 'D'])
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from interp.core.errors import DatasetError
from interp.data.pairs import PairDataset, PromptPair, bos_text, json_line
from interp.data.progress import Progress, ticker

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DEFAULT_ITEMS = Path(__file__).resolve().parents[2] / "data" / "mcq_items.jsonl"
LABELS: tuple[str, ...] = ("A", "B", "C", "D")
# Letters for the randomised-labels control: none of A-D, and not I or O (a word / a digit look-alike).
RANDOM_LABEL_POOL: tuple[str, ...] = tuple("EFGHJKLMNPQRSTUVWXYZ")
FORMATS: tuple[str, ...] = ("content_letter", "letter")
INSTRUCTION = "Answer with the letter of the correct option."


@dataclass(frozen=True)
class MCQItem:
    question: str
    answer: str
    distractors: tuple[str, str, str]
    category: str = ""


def _parse_item(obj: object, line_no: int, file: str) -> MCQItem:
    if not isinstance(obj, dict):
        raise DatasetError("expected a JSON object", line=line_no, file=file)
    unknown = set(obj) - {"question", "answer", "distractors", "category"}
    if unknown:
        raise DatasetError(f"unknown key(s) {sorted(unknown)}; allowed: question, answer, "
                           "distractors, category", line=line_no, file=file)
    q, a, ds = obj.get("question"), obj.get("answer"), obj.get("distractors")
    if not (isinstance(q, str) and q and isinstance(a, str) and a):
        raise DatasetError("'question' and 'answer' must be non-empty strings", line=line_no, file=file)
    if not (isinstance(ds, list) and len(ds) == 3 and all(isinstance(d, str) and d for d in ds)):
        raise DatasetError("'distractors' must be a list of 3 non-empty strings", line=line_no, file=file)
    if len({a, *ds}) != 4:
        raise DatasetError("the answer and the 3 distractors must all differ", line=line_no, file=file)
    return MCQItem(q, a, (ds[0], ds[1], ds[2]), str(obj.get("category", "")))


def load_mcq_items(path: str | Path | None = None) -> tuple[MCQItem, ...]:
    """Items from a JSONL file: ``question``, ``answer``, ``distractors`` (3), optional ``category``."""
    path = Path(path) if path is not None else DEFAULT_ITEMS
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise DatasetError(f"cannot read the MCQ items ({e.strerror or e})", file=file) from e
    items = [_parse_item(json_line(line, line_no, file), line_no, file)
             for line_no, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not items:
        raise DatasetError("no MCQ items in the file", file=file)
    return tuple(items)


def _user_and_prefill(item: MCQItem, labels: list[str], contents: list[str], fmt: str) -> tuple[str, str]:
    if fmt == "letter":
        lines = "\n".join(f"{lab}. {c}" for lab, c in zip(labels, contents, strict=True))
        return f"{item.question}\n{lines}\n{INSTRUCTION}", "Answer:"
    lines = "\n".join(f"{c} ({lab})" for lab, c in zip(labels, contents, strict=True))
    return f"{item.question}\n{lines}", f"{item.answer} ("


def render_prompt(tokenizer: PreTrainedTokenizerBase, item: MCQItem, labels: list[str],
                  contents: list[str], *, fmt: str = "content_letter", chat: bool = True) -> str:
    """The prompt text whose next token is the label of the option holding ``item.answer``."""
    user, prefill = _user_and_prefill(item, labels, contents, fmt)
    if not chat:
        text = f"{user}\n{prefill}" if fmt == "letter" else f"{user}\nAnswer: {prefill}"
        return bos_text(tokenizer) + text
    if getattr(tokenizer, "chat_template", None) is None:
        raise DatasetError("chat=True needs a tokenizer with a chat template; pass chat=False")
    head = tokenizer.apply_chat_template([{"role": "user", "content": user}],
                                         add_generation_prompt=True, tokenize=False)
    return head + prefill


def answer_form(label: str, fmt: str) -> str:
    """How a label appears as the answer token: `` B`` after ``Answer:``, ``B`` after ``(``."""
    return f" {label}" if fmt == "letter" else label


def _n_tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def generate_mcq(
    n: int,
    tokenizer: PreTrainedTokenizerBase,
    seed: int = 0,
    *,
    chat: bool = True,
    random_labels: bool = False,
    fmt: str = "content_letter",
    items: tuple[MCQItem, ...] | str | Path | None = None,
    progress: Progress | None = None,
) -> PairDataset:
    """`n` seeded MCQ prompt pairs (items drawn without replacement, cycling when n > #items).

    Pairs whose corrupt prompt tokenizes to a different length than the clean one are dropped
    (the dataset may then hold fewer than `n`; the count is in ``source``)."""
    if n < 1:
        raise DatasetError(f"n must be >= 1, got {n}")
    if fmt not in FORMATS:
        raise DatasetError(f"unknown MCQ format {fmt!r}; allowed: {', '.join(FORMATS)}")
    pool = items if isinstance(items, tuple) else load_mcq_items(items)
    for lab in (*LABELS, *RANDOM_LABEL_POOL):
        if len(_n_tokens(tokenizer, answer_form(lab, fmt))) != 1:
            raise DatasetError(f"label {answer_form(lab, fmt)!r} is not a single token in this tokenizer")
    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < n:
        block = list(range(len(pool)))
        rng.shuffle(block)
        order += block
    pairs: list[PromptPair] = []
    dropped = 0
    tick = ticker(progress, n)
    for i, item_index in enumerate(order[:n]):
        tick(i)
        item = pool[item_index]
        contents = [item.answer, *item.distractors]
        rng.shuffle(contents)
        correct = contents.index(item.answer)
        distractor = rng.choice([i for i in range(4) if i != correct])
        labels = rng.sample(RANDOM_LABEL_POOL, 4) if random_labels else list(LABELS)
        swapped = list(contents)
        swapped[correct], swapped[distractor] = swapped[distractor], swapped[correct]
        clean = render_prompt(tokenizer, item, labels, contents, fmt=fmt, chat=chat)
        corrupt = render_prompt(tokenizer, item, labels, swapped, fmt=fmt, chat=chat)
        if len(_n_tokens(tokenizer, clean)) != len(_n_tokens(tokenizer, corrupt)):
            dropped += 1
            continue
        meta: dict[str, Any] = {
            "item": item_index,
            "category": item.category,
            "question": item.question,
            "labels": labels,
            "contents": contents,
            "letter_tokens": [answer_form(lab, fmt) for lab in labels],
            "correct_index": correct,
            "distractor_index": distractor,
            "correct_content": item.answer,
            "distractor_content": contents[distractor],
        }
        pairs.append(PromptPair(clean, corrupt, answer_form(labels[correct], fmt),
                                answer_form(labels[distractor], fmt), meta))
    tick(n)
    if not pairs:
        raise DatasetError("every generated MCQ pair was dropped (clean and corrupt token lengths differ)")
    source = {"generator": "mcq", "n": n, "seed": seed, "chat": chat, "random_labels": random_labels,
              "fmt": fmt, "n_items": len(pool), "n_dropped_unequal_length": dropped}
    name = "mcq_random_labels" if random_labels else "mcq"
    return PairDataset(tuple(pairs), name=name, source=source)
