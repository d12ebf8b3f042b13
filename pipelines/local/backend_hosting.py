"""Models, endpoint configs and endpoints; an endpoint is a real local server (blue/green on update)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from pipelines.local.api_common import filter_sort, now, paginate, pick, shape_members, to_dt
from pipelines.local.api_errors import ValidationError, not_found
from pipelines.local.backend_base import BackendBase
from pipelines.local.backend_registry import PACKAGE
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
# How many target models a local multi-model server keeps loaded (its LRU size). SageMaker sizes its cache
# by instance memory and has no such setting, so this is the local engine's own container variable.
MULTI_MODEL_CACHE_ENV = "PDM_MULTI_MODEL_CACHE_SIZE"
# What a container naming a ModelPackageName takes from the package's first inference container.
_PACKAGE_FIELDS = ("Image", "ModelDataUrl", "ModelDataSource", "Environment")


class HostingBackend(BackendBase):
    """CreateModel ... DeleteEndpoint. Create/Update return once the server is healthy or has failed."""

    # --- models ----------------------------------------------------------------------------------
    def create_model(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["ModelName"]
        body = {k: v for k, v in request.items() if k in shape_members("DescribeModelOutput")}
        if "PrimaryContainer" in body:
            body["PrimaryContainer"] = self._container(body["PrimaryContainer"])
        if "Containers" in body:
            body["Containers"] = [self._container(c) for c in body["Containers"]]
        body.update({"ModelArn": self.arn(MODEL, name), "CreationTime": to_dt(now())})
        if not self.records.insert_resource(MODEL, name, body["ModelArn"], body):
            raise ValidationError(f'Cannot create already existing model "{body["ModelArn"]}".')
        return {"ModelArn": body["ModelArn"]}

    def _container(self, container: dict[str, Any]) -> dict[str, Any]:
        """Check a container; one naming a model package gets the package's image, data and environment.

        SageMaker resolves ModelPackageName when the model is created (later approval changes do not touch
        the model) and refuses a versioned package that is not Approved.
        """
        if (size := container.get("Environment", {}).get(MULTI_MODEL_CACHE_ENV)) is not None and (
            not str(size).isdigit() or int(size) < 1
        ):
            raise ValidationError(f"{MULTI_MODEL_CACHE_ENV} must be a whole number >= 1, got {size!r}.")
        name = container.get("ModelPackageName")
        if not name:
            return container
        key = name.lower() if name.startswith("arn:") else self.arn(PACKAGE, name)
        package = self.records.get_resource(PACKAGE, key)
        if package is None:
            raise ValidationError(f"Model package {name} does not exist.")
        status = package.body.get("ModelApprovalStatus")
        if package.version is not None and status != "Approved":
            raise ValidationError(
                f"Model package {name} has ModelApprovalStatus {status}; "
                "only Approved versions can be deployed."
            )
        spec = (package.body.get("InferenceSpecification", {}).get("Containers") or [{}])[0]
        return {**pick(spec, *_PACKAGE_FIELDS), **container}

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
        self,
        name: str,
        config: Resource,
        generation: int,
        weights: dict[str, float] | None = None,
        counts: dict[str, int] | None = None,
    ) -> tuple[Server, list[dict[str, Any]]]:
        """Extract each variant's model and start a server for them; returns it and the variant summaries.

        `weights` / `counts` override the config's per variant (UpdateEndpointWeightsAndCapacities).
        """
        directory = self.root / "endpoints" / name / str(generation)
        shutil.rmtree(directory, ignore_errors=True)
        variants, summaries, env = [], [], self.python_env(dict(os.environ))
        multi_root: Path | None = None
        cache_size: int | None = None
        weights, counts = weights or {}, counts or {}
        for variant in config.body["ProductionVariants"]:
            model = self.get_or_raise(MODEL, variant["ModelName"], "Model").body
            container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
            for key in _SERVER_ENV:
                if key in container.get("Environment", {}):
                    env[key] = container["Environment"][key]
            if container.get("Mode") == "MultiModel":
                multi_root = self.store.path_for(container["ModelDataUrl"], prefix=True)
                model_dir = None
                if (size := container.get("Environment", {}).get(MULTI_MODEL_CACHE_ENV)) is not None:
                    cache_size = int(size)
            else:
                model_dir = extract_model(
                    self.store, container, directory / "models" / variant["VariantName"]
                )
            weight = float(weights.get(variant["VariantName"], variant.get("InitialVariantWeight", 1.0)))
            variants.append(
                {"name": variant["VariantName"], "weight": weight}
                | ({"model_dir": str(model_dir)} if model_dir else {})
            )
            count = counts.get(variant["VariantName"], variant.get("InitialInstanceCount", 1))
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
            cache_size,
            self._metrics_dir(name),
        )
        server = start_server(self.options.serve_command, body, directory, generation, env)
        return server, summaries

    def _metrics_dir(self, name: str) -> Path:
        """The endpoint's counters, shared by all its server generations (and their workers).

        It lives as long as the endpoint: the invocation counts of A/B variants then survive a promote or an
        update that starts a new server process, as CloudWatch's do on SageMaker.
        """
        return self.root / "endpoints" / name / "metrics"

    def _serving_fingerprint(
        self, config: Resource, weights: dict[str, float] | None, counts: dict[str, int] | None
    ) -> str:
        """What a generation serves: per variant the container (image, environment, mode, the model data's
        content) with weight and count, plus data capture. Equal fingerprints serve identically."""
        weights, counts = weights or {}, counts or {}
        parts: list[Any] = [config.body.get("DataCaptureConfig")]
        for variant in config.body["ProductionVariants"]:
            model = self.get_or_raise(MODEL, variant["ModelName"], "Model").body
            container = dict(model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0])
            url = container.pop("ModelDataUrl", None)
            content = url
            if url and container.get("Mode") != "MultiModel" and self.store.exists(url):
                content = hashlib.sha256(self.store.get_bytes(url)).hexdigest()
            name = variant["VariantName"]
            parts.append([
                name, container, content,
                weights.get(name, variant.get("InitialVariantWeight", 1.0)),
                counts.get(name, variant.get("InitialInstanceCount", 1)),
            ])  # fmt: skip
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

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
        # A new endpoint counts from zero, even where one of the same name was deleted before.
        shutil.rmtree(self._metrics_dir(name), ignore_errors=True)
        try:
            server, variants = self._start_generation(name, config, 1)
        except ServerError as exc:
            body.update({"EndpointStatus": "Failed", "FailureReason": str(exc)[:1024]})
            self.records.update_resource(ENDPOINT, name, body=body, status="Failed")
            return {"EndpointArn": body["EndpointArn"]}
        serving = {**server.as_dict(), "fingerprint": self._serving_fingerprint(config, None, None)}
        body.update(
            {"EndpointStatus": "InService", "ProductionVariants": variants, "LastModifiedTime": to_dt(now())}
        )
        if capture := self._capture_summary(config):
            body["DataCaptureConfig"] = capture
        self.records.update_resource(ENDPOINT, name, body=body, status="InService", extra=serving)
        return {"EndpointArn": body["EndpointArn"]}

    def update_endpoint(self, request: dict[str, Any]) -> dict[str, Any]:
        """Blue/green: the new generation must pass /ping before traffic (the record) moves to it."""
        endpoint = self._endpoint(request["EndpointName"])
        if endpoint.body["EndpointStatus"] not in ("InService", "Failed"):
            raise ValidationError(
                f"Cannot update endpoint {endpoint.arn} while it is {endpoint.body['EndpointStatus']}."
            )
        config = self.get_or_raise(CONFIG, request["EndpointConfigName"], "Endpoint configuration")
        self._switch(endpoint, config)
        return {"EndpointArn": endpoint.arn}

    def update_endpoint_weights_and_capacities(self, request: dict[str, Any]) -> dict[str, Any]:
        """New weights (and desired counts) through a new health-checked generation on the same config.

        The server reads its weights at start, so the change is a blue/green switch like an update: the old
        generation answers until the new one passes /ping, and keeps answering if it never does.
        """
        endpoint = self._endpoint(request["EndpointName"])
        if endpoint.body["EndpointStatus"] != "InService":
            raise ValidationError(
                f"Cannot update endpoint {endpoint.arn} while it is {endpoint.body['EndpointStatus']}."
            )
        current = {v["VariantName"]: v for v in endpoint.body.get("ProductionVariants", [])}
        weights = {name: float(v.get("CurrentWeight", 1.0)) for name, v in current.items()}
        counts = {name: int(v.get("DesiredInstanceCount", 1)) for name, v in current.items()}
        for item in request["DesiredWeightsAndCapacities"]:
            name = item["VariantName"]
            if name not in current:
                raise ValidationError(f'The variant(s) "[{name}]" is/are not present in {endpoint.arn}.')
            if "DesiredWeight" in item:
                weights[name] = float(item["DesiredWeight"])
            if "DesiredInstanceCount" in item:
                counts[name] = int(item["DesiredInstanceCount"])
        if sum(weights.values()) <= 0:
            raise ValidationError("At least one production variant must have a weight greater than 0.")
        config = self.get_or_raise(CONFIG, endpoint.body["EndpointConfigName"], "Endpoint configuration")
        self._switch(endpoint, config, weights, counts)
        return {"EndpointArn": endpoint.arn}

    def _switch(
        self,
        endpoint: Resource,
        config: Resource,
        weights: dict[str, float] | None = None,
        counts: dict[str, int] | None = None,
    ) -> None:
        """Start the next generation; only once it is healthy does the record point at it and the old stop."""
        body = {**endpoint.body, "EndpointStatus": "Updating", "LastModifiedTime": to_dt(now())}
        self.records.update_resource(ENDPOINT, endpoint.name, body=body, status="Updating")
        old = endpoint.extra
        fingerprint = self._serving_fingerprint(config, weights, counts)
        if fingerprint == old.get("fingerprint") and old.get("pid") and pid_alive(int(old["pid"])):
            # Same models, weights and capture (an unchanged pipeline re-run): the running generation
            # already serves exactly this, so only the record moves, with no restart and no lost counters.
            body.update({"EndpointStatus": "InService", "EndpointConfigName": config.name})
            body.pop("FailureReason", None)
            self.records.update_resource(ENDPOINT, endpoint.name, body=body, status="InService", extra=old)
            return
        generation = int(old.get("generation", 0)) + 1
        try:
            server, variants = self._start_generation(endpoint.name, config, generation, weights, counts)
        except ServerError as exc:
            # The old generation keeps serving; SageMaker reports the failed update the same way.
            status = "InService" if old.get("pid") and pid_alive(old["pid"]) else "Failed"
            body.update({"EndpointStatus": status, "FailureReason": f"Update failed: {exc}"[:1024]})
            self.records.update_resource(ENDPOINT, endpoint.name, body=body, status=status)
            return
        body.update(
            {"EndpointStatus": "InService", "EndpointConfigName": config.name, "ProductionVariants": variants}
        )
        body.pop("FailureReason", None)
        body.pop("DataCaptureConfig", None)
        if capture := self._capture_summary(config):
            body["DataCaptureConfig"] = capture
        self.records.update_resource(
            ENDPOINT, endpoint.name, body=body, status="InService",
            extra={**server.as_dict(), "fingerprint": fingerprint},
        )  # fmt: skip
        if old.get("pid"):
            stop_server(int(old["pid"]))

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
        shutil.rmtree(self._metrics_dir(endpoint.name), ignore_errors=True)
        return {}

    def local_endpoint(self, name: str) -> dict[str, Any]:
        """Local-only: where the endpoint's server listens (`url` = sagemaker-runtime endpoint_url)."""
        endpoint = self._endpoint(name)
        return {
            "EndpointName": endpoint.name,
            "EndpointStatus": endpoint.body["EndpointStatus"],
            **endpoint.extra,
        }
