"""The served registry: resolves NAME[/VERSION] inside the registry folder, loads packages on first use, notices
new versions and changed packages without a restart, and remembers broken ones (reported, never fatal).

Every lookup re-resolves the version (a directory listing: new versions appear at once) and compares a cheap
signature (mtime and size of the version folder, ``config.json`` and ``model.safetensors``) with the loaded
one; a changed package is loaded again and the old one's batcher drained in the background.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve.batching import DynamicBatcher
from serve.errors import ModelNotFound, ModelNotReady
from serve.observability import Metrics
from serve.settings import Settings

log = logging.getLogger("brainforge.serve.registry")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SIGNATURE_FILES = ("", "config.json", "model.safetensors", "labels.json", "preprocessing.json")


@dataclass
class LoadedModel:
    name: str
    version: str
    path: Path
    package: Any  # finetune.package.ModelPackage
    predictor: Any  # finetune.predict.Predictor
    batcher: DynamicBatcher
    signature: tuple


def check_name(value: str, field: str) -> str:
    """Model names and versions: 1-128 of [A-Za-z0-9._-], not starting with '.' (so never '..' or a path)."""
    if not NAME_RE.match(value or ""):
        raise ModelNotFound(f"{field} {value!r} is not a valid name (1-128 of A-Z a-z 0-9 . _ -, not starting with '.')")
    return value


def _signature(path: Path) -> tuple:
    sig = []
    for f in SIGNATURE_FILES:
        try:
            st = os.stat(path / f) if f else os.stat(path)
            sig.append((st.st_mtime_ns, st.st_size))
        except OSError:
            sig.append(None)
    return tuple(sig)


class ModelRegistry:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings, self.metrics = settings, metrics
        self.root = settings.registry
        self._models: dict[Path, LoadedModel | ModelNotReady] = {}
        self._locks: dict[Path, asyncio.Lock] = {}
        self._listing: tuple[tuple, list[dict]] | None = None
        self._retired: set[asyncio.Task] = set()

    # --- lookup --------------------------------------------------------------------------------------
    def resolve(self, name: str, version: str | None) -> tuple[str, Path]:
        """(version, folder) of NAME[/VERSION]; latest when ``version`` is None. ModelNotFound otherwise."""
        from finetune.errors import ModelPackageError
        from finetune.package import resolve_version

        check_name(name, "model name")
        if version is not None:
            check_name(version, "model version")
        try:
            path = Path(resolve_version(self.root, name, version)).resolve()
        except (ModelPackageError, FileNotFoundError) as e:
            raise ModelNotFound(str(e)) from e
        if not path.is_relative_to(self.root) or not path.is_dir():  # resolve_version refuses escapes too
            raise ModelNotFound(f"model {name} version {version}: not in the registry")
        return path.name, path

    async def get(self, name: str, version: str | None = None) -> LoadedModel:
        """The loaded model (loading it off the event loop on first use); ModelNotFound / ModelNotReady."""
        version, path = self.resolve(name, version)
        sig = _signature(path)
        cached = self._models.get(path)
        if cached is None or cached.signature != sig:
            lock = self._locks.setdefault(path, asyncio.Lock())
            async with lock:
                cached = self._models.get(path)
                if cached is None or cached.signature != sig:
                    cached = await self._load(name, version, path, sig)
        if isinstance(cached, ModelNotReady):
            raise cached
        return cached

    async def _load(self, name: str, version: str, path: Path, sig: tuple) -> LoadedModel | ModelNotReady:
        from finetune.errors import ModelPackageError
        from finetune.package import load_model_package
        from finetune.predict import Predictor

        def load():
            import torch

            if torch.get_num_threads() != self.settings.intra_op_threads:  # process-wide; before the first forward
                torch.set_num_threads(self.settings.intra_op_threads)
            package = load_model_package(path, map_location=self.settings.device)
            # the predictor's own chunking only bounds memory; batching decisions are the batcher's
            return package, Predictor(package, batch_size=max(64, self.settings.max_batch))

        old = self._models.get(path)
        try:
            package, predictor = await asyncio.to_thread(load)
        except (ModelPackageError, OSError, ValueError, KeyError) as e:
            err = ModelNotReady(f"model {name} version {version} is not ready: {e}")
            err.signature = sig  # type: ignore[attr-defined]
            log.error("broken model package", extra={"fields": {"model": name, "version": version, "error": str(e)}})
            self._models[path] = err
            self._retire(old)
            return err
        batcher = DynamicBatcher(
            predictor.predict_items, max_batch=self.settings.max_batch, max_delay_s=self.settings.max_delay_ms / 1000,
            max_queue=self.settings.max_queue, labels=(name, version), metrics=self.metrics,
        )
        loaded = LoadedModel(name, version, path, package, predictor, batcher, sig)
        self._models[path] = loaded
        self._retire(old)
        log.info("model loaded", extra={"fields": {"model": name, "version": version, "path": str(path)}})
        return loaded

    def _retire(self, old: LoadedModel | ModelNotReady | None) -> None:
        if isinstance(old, LoadedModel):
            task = asyncio.get_running_loop().create_task(old.batcher.close(self.settings.graceful_timeout_s))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    # --- listing ---------------------------------------------------------------------------------------
    def _registry_signature(self) -> tuple:
        sig = [_signature(self.root)[0]]
        for name in sorted(os.listdir(self.root)):
            p = self.root / name
            if p.is_dir():
                sig.append((name, _signature(p)[0]))
                sig.extend((name, v, _signature(p / v)[:2]) for v in sorted(os.listdir(p)) if (p / v).is_dir())
        return tuple(sig)

    def list(self) -> list[dict]:
        """finetune's `list_models` (name, versions, key facts of the model cards), cached until the registry changes."""
        from finetune.package import list_models

        sig = self._registry_signature()
        if self._listing is None or self._listing[0] != sig:
            self._listing = (sig, list_models(self.root))
        return self._listing[1]

    def versions(self, name: str) -> list[str]:
        for m in self.list():
            if m.get("name") == name:
                return [str(v) for v in m.get("versions", [])]
        return []

    async def preload(self) -> None:
        """Load the latest version of every model (broken ones are logged and reported on their ready route)."""
        for entry in await asyncio.to_thread(self.list):
            try:
                await self.get(entry["name"])
            except (ModelNotFound, ModelNotReady):
                pass

    def loaded(self) -> list[LoadedModel]:
        return [m for m in self._models.values() if isinstance(m, LoadedModel)]

    async def close(self) -> None:
        """Let every admitted request finish, then stop the inference threads."""
        await asyncio.gather(*(m.batcher.close(self.settings.graceful_timeout_s) for m in self.loaded()), *self._retired)
