"""Models, endpoint configs and endpoints; an endpoint is a real local server (blue/green on update)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from pipelines.local.api_common import filter_sort, now, paginate, pick, shape_members, to_dt
from pipelines.local.api_errors import ValidationError, not_found
from pipelines.local.backend_base import BackendBase
from pipelines.local.endpoints import (
    Server,
    ServerError,
    extract_model,
    server_config,
    start_server,
    stop_server,
)
from pipelines.local.records import Resource
from pipelines.local.worker import pid_alive

MODEL, CONFIG, ENDPOINT = "model", "endpoint-config", "endpoint"
# Container variables the model server reads from its own environment (inference toolkit names).
_SERVER_ENV = ("SAGEMAKER_PROGRAM", "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "SAGEMAKER_MODEL_SERVER_WORKERS")


class HostingBackend(BackendBase):
    """CreateModel ... DeleteEndpoint. Create/Update return once the server is healthy or has failed."""

    # --- models ----------------------------------------------------------------------------------
    def create_model(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["ModelName"]
        body = {k: v for k, v in request.items() if k in shape_members("DescribeModelOutput")}
        body.update({"ModelArn": self.arn(MODEL, name), "CreationTime": to_dt(now())})
        if not self.records.insert_resource(MODEL, name, body["ModelArn"], body):
            raise ValidationError(f'Cannot create already existing model "{body["ModelArn"]}".')
        return {"ModelArn": body["ModelArn"]}

    def describe_model(self, request: dict[str, Any]) -> dict[str, Any]:
        return dict(self.get_or_raise(MODEL, request["ModelName"], "Model").body)

    def list_models(self, request: dict[str, Any]) -> dict[str, Any]:
        items = [
            pick(m.body, "ModelName", "ModelArn", "CreationTime") for m in self.records.list_resources(MODEL)
        ]
        return paginate("ListModels", request, filter_sort(items, request, name_key="ModelName"))

    def delete_model(self, request: dict[str, Any]) -> dict[str, Any]:
        model = self.get_or_raise(MODEL, request["ModelName"], "Model")
        self.records.delete_resource(MODEL, model.name)
        return {}

    # --- endpoint configs ------------------------------------------------------------------------
    def create_endpoint_config(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["EndpointConfigName"]
        for variant in request.get("ProductionVariants", []):
            if variant.get("ModelName") and self.records.get_resource(MODEL, variant["ModelName"]) is None:
                raise ValidationError(f'Could not find model "{self.arn(MODEL, variant["ModelName"])}".')
        body = {k: v for k, v in request.items() if k in shape_members("DescribeEndpointConfigOutput")}
        body.update({"EndpointConfigArn": self.arn(CONFIG, name), "CreationTime": to_dt(now())})
        if not self.records.insert_resource(CONFIG, name, body["EndpointConfigArn"], body):
            raise ValidationError(
                f'Cannot create already existing endpoint configuration "{body["EndpointConfigArn"]}".'
            )
        return {"EndpointConfigArn": body["EndpointConfigArn"]}

    def describe_endpoint_config(self, request: dict[str, Any]) -> dict[str, Any]:
        return dict(self.get_or_raise(CONFIG, request["EndpointConfigName"], "Endpoint configuration").body)

    def list_endpoint_configs(self, request: dict[str, Any]) -> dict[str, Any]:
        items = [
            pick(c.body, "EndpointConfigName", "EndpointConfigArn", "CreationTime")
            for c in self.records.list_resources(CONFIG)
        ]
        return paginate(
            "ListEndpointConfigs", request, filter_sort(items, request, name_key="EndpointConfigName")
        )

    def delete_endpoint_config(self, request: dict[str, Any]) -> dict[str, Any]:
        config = self.get_or_raise(CONFIG, request["EndpointConfigName"], "Endpoint configuration")
        self.records.delete_resource(CONFIG, config.name)
        return {}

    # --- endpoints -------------------------------------------------------------------------------
    def _start_generation(
        self, name: str, config: Resource, generation: int
    ) -> tuple[Server, list[dict[str, Any]]]:
        """Extract each variant's model and start a server for them; returns it and the variant summaries."""
        directory = self.root / "endpoints" / name / str(generation)
        shutil.rmtree(directory, ignore_errors=True)
        variants, summaries, env = [], [], self.python_env(dict(os.environ))
        multi_root: Path | None = None
        for variant in config.body["ProductionVariants"]:
            model = self.get_or_raise(MODEL, variant["ModelName"], "Model").body
            container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
            for key in _SERVER_ENV:
                if key in container.get("Environment", {}):
                    env[key] = container["Environment"][key]
            if container.get("Mode") == "MultiModel":
                multi_root = self.store.path_for(container["ModelDataUrl"], prefix=True)
                model_dir = None
            else:
                model_dir = extract_model(
                    self.store, container, directory / "models" / variant["VariantName"]
                )
            weight = float(variant.get("InitialVariantWeight", 1.0))
            variants.append(
                {"name": variant["VariantName"], "weight": weight}
                | ({"model_dir": str(model_dir)} if model_dir else {})
            )
            count = variant.get("InitialInstanceCount", 1)
            summaries.append(
                {
                    "VariantName": variant["VariantName"],
                    "DeployedImages": [{"SpecifiedImage": container.get("Image", "local")}],
                    "CurrentWeight": weight,
                    "DesiredWeight": weight,
                    "CurrentInstanceCount": count,
                    "DesiredInstanceCount": count,
                }
            )
        body = server_config(
            name,
            directory / "ready.json",
            variants,
            config.body.get("DataCaptureConfig"),
            self.store,
            multi_root,
        )
        server = start_server(self.options.serve_command, body, directory, generation, env)
        return server, summaries

    def _capture_summary(self, config: Resource) -> dict[str, Any] | None:
        capture = config.body.get("DataCaptureConfig")
        if not capture:
            return None
        enabled = capture.get("EnableCapture", True)
        return {
            "EnableCapture": enabled,
            "CaptureStatus": "Started" if enabled else "Stopped",
            "CurrentSamplingPercentage": capture.get("InitialSamplingPercentage", 100),
            "DestinationS3Uri": capture["DestinationS3Uri"],
            "KmsKeyId": capture.get("KmsKeyId", ""),
        }

    def create_endpoint(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["EndpointName"]
        config = self.get_or_raise(CONFIG, request["EndpointConfigName"], "Endpoint configuration")
        stamp = to_dt(now())
        body: dict[str, Any] = {
            "EndpointName": name,
            "EndpointArn": self.arn(ENDPOINT, name),
            "EndpointConfigName": config.name,
            "EndpointStatus": "Creating",
            "CreationTime": stamp,
            "LastModifiedTime": stamp,
        }
        if not self.records.insert_resource(ENDPOINT, name, body["EndpointArn"], body, status="Creating"):
            raise ValidationError(f'Cannot create already existing endpoint "{body["EndpointArn"]}".')
        try:
            server, variants = self._start_generation(name, config, 1)
        except ServerError as exc:
            body.update({"EndpointStatus": "Failed", "FailureReason": str(exc)[:1024]})
            self.records.update_resource(ENDPOINT, name, body=body, status="Failed")
            return {"EndpointArn": body["EndpointArn"]}
        body.update(
            {"EndpointStatus": "InService", "ProductionVariants": variants, "LastModifiedTime": to_dt(now())}
        )
        if capture := self._capture_summary(config):
            body["DataCaptureConfig"] = capture
        self.records.update_resource(ENDPOINT, name, body=body, status="InService", extra=server.as_dict())
        return {"EndpointArn": body["EndpointArn"]}

    def update_endpoint(self, request: dict[str, Any]) -> dict[str, Any]:
        """Blue/green: the new generation must pass /ping before traffic (the record) moves to it."""
        endpoint = self._endpoint(request["EndpointName"])
        if endpoint.body["EndpointStatus"] not in ("InService", "Failed"):
            raise ValidationError(
                f"Cannot update endpoint {endpoint.arn} while it is {endpoint.body['EndpointStatus']}."
            )
        config = self.get_or_raise(CONFIG, request["EndpointConfigName"], "Endpoint configuration")
        body = {**endpoint.body, "EndpointStatus": "Updating", "LastModifiedTime": to_dt(now())}
        self.records.update_resource(ENDPOINT, endpoint.name, body=body, status="Updating")
        old = endpoint.extra
        generation = int(old.get("generation", 0)) + 1
        try:
            server, variants = self._start_generation(endpoint.name, config, generation)
        except ServerError as exc:
            # The old generation keeps serving; SageMaker reports the failed update the same way.
            status = "InService" if old.get("pid") and pid_alive(old["pid"]) else "Failed"
            body.update({"EndpointStatus": status, "FailureReason": f"Update failed: {exc}"[:1024]})
            self.records.update_resource(ENDPOINT, endpoint.name, body=body, status=status)
            return {"EndpointArn": endpoint.arn}
        body.update(
            {"EndpointStatus": "InService", "EndpointConfigName": config.name, "ProductionVariants": variants}
        )
        body.pop("FailureReason", None)
        body.pop("DataCaptureConfig", None)
        if capture := self._capture_summary(config):
            body["DataCaptureConfig"] = capture
        self.records.update_resource(
            ENDPOINT, endpoint.name, body=body, status="InService", extra=server.as_dict()
        )
        if old.get("pid"):
            stop_server(int(old["pid"]))
        return {"EndpointArn": endpoint.arn}

    def _endpoint(self, name: str) -> Resource:
        """The endpoint, with a dead server noticed: InService without a live pid becomes Failed."""
        endpoint = self.records.get_resource(ENDPOINT, name)
        if endpoint is None:
            raise not_found("Endpoint", name)
        pid = endpoint.extra.get("pid")
        if endpoint.body["EndpointStatus"] == "InService" and pid and not pid_alive(int(pid)):
            body = {
                **endpoint.body,
                "EndpointStatus": "Failed",
                "FailureReason": f"The endpoint's server process ({pid}) is no longer running.",
                "LastModifiedTime": to_dt(now()),
            }
            self.records.update_resource(ENDPOINT, name, body=body, status="Failed")
            endpoint = self.records.get_resource(ENDPOINT, name) or endpoint
        return endpoint

    def describe_endpoint(self, request: dict[str, Any]) -> dict[str, Any]:
        return dict(self._endpoint(request["EndpointName"]).body)

    def list_endpoints(self, request: dict[str, Any]) -> dict[str, Any]:
        items = [
            pick(
                self._endpoint(e.name).body,
                "EndpointName",
                "EndpointArn",
                "CreationTime",
                "LastModifiedTime",
                "EndpointStatus",
            )
            for e in self.records.list_resources(ENDPOINT)
        ]
        items = filter_sort(items, request, name_key="EndpointName", status_key="EndpointStatus")
        return paginate("ListEndpoints", request, items)

    def delete_endpoint(self, request: dict[str, Any]) -> dict[str, Any]:
        endpoint = self._endpoint(request["EndpointName"])
        if pid := endpoint.extra.get("pid"):
            stop_server(int(pid))
        self.records.delete_resource(ENDPOINT, endpoint.name)
        return {}

    def local_endpoint(self, name: str) -> dict[str, Any]:
        """Local-only: where the endpoint's server listens (`url` = sagemaker-runtime endpoint_url)."""
        endpoint = self._endpoint(name)
        return {
            "EndpointName": endpoint.name,
            "EndpointStatus": endpoint.body["EndpointStatus"],
            **endpoint.extra,
        }
