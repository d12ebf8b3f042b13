"""Runs one execution of a definition: step DAG, branches, parallelism, cache, retries, resume."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.local.api_common import loads, now
from pipelines.local.backend_steps import Runners, StepOutcome, StepRunner
from pipelines.local.cache import (
    ContentHasher,
    cache_key,
    cacheable,
    entry_usable,
    output_manifest,
    parse_duration,
)
from pipelines.local.resolve import ResolveError, Scope, resolve, step_references

log = logging.getLogger(__name__)

DEFAULT_PARALLELISM = 50  # SageMaker's default MaxParallelExecutionSteps


class DefinitionError(ValueError):
    """A definition the engine cannot accept; the message names the step or field."""


@dataclass
class Node:
    """A step of the flattened definition with what it waits for."""

    step: dict[str, Any]
    order: int
    parents: set[str]
    gate: tuple[str, bool] | None  # (condition step, branch) a step inside IfSteps/ElseSteps needs


def parse_definition(text: str | dict[str, Any]) -> tuple[dict[str, Any], dict[str, Node]]:
    """Parse and check a definition; steps inside Condition branches are flattened and gated.

    Raises:
        DefinitionError: not JSON, no Steps, duplicate or unnamed steps, unknown DependsOn, bad CacheConfig.
    """
    if isinstance(text, dict):
        definition = text
    else:
        try:
            definition = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise DefinitionError(f"not valid JSON: {exc}") from None
    if not isinstance(definition, dict) or not isinstance(definition.get("Steps"), list):
        raise DefinitionError("a pipeline definition is a JSON object with a 'Steps' list")
    nodes: dict[str, Node] = {}

    def add(steps: Any, gate: tuple[str, bool] | None, where: str) -> None:
        if not isinstance(steps, list):
            raise DefinitionError(f"{where} must be a list of steps")
        for step in steps:
            if not isinstance(step, dict) or not isinstance(step.get("Name"), str) or not step.get("Type"):
                raise DefinitionError(f"every step in {where} needs a Name and a Type, got {str(step)[:80]}")
            name = step["Name"]
            if name in nodes:
                raise DefinitionError(f"step name {name!r} is used twice")
            body = {k: v for k, v in step.items() if k != "Arguments"}
            arguments = step.get("Arguments", {})
            if step["Type"] == "Condition":
                if not isinstance(arguments, dict) or not isinstance(arguments.get("Conditions"), list):
                    raise DefinitionError(f"Condition step {name!r} needs an Arguments.Conditions list")
                arguments = {"Conditions": arguments["Conditions"]}
            parents = set(step.get("DependsOn") or []) | step_references([body, arguments])
            parents.discard(name)
            if gate:
                parents.add(gate[0])
            config = step.get("CacheConfig") or {}
            if config.get("Enabled") and config.get("ExpireAfter"):
                try:
                    parse_duration(str(config["ExpireAfter"]))
                except ValueError as exc:
                    raise DefinitionError(f"step {name!r}: {exc}") from None
            nodes[name] = Node(step, len(nodes), parents, gate)
            if step["Type"] == "Condition":
                add(step["Arguments"].get("IfSteps", []), (name, True), f"{name}.IfSteps")
                add(step["Arguments"].get("ElseSteps", []), (name, False), f"{name}.ElseSteps")

    add(definition["Steps"], None, "Steps")
    for node in nodes.values():
        for dep in node.step.get("DependsOn") or []:
            if dep not in nodes:
                raise DefinitionError(f"step {node.step['Name']!r} depends on unknown step {dep!r}")
    # Get references to steps that do not exist stay out of the graph: resolving them fails the step,
    # naming the reference, as SageMaker reports it.
    for node in nodes.values():
        node.parents &= set(nodes)
    return definition, nodes


class ExecutionRun:
    """State of one execution while its worker runs it."""

    def __init__(self, backend: Any, arn: str, cancel: threading.Event, runners: Runners) -> None:
        self.backend = backend
        self.records = backend.records
        self.arn = arn
        self.cancel = cancel
        row = self.records.get_execution(arn)
        if row is None:
            raise LookupError(f"no execution {arn}")
        self.pipeline_name = row["pipeline_name"]
        self.definition, self.nodes = parse_definition(row["definition"])
        self.parallelism = max(1, int(row["parallelism"] or DEFAULT_PARALLELISM))
        started = datetime.fromtimestamp(row["created"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.scope = Scope(
            parameters=json.loads(row["parameters"]),
            execution={
                "PipelineExecutionId": row["execution_id"],
                "PipelineExecutionArn": arn,
                "PipelineName": row["pipeline_name"],
                "PipelineArn": backend.arn("pipeline", row["pipeline_name"]),
                "StartDateTime": started,
            },
            steps={},
            property_files={n: node.step.get("PropertyFiles", []) for n, node in self.nodes.items()},
            experiment=self.definition.get("PipelineExperimentConfig") or {},
            read_bytes=backend.store.get_bytes,
        )
        self.runner = StepRunner(backend, arn, row["execution_id"], cancel, runners)
        self.hasher = ContentHasher(backend.store)
        self.state: dict[str, str] = {}
        self.outcome: dict[str, bool] = {}
        self.failures: list[tuple[str, str, str]] = []  # (step, type, reason)
        self.lock = threading.Lock()
        for step in self.records.get_steps(arn):
            # Resume: steps that succeeded keep their outputs and are not run again.
            if step["status"] == "Succeeded" and step["name"] in self.nodes:
                self._succeeded(step["name"], loads(step["properties"]) or {})

    def _succeeded(self, name: str, properties: dict[str, Any]) -> None:
        with self.lock:
            self.state[name] = "Succeeded"
            self.scope.steps[name] = properties  # type: ignore[index]
            if self.nodes[name].step["Type"] == "Condition":
                self.outcome[name] = properties.get("Outcome") == "True"

    # --- scheduling ------------------------------------------------------------------------------
    def _verdict(self, name: str) -> str:
        """ready, wait, or skip (a parent failed or was skipped, or the branch was not taken)."""
        node = self.nodes[name]
        for parent in node.parents:
            status = self.state.get(parent)
            if status in ("Failed", "Stopped", "Skipped"):
                return "skip"
            if status != "Succeeded":
                return "wait"
        if node.gate and self.outcome.get(node.gate[0]) != node.gate[1]:
            return "skip"
        return "ready"

    def run(self) -> str:
        pending = sorted(
            (n for n in self.nodes if self.state.get(n) != "Succeeded"), key=lambda n: self.nodes[n].order
        )
        running: dict[Future[str], str] = {}
        with ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="step") as pool:
            while True:
                changed = True
                while changed and not self.cancel.is_set() and not self.failures:
                    changed = False
                    for name in list(pending):
                        verdict = self._verdict(name)
                        if verdict == "skip":
                            pending.remove(name)
                            self.state[name] = "Skipped"  # not executed and not listed, like SageMaker
                            changed = True
                        elif verdict == "ready" and len(running) < self.parallelism:
                            pending.remove(name)
                            self.state[name] = "Executing"
                            running[pool.submit(self._run_step, name)] = name
                            changed = True
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    name = running.pop(future)
                    self.state[name] = future.result()
        return self._finish()

    def _finish(self) -> str:
        if self.failures:
            fail_steps = [reason for _, kind, reason in self.failures if kind == "Fail"]
            if fail_steps:
                reason = fail_steps[0]
            else:
                step, _, first = self.failures[0]
                reason = f"Step failure: One or multiple steps failed. {step}: {first}"
            status = "Failed"
        elif self.cancel.is_set():
            status, reason = "Stopped", None
        else:
            status, reason = "Succeeded", None
        self.records.finish_execution(self.arn, status, reason[:1024] if reason else None)
        return status

    # --- one step --------------------------------------------------------------------------------
    def _run_step(self, name: str) -> str:
        try:
            return self._attempts(name)
        except Exception as exc:  # an engine bug must fail the step, not hang the execution
            log.exception("step %s crashed", name)
            reason = f"Local engine error: {type(exc).__name__}: {exc}"
            self.records.step_finished(
                self.arn, name, status="Failed", failure_reason=reason, metadata=None, properties=None
            )
            self.failures.append((name, self.nodes[name].step["Type"], reason))
            return "Failed"

    def _attempts(self, name: str) -> str:
        step = self.nodes[name].step
        self.records.step_started(self.arn, step)
        key: str | None = None
        try:
            args = {} if step["Type"] == "Condition" else resolve(step.get("Arguments", {}), self.scope)
            if cacheable(step):
                key = cache_key(step["Type"], args, self.hasher)
                if self._cache_hit(step, key):
                    return "Succeeded"
        except ResolveError as exc:
            return self._end(name, StepOutcome("Failed", failure_reason=str(exc)), None, key, None)
        policies = step.get("RetryPolicies") or []
        retries: dict[int, int] = {}
        first = time.monotonic()
        while True:
            attempt = self.records.attempt_started(self.arn, name, None)

            def on_job(job_arn: str, log_path: str, attempt: int = attempt) -> None:
                self.records.attempt_update(self.arn, name, attempt, job_arn=job_arn, log_path=log_path)

            outcome = self.runner.run(step, args, self.scope, on_job)
            delay = None
            if outcome.status == "Failed" and not self.cancel.is_set():
                delay = retry_delay(policies, outcome.failure_type, retries, time.monotonic() - first)
            if delay is None:
                return self._end(name, outcome, attempt, key, args)
            log.info(
                "step %s attempt %d failed (%s); retrying in %.1f s",
                name,
                attempt,
                outcome.failure_type,
                delay,
            )
            self.records.attempt_update(
                self.arn,
                name,
                attempt,
                status="Failed",
                end=now(),
                exit_code=outcome.exit_code,
                failure_reason=outcome.failure_reason,
            )
            if self.cancel.wait(delay):
                return self._end(name, StepOutcome("Stopped", metadata=outcome.metadata), None, key, None)

    def _end(self, name: str, outcome: StepOutcome, attempt: int | None, key: str | None, args: Any) -> str:
        outputs = None
        if outcome.status == "Succeeded" and key is not None:
            outputs = output_manifest(
                self.nodes[name].step["Type"], outcome.properties or {}, args, self.backend.store
            )
        self.records.step_finished(
            self.arn,
            name,
            status=outcome.status,
            failure_reason=outcome.failure_reason,
            metadata=outcome.metadata,
            properties=outcome.properties,
            cache_key=key if outcome.status == "Succeeded" else None,
            outputs=outputs,
            attempt=attempt,
            exit_code=outcome.exit_code,
        )
        if outcome.status == "Succeeded":
            self._succeeded(name, outcome.properties or {})
        elif outcome.status == "Failed":
            self.failures.append((name, self.nodes[name].step["Type"], outcome.failure_reason or "failed"))
        return outcome.status

    def _cache_hit(self, step: dict[str, Any], key: str) -> bool:
        """Reuse the newest successful run of this step (same pipeline, same key) within ExpireAfter."""
        expire = (step.get("CacheConfig") or {}).get("ExpireAfter")
        not_before = now() - parse_duration(str(expire)).total_seconds() if expire else 0.0
        for candidate in self.records.cache_candidates(self.pipeline_name, step["Name"], key, not_before):
            if candidate["execution_arn"] == self.arn:
                continue
            if not entry_usable(candidate["properties"], candidate["outputs"], self.backend.store):
                continue
            if not self._resource_alive(step, loads(candidate["properties"])):
                continue
            properties = loads(candidate["properties"])
            self.records.step_finished(
                self.arn,
                step["Name"],
                status="Succeeded",
                failure_reason=None,
                metadata=loads(candidate["metadata"]),
                properties=properties,
                cache_key=key,
                cache_source=candidate["execution_arn"],
                outputs=loads(candidate["outputs"]),
            )
            self._succeeded(step["Name"], properties)
            log.info("step %s: cache hit from %s", step["Name"], candidate["execution_arn"])
            return True
        return False

    def _resource_alive(self, step: dict[str, Any], properties: dict[str, Any]) -> bool:
        """A cached EndpointConfig/Endpoint step is only reusable while its resource still exists."""
        if step["Type"] == "EndpointConfig":
            return (
                self.records.get_resource("endpoint-config", properties.get("EndpointConfigName", ""))
                is not None
            )
        if step["Type"] == "Endpoint":
            found = self.records.get_resource("endpoint", properties.get("EndpointName", ""))
            return found is not None and found.body.get("EndpointConfigName") == properties.get(
                "EndpointConfigName"
            )
        return True


def retry_delay(
    policies: list[dict[str, Any]], failure_type: str | None, used: dict[int, int], elapsed: float
) -> float | None:
    """Seconds to wait before the next attempt, or None when no policy covers this failure any more.

    MaxAttempts counts retries after the first attempt; ExpireAfterMin bounds the time since it started.
    The interval grows as IntervalSeconds * BackoffRate ** (retries so far).
    """
    if not failure_type:
        return None
    for index, policy in enumerate(policies):
        if failure_type not in (policy.get("ExceptionType") or []):
            continue
        count = used.get(index, 0)
        if "MaxAttempts" in policy and count >= int(policy["MaxAttempts"]):
            continue
        if "ExpireAfterMin" in policy and elapsed >= float(policy["ExpireAfterMin"]) * 60:
            continue
        used[index] = count + 1
        return float(policy.get("IntervalSeconds", 1)) * float(policy.get("BackoffRate", 2.0)) ** count
    return None


def run_execution(root: Path, arn: str, cancel: threading.Event, runners: Runners | None = None) -> str:
    """Run (or resume) the execution `arn` under `root` to a terminal status, which it returns."""
    from pipelines.local.backend_base import EngineOptions
    from pipelines.local.client import LocalBackend
    from pipelines.local.records import Records
    from pipelines.local.store import ObjectStore

    row = Records(Path(root)).get_execution(arn)
    if row is None:
        raise LookupError(f"no execution {arn} under {root}")
    region, account = arn.split(":")[3], arn.split(":")[4]
    backend = LocalBackend(
        Path(root), ObjectStore(Path(root) / "s3"), region, account, EngineOptions.from_json(row["options"])
    )
    return ExecutionRun(backend, arn, cancel, runners or Runners.default()).run()
