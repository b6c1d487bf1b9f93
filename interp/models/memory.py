"""Free memory per device and the batch size `auto` (the sweep engine's variants per forward).

`auto` stacks as many patch variants per forward as the free memory of the model's device holds:
on a GPU the free device memory (`torch.cuda.mem_get_info`, every GPU of a device map: the
smallest), on the CPU `MemAvailable` from /proc/meminfo; against an estimate of one variant's
activations in the widest block (residual, queries/keys/values, attention scores and pattern,
the MLP's hidden layer, the hooks' copies). An estimate is not a guarantee: the sweep halves its
chunk and retries when a forward runs out of memory anyway.

    >>> auto_batch_size(model, rows=8, positions=20)
    64
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

MAX_AUTO = 1024  # variants per forward: beyond this nothing is gained
SAFETY = 4.0  # transient copies (hooks clone, softmax in fp32, autograd off but allocator slack)
CPU_SHARE, GPU_SHARE = 0.5, 0.8  # of the free memory an auto batch may plan to use


def free_bytes(device: torch.device | str) -> int:
    """Free memory on `device` (bytes): the GPU's free memory, or the CPU's MemAvailable."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free)
    return _mem_available()


def _mem_available(meminfo: Path = Path("/proc/meminfo")) -> int:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 4 * 2**30  # no /proc (macOS, Windows): assume 4 GiB


def model_devices(model: Any) -> list[torch.device]:
    """The devices the model computes on: every GPU of its device map, else its device."""
    dm = getattr(getattr(model, "hf_model", None), "hf_device_map", None) or {}
    gpus = sorted({d for d in dm.values() if isinstance(d, int)})
    return [torch.device(f"cuda:{i}") for i in gpus] or [torch.device(model.device)]


def variant_bytes(spec: Any, rows: int, positions: int, dtype: torch.dtype) -> int:
    """Estimated activation bytes of one patch variant (`rows` prompts, `positions` tokens)."""
    elem = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    width = 8 * spec.d_model + 3 * spec.n_heads * spec.d_head + 2 * spec.n_heads * positions + 4 * spec.d_model
    return int(SAFETY * rows * positions * width * elem)


def auto_batch_size(model: Any, rows: int, positions: int) -> int:
    """Variants per forward for `model` on `rows` prompts of `positions` tokens, from the free
    memory of its (most constrained) device; between 1 and `MAX_AUTO`."""
    devices = model_devices(model)
    share = GPU_SHARE if devices[0].type == "cuda" else CPU_SHARE
    budget = share * min(free_bytes(d) for d in devices)
    per = max(1, variant_bytes(model.spec, rows, positions, getattr(model, "dtype", torch.float32)))
    return int(max(1, min(MAX_AUTO, budget // per)))
