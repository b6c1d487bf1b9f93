"""`VisionLanguageModel`: a Hugging Face LLaVA with what head analyses need.

TransformerLens has no LLaVA adapter, so a vision-language model is wrapped directly: image
preprocessing, the image features (vision tower + projector, through HF's own
`get_image_features`), prompts with the image placeholder expanded to one token per image
feature, the language model run on embeddings (left-padded batches, KV cache), greedy
generation, and the one hook mechanism of every model (`add_hook`, `hooks`) on the sites of the
family table (``[llava]`` in `interp/models/families/families.toml`): ``z.L<layer>``, the
per-head attention output (batch, pos, head, d_head) entering each layer's W_O, which a hook may
replace, and the vision tower's residual stream (``vision.resid_post.L<layer>``, DINOv2 towers).

    model = load_model("shapes-llava")
    pv = model.pixel_values([image])                        # (1, 3, 84, 84)
    out = model.generate([image], ["What colour is the sun?"])[0].text
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from interp.core.errors import SiteError
from interp.core.hooks import Handle, HookFn, temporary_hooks
from interp.core.model import KV_COMPONENTS, ModelSpec, check_site_range
from interp.core.sites import Component, Site, Stack
from interp.models.backends.modules import add_module_hook
from interp.models.families import family

FAMILY = family("llava")
IMAGE_MARK = "\x00IMAGE\x00"


@dataclass(frozen=True)
class VisionLanguageSpec(ModelSpec):
    """The language model's shape (`ModelSpec`) and the image side's."""

    n_image_tokens: int = 0
    image_size: int = 0
    vision_architecture: str = ""


@dataclass(frozen=True)
class Generation:
    token_ids: list[int]  # generated ids, without the end token
    text: str


class VisionLanguageModel:
    backend = "hf"
    modality = "vision"

    def __init__(self, name: str, hf_model: Any, tokenizer: Any, *, weights_sha256: str | None,
                 image_size: int, image_mean: Sequence[float], image_std: Sequence[float],
                 system_prompt: str | None = None, prompt_template: str | None = None,
                 image_processor: Any = None):
        hf_model.eval()
        self.hf_model, self.name, self.tokenizer = hf_model, name, tokenizer
        self.weights_sha256 = weights_sha256
        self.system_prompt = system_prompt
        self.prompt_template = prompt_template
        self.image_processor = image_processor
        self.image_mean = torch.tensor(image_mean).view(3, 1, 1)
        self.image_std = torch.tensor(image_std).view(3, 1, 1)
        p = next(hf_model.parameters())
        self.device, self.dtype = p.device, p.dtype
        cfg = hf_model.config
        tc, vc = cfg.text_config, cfg.vision_config
        patches = (image_size // vc.patch_size) ** 2
        n_img = patches + (1 if cfg.vision_feature_select_strategy == "full" else 0)
        d_head = getattr(tc, "head_dim", None) or tc.hidden_size // tc.num_attention_heads
        self.spec = VisionLanguageSpec(
            n_layers=tc.num_hidden_layers, n_heads=tc.num_attention_heads,
            n_kv_heads=getattr(tc, "num_key_value_heads", tc.num_attention_heads), d_model=tc.hidden_size,
            d_head=d_head, d_vocab=tc.vocab_size, n_image_tokens=n_img, image_size=image_size,
            architecture=f"llava/{tc.model_type}", vision_architecture=vc.model_type)
        self.image_token_id = int(cfg.image_token_id)
        self.end_ids = {i for i in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>"))
                        if isinstance(i, int) and i >= 0}

    # -- modules ------------------------------------------------------------------------------
    def module(self, key: str, **fmt: int) -> nn.Module:
        mod: nn.Module = self.hf_model.get_submodule(FAMILY.modules[key].format(**fmt))
        return mod

    def attn_out_proj(self, layer: int) -> nn.Module:
        return self.module("attn_out_proj", layer=layer)

    # -- inputs -------------------------------------------------------------------------------
    def pixel_values(self, images: Sequence[np.ndarray]) -> Float[Tensor, "batch 3 h w"]:
        """Images (H, W, 3) uint8 at the model's size -> normalised pixel values."""
        if self.image_processor is not None:
            return self.image_processor(images=list(images), return_tensors="pt")["pixel_values"].to(
                self.device, self.dtype)
        out = []
        for img in images:
            x = torch.as_tensor(np.asarray(img), dtype=torch.float32).permute(2, 0, 1) / 255.0
            if x.shape[-2:] != (self.spec.image_size, self.spec.image_size):
                raise ValueError(f"image of size {tuple(x.shape[-2:])}; {self.name} takes "
                                 f"{self.spec.image_size} x {self.spec.image_size}")
            out.append((x - self.image_mean) / self.image_std)
        return torch.stack(out).to(self.device, self.dtype)

    @torch.no_grad()
    def image_features(self, pixel_values: Tensor) -> Float[Tensor, "batch n_img d_model"]:
        feats = self.hf_model.model.get_image_features(pixel_values=pixel_values).pooler_output
        return torch.stack(list(feats))

    def prompt(self, question: str, *, with_image: bool = True) -> list[int]:
        """Chat-formatted prompt ids; with the image, the placeholder token repeated once per
        image feature precedes the question; without, the image tokens are simply absent.
        The format is `prompt_template` ({image}, {question}) when set, else the chat template."""
        content = f"{IMAGE_MARK}\n{question}" if with_image else question
        if self.prompt_template is not None:
            text = self.prompt_template.format(content=content)
        else:
            msgs = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + \
                [{"role": "user", "content": content}]
            text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        def enc(s: str) -> list[int]:
            return list(self.tokenizer(s, add_special_tokens=False)["input_ids"])

        if not with_image:
            return enc(text)
        pre, post = text.split(IMAGE_MARK)
        return enc(pre) + [self.image_token_id] * self.spec.n_image_tokens + enc(post)

    def embed(self, ids: Sequence[int], image_features: Tensor | None = None) -> Float[Tensor, "pos d_model"]:
        """Token embeddings with the image features written at the placeholder positions."""
        t = torch.tensor(list(ids), device=self.device)
        mask = t == self.image_token_id
        e = self.module("embed_tokens")(t.masked_fill(mask, 0))
        if int(mask.sum()):
            if image_features is None or image_features.shape[0] != int(mask.sum()):
                raise ValueError(f"{int(mask.sum())} image tokens but features of shape "
                                 f"{None if image_features is None else tuple(image_features.shape)}")
            e = e.masked_scatter(mask[:, None], image_features.to(e.dtype))
        return e

    @staticmethod
    def pack(rows: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Left-pad (pos, d_model) rows -> embeds (batch, pos, d), attention mask, position ids."""
        n = max(r.shape[0] for r in rows)
        emb = rows[0].new_zeros(len(rows), n, rows[0].shape[-1])
        mask = torch.zeros(len(rows), n, dtype=torch.long, device=rows[0].device)
        for i, r in enumerate(rows):
            emb[i, n - r.shape[0]:] = r
            mask[i, n - r.shape[0]:] = 1
        return emb, mask, (mask.cumsum(-1) - 1).clamp(min=0)

    # -- running ------------------------------------------------------------------------------
    @torch.no_grad()
    def forward_embeds(self, embeds: Tensor, attention_mask: Tensor, position_ids: Tensor,
                       cache: Any = None) -> tuple[Float[Tensor, "batch vocab"], Any]:
        """Last-position logits and the updated KV cache (pass the full mask, new positions only)."""
        from transformers import DynamicCache

        cache = cache if cache is not None else DynamicCache(config=self.hf_model.config.text_config)
        lm = self.module("language_model")
        # transformers >= 5.24 calls the KV cache `cache` (`past_key_values` is deprecated)
        key = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"
        out = lm(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                 use_cache=True, **{key: cache})
        new_cache = out.cache if key == "cache" else out.past_key_values
        return self.module("lm_head")(out.last_hidden_state[:, -1]), new_cache

    # -- sites and hooks (the one mechanism of every model) -------------------------------------
    def validate_site(self, site: Site) -> None:
        """`SiteError` unless `site` is in the family table and in range for this model."""
        if site.stack not in FAMILY.stacks:
            check_site_range(site, n_layers=0, n_heads=0, n_ctx=None, stacks=FAMILY.stacks, what=self.name)
        row = FAMILY.sites.get((site.stack, site.component))
        if row is None:
            allowed = ", ".join(str(Site(c, layer=0, stack=st)).removesuffix(".L0") for st, c in FAMILY.sites)
            raise SiteError(f"site {site}: {self.name} offers no {site.component.value!r} in its "
                            f"{site.stack.value} stack; allowed: {allowed}")
        if site.stack is Stack.VISION:
            vc = self.hf_model.config.vision_config
            check_site_range(site, n_layers=vc.num_hidden_layers, n_heads=vc.num_attention_heads, n_ctx=None,
                             stacks=FAMILY.stacks, what=self.name)
        else:
            heads = self.spec.n_kv_heads if site.component in KV_COMPONENTS else self.spec.n_heads
            n_ctx = getattr(self.hf_model.config.text_config, "max_position_embeddings", None)
            check_site_range(site, n_layers=self.spec.n_layers, n_heads=heads, n_ctx=n_ctx,
                             stacks=FAMILY.stacks, what=self.name)
        try:
            self.hf_model.get_submodule(row[0].format(layer=site.layer or 0))
        except AttributeError:
            raise SiteError(f"site {site}: {self.name}'s {self.spec.vision_architecture} tower has no "
                            f"module {row[0]}") from None

    def add_hook(self, site: Site, fn: HookFn) -> Handle:
        """A torch hook on the module carrying `site`: `fn(z, site)` with z (batch, pos, head,
        d_head) for ``z`` sites; a returned tensor replaces the value."""
        self.validate_site(site)
        d_head = self.spec.d_head if site.component is Component.Z else None
        return add_module_hook(self.hf_model, FAMILY.sites[(site.stack, site.component)], site, fn, d_head=d_head)

    def hooks(self, hooks: Sequence[tuple[Site, HookFn]]) -> AbstractContextManager[None]:
        return temporary_hooks(self, hooks)

    def forward(self, embeds: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Float[Tensor, "batch vocab"]:
        """Last-position logits of the language model on embeddings (see `forward_embeds`)."""
        return self.forward_embeds(embeds, attention_mask, position_ids)[0]

    @torch.no_grad()
    def generate(self, images: Sequence[np.ndarray] | None, questions: Sequence[str], *,
                 max_new_tokens: int = 12, with_image: bool = True) -> list[Generation]:
        """Greedy answers, one per question (batched, left-padded, KV cache)."""
        feats = self.image_features(self.pixel_values(images or [])) if with_image else [None] * len(questions)
        rows = [self.embed(self.prompt(q, with_image=with_image), f) for q, f in zip(questions, feats, strict=True)]
        emb, mask, pos = self.pack(rows)
        done = torch.zeros(len(rows), dtype=torch.bool)
        out: list[list[int]] = [[] for _ in rows]
        logits, cache = self.forward_embeds(emb, mask, pos)
        for _ in range(max_new_tokens):
            nxt = logits.argmax(-1)
            for i, t in enumerate(nxt.tolist()):
                if not done[i]:
                    if t in self.end_ids:
                        done[i] = True
                    else:
                        out[i].append(t)
            if bool(done.all()):
                break
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], 1)
            pos = pos[:, -1:] + 1
            logits, cache = self.forward_embeds(self.module("embed_tokens")(nxt[:, None]), mask, pos, cache)
        return [Generation(ids, self.tokenizer.decode(ids, skip_special_tokens=True).strip()) for ids in out]
