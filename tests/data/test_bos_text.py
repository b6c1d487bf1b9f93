"""Plain-text prompt builders put <bos> first for models that expect it (Gemma), never twice,
and leave other models' prompts alone."""

from __future__ import annotations

import copy

from interp.data.needles import render_prompt
from interp.data.pairs import bos_text


def test_marked_tokenizer_gets_bos_first(tokenizer):
    tok = copy.copy(tokenizer)
    tok.interp_prepend_bos = True
    text = render_prompt(tok, "some context", "what?", chat=False)
    assert text.startswith(tok.bos_token)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1


def test_unmarked_tokenizer_unchanged(tokenizer):
    assert bos_text(tokenizer) == ""
    assert render_prompt(tokenizer, "ctx", "q?", chat=False).startswith("<document>")
