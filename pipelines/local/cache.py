"""Step cache: key = sha256 of step type, cache-relevant resolved arguments and the content they read."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from pipelines.local.store import ObjectStore

log = logging.getLogger(__name__)

# The request members SageMaker compares per step type ("Default cache key attributes by pipeline step
# type"); None = the whole request (EndpointConfig/Endpoint, cacheable in SDK v3, are not in that table).
CACHE_FIELDS: dict[str, tuple[str, ...] | None] = {
    "Processing": ("AppSpecification", "Environment", "ProcessingInputs"),
    "Training": (
        "AlgorithmSpecification",
        "CheckpointConfig",
        "DebugHookConfig",
        "DebugRuleConfigurations",
        "Environment",
        "HyperParameters",
        "InputDataConfig",
    ),
    "Tuning": ("HyperParameterTuningJobConfig", "TrainingJobDefinition", "TrainingJobDefinitions"),
    "Transform": ("DataProcessing", "Environment", "ModelName", "TransformInput"),
    "EndpointConfig": None,
    "Endpoint": None,
}
_TUNING_DEFINITION_FIELDS = (
    "AlgorithmSpecification",
    "HyperParameterRanges",
    "InputDataConfig",
    "StaticHyperParameters",
    "TuningObjective",
)
# Checkpoints are state the job writes, not input it reads: their content must not change the key.
_NOT_READ = ("CheckpointConfig",)
_DURATION = re.compile(
    r"P(?:(?P<Y>\d+)Y)?(?:(?P<M>\d+)M)?(?:(?P<W>\d+)W)?(?:(?P<D>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?"
)


def parse_duration(text: str) -> timedelta:
    """ISO-8601 duration of CacheConfig.ExpireAfter (`P30D`, `PT12H`; the SDK docstring's `p30d`, `T12H`).

    Raises:
        ValueError: not a duration.
    """
    upper = text.strip().upper()
    if upper.startswith("T"):
        upper = "P" + upper
    match = _DURATION.fullmatch(upper)
    if not match or upper in {"P", "PT"} or upper.endswith("T"):
        raise ValueError(f"ExpireAfter {text!r} is not an ISO-8601 duration such as P30D or PT12H")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return timedelta(
        days=parts.get("Y", 0) * 365 + parts.get("M", 0) * 30 + parts.get("W", 0) * 7 + parts.get("D", 0),
        hours=parts.get("h", 0),
        minutes=parts.get("m", 0),
        seconds=parts.get("s", 0),
    )


def cacheable(step: dict[str, Any]) -> bool:
    """True when the step asks for caching and its type supports it."""
    config = step.get("CacheConfig") or {}
    return bool(config.get("Enabled")) and step.get("Type") in CACHE_FIELDS


def relevant_arguments(step_type: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The members of the resolved request that take part in the key."""
    fields = CACHE_FIELDS.get(step_type)
    if fields is None:
        return dict(arguments)
    picked = {k: arguments[k] for k in fields if k in arguments}
    if step_type == "Tuning" and isinstance(picked.get("TrainingJobDefinition"), dict):
        definition = picked["TrainingJobDefinition"]
        picked["TrainingJobDefinition"] = {
            k: definition[k] for k in _TUNING_DEFINITION_FIELDS if k in definition
        }
    return picked


def s3_uris(value: Any, skip: Iterable[str] = ()) -> set[str]:
    """Every `s3://` string inside `value` (hyperparameters hold them JSON-quoted), skipping `skip` keys."""
    found: set[str] = set()
    skipped = set(skip)
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in skipped:
                found |= s3_uris(item, skipped)
    elif isinstance(value, list):
        for item in value:
            found |= s3_uris(item, skipped)
    elif isinstance(value, str):
        text = value.strip().strip('"')
        if text.startswith("s3://"):
            found.add(text)
    return found


class ContentHasher:
    """sha256 of objects in the store, memoised on (size, mtime) so one run hashes each object once."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._memo: dict[tuple[str, int, int], str] = {}

    def file(self, path: Path) -> str:
        stat = path.stat()
        memo_key = (str(path), stat.st_size, stat.st_mtime_ns)
        if memo_key not in self._memo:
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1024 * 1024), b""):
                    digest.update(chunk)
            self._memo[memo_key] = digest.hexdigest()
        return self._memo[memo_key]

    def uri(self, uri: str) -> str:
        """Hash of the object at `uri`, or of every object under it (relative names included)."""
        try:
            pairs = self.store.objects_under(uri)
        except Exception as exc:  # a malformed URI reads nothing; the job itself will report it
            return f"unreadable:{exc}"
        if not pairs:
            return "missing"
        digest = hashlib.sha256()
        for obj, rel in pairs:
            digest.update(f"{rel}\0{self.file(self.store.path_for(obj))}\0".encode())
        return digest.hexdigest()


def cache_key(step_type: str, arguments: dict[str, Any], hasher: ContentHasher) -> str:
    """sha256 of canonical JSON: type, cache-relevant arguments, content hash of every object they read."""
    relevant = relevant_arguments(step_type, arguments)
    reads = sorted(s3_uris(relevant, skip=_NOT_READ))
    document = {
        "Type": step_type,
        "Arguments": relevant,
        "Content": {uri: hasher.uri(uri) for uri in reads},
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def output_manifest(
    step_type: str, properties: dict[str, Any], arguments: dict[str, Any], store: ObjectStore
) -> list[str]:
    """Objects a finished step produced (URIs in its properties it did not read); a hit needs them all."""
    reads = s3_uris(relevant_arguments(step_type, arguments), skip=_NOT_READ)
    outputs = s3_uris(properties, skip=_NOT_READ) - reads
    manifest: list[str] = []
    for uri in sorted(outputs):
        try:
            manifest.extend(obj for obj, _ in store.objects_under(uri))
        except Exception as exc:  # an output URI that is not addressable in the store holds nothing local
            log.debug("output %s not listable: %s", uri, exc)
    return sorted(set(manifest))


def entry_usable(properties_text: str | None, outputs_text: str | None, store: ObjectStore) -> bool:
    """An unreadable entry or one whose outputs are gone is a miss (logged), never a crash."""
    try:
        if properties_text is None:
            return False
        json.loads(properties_text)
        manifest = json.loads(outputs_text or "[]")
        missing = [uri for uri in manifest if not store.exists(uri)]
    except (ValueError, TypeError, OSError) as exc:
        log.warning("cache entry unreadable, treated as a miss: %s", exc)
        return False
    if missing:
        log.info("cache entry outputs missing (%s), treated as a miss", missing[0])
        return False
    return True
