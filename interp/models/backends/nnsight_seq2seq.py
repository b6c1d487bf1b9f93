"""nnsight backend for encoder-decoder speech models: `HookedSeq2SeqModel`.

TransformerLens has no Whisper adapter, so a speech model is wrapped with nnsight's generic
`NNsight` envoy and its activations are read inside one trace. Sites are ordinary `Site`s with a
stack: ``encoder.resid_post.L1``, ``cross_pattern.L3.H2`` (the decoder is the default stack);
which module carries each, the model's constants (sample rate, hop length, prompt and end token
ids) and its module paths come from the family (`interp.models.families`, ``[whisper]`` in
``families.toml``): this backend holds no model's numbers. Hooks are the one mechanism of every
model (`add_hook`, `hooks`): a hook function that returns a replacement writes it.

Besides sites, the model offers what speech analyses need (`AudioInput`): log-mel `features` of
audio, greedy `transcribe` (the family's prompt, suppressed tokens, KV cache), `forced_logits`
(teacher forcing of a given transcript), `cross_attention` (all decoder layers' cross-attention
weights, (layer, batch, head, out_token, frame)), and split `encode` / `decode_logits` so that
encoder outputs can be reused or edited.

    model = load_model("whisper-tiny.en")
    feats = model.features(audio)                       # (1, 80, 3000)
    t = model.transcribe(feats)[0]                      # Transcript(token_ids, text)
    ca = model.cross_attention(feats, t.token_ids)      # (4, 1, 6, n_tokens, 1500)
    _, cache = model.run_with_cache(feats, model.decoder_input(t.token_ids), ["cross_pattern.L3.H2"])
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interp.core.errors import SiteError
from interp.core.hooks import Handle, HookFn, temporary_hooks
from interp.core.model import check_site_range
from interp.core.sites import Component, Site, Stack
from interp.models.backends.modules import CountedHandle, add_module_hook
from interp.models.families import Family, ModuleSite


@dataclass(frozen=True)
class Seq2SeqSpec:
    n_encoder_layers: int
    n_decoder_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    n_mels: int
    n_mel_frames: int  # input frames per window (3000 = 30 s)
    n_audio_frames: int  # encoder frames per window (1500)
    sample_rate: int
    hop_length: int
    architecture: str

    @property
    def mel_frames_per_audio_frame(self) -> int:
        return self.n_mel_frames // self.n_audio_frames


@dataclass(frozen=True)
class Transcript:
    """A greedy transcript: the generated token ids (no prompt, no end token) and their text."""

    token_ids: list[int]
    text: str


class HookedSeq2SeqModel:
    """An encoder-decoder speech model: the `HookedModel` port plus `AudioInput`."""

    backend = "nnsight"

    def __init__(self, name: str, hf_model: Any, tokenizer: Any, *, weights_sha256: str | None,
                 family: Family, suppress_tokens: Sequence[int] = (), begin_suppress_tokens: Sequence[int] = (),
                 prompt_ids: Sequence[int] | None = None, eos_id: int | None = None,
                 feature_extractor: Callable[[], Any] | None = None):
        from nnsight import NNsight

        hf_model.eval()
        self.hf_model = hf_model
        self.nn = NNsight(hf_model)
        self.name = name
        self.tokenizer = tokenizer
        self.weights_sha256 = weights_sha256
        self.family = family
        consts = family.constants
        self.suppress_tokens = list(suppress_tokens)
        self.begin_suppress_tokens = list(begin_suppress_tokens)
        self.prompt_ids = list(consts["prompt_ids"] if prompt_ids is None else prompt_ids)
        self.eos_id = int(consts["eos_id"] if eos_id is None else eos_id)
        self._make_fe = feature_extractor
        p = next(hf_model.parameters())
        self.device, self.dtype = p.device, p.dtype
        cfg = hf_model.config
        n_mel_frames = 2 * cfg.max_source_positions  # two stride-1/stride-2 convolutions
        self.spec = Seq2SeqSpec(
            n_encoder_layers=cfg.encoder_layers,
            n_decoder_layers=cfg.decoder_layers,
            n_heads=cfg.decoder_attention_heads,
            d_model=cfg.d_model,
            d_head=cfg.d_model // cfg.decoder_attention_heads,
            d_vocab=cfg.vocab_size,
            n_mels=cfg.num_mel_bins,
            n_mel_frames=n_mel_frames,
            n_audio_frames=cfg.max_source_positions,
            sample_rate=int(consts["sample_rate"]),
            hop_length=int(consts["hop_length"]),
            architecture=(cfg.architectures or [type(hf_model).__name__])[0],
        )
        self._fe: Any = None
        self._live_hooks = 0
        params = inspect.signature(hf_model.model.decoder.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    # -- audio -> features -------------------------------------------------------------------
    @property
    def feature_extractor(self) -> Any:
        if self._fe is None:
            if self._make_fe is None:
                raise NotImplementedError(f"{self.name}: no feature extractor was given; pass log-mel features")
            self._fe = self._make_fe()
        return self._fe

    def features(self, audio: np.ndarray | Sequence[np.ndarray]) -> Float[Tensor, "batch mel frame"]:
        """Log-mel features (batch, n_mels, 3000) of 16 kHz mono waveforms (float, [-1, 1])."""
        clips = [audio] if isinstance(audio, np.ndarray) and audio.ndim == 1 else list(audio)
        max_len = self.spec.n_mel_frames * self.spec.hop_length
        for i, clip in enumerate(clips):
            clip = np.asarray(clip)
            if clip.ndim != 1 or clip.size == 0:
                raise ValueError(f"audio clip {i}: expected a non-empty 1-D mono waveform, got shape {clip.shape}")
            if clip.size > max_len:
                raise ValueError(
                    f"audio clip {i} is {clip.size / self.spec.sample_rate:.1f} s long; this model reads at most "
                    f"{max_len / self.spec.sample_rate:.0f} s windows"
                )
        out = self.feature_extractor([np.asarray(c, dtype=np.float32) for c in clips],
                                     sampling_rate=self.spec.sample_rate, return_tensors="np")
        return torch.from_numpy(out["input_features"]).to(self.device, self.dtype)

    def frames_of(self, n_samples: int) -> tuple[int, int]:
        """(mel frames, encoder frames) that hold audio for a clip of `n_samples` samples."""
        mel = min(-(-n_samples // self.spec.hop_length), self.spec.n_mel_frames)
        return mel, -(-mel // self.spec.mel_frames_per_audio_frame)

    def _check_features(self, features: Tensor) -> Tensor:
        want = (self.spec.n_mels, self.spec.n_mel_frames)
        if not isinstance(features, Tensor) or features.ndim != 3 or tuple(features.shape[1:]) != want:
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(f"features must be a (batch, {want[0]}, {want[1]}) tensor "
                             f"(use model.features(audio)); got {shape}")
        return features.to(self.device, self.dtype)

    # -- tokens --------------------------------------------------------------------------------
    def decoder_input(self, token_ids: Sequence[int], batch: int = 1) -> Tensor:
        """The decoder input for teacher forcing: prompt + `token_ids`, repeated `batch` times."""
        row = [*self.prompt_ids, *map(int, token_ids)]
        if len(row) > self.hf_model.config.max_target_positions:
            raise ValueError(f"{len(row)} decoder tokens exceed the model's "
                             f"{self.hf_model.config.max_target_positions}")
        return torch.tensor([row] * batch, dtype=torch.long, device=self.device)

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def str_tokens(self, token_ids: Sequence[int]) -> list[str]:
        return [self.tokenizer.decode([int(i)]) for i in token_ids]

    # -- plain forwards ----------------------------------------------------------------------
    def encode(self, features: Tensor) -> Float[Tensor, "batch frame d_model"]:
        return self.hf_model.model.encoder(self._check_features(features)).last_hidden_state

    def decode_logits(self, encoder_out: Tensor, decoder_ids: Tensor) -> Float[Tensor, "batch pos vocab"]:
        """Logits of every decoder position given encoder outputs (no cache)."""
        if decoder_ids.shape[0] != encoder_out.shape[0]:
            decoder_ids = decoder_ids.expand(encoder_out.shape[0], -1)
        out = self.hf_model.model.decoder(input_ids=decoder_ids, encoder_hidden_states=encoder_out, use_cache=False)
        return self.hf_model.proj_out(out.last_hidden_state)

    def forward(self, features: Tensor, decoder_ids: Tensor) -> Float[Tensor, "batch pos vocab"]:
        return self.decode_logits(self.encode(features), decoder_ids)

    def forced_logits(self, features: Tensor, token_ids: Sequence[int]) -> Float[Tensor, "batch token vocab"]:
        """Teacher forcing: the logits that predict each of `token_ids` (same ids for every row)."""
        feats = self._check_features(features)
        ids = self.decoder_input(token_ids, feats.shape[0])
        logits = self.forward(feats, ids)
        start = len(self.prompt_ids) - 1
        return logits[:, start : start + len(token_ids)]

    @torch.no_grad()
    def transcribe(self, features: Tensor, *, max_new_tokens: int | None = None) -> list[Transcript]:
        """Greedy decoding, as Whisper does it for English-only models (no timestamps)."""
        feats = self._check_features(features)
        enc = self.encode(feats)
        batch = feats.shape[0]
        limit = self.hf_model.config.max_target_positions - len(self.prompt_ids)
        limit = min(limit, max_new_tokens) if max_new_tokens is not None else limit
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        step = self.decoder_input([], batch)
        done = torch.zeros(batch, dtype=torch.bool, device=self.device)
        out: list[list[int]] = [[] for _ in range(batch)]
        for i in range(limit):
            hidden = self.hf_model.model.decoder(
                input_ids=step, encoder_hidden_states=enc, use_cache=True, **{self._cache_kw: cache}
            ).last_hidden_state[:, -1]
            logits = self.hf_model.proj_out(hidden).float()
            if self.suppress_tokens:
                logits[:, self.suppress_tokens] = -float("inf")
            if i == 0 and self.begin_suppress_tokens:
                logits[:, self.begin_suppress_tokens] = -float("inf")
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.eos_id), nxt)
            for b in range(batch):
                if not done[b] and nxt[b].item() != self.eos_id:
                    out[b].append(int(nxt[b]))
            done |= nxt == self.eos_id
            if bool(done.all()):
                break
            step = nxt[:, None]
        return [Transcript(ids, self.decode(ids)) for ids in out]

    # -- sites and hooks ---------------------------------------------------------------------
    def _row(self, site: Site) -> ModuleSite:
        row = self.family.sites.get((site.stack, site.component))
        if row is None:
            allowed = ", ".join(c.value for st, c in self.family.sites if st is site.stack)
            raise SiteError(f"site {site}: the {site.stack.value} of {self.name} has no component "
                            f"{site.component.value!r}; allowed: {allowed}")
        return row

    def validate_site(self, site: Site) -> None:
        """`SiteError` unless `site` exists here (stack, component, layer, head, position)."""
        stacks = self.family.stacks
        if site.stack not in stacks:
            check_site_range(site, n_layers=0, n_heads=0, n_ctx=None, stacks=stacks, what=self.name)
        self._row(site)
        encoder = site.stack is Stack.ENCODER
        n_layers = self.spec.n_encoder_layers if encoder else self.spec.n_decoder_layers
        n_ctx = self.spec.n_audio_frames if encoder else self.hf_model.config.max_target_positions
        check_site_range(site, n_layers=n_layers, n_heads=self.spec.n_heads, n_ctx=n_ctx, stacks=stacks,
                         what=self.name)

    def add_hook(self, site: Site, fn: HookFn) -> Handle:
        """A torch hook on the module carrying `site`; a returned tensor replaces its value."""
        self.validate_site(site)
        handle = add_module_hook(self.hf_model, self._row(site), site, fn, d_head=None)
        return CountedHandle(self, handle)

    def hooks(self, hooks: Sequence[tuple[Site, HookFn]]) -> AbstractContextManager[None]:
        return temporary_hooks(self, hooks)

    def _envoy(self, path: str) -> Any:
        env: Any = self.nn
        for part in path.split("."):
            env = env[int(part)] if part.isdigit() else getattr(env, part)
        return env

    def _order(self, site: Site) -> tuple[int, int, int]:
        rows = list(self.family.sites)
        stack_rank = self.family.stacks.index(site.stack)
        encoder = site.stack is Stack.ENCODER
        n = self.spec.n_encoder_layers if encoder else self.spec.n_decoder_layers
        layer = site.layer if site.layer is not None else (-1 if site.component is Component.EMBED else n)
        return (stack_rank, layer, rows.index((site.stack, site.component)))

    def run_with_cache(
        self, features: Tensor, decoder_ids: Tensor, sites: Sequence[Site | str], *,
        hooks: Sequence[tuple[Site, HookFn]] = (),
    ) -> tuple[Tensor, dict[Site, Tensor]]:
        """Logits (batch, pos, vocab) and the asked-for sites, read in one nnsight trace (through
        hooks when any are attached).

        Patterns come out as (batch, head, query, key), a head site as (batch, query, key);
        everything else as (batch, pos, d_model)."""
        feats = self._check_features(features)
        parsed = [Site.parse(s) if isinstance(s, str) else s for s in sites]
        for s in parsed:
            self.validate_site(s)
        if hooks or self._live_hooks:
            return self._cache_through_hooks(feats, decoder_ids, parsed, hooks)
        wholes = sorted({s.hook_site for s in parsed}, key=self._order)
        access_of: dict[Site, tuple[str, str, int | None]] = {}
        for w in wholes:
            path, io, index = self._row(w)
            access_of[w] = (path.format(layer=w.layer), io, index)
        # One read per module value, in execution order (two sites may share a module value).
        reads = list(dict.fromkeys((path, io) for path, io, _ in access_of.values()))
        saved: dict[tuple[str, str], Any] = {}
        out: dict[str, Any] = {}
        with self.nn.trace(input_features=feats, decoder_input_ids=decoder_ids.to(self.device), use_cache=False):
            for path, io in reads:
                saved[(path, io)] = getattr(self._envoy(path), io).save()
            out["logits"] = self.nn.output.logits.save()
        cache: dict[Site, Tensor] = {}
        for s in parsed:
            path, io, index = access_of[s.hook_site]
            value = saved[(path, io)]
            if index is not None and isinstance(value, tuple | list):
                value = value[index]
            if not isinstance(value, Tensor):
                raise SiteError(f"site {s}: the module gave {type(value).__name__}, not a tensor "
                                "(a pattern needs the eager attention path)")
            cache[s] = s.select(value).detach()
        return out["logits"], cache

    def _cache_through_hooks(self, feats: Tensor, decoder_ids: Tensor, sites: list[Site],
                             hooks: Sequence[tuple[Site, HookFn]]) -> tuple[Tensor, dict[Site, Tensor]]:
        from interp.core.hooks import caching_hooks

        store: dict[Site, Tensor] = {}
        with self.hooks([*hooks, *caching_hooks(sites, store)]):
            logits = self.forward(feats, decoder_ids.to(self.device))
        missing = [str(s) for s in sites if s not in store]
        if missing:
            raise SiteError(f"sites not reached in the forward pass: {', '.join(missing)} "
                            "(a pattern needs the eager attention path)")
        return logits, store

    def cross_attention(
        self, features: Tensor, token_ids: Sequence[int],
    ) -> Float[Tensor, "layer batch head token frame"]:
        """Cross-attention weights of every decoder layer while teacher-forcing `token_ids`:
        row t is the query that predicts token t (the prompt's queries are dropped)."""
        feats = self._check_features(features)
        sites = [Site(Component.CROSS_PATTERN, layer=li) for li in range(self.spec.n_decoder_layers)]
        with torch.no_grad():
            _, cache = self.run_with_cache(feats, self.decoder_input(token_ids, feats.shape[0]), sites)
        start = len(self.prompt_ids) - 1
        return torch.stack([cache[s][:, :, start : start + len(token_ids)] for s in sites])


__all__ = ["HookedSeq2SeqModel", "Seq2SeqSpec", "Transcript"]
