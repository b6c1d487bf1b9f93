"""A normalisation module seen as an affine map with a frozen scale (for DLA).

Every norm the decoder families use (LayerNorm, RMSNorm, Gemma's ``(1 + w)`` RMSNorm, OLMo's
parameter-free LayerNorm, Cohere's bias-free LayerNorm) has the form

    N(x) = centre(x) * s(x) * w + b        centre(x) = x - mean(x) (LayerNorm) or x (RMSNorm)

with one scalar s(x) per row. Rather than re-deriving each family's formula, `probe_norm`
asks the model's own module: N(0) gives b, N(constant) tells whether it centres, and
N(alternating +-c) gives the effective weight w (Gemma's 1 + w included). `AffineNorm.scale`
then reads s off the module's actual output for the actual input (least squares per row) and
checks that the affine form reproduces the module exactly; otherwise it raises, naming the
module. With s frozen, N is linear in x, which is what direct logit attribution needs.

    norm = probe_norm(model.final_norm_module(), d_model)
    s = norm.scale(x)                          # (batch, 1), checked against the module
    part_after_norm = norm.linear(part, s)     # centre(part) * s * w
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from interp.core.errors import UnsupportedError

_PROBE = 100.0  # large against every eps (1e-5 .. 1e-6), small against float overflow


@dataclass(frozen=True)
class AffineNorm:
    module: nn.Module
    centred: bool
    weight: torch.Tensor  # (d_model,) effective weight, float32
    bias: torch.Tensor  # (d_model,) N(0), float32 (zeros for norms without a bias)
    name: str = "norm"

    def centre(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return x - x.mean(-1, keepdim=True) if self.centred else x

    def linear(self, part: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """centre(part) * s * w: the part's share of N(x) with the scale frozen."""
        return self.centre(part) * scale * self.weight

    @torch.no_grad()
    def scale(self, x: torch.Tensor, rtol: float = 1e-4) -> torch.Tensor:
        """s(x) per row, (..., 1), read off the module's output on `x` and checked."""
        y: torch.Tensor = self.module(x).float().to(self.bias.device) - self.bias  # module may run elsewhere
        cw = self.centre(x) * self.weight
        s = (y * cw).sum(-1, keepdim=True) / (cw * cw).sum(-1, keepdim=True).clamp_min(1e-30)
        err = (y - s * cw).abs().max()
        ref = y.abs().max().clamp_min(1e-6)
        if not bool(err <= rtol * ref):
            raise UnsupportedError(
                f"{self.name} ({type(self.module).__name__}) is not of the form "
                f"centre(x) * scale(x) * w + b (max deviation {float(err):.2e} of {float(ref):.2e}); "
                "no frozen-scale decomposition through it"
            )
        return s


@torch.no_grad()
def probe_norm(module: nn.Module, d_model: int, *, name: str = "norm") -> AffineNorm:
    """The affine form of `module`, found by calling it on three probe vectors."""
    p = next(iter(module.parameters()), None)
    run_on = getattr(getattr(module, "_hf_hook", None), "execution_device", None)  # accelerate: offloaded weights
    dev = torch.device(run_on) if run_on is not None else (p.device if p is not None else torch.device("cpu"))
    dt = p.dtype if p is not None else torch.float32
    zero = torch.zeros(1, d_model, device=dev, dtype=dt)
    b = module(zero).float()[0]
    const = module(torch.full((1, d_model), _PROBE, device=dev, dtype=dt)).float()[0]
    centred = bool(torch.allclose(const, b, atol=1e-5 * max(1.0, float(b.abs().max()))))
    alt = torch.tensor([(-1.0) ** i for i in range(d_model)], device=dev) * _PROBE
    c_alt = alt - alt.mean() if centred else alt
    y = module(alt.to(dt).unsqueeze(0)).float()[0] - b
    w = y * c_alt.pow(2).mean().sqrt() / c_alt
    return AffineNorm(module, centred, w, b, name)
