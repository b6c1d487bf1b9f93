"""Optional capabilities of a `HookedModel`, asked for by type.

A model implements the small port (`interp.core.model.HookedModel`) and, beyond it, whichever
of these it can do exactly. An analysis that needs one says so with `require`, which returns
the model typed as that capability or raises `UnsupportedError` naming the analysis, the model
and the missing methods:

    model = require(model, Resumable, "path patching")
    inputs = model.capture_block_inputs(tokens)

Capabilities are structural (`typing.Protocol`): a backend has one by having its methods, and a
backend lacking one does not define them at all (no methods that only raise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch

from interp.core.errors import UnsupportedError
from interp.core.hooks import HookFn
from interp.core.model import BlockInputs, FinalNorm, HookedModel, ModelSpec
from interp.core.sites import Site


@runtime_checkable
class TextInput(Protocol):
    """Token ids in, logits out: tokenising and the cached/hooked forwards built on `forward`."""

    def to_tokens(self, texts: str | Sequence[str]) -> torch.Tensor: ...
    def encode(self, text: str) -> list[int]: ...
    def str_tokens(self, tokens: torch.Tensor | Sequence[int]) -> list[str]: ...
    def run_with_hooks(self, tokens: torch.Tensor, hooks: Sequence[tuple[Site, HookFn]]) -> torch.Tensor: ...
    def run_with_cache(self, tokens: torch.Tensor, sites: Sequence[Site], *,
                       hooks: Sequence[tuple[Site, HookFn]] = ()) -> tuple[torch.Tensor, dict[Site, torch.Tensor]]: ...


@runtime_checkable
class Resumable(Protocol):
    """Resume a forward at a block from the inputs captured in one real forward."""

    def capture_block_inputs(self, tokens: torch.Tensor) -> BlockInputs: ...
    def forward_from(self, layer: int, resid_pre: torch.Tensor, block_inputs: BlockInputs,
                     start_pos: int = 0, end_layer: int | None = None) -> torch.Tensor: ...


@runtime_checkable
class Incremental(Protocol):
    """A key/value-cached forward: chunked prefill and greedy decoding are built on it."""

    def forward_incremental(self, tokens: torch.Tensor, past: Any = None, *,
                            last_logits: int | None = None) -> tuple[torch.Tensor, Any]: ...


@runtime_checkable
class Unembedding(Protocol):
    """The output head and the weights direct logit attribution reads."""

    def unembed(self, final_resid: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor: ...
    def unembed_matrix(self) -> tuple[torch.Tensor, torch.Tensor | None]: ...
    def final_norm(self) -> FinalNorm: ...
    def final_norm_module(self) -> Any: ...
    def post_norm_module(self, layer: int, which: str) -> Any: ...
    def out_proj_bias(self, layer: int) -> torch.Tensor | None: ...
    def W_O(self, layer: int) -> torch.Tensor: ...
    def attention_scale(self, layer: int) -> float: ...
    def attention_softcap(self, layer: int) -> float | None: ...


@runtime_checkable
class AudioInput(Protocol):
    """Speech in (an encoder-decoder): features of waveforms, teacher forcing, transcription."""

    def features(self, audio: Any) -> torch.Tensor: ...
    def frames_of(self, n_samples: int) -> tuple[int, int]: ...
    def decoder_input(self, token_ids: Sequence[int], batch: int = 1) -> torch.Tensor: ...
    def forced_logits(self, features: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor: ...
    def transcribe(self, features: torch.Tensor, *, max_new_tokens: int | None = None) -> list[Any]: ...


@runtime_checkable
class ImageInput(Protocol):
    """Images in (a vision-language model): pixels, image features and prompts around them."""

    def pixel_values(self, images: Any) -> torch.Tensor: ...
    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor: ...
    def prompt(self, question: str, *, with_image: bool = True) -> list[int]: ...
    def embed(self, ids: Sequence[int], image_features: torch.Tensor | None = None) -> torch.Tensor: ...


@runtime_checkable
class Generates(Protocol):
    """Greedy generation of answers (a vision-language model's `generate`)."""

    def generate(self, images: Any, questions: Sequence[str], *, max_new_tokens: int = 12,
                 with_image: bool = True) -> list[Any]: ...


@runtime_checkable
class LanguageModel(HookedModel, TextInput, Unembedding, Protocol):
    """What every text backend is (TransformerLens bridge, nnsight): the port, token input and
    the output head; `Resumable` and `Incremental` are still asked for separately."""

    prepend_bos: bool
    tokenizer: Any

    @property
    def spec(self) -> ModelSpec: ...

    def supports(self, component: str) -> bool: ...


# What each capability means to a user, and the methods that make it up.
CAPABILITIES: dict[type, tuple[str, tuple[str, ...]]] = {
    TextInput: ("takes token ids", ("to_tokens", "encode", "str_tokens", "run_with_hooks", "run_with_cache")),
    Resumable: ("can resume a forward at a block", ("capture_block_inputs", "forward_from")),
    Incremental: ("has a key/value-cached forward", ("forward_incremental",)),
    Unembedding: ("exposes its output head and DLA weights",
                  ("unembed", "unembed_matrix", "final_norm", "final_norm_module", "post_norm_module",
                   "out_proj_bias", "W_O", "attention_scale", "attention_softcap")),
    AudioInput: ("takes audio", ("features", "frames_of", "decoder_input", "forced_logits", "transcribe")),
    ImageInput: ("takes images", ("pixel_values", "image_features", "prompt", "embed")),
    Generates: ("generates answers", ("generate",)),
    LanguageModel: ("is a text language model", ("to_tokens", "run_with_cache", "unembed", "supports")),
}

C = TypeVar("C")


def require(model: object, capability: type[C], analysis: str) -> C:
    """`model` typed as `capability`, or `UnsupportedError` naming what is missing."""
    if isinstance(model, capability):
        return model
    what, members = CAPABILITIES.get(capability, (capability.__name__, ()))
    missing = [m for m in members if not callable(getattr(model, m, None))]
    name = getattr(model, "name", type(model).__name__)
    backend = getattr(model, "backend", "?")
    raise UnsupportedError(
        f"{analysis} needs a model that {what} ({capability.__name__}); {name!r} (backend {backend!r}) "
        f"does not: it lacks {', '.join(missing) or 'the capability'}"
    )


def has(model: object, capability: type) -> bool:
    """Whether `model` offers `capability`."""
    return isinstance(model, capability)
