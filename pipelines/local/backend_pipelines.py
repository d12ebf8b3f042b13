"""Pipelines, executions and step listings: state and behaviour behind the client's pipeline operations."""

from __future__ import annotations

import json
import os
from typing import Any

from pipelines.local.api_common import filter_sort, now, paginate, pick, random_id, to_dt
from pipelines.local.api_errors import ConflictError, ValidationError, not_found
from pipelines.local.backend_base import BackendBase
from pipelines.local.executor import DefinitionError, parse_definition
from pipelines.local.records import RUNNING_EXECUTION
from pipelines.local.resolve import ResolveError, Scope, resolve, stringify, typed_parameter
from pipelines.local.worker import pid_alive, spawn_worker

# How long a worker may stay silent before its execution counts as interrupted even if its pid exists
# (the pid may have been reused); the worker beats every second.
HEARTBEAT_TIMEOUT = 120.0
# A started execution whose worker never registered (spawn failed) is interrupted after this.
SPAWN_GRACE = 60.0


class PipelinesBackend(BackendBase):
    """CreatePipeline ... RetryPipelineExecution over the records; executions run in detached workers."""

    # --- pipelines -------------------------------------------------------------------------------
    def _definition_text(self, request: dict[str, Any]) -> str:
        if "PipelineDefinition" in request:
            text = request["PipelineDefinition"]
        elif location := request.get("PipelineDefinitionS3Location"):
            uri = f"s3://{location['Bucket']}/{location['ObjectKey']}"
            try:
                text = self.store.get_bytes(uri).decode()
            except Exception as exc:
                raise ValidationError(f"Cannot read the pipeline definition at {uri}: {exc}") from None
        else:
            raise ValidationError("Either PipelineDefinition or PipelineDefinitionS3Location must be given.")
        try:
            parse_definition(text)
        except DefinitionError as exc:
            raise ValidationError(f"Invalid pipeline definition: {exc}") from None
        return text

    def create_pipeline(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["PipelineName"]
        text = self._definition_text(request)
        stamp = to_dt(now())
        body = {
            "PipelineArn": self.arn("pipeline", name),
            "PipelineName": name,
            "PipelineDisplayName": request.get("PipelineDisplayName", name),
            "PipelineDefinition": text,
            "RoleArn": request["RoleArn"],
            "PipelineStatus": "Active",
            "CreationTime": stamp,
            "LastModifiedTime": stamp,
            **pick(request, "PipelineDescription", "ParallelismConfiguration"),
        }
        if not self.records.insert_resource("pipeline", name, body["PipelineArn"], body, status="Active"):
            raise ValidationError(
                f"Pipeline names must be unique within an AWS account and region. Pipeline with name ({name})"
                " already exists."
            )
        return {"PipelineArn": body["PipelineArn"]}

    def update_pipeline(self, request: dict[str, Any]) -> dict[str, Any]:
        pipeline = self.get_or_raise("pipeline", request["PipelineName"], "Pipeline")
        body = dict(pipeline.body)
        if "PipelineDefinition" in request or "PipelineDefinitionS3Location" in request:
            body["PipelineDefinition"] = self._definition_text(request)
        body.update(
            pick(request, "PipelineDisplayName", "PipelineDescription", "RoleArn", "ParallelismConfiguration")
        )
        body["LastModifiedTime"] = to_dt(now())
        self.records.update_resource("pipeline", pipeline.name, body=body)
        return {"PipelineArn": pipeline.arn}

    def describe_pipeline(self, request: dict[str, Any]) -> dict[str, Any]:
        return dict(self.get_or_raise("pipeline", request["PipelineName"], "Pipeline").body)

    def list_pipelines(self, request: dict[str, Any]) -> dict[str, Any]:
        summaries = []
        for pipeline in self.records.list_resources("pipeline"):
            summary = pick(
                pipeline.body,
                "PipelineArn",
                "PipelineName",
                "PipelineDisplayName",
                "PipelineDescription",
                "RoleArn",
                "CreationTime",
                "LastModifiedTime",
            )
            if "LastRunTime" in pipeline.body:
                summary["LastExecutionTime"] = pipeline.body["LastRunTime"]
            summaries.append(summary)
        items = filter_sort(summaries, request, name_key="PipelineName")
        return paginate("ListPipelines", request, items)

    def delete_pipeline(self, request: dict[str, Any]) -> dict[str, Any]:
        pipeline = self.get_or_raise("pipeline", request["PipelineName"], "Pipeline")
        self.records.delete_resource("pipeline", pipeline.name)
        return {"PipelineArn": pipeline.arn}

    # --- executions ------------------------------------------------------------------------------
    def _typed_parameters(self, definition: dict[str, Any], given: list[dict[str, Any]]) -> dict[str, Any]:
        declared = {p["Name"]: p for p in definition.get("Parameters", [])}
        values: dict[str, Any] = {}
        for item in given:
            if item["Name"] not in declared:
                raise ValidationError(
                    f"Parameter '{item['Name']}' is not defined in the pipeline; defined: {sorted(declared)}"
                )
        supplied = {item["Name"]: item["Value"] for item in given}
        for name, spec in declared.items():
            if name in supplied:
                raw = supplied[name]
            elif "DefaultValue" in spec:
                raw = spec["DefaultValue"]
            else:
                raise ValidationError(f"Parameter '{name}' has no default value and was not supplied.")
            try:
                values[name] = typed_parameter(spec, raw)
            except ResolveError as exc:
                raise ValidationError(str(exc)) from None
            if spec.get("EnumValues") and values[name] not in spec["EnumValues"]:
                raise ValidationError(f"Parameter '{name}' must be one of {spec['EnumValues']}, got {raw!r}.")
        return values

    def start_pipeline_execution(self, request: dict[str, Any]) -> dict[str, Any]:
        pipeline = self.get_or_raise("pipeline", request["PipelineName"], "Pipeline")
        token = request.get("ClientRequestToken")
        if token and (same := self.records.find_execution_by_token(pipeline.name, token)):
            return {"PipelineExecutionArn": same["arn"]}  # idempotent start, as ClientRequestToken promises
        definition = json.loads(pipeline.body["PipelineDefinition"])
        given = request.get("PipelineParameters", [])
        values = self._typed_parameters(definition, given)
        execution_id = random_id()
        arn = self.arn("pipeline", f"{pipeline.name}/execution/{execution_id}")
        parallelism = request.get("ParallelismConfiguration") or pipeline.body.get("ParallelismConfiguration")
        stamp = now()
        self.records.insert_execution(
            {
                "arn": arn,
                "pipeline_name": pipeline.name,
                "execution_id": execution_id,
                "status": "Executing",
                "display_name": request.get("PipelineExecutionDisplayName"),
                "description": request.get("PipelineExecutionDescription"),
                "parameters": json.dumps(values),
                "given": json.dumps(given),
                "parallelism": (parallelism or {}).get("MaxParallelExecutionSteps"),
                "definition": pipeline.body["PipelineDefinition"],
                "options": self.options.to_json(),
                "client_token": token,
                "created": stamp,
                "modified": stamp,
            }
        )
        self.records.update_resource(
            "pipeline", pipeline.name, body={**pipeline.body, "LastRunTime": to_dt(stamp)}
        )
        self._launch(arn)
        return {"PipelineExecutionArn": arn}

    def _launch(self, arn: str) -> None:
        """Start the detached worker and record its pid (the worker records it too, whichever is first)."""
        log_dir = self.dir_for("executions", arn.rsplit("/", 1)[-1])
        process = spawn_worker(self.root, arn, log_dir / "worker.log", self.python_env(dict(os.environ)))
        self.records.set_execution(arn, worker_pid=process.pid, heartbeat=now())

    def _execution(self, arn: str) -> Any:
        row = self.records.get_execution(arn)
        if row is None:
            raise not_found("Pipeline execution", arn)
        if row["status"] in RUNNING_EXECUTION and self._worker_gone(row):
            pid = row["worker_pid"]
            reason = (
                f"Execution interrupted: its worker process ({pid}) ended without finishing"
                " (killed or crashed)."
                " Steps in progress were marked Failed; RetryPipelineExecution resumes from them."
            )
            self.records.mark_interrupted(arn, pid, reason)
            row = self.records.get_execution(arn)
        return row

    @staticmethod
    def _worker_gone(row: Any) -> bool:
        pid, beat = row["worker_pid"], row["heartbeat"]
        if pid is None:
            return now() - row["modified"] > SPAWN_GRACE
        if not pid_alive(pid):
            return True
        return beat is not None and now() - beat > HEARTBEAT_TIMEOUT

    def describe_pipeline_execution(self, request: dict[str, Any]) -> dict[str, Any]:
        row = self._execution(request["PipelineExecutionArn"])
        definition = json.loads(row["definition"])
        response = {
            "PipelineArn": self.arn("pipeline", row["pipeline_name"]),
            "PipelineExecutionArn": row["arn"],
            "PipelineExecutionDisplayName": row["display_name"] or f"execution-{int(row['created'] * 1000)}",
            "PipelineExecutionStatus": row["status"],
            "CreationTime": to_dt(row["created"]),
            "LastModifiedTime": to_dt(row["modified"]),
        }
        if row["description"]:
            response["PipelineExecutionDescription"] = row["description"]
        if row["failure_reason"]:
            response["FailureReason"] = row["failure_reason"]
        if row["parallelism"]:
            response["ParallelismConfiguration"] = {"MaxParallelExecutionSteps": row["parallelism"]}
        experiment = definition.get("PipelineExperimentConfig")
        if isinstance(experiment, dict):
            scope = Scope(
                parameters=json.loads(row["parameters"]),
                execution={
                    "PipelineName": row["pipeline_name"],
                    "PipelineExecutionId": row["execution_id"],
                    "PipelineExecutionArn": row["arn"],
                },
            )
            try:
                resolved = {k: stringify(resolve(v, scope)) for k, v in experiment.items() if v is not None}
                response["PipelineExperimentConfig"] = resolved
            except ResolveError:
                pass  # an experiment name the engine cannot resolve is left out, not an error
        return response

    def list_pipeline_executions(self, request: dict[str, Any]) -> dict[str, Any]:
        self.get_or_raise("pipeline", request["PipelineName"], "Pipeline")
        summaries = []
        for stored in self.records.list_executions(request["PipelineName"]):
            row = self._execution(stored["arn"])
            summary = {
                "PipelineExecutionArn": row["arn"],
                "StartTime": to_dt(row["created"]),
                "PipelineExecutionStatus": row["status"],
                "PipelineExecutionDisplayName": row["display_name"]
                or f"execution-{int(row['created'] * 1000)}",
            }
            if row["description"]:
                summary["PipelineExecutionDescription"] = row["description"]
            if row["failure_reason"]:
                summary["PipelineExecutionFailureReason"] = row["failure_reason"]
            summaries.append(summary)
        items = filter_sort(
            summaries,
            {k: v for k, v in request.items() if k not in {"SortBy"}} | {"SortBy": "CreationTime"},
            name_key="PipelineExecutionArn",
            time_key="StartTime",
        )
        if request.get("SortBy") == "PipelineExecutionArn":
            items.sort(
                key=lambda i: i["PipelineExecutionArn"], reverse=request.get("SortOrder") != "Ascending"
            )
        return paginate("ListPipelineExecutions", request, items)

    def list_pipeline_execution_steps(self, request: dict[str, Any]) -> dict[str, Any]:
        row = self._execution(request["PipelineExecutionArn"])
        steps = []
        for step in self.records.get_steps(row["arn"]):
            item: dict[str, Any] = {"StepName": step["name"], "StepStatus": step["status"]}
            if step["display_name"]:
                item["StepDisplayName"] = step["display_name"]
            if step["description"]:
                item["StepDescription"] = step["description"]
            item["StartTime"] = to_dt(step["start"])
            if step["end"] is not None:
                item["EndTime"] = to_dt(step["end"])
            if step["failure_reason"]:
                item["FailureReason"] = step["failure_reason"]
            metadata = json.loads(step["metadata"] or "{}")
            if metadata:
                item["Metadata"] = metadata
            if step["cache_source"]:
                item["CacheHitResult"] = {"SourcePipelineExecutionArn": step["cache_source"]}
            item["AttemptCount"] = step["attempt_count"]
            steps.append(item)
        # SageMaker lists the most recently started step first unless asked otherwise.
        steps.sort(
            key=lambda s: s["StartTime"], reverse=request.get("SortOrder", "Descending") == "Descending"
        )
        return paginate("ListPipelineExecutionSteps", request, steps)

    def describe_pipeline_definition_for_execution(self, request: dict[str, Any]) -> dict[str, Any]:
        row = self._execution(request["PipelineExecutionArn"])
        return {"PipelineDefinition": row["definition"], "CreationTime": to_dt(row["created"])}

    def list_pipeline_parameters_for_execution(self, request: dict[str, Any]) -> dict[str, Any]:
        row = self._execution(request["PipelineExecutionArn"])
        return paginate("ListPipelineParametersForExecution", request, json.loads(row["given"]))

    def stop_pipeline_execution(self, request: dict[str, Any]) -> dict[str, Any]:
        row = self._execution(request["PipelineExecutionArn"])
        if row["status"] not in RUNNING_EXECUTION:
            raise ValidationError(
                f"Pipeline execution {row['arn']} is {row['status']};"
                " only an Executing execution can be stopped."
            )
        self.records.set_execution(row["arn"], status="Stopping")
        return {"PipelineExecutionArn": row["arn"]}

    def retry_pipeline_execution(self, request: dict[str, Any]) -> dict[str, Any]:
        row = self._execution(request["PipelineExecutionArn"])
        if row["status"] not in ("Failed", "Stopped"):
            raise ValidationError(
                f"Pipeline execution {row['arn']} is {row['status']};"
                " only a Failed or Stopped execution can be retried."
            )
        changes: dict[str, Any] = {}
        if parallelism := request.get("ParallelismConfiguration"):
            changes["parallelism"] = parallelism.get("MaxParallelExecutionSteps")
        # Compare-and-set on the old worker pid: two retries at once start one worker, the other fails.
        if not self.records.claim_execution(row["arn"], row["worker_pid"], None, "Executing"):
            raise ConflictError(f"Pipeline execution {row['arn']} is already being retried.")
        self.records.set_execution(row["arn"], options=self.options.to_json(), **changes)
        self._launch(row["arn"])
        return {"PipelineExecutionArn": row["arn"]}
