"""The `execution:` section (issue 15): bad input is one line naming the field and what is
allowed, raised before any weights load or any run directory exists."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from interp.core.errors import ConfigError
from interp.io.config import load_config, with_overrides
from interp.io.execution import RayExecutor, check_execution

IOI = Path(__file__).resolve().parents[2] / "experiments" / "ioi.yaml"


@pytest.fixture(scope="module")
def cfg():
    return load_config(IOI)


def test_defaults_are_local(cfg):
    assert cfg.execution.backend == "local" and cfg.execution.workers == 1 and cfg.execution.address is None


@pytest.mark.parametrize(("key", "value", "message"), [
    ("execution.workers", "0", "execution.workers: must be >= 1; got 0"),
    ("execution.backend", "dask", "execution.backend: invalid value 'dask'; allowed: 'local' or 'ray'"),
    ("execution.cpus_per_worker", "0", "execution.cpus_per_worker: must be >= 1; got 0"),
    ("execution.gpus_per_worker", "-1", "execution.gpus_per_worker: must be >= 0; got -1"),
])
def test_bad_values_name_the_field(cfg, key, value, message):
    with pytest.raises(ConfigError, match=message) as exc:
        with_overrides(cfg, {key: value})
    assert exc.value.path == key and "\n" not in str(exc.value)


def test_ray_not_installed_is_one_line(cfg, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match="needs the ray package, which is not installed") as exc:
        check_execution(with_overrides(cfg, {"execution.backend": "ray"}))
    assert exc.value.path == "execution.backend"


def test_unreachable_address_is_one_line(cfg):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray instance is already connected in this process")
    c = with_overrides(cfg, {"execution.backend": "ray", "execution.address": "127.0.0.1:1"})
    with pytest.raises(ConfigError, match="cannot reach the Ray cluster at '127.0.0.1:1'") as exc:
        RayExecutor(c.execution, SimpleNamespace(device="cpu"), name="tiny-llama", device="cpu", dtype="float32",
                    seed=0, log=lambda _: None)
    assert exc.value.path == "execution.address" and "\n" not in str(exc.value)
    assert not ray.is_initialized()
