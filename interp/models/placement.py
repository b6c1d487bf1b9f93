"""Where a model's blocks sit: accelerate device maps (`model.device_map`, `model.max_memory`,
`model.offload_folder`) and reading the weights of modules whose parameters are offloaded.

A device map is a strategy (``auto`` | ``balanced`` | ``balanced_low_0`` | ``sequential``,
resolved by accelerate from `max_memory` and the free memory) or an explicit
``{module path: device}`` with devices ``cpu``, ``disk``, ``cuda``/``cuda:N`` or a GPU index.
The model is placed by accelerate alone (`from_pretrained(device_map=...)` for weights on disk,
`accelerate.dispatch_model` for the tiny models built from a config): its hooks move each
block's inputs to the block's device and, for ``cpu``/``disk`` offload, the block's weights in
and out around its forward. Offloaded parameters read as ``meta`` tensors outside a forward;
`weights_materialized` loads them for the backends' weight reads (W_O, W_U, final norm).

    >>> check_device_map({"model.layers.1": "disk"}, None)
    >>> check_device_map({"model.layers.1": "cuda:3"}, None)   # on a machine without cuda:3
    Traceback (most recent call last):
    interp.core.errors.ConfigError: model.device_map: device 'cuda:3' for 'model.layers.1' does not exist here; ...
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from interp.core.errors import ConfigError

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
DeviceMap = str | Mapping[str, str | int]
MaxMemory = Mapping[str, str | int]


def available_devices() -> list[str]:
    """The devices a device map may name here: cpu, disk and each visible CUDA GPU."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return ["cpu", "disk", *(f"cuda:{i}" for i in range(n))]


def _accelerate_device(value: Any, what: str, path: str) -> str | int:
    """A device as accelerate takes it ("cpu", "disk" or a GPU index), or a `ConfigError`
    naming `path` and the devices that exist."""
    allowed = available_devices()
    name = f"cuda:{value}" if isinstance(value, int) and not isinstance(value, bool) else value
    if name == "cuda":
        name = "cuda:0"
    if not isinstance(name, str) or name not in allowed:
        exists = "is not a device name" if not isinstance(name, str) or not (
            name.startswith("cuda:") or name in ("cpu", "disk")) else "does not exist here"
        raise ConfigError(f"device {value!r} for {what} {exists}; available: {', '.join(allowed)} "
                          "(or a GPU index)", path=path)
    return int(name.split(":")[1]) if name.startswith("cuda:") else name


def check_device_map(device_map: DeviceMap | None, max_memory: MaxMemory | None) -> None:
    """Raise `ConfigError` (path `model.device_map` / `model.max_memory`) for a strategy not
    known, a device that does not exist here, or a memory size accelerate cannot read. Needs
    no weights."""
    normalized_map(device_map)
    normalized_memory(max_memory, device_map)


def normalized_map(device_map: DeviceMap | None) -> str | dict[str, str | int] | None:
    if device_map is None or isinstance(device_map, str):
        if isinstance(device_map, str) and device_map not in STRATEGIES:
            raise ConfigError(f"unknown device map {device_map!r}; allowed: {', '.join(STRATEGIES)}, "
                              "or a mapping {module path: device}", path="model.device_map")
        return device_map
    if not isinstance(device_map, Mapping) or not device_map:
        raise ConfigError(f"device map must be one of {', '.join(STRATEGIES)} or a non-empty mapping "
                          f"{{module path: device}}, got {device_map!r}", path="model.device_map")
    return {str(k): _accelerate_device(v, repr(k), "model.device_map") for k, v in device_map.items()}


def normalized_memory(max_memory: MaxMemory | None, device_map: DeviceMap | None) -> dict[str | int, int] | None:
    if max_memory is None:
        return None
    from accelerate.utils import convert_file_size_to_int

    if device_map is None:
        raise ConfigError("max_memory is only used with model.device_map (set device_map: auto, or remove "
                          "max_memory)", path="model.max_memory")
    out: dict[str | int, int] = {}
    for key, size in max_memory.items():
        dev = _accelerate_device(key, "max_memory", "model.max_memory")
        try:
            out[dev] = int(convert_file_size_to_int(size))
        except (ValueError, TypeError):
            raise ConfigError(f"memory size {size!r} for {key!r} is not a size; use bytes or a string like "
                              "'2GiB', '500MB'", path="model.max_memory") from None
    return out


def pretrained_kwargs(device_map: DeviceMap | None, max_memory: MaxMemory | None,
                      offload_folder: str | Path | None) -> dict[str, Any]:
    """The `from_pretrained` keyword arguments for this placement (none without a device map)."""
    dm = normalized_map(device_map)
    if dm is None:
        return {}
    may_offload = isinstance(dm, str) or "disk" in dm.values()
    folder = offload_folder or (_temp_offload() if may_offload else None)
    return {"device_map": dm, "max_memory": normalized_memory(max_memory, device_map),
            "offload_folder": str(folder) if folder else None}


def dispatch(hf: nn.Module, device_map: DeviceMap, max_memory: MaxMemory | None,
             offload_folder: str | Path | None) -> nn.Module:
    """`hf` (built in memory, e.g. a tiny model) placed on the devices of `device_map` by
    accelerate's `dispatch_model` (a strategy resolved by `infer_auto_device_map`)."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    dm = normalized_map(device_map)
    memory = normalized_memory(max_memory, device_map)
    if isinstance(dm, str):
        no_split = list(getattr(hf, "_no_split_modules", None) or [])
        if dm != "sequential":
            memory = get_balanced_memory(hf, max_memory=memory, no_split_module_classes=no_split,
                                         low_zero=dm == "balanced_low_0")
        dm = infer_auto_device_map(hf, max_memory=memory, no_split_module_classes=no_split)
    assert dm is not None
    _check_modules(hf, dm)
    main = next((d for d in dm.values() if isinstance(d, int)), "cpu")
    folder = offload_folder or (_temp_offload() if "disk" in dm.values() else None)
    try:
        placed: nn.Module = dispatch_model(hf, device_map=dm, main_device=torch.device(
            f"cuda:{main}" if isinstance(main, int) else "cpu"), offload_dir=str(folder) if folder else None)
    except ValueError as e:  # a map that leaves parameters without a device
        raise map_error(e) from None
    placed.hf_device_map = dict(dm)  # type: ignore[assignment]
    return placed


def map_error(error: ValueError) -> ConfigError:
    """accelerate's / transformers' error for a map that leaves parameters without a device, as
    one short line naming the field."""
    text = str(error).splitlines()[0]
    head, sep, names = text.partition("following parameters:")
    if not sep:
        return ConfigError(text, path="model.device_map")
    params = [n.strip() for n in names.split(",") if n.strip()]
    modules = list(dict.fromkeys(n.rsplit(".", 1)[0] for n in params))
    shown = ", ".join(modules[:3]) + (f" and {len(modules) - 3} more" if len(modules) > 3 else "")
    return ConfigError(f"the device map gives no device to {len(modules)} modules ({shown}); map every module "
                       "(or a parent of it, e.g. 'model': 'cpu') to a device, or use device_map: auto",
                       path="model.device_map")


def _check_modules(hf: nn.Module, dm: Mapping[str, Any]) -> None:
    names = {n for n, _ in hf.named_modules()}
    missing = [k for k in dm if k and k not in names]
    if missing:
        top = [n for n, _ in hf.named_children()]
        raise ConfigError(f"no module {missing[0]!r} in this model; module paths start with "
                          f"{', '.join(top)} (e.g. 'model.layers.0')", path="model.device_map")


def _temp_offload() -> str:
    """A temporary folder for offloaded weights, removed when the process exits."""
    path = tempfile.mkdtemp(prefix="interp-offload-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def is_dispatched(hf: nn.Module) -> bool:
    """Whether accelerate placed `hf` (a device map: hooks move inputs and weights)."""
    return getattr(hf, "hf_device_map", None) is not None


def input_device(hf: nn.Module) -> torch.device:
    """The device token ids go to: the input embedding's execution device (its first
    parameter's device when accelerate did not place the model)."""
    getter: Any = getattr(hf, "get_input_embeddings", None)
    emb = getter() if callable(getter) else None
    hook = getattr(emb, "_hf_hook", None)
    dev = getattr(hook, "execution_device", None)
    if dev is not None:
        return torch.device(f"cuda:{dev}" if isinstance(dev, int) else dev)
    p = next(hf.parameters())
    return p.device if p.device.type != "meta" else torch.device("cpu")


@contextlib.contextmanager
def weights_materialized(module: nn.Module) -> Iterator[None]:
    """Within the block, the parameters of every offloaded module under `module` are real
    tensors on their execution device (a no-op for a model that is not offloaded)."""
    from accelerate.utils import align_module_device, has_offloaded_params

    with contextlib.ExitStack() as stack:
        for m in module.modules():
            if has_offloaded_params(m):
                stack.enter_context(align_module_device(m))
        yield


def module_tensor(module: nn.Module, name: str) -> torch.Tensor | None:
    """`module.<name>` detached (None when it is absent or not a tensor); a copy on the module's
    execution device when its weights are offloaded (the original is then a meta tensor)."""
    from accelerate.utils import has_offloaded_params

    offloaded = has_offloaded_params(module)
    with weights_materialized(module):
        t = getattr(module, name, None)
        if not isinstance(t, torch.Tensor):
            return None
        return t.detach().clone() if offloaded else t.detach()
