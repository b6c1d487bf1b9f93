"""Vision-aware head divergence (VHD), token VHD (T-VHD) and head reinforcement (VHR).

He et al., "Cracking the Code of Hallucination in LVLMs with Vision-aware Head Divergence"
(arXiv 2412.13949). For each attention head (l, i) of the language model, A[l,i] is its output
before W_O at the position that predicts the current token.

- VHD[l,i] = || A[l,i](image + text) - A[l,i](text only, image tokens removed) ||_2
- T-VHD(token) = sum over layers of the top-k VHD in that layer; hallucinated tokens should
  have lower T-VHD (the model leans less on the image when it makes them up).
- VHR: at the first generation step, layer by layer (each layer sees the already reinforced
  earlier layers), set VHD to 0 where both VHD and the text-only output norm exceed
  mean + std of the layer (outliers), select the heads above the layer's median, and multiply
  their outputs by alpha for the rest of generation. A control reinforces random heads, the
  same number per layer.

Both inputs run as two rows of one batch (image row, text-only row; left-padded), so one
forward gives both A's at every layer, and VHR's layer-by-layer selection happens inside that
forward: the W_O pre-hook of layer l computes layer l's VHD from the two rows, selects, and
scales the selected heads in both rows before W_O, so layer l+1 already sees the reinforced l.
The image row chooses the next token (greedy); the text-only row is fed the same token.

    res = head_divergence(model, images, questions, max_new_tokens=8)
    res.head_map()                       # mean first-step VHD per (layer, head)
    res.token_frame(top_k=3)             # T-VHD per generated token
    vhr = reinforce_heads(model, images, questions, alpha=2.0)
    ctl = reinforce_heads(model, images, questions, alpha=2.0, control_counts=vhr.counts(), seed=0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from interp.core.capabilities import ImageInput, require
from interp.core.sites import Site
from interp.models.vlm import VisionLanguageModel

Progress = Callable[[int, int], None]


def paper_layers(n_layers: int, n_last: int = 14) -> list[int]:
    """The reference's VHR layers for LLaVA-1.5: layer 1 plus the last 14 layers."""
    return sorted({min(1, n_layers - 1), *range(max(0, n_layers - n_last), n_layers)})


def token_vhd(vhd: Float[np.ndarray, "step layer head"], top_k: int) -> Float[np.ndarray, " step"]:
    """T-VHD per step: the sum over layers of the top-k VHD of each layer."""
    k = min(top_k, vhd.shape[-1])
    return np.sort(vhd, axis=-1)[..., -k:].sum(axis=(-1, -2))


@dataclass
class _Run:
    """What one two-stream greedy generation recorded, per item."""

    token_ids: list[list[int]]
    texts: list[str]
    vhd: list[np.ndarray]  # (n_steps, layer, head); step s = the forward predicting token s
    text_norm: list[np.ndarray]  # (n_steps, layer, head): || A(text only) ||
    selected: list[dict[int, list[int]]] = field(default_factory=list)  # item -> layer -> heads


def _rows(model: VisionLanguageModel, images: Sequence[np.ndarray], questions: Sequence[str],
          r: int) -> tuple[Tensor, Tensor, Tensor]:
    """Packed prompts: per item the image row, then (r == 2) its text-only row."""
    feats = model.image_features(model.pixel_values(images))
    rows = []
    for q, f in zip(questions, feats, strict=True):
        rows += [model.embed(model.prompt(q), f)] + ([model.embed(model.prompt(q, with_image=False))] if r == 2 else [])
    return model.pack(rows)


def _initial_scale(model: VisionLanguageModel, B: int, alpha: float,
                   fixed_heads: Sequence[dict[int, list[int]]] | None) -> Tensor:
    """The multiplier per item, layer, head: `alpha` on the fixed heads, 1 elsewhere."""
    scale = torch.ones(B, model.spec.n_layers, model.spec.n_heads, device=model.device)
    for b, per_layer in enumerate(fixed_heads or []):
        for layer, heads in per_layer.items():
            scale[b, layer, list(heads)] = alpha
    return scale


def _vhr_pick(last: Tensor) -> Tensor:
    """VHR's rule on the last position's head outputs (2B, head, d_head) of image / text rows:
    heads whose divergence is above the median, outliers (divergence and text norm both above
    mean + std) excluded. (B, head) booleans."""
    d = (last[0::2] - last[1::2]).norm(dim=-1)  # (B, head)
    t = last[1::2].norm(dim=-1)
    out = (d > d.mean(-1, keepdim=True) + d.std(-1, keepdim=True)) & \
        (t > t.mean(-1, keepdim=True) + t.std(-1, keepdim=True))
    d = d.masked_fill(out, 0.0)
    return d > d.median(-1, keepdim=True).values


def _step_record(captured: dict[int, Tensor], L: int, B: int, H: int, r: int) -> tuple[np.ndarray, np.ndarray]:
    """(VHD, text-row norm) of this step, (B, layer, head); empty without text rows."""
    if r != 2:
        return np.zeros((B, 0, H)), np.zeros((B, 0, H))
    z = torch.stack([captured[layer] for layer in range(L)], 1)  # (2B, layer, head, d_head)
    return (z[0::2] - z[1::2]).norm(dim=-1).cpu().numpy(), z[1::2].norm(dim=-1).cpu().numpy()


def _accept(tokens: list[int], done: list[bool], out_ids: list[list[int]], end_ids: set[int]) -> None:
    for b, tok in enumerate(tokens):
        if not done[b]:
            if tok in end_ids:
                done[b] = True
            else:
                out_ids[b].append(tok)


def _two_stream(model: VisionLanguageModel, images: Sequence[np.ndarray], questions: Sequence[str], *,
                max_new_tokens: int, alpha: float, vhr_layers: Sequence[int] | None,
                fixed_heads: Sequence[dict[int, list[int]]] | None) -> _Run:
    """Greedy generation of a batch of items, image row and text-only row side by side.

    `vhr_layers`: select heads at the first step with VHR's rule at these layers; `fixed_heads`:
    reinforce these (layer -> heads) per item from the start (no text-only row is needed then,
    and no VHD is recorded); neither: plain generation."""
    require(model, ImageInput, "visual head divergence")
    B, L, H = len(questions), model.spec.n_layers, model.spec.n_heads
    r = 1 if fixed_heads is not None else 2  # rows per item
    emb, mask, pos = _rows(model, images, questions, r)
    scale = _initial_scale(model, B, alpha, fixed_heads)
    selecting = set(vhr_layers or ()) if fixed_heads is None else set()
    selected: list[dict[int, list[int]]] = [{} for _ in range(B)]
    captured: dict[int, Tensor] = {}
    first = [True]

    def hook(z: Tensor, site: Site) -> Tensor | None:
        layer = site.layer or 0
        last = z[:, -1].float()  # (2B, head, d_head)
        if first[0] and layer in selecting:
            pick = _vhr_pick(last)  # (B, head)
            scale[:, layer] = torch.where(pick, alpha, 1.0)
            for b in range(B):
                selected[b][layer] = [int(h) for h in pick[b].nonzero().flatten().cpu()]
        s = scale[:, layer]
        if bool((s != 1).any()):
            z = z * s.repeat_interleave(r, 0).to(z.dtype)[:, None, :, None]  # both rows of each item
            captured[layer] = z[:, -1].float()
            return z
        captured[layer] = last
        return None

    steps_vhd, steps_norm = [], []
    out_ids: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    with model.hooks([(Site("z", layer=layer), hook) for layer in range(L)]):
        logits, cache = model.forward_embeds(emb, mask, pos)
        for step in range(max_new_tokens):
            first[0] = False
            vhd_step, norm_step = _step_record(captured, L, B, H, r)
            steps_vhd.append(vhd_step)
            steps_norm.append(norm_step)
            nxt = logits[0::r].argmax(-1)  # the image row decides
            _accept(nxt.tolist(), done, out_ids, model.end_ids)
            if all(done) or step == max_new_tokens - 1:
                break
            feed = nxt.repeat_interleave(r)[:, None]
            mask = torch.cat([mask, mask.new_ones(r * B, 1)], 1)
            pos = pos[:, -1:] + 1
            logits, cache = model.forward_embeds(model.module("embed_tokens")(feed), mask, pos, cache)
    vhd = np.stack(steps_vhd, 1)  # (B, steps, layer, head)
    norm = np.stack(steps_norm, 1)
    n = [len(ids) for ids in out_ids]
    texts = [model.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in out_ids]
    return _Run(out_ids, texts, [vhd[b, : n[b]] for b in range(B)], [norm[b, : n[b]] for b in range(B)],
                selected if selecting else [dict(f) for f in (fixed_heads or [{}] * B)])


def _batched(model, images, questions, batch_size: int, progress: Progress | None, **kw) -> _Run:
    parts = []
    fixed = kw.pop("fixed_heads", None)
    for i in range(0, len(questions), batch_size):
        sl = slice(i, i + batch_size)
        parts.append(_two_stream(model, images[sl], questions[sl], fixed_heads=None if fixed is None else fixed[sl],
                                 **kw))
        if progress:
            progress(min(i + batch_size, len(questions)), len(questions))
    return _Run(*[sum((getattr(p, f) for p in parts), []) for f in ("token_ids", "texts", "vhd", "text_norm",
                                                                     "selected")])


def _token_strings(model: VisionLanguageModel, ids: list[int]) -> list[tuple[str, int, int]]:
    """Each generated token's text and its (start, end) in the decoded answer."""
    out, prev = [], ""
    for k in range(len(ids)):
        text = model.tokenizer.decode(ids[: k + 1], skip_special_tokens=True)
        out.append((text[len(prev):], len(prev), len(text)))
        prev = text
    lead = len(prev) - len(prev.lstrip())  # answers are stripped of leading space
    return [(t, max(s - lead, 0), e - lead) for t, s, e in out]


@dataclass
class HeadDivergenceResult:
    """VHD per item, generated token, layer and head, from plain greedy generation."""

    questions: list[str]
    texts: list[str]
    token_ids: list[list[int]]
    tokens: list[list[tuple[str, int, int]]]  # per token: (text, start, end) in the answer
    vhd: list[np.ndarray]  # per item (n_tokens, layer, head)
    text_norm: list[np.ndarray]
    n_layers: int
    n_heads: int

    def to_frame(self) -> pd.DataFrame:
        """Tidy: one row per (item, step, layer, head)."""
        frames = []
        for i, v in enumerate(self.vhd):
            S, L, H = v.shape
            s, lay, h = np.meshgrid(np.arange(S), np.arange(L), np.arange(H), indexing="ij")
            frames.append(pd.DataFrame({"item": i, "step": s.ravel(), "layer": lay.ravel(), "head": h.ravel(),
                                        "vhd": v.ravel(), "text_norm": self.text_norm[i].ravel()}))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["item", "step", "layer", "head", "vhd", "text_norm"])

    def head_map(self, steps: str = "first") -> pd.DataFrame:
        """Mean VHD per (layer, head): at the first generated token ('first') or over all ('all')."""
        vs = [v[:1] if steps == "first" else v for v in self.vhd if len(v)]
        m = np.concatenate(vs).mean(0) if vs else np.zeros((self.n_layers, self.n_heads))
        lay, h = np.meshgrid(np.arange(self.n_layers), np.arange(self.n_heads), indexing="ij")
        return pd.DataFrame({"layer": lay.ravel(), "head": h.ravel(), "vhd": m.ravel()})

    def token_frame(self, top_k: int) -> pd.DataFrame:
        """T-VHD per generated token: (item, step, token, start, end, tvhd)."""
        rows = []
        for i, v in enumerate(self.vhd):
            t = token_vhd(v, top_k)
            for s, (tok, a, b) in enumerate(self.tokens[i]):
                rows.append({"item": i, "step": s, "token": tok, "start": a, "end": b, "tvhd": float(t[s])})
        return pd.DataFrame(rows, columns=["item", "step", "token", "start", "end", "tvhd"])


def head_divergence(model: VisionLanguageModel, images: Sequence[np.ndarray], questions: Sequence[str], *,
                    max_new_tokens: int = 8, batch_size: int = 8,
                    progress: Progress | None = None) -> HeadDivergenceResult:
    """Greedy answers with the image, and VHD of every head at every generated token."""
    r = _batched(model, list(images), list(questions), batch_size, progress, max_new_tokens=max_new_tokens,
                 alpha=1.0, vhr_layers=None)
    return HeadDivergenceResult(list(questions), r.texts, r.token_ids, [_token_strings(model, t) for t in r.token_ids],
                                r.vhd, r.text_norm, model.spec.n_layers, model.spec.n_heads)


@dataclass
class ReinforcementResult:
    """Answers generated with reinforced heads (VHR, or a random-head control)."""

    condition: str  # "vhr" | "random"
    alpha: float
    layers: list[int]
    questions: list[str]
    texts: list[str]
    token_ids: list[list[int]]
    selected: list[dict[int, list[int]]]  # per item: layer -> reinforced heads

    def counts(self) -> list[dict[int, int]]:
        """Heads reinforced per item and layer (what a matched random control needs)."""
        return [{layer: len(h) for layer, h in sel.items()} for sel in self.selected]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"item": range(len(self.texts)), "condition": self.condition, "alpha": self.alpha,
                             "question": self.questions, "text": self.texts,
                             "n_heads": [sum(len(h) for h in s.values()) for s in self.selected]})

    def selection_frame(self) -> pd.DataFrame:
        rows = [{"item": i, "layer": layer, "head": h} for i, sel in enumerate(self.selected)
                for layer, heads in sel.items() for h in heads]
        return pd.DataFrame(rows, columns=["item", "layer", "head"])


def reinforce_heads(model: VisionLanguageModel, images: Sequence[np.ndarray], questions: Sequence[str], *,
                    alpha: float = 2.0, layers: Sequence[int] | None = None,
                    control_counts: Sequence[dict[int, int]] | None = None, seed: int = 0,
                    max_new_tokens: int = 8, batch_size: int = 8,
                    progress: Progress | None = None) -> ReinforcementResult:
    """VHR (default), or with `control_counts` (e.g. `vhr.counts()`) the random-head control:
    that many random heads per item and layer, reinforced by alpha from the first step on."""
    L, H = model.spec.n_layers, model.spec.n_heads
    layers = paper_layers(L) if layers is None else sorted(set(layers))
    bad = [x for x in layers if not 0 <= x < L]
    if bad:
        raise ValueError(f"layers {bad} do not exist in {model.name} (layers 0..{L - 1})")
    fixed = None
    if control_counts is not None:
        rng = np.random.default_rng(seed)
        fixed = [{layer: sorted(rng.choice(H, size=n, replace=False).tolist()) for layer, n in c.items()}
                 for c in control_counts]
    r = _batched(model, list(images), list(questions), batch_size, progress, max_new_tokens=max_new_tokens,
                 alpha=alpha, vhr_layers=layers, fixed_heads=fixed)
    return ReinforcementResult("vhr" if fixed is None else "random", alpha, layers, list(questions), r.texts,
                               r.token_ids, r.selected)


def label_tokens(tokens: pd.DataFrame, spans: Sequence[Sequence[tuple[int, int, str]]]) -> pd.Series:
    """A label per row of `HeadDivergenceResult.token_frame`: the label of the first span
    (start, end, label) of its item that the token overlaps, else "other"."""
    out = []
    for r in tokens.itertuples():
        lab = "other"
        for a, b, name in spans[r.item]:
            if r.start < b and a < r.end and r.token.strip():
                lab = name
                break
        out.append(lab)
    return pd.Series(out, index=tokens.index, name="label")
