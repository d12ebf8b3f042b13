"""State shared by every resource family of the local SageMaker backend, and the engine's run options."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.local.api_common import arn
from pipelines.local.api_errors import not_found
from pipelines.local.records import Records, Resource
from pipelines.local.store import ObjectStore

# Root of the project, put on PYTHONPATH of the processes the engine starts (worker, endpoint server),
# so they import `pipelines` and `deploy` whatever the caller's working directory.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class EngineOptions:
    """Per-client choices an execution carries into its detached worker (stored with the execution).

    Attributes:
        spot_interruptions: Spot interruptions injected into each managed-Spot training job.
        lambda_handlers: Lambda function name or ARN -> local handler `module:function` or `file.py:function`.
        serve_command: command that starts an endpoint server; `--config FILE` is appended.
    """

    spot_interruptions: int = 0
    lambda_handlers: dict[str, str] = field(default_factory=dict)
    serve_command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "deploy.serve"])

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> EngineOptions:
        data = json.loads(text or "{}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class BackendBase:
    """Records, object store, account and region; every family mixes this in (moto's backend pattern)."""

    def __init__(
        self, root: Path, store: ObjectStore, region: str, account_id: str, options: EngineOptions
    ) -> None:
        self.root = Path(root).resolve()
        self.records = Records(self.root)
        self.store = store
        self.region = region
        self.account_id = account_id
        self.options = options

    def arn(self, resource_type: str, name: str) -> str:
        return arn(resource_type, name, self.account_id, self.region)

    def get_or_raise(self, kind: str, name: str, label: str) -> Resource:
        """The resource, or the AWS error SageMaker answers a missing one with."""
        found = self.records.get_resource(kind, name)
        if found is None:
            # ARNs carry names in lower case; SageMaker finds a resource by its ARN or any-case name.
            arn = name.lower() if name.startswith("arn:") else self.arn(kind, name)
            found = self.records.get_resource_by_arn(kind, arn)
        if found is None:
            raise not_found(label, name)
        return found

    def dir_for(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def python_env(self, base: dict[str, str]) -> dict[str, str]:
        """Environment for a child process: the project importable first, the rest inherited."""
        env = dict(base)
        paths = [str(PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(":") if p]
        env["PYTHONPATH"] = ":".join(dict.fromkeys(paths))
        return env
