"""Executors for runs (`execution:` in the config) and the shard store that makes runs resumable.

- `local`: `interp.core.execution.LocalExecutor` on the run's own model.
- `ray`: `RayExecutor`, `workers` Ray actors that each load the model once (same name, device,
  dtype and seed as the driver) with `torch.set_num_threads(cpus_per_worker)`; shards go to
  whichever actor is free and come back in shard order. An actor that dies has its shard re-run
  on a fresh actor. No `address`: a local Ray instance is started and shut down with the run;
  an address joins that cluster. `ray` is imported only here, only for this backend.
- `StoredExecutor` wraps either: each shard's result is written atomically to
  `<run>/shards/<step>/<key>.pt` as it finishes (and its key recorded in the manifest's
  `shards_done`); a shard whose file exists is loaded instead of run (`interp run --resume`).

    with open_executor(cfg, model, log) as executor:
        ex = StoredExecutor(executor, ShardStore(run, "head_patching"), log)
        patch_heads(model, pairs, executor=ex)
"""

from __future__ import annotations

import io
import os
import socket
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from interp.core.errors import ConfigError
from interp.core.execution import Executor, LocalExecutor, OnResult, Shard
from interp.io.runfiles import atomic_write, make_dir
from interp.io.runstore import Run

__all__ = ["ShardStore", "StoredExecutor", "RayExecutor", "open_executor", "check_execution", "MAX_RETRIES"]

Log = Callable[[str], None]
MAX_RETRIES = 3  # a shard whose worker died this many times stops the run


class ShardStore:
    """Finished shards of one step: `<run>/shards/<step>/<key>.pt` (torch.save of tensors, read
    back with `weights_only=True`: no pickled code runs on load)."""

    def __init__(self, run: Run, step: str):
        self.run, self.step = run, step
        self.dir = run.path / "shards" / step

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.pt"

    def load(self, key: str) -> Any | None:
        path = self.path(key)
        return torch.load(path, weights_only=True) if path.is_file() else None

    def save(self, key: str, result: Any) -> Path:
        """Write atomically (temporary file, then rename: a reader never sees half a shard) and
        record the key in the manifest."""
        buf = io.BytesIO()
        torch.save(result, buf)
        make_dir(self.dir)
        atomic_write(self.path(key), buf.getvalue())
        self.run.add_done_shard(self.step, key)
        return self.path(key)


class StoredExecutor:
    """`inner` for the shards not yet in `store`; the others are read back from it."""

    def __init__(self, inner: Executor, store: ShardStore, log: Log = print):
        self.inner, self.store, self.log = inner, store, log

    def map(self, shards: Sequence[Shard], on_result: OnResult | None = None) -> list[Any]:
        results: dict[int, Any] = {}
        for i, shard in enumerate(shards):
            found = self.store.load(shard.key)
            if found is not None:
                results[i] = found
                if on_result is not None:
                    on_result(i, found)
        todo = [i for i in range(len(shards)) if i not in results]
        if results:
            self.log(f"{self.store.step}: {len(results)} of {len(shards)} shards reused from "
                     f"{self.store.dir}; computing {len(todo)}")

        def finished(j: int, result: Any) -> None:
            i = todo[j]
            self.store.save(shards[i].key, result)
            results[i] = result
            if on_result is not None:
                on_result(i, result)

        self.inner.map([shards[i] for i in todo], finished)
        return [results[i] for i in range(len(shards))]


# ------------------------------------------------------------------------------------- ray


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("backend 'ray' needs the ray package, which is not installed: pip install "
                          "'interp[scale]' (or ray), or use backend: local", path="execution.backend") from None
    return ray


def check_execution(cfg: Any) -> None:
    """What can be checked before any weights load: ray is importable for backend 'ray'."""
    if cfg.execution.backend == "ray":
        _import_ray()


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A TCP connection to `host:port` (or `ray://host:port`) opens within `timeout` seconds."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError("not of the form host:port")
    with socket.create_connection((host, int(port)), timeout=timeout):
        pass


class _Worker:
    """A Ray actor's state: its own copy of the model (wrapped by `ray.remote` at first use)."""

    def __init__(self, name: str, device: str, dtype: str, seed: int, threads: int):
        from interp.models.loading import load_model

        torch.set_num_threads(threads)
        self.model = load_model(name, device=device, dtype=dtype, seed=seed)

    def run(self, fn: Callable[[Any, Any], Any], payload: Any) -> Any:
        return fn(self.model, payload)

    def pid(self) -> int:
        return os.getpid()


class RayExecutor:
    """Shards on `workers` Ray actors; see the module docstring. `close()` kills the actors and
    shuts down a Ray instance it started."""

    def __init__(self, execution: Any, model: Any, *, name: str, device: str, dtype: str, seed: int,
                 log: Log = print):
        self.ray = ray = _import_ray()
        self.execution, self.log = execution, log
        self.started = execution.address is None
        self.owns = not ray.is_initialized()  # a caller's own ray.init (a test, a notebook) is kept
        gpus = execution.gpus_per_worker
        self.gpus = gpus if gpus is not None else int(torch.device(model.device).type == "cuda")
        self._connect()
        self._check_resources()
        self.spec = (name, device, dtype, seed, execution.cpus_per_worker)
        self.remote = ray.remote(_Worker)
        self.made = 0
        self.actors = [self._new_actor() for _ in range(execution.workers)]
        ray.get([a.pid.remote() for a in self.actors])  # every worker has its model before any shard
        log(f"ray: {execution.workers} workers ready ({'local instance' if self.started else execution.address})")

    def _connect(self) -> None:
        ray, ex = self.ray, self.execution
        if not self.owns:
            return
        if self.started:
            root = str(Path(__file__).resolve().parents[2])  # workers import this interp
            path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
            ray.init(num_cpus=ex.workers * ex.cpus_per_worker, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": path}})
            return
        try:
            _check_reachable(ex.address)  # ray.init itself retries an unreachable address for minutes
            ray.init(address=ex.address, log_to_driver=False)
        except Exception as exc:  # ray raises ConnectionError, RuntimeError or its own types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"cannot reach the Ray cluster at {ex.address!r} ({first}); give the address of a "
                              'running cluster ("auto", "host:port" or "ray://host:port") or null for a local '
                              "instance", path="execution.address") from None

    def _check_resources(self) -> None:
        ex, have = self.execution, self.ray.cluster_resources()
        need = {"CPU": ex.workers * ex.cpus_per_worker, "GPU": ex.workers * self.gpus}
        for res, n in need.items():
            if n > have.get(res, 0):
                self.close()
                field = "gpus_per_worker" if res == "GPU" else "workers"
                raise ConfigError(f"{ex.workers} workers need {n} {res}s but the Ray cluster has "
                                  f"{int(have.get(res, 0))}; lower execution.workers or execution.{field}",
                                  path=f"execution.{field}")

    def _new_actor(self) -> Any:
        self.made += 1
        return self.remote.options(num_cpus=self.execution.cpus_per_worker, num_gpus=self.gpus,
                                   name=f"interp-worker-{os.getpid()}-{self.made}").remote(*self.spec)

    def map(self, shards: Sequence[Shard], on_result: OnResult | None = None) -> list[Any]:
        ray = self.ray
        queue, free = deque(range(len(shards))), list(self.actors)
        pending: dict[Any, tuple[int, Any]] = {}
        results: dict[int, Any] = {}
        deaths: dict[int, int] = {}
        while queue or pending:
            while queue and free:
                i, actor = queue.popleft(), free.pop(0)
                pending[actor.run.remote(shards[i].fn, shards[i].payload)] = (i, actor)
            [ref], _ = ray.wait(list(pending), num_returns=1)
            i, actor = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError:
                free.append(self._replace(actor, shards[i].key, deaths, i))
                queue.appendleft(i)
                continue
            except ray.exceptions.RayTaskError as exc:
                raise exc.as_instanceof_cause() from None  # the shard's own error (e.g. an InterpError)
            results[i] = result
            free.append(actor)
            if on_result is not None:
                on_result(i, result)
        return [results[i] for i in range(len(shards))]

    def _replace(self, dead: Any, key: str, deaths: dict[int, int], i: int) -> Any:
        deaths[i] = deaths.get(i, 0) + 1
        if deaths[i] > MAX_RETRIES:
            raise RuntimeError(f"shard {key}: its Ray worker died {deaths[i]} times; stopping")
        self.log(f"ray: a worker died during shard {key}; re-running it on a new worker")
        fresh = self._new_actor()
        self.actors = [fresh if a is dead else a for a in self.actors]
        return fresh

    def close(self) -> None:
        for actor in getattr(self, "actors", []):
            self.ray.kill(actor)
        self.actors = []
        if self.owns and self.ray.is_initialized():
            self.ray.shutdown()  # stops the local instance it started, or leaves the cluster it joined


@contextmanager
def open_executor(cfg: Any, model: Any, log: Log = print) -> Iterator[Executor]:
    """The executor `cfg.execution` asks for, closed (Ray shut down) on the way out."""
    if cfg.execution.backend == "local":
        yield LocalExecutor(model)
        return
    ex = RayExecutor(cfg.execution, model, name=cfg.model.name, device=cfg.model.device, dtype=cfg.model.dtype,
                     seed=cfg.seed, log=log)
    try:
        yield ex
    finally:
        ex.close()
