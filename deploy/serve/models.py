"""The endpoint's models: variants loaded at startup with weighted routing, and the multi-model LRU cache."""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
import tarfile
import tempfile
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from deploy.serve.config import MultiModelConfig, ServeConfig
from deploy.serve.errors import ModelFailure, validation_error
from deploy.serve.handler import LoadError, ModelHandler, load_handler
from deploy.serve.metrics import Metrics


def extract_model_tar(tar_path: Path, dest: Path) -> Path:
    """Extract a model.tar.gz into dest (tarfile's "data" filter refuses paths escaping dest)."""
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            tar.extractall(dest, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise LoadError(f"cannot extract {tar_path}: {exc}") from exc
    return dest


@dataclass(frozen=True)
class Variant:
    """A production variant as served: its handler (None on multi-model endpoints), its header value."""

    name: str
    weight: float
    handler: ModelHandler | None
    header: bytes  # pre-encoded x-Amzn-Invoked-Production-Variant value


class Variants:
    """Picks a variant by weight (SageMaker's traffic split) or by name (TargetVariant)."""

    def __init__(self, variants: list[Variant], rng: random.Random) -> None:
        self.by_name = {v.name: v for v in variants}
        self._routable = [v for v in variants if v.weight > 0]
        self._cumulative = list(itertools.accumulate(v.weight for v in self._routable))
        self._total = self._cumulative[-1]
        self._random = rng.random
        self._only = self._routable[0] if len(self._routable) == 1 else None

    def pick(self) -> Variant:
        """A variant drawn with probability weight / sum(weights)."""
        if self._only is not None:
            return self._only
        index = bisect_right(self._cumulative, self._random() * self._total)
        return self._routable[min(index, len(self._routable) - 1)]


def load_variants(config: ServeConfig, rng: random.Random) -> Variants:
    """Load every variant's artefact once (variants sharing a model_dir share the loaded handler)."""
    loaded: dict[Path, ModelHandler] = {}
    variants: list[Variant] = []
    for vc in config.variants:
        handler = None
        if config.multi_model is None and vc.model_dir is not None:
            handler = loaded.get(vc.model_dir)
            if handler is None:
                handler = loaded[vc.model_dir] = load_handler(vc.model_dir, config.program)
        variants.append(Variant(vc.name, vc.weight, handler, vc.name.encode("ascii")))
    return Variants(variants, rng)


class MultiModelCache:
    """Target models (tar.gz paths under model_root) loaded on first use; the least recently used evicted.

    Lookups, insertions and evictions happen on the event loop; extraction and model_fn run in the default
    thread pool so a load never stalls other requests. Concurrent first requests for a target share one load.
    """

    def __init__(self, config: MultiModelConfig, program: str, metrics: Metrics) -> None:
        self._root = config.model_root
        self._capacity = config.cache_size
        self._program = program
        self._metrics = metrics
        self._lru: OrderedDict[str, ModelHandler] = OrderedDict()
        self._pending: dict[str, asyncio.Future[ModelHandler]] = {}
        self._work = Path(tempfile.mkdtemp(prefix="pdm-serve-models-"))
        self._ids = itertools.count()

    def resolve(self, target: str) -> Path:
        """The tar.gz file a TargetModel names; ValidationError when it is outside the root or missing."""
        try:
            path = (self._root / target).resolve()
        except (OSError, ValueError) as exc:
            raise validation_error(f"TargetModel {target!r} is not a valid path: {exc}") from exc
        if target.startswith("/") or not path.is_relative_to(self._root):
            raise validation_error(f"TargetModel {target!r} must be a path relative to the model root.")
        if not target.endswith(".tar.gz"):
            raise validation_error(f"TargetModel {target!r} must name a .tar.gz model artefact.")
        if not path.is_file():
            raise validation_error(f"TargetModel {target!r} not found under the endpoint's model root.")
        return path

    async def get(self, target: str) -> ModelHandler:
        """The loaded handler for target, loading it (once) if needed."""
        handler = self._lru.get(target)
        if handler is not None:
            self._lru.move_to_end(target)
            return handler
        pending = self._pending.get(target)
        if pending is None:
            path = self.resolve(target)
            loop = asyncio.get_running_loop()
            pending = loop.run_in_executor(None, self._load, path)
            self._pending[target] = pending
            pending.add_done_callback(partial(self._loaded, target))
        # shield: a cancelled request must not cancel a load other requests are waiting for.
        return await asyncio.shield(pending)

    def _load(self, path: Path) -> ModelHandler:
        dest = self._work / str(next(self._ids))
        try:
            return load_handler(extract_model_tar(path, dest), self._program)
        except LoadError as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise ModelFailure(500, f"cannot load target model {path.name}: {exc}") from exc

    def _loaded(self, target: str, future: asyncio.Future[ModelHandler]) -> None:
        self._pending.pop(target, None)
        if future.cancelled() or future.exception() is not None:
            return
        self._lru[target] = future.result()
        self._metrics.model_loads += 1
        while len(self._lru) > self._capacity:
            _, evicted = self._lru.popitem(last=False)
            self._metrics.model_evictions += 1
            # In-flight requests keep the evicted handler alive; only its extracted files go.
            asyncio.get_running_loop().run_in_executor(None, partial(shutil.rmtree, evicted.model_dir, True))
        self._metrics.models_loaded = len(self._lru)

    def close(self) -> None:
        """Remove the extraction folder (this process's own temporary files)."""
        shutil.rmtree(self._work, ignore_errors=True)
