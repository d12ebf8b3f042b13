"""`LocalSageMaker`: boto3's SageMaker client surface over the local engine; callers never branch on target.

The methods only check the request against botocore's input shape (as boto3 does client-side), call the
backend of their resource family and turn its errors into `botocore.exceptions.ClientError`s.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import botocore.hooks
import botocore.loaders
import botocore.paginate
import botocore.waiter
from botocore import xform_name
from botocore.exceptions import ParamValidationError

from pipelines.local.api_common import service, validation_report
from pipelines.local.api_errors import ServiceError
from pipelines.local.backend_base import EngineOptions
from pipelines.local.backend_hosting import HostingBackend
from pipelines.local.backend_jobs import JobsBackend
from pipelines.local.backend_pipelines import PipelinesBackend
from pipelines.local.backend_registry import RegistryBackend
from pipelines.local.store import ObjectStore

SPOT_ENV = "PDM_LOCAL_SPOT_INTERRUPTIONS"


class LocalBackend(PipelinesBackend, JobsBackend, RegistryBackend, HostingBackend):
    """Every resource family over one records file and one object store."""


class LocalSageMaker:
    """boto3-shaped SageMaker client of the local engine (records under `root`, objects under `root/s3`).

    Args:
        root: engine folder (records.db, s3/, jobs/, logs/, endpoints/).
        region, account_id: used in ARNs.
        spot_interruptions: Spot interruptions injected into managed-Spot training jobs; default from the
            environment variable PDM_LOCAL_SPOT_INTERRUPTIONS (read here, at the entry point only).
        lambda_handlers: Lambda function name or ARN -> `module:function` / `file.py:function` run for
            Lambda steps.
        serve_command: command starting an endpoint server (default `python -m deploy.serve`).
    """

    def __init__(
        self,
        root: Path = Path(".mlops"),
        region: str = "us-east-1",
        account_id: str = "000000000000",
        spot_interruptions: int | None = None,
        lambda_handlers: dict[str, str] | None = None,
        serve_command: list[str] | None = None,
    ) -> None:
        if spot_interruptions is None:
            raw = os.environ.get(SPOT_ENV, "").strip() or "0"
            try:
                spot_interruptions = int(raw)
            except ValueError:
                raise ValueError(f"{SPOT_ENV} must be a whole number, got {raw!r}") from None
        options = EngineOptions(
            spot_interruptions=max(0, spot_interruptions), lambda_handlers=dict(lambda_handlers or {})
        )
        if serve_command:
            options.serve_command = list(serve_command)
        self.root = Path(root)
        self.store = ObjectStore(self.root / "s3")
        self._backend = LocalBackend(self.root, self.store, region, account_id, options)
        self.meta = SimpleNamespace(
            region_name=region,
            service_model=service(),
            events=botocore.hooks.HierarchicalEmitter(),
            endpoint_url=None,
            partition="aws",
        )

    def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        request = dict(params)
        shape = service().operation_model(operation).input_shape
        for name, member in shape.members.items() if shape else []:
            # boto3 fills idempotency tokens (ClientRequestToken) the caller leaves out.
            if member.metadata.get("idempotencyToken") and name not in request:
                request[name] = str(uuid.uuid4())
        if report := validation_report(operation, request):
            raise ParamValidationError(report=report)
        try:
            response = getattr(self._backend, xform_name(operation))(request)
        except ServiceError as exc:
            raise exc.to_client_error(operation) from None
        response["ResponseMetadata"] = {
            "RequestId": str(uuid.uuid4()),
            "HTTPStatusCode": 200,
            "HTTPHeaders": {},
            "RetryAttempts": 0,
        }
        return response

    # --- botocore helpers that work on any client ------------------------------------------------
    def get_waiter(self, waiter_name: str) -> botocore.waiter.Waiter:
        """botocore's SageMaker waiters (endpoint_in_service, ...) polling this client."""
        model = botocore.waiter.WaiterModel(
            botocore.loaders.Loader().load_service_model("sagemaker", "waiters-2")
        )
        names = {xform_name(name): name for name in model.waiter_names}
        if waiter_name not in names:
            raise ValueError(f"Waiter does not exist: {waiter_name}")
        return botocore.waiter.create_waiter_with_client(names[waiter_name], model, self)

    def can_paginate(self, operation_name: str) -> bool:
        return operation_name in self._paginators()

    def get_paginator(self, operation_name: str) -> botocore.paginate.Paginator:
        config = self._paginators()[operation_name]
        names = {xform_name(name): name for name in service().operation_names}
        operation = service().operation_model(names[operation_name])
        return botocore.paginate.Paginator(getattr(self, operation_name), config, operation)

    @staticmethod
    def _paginators() -> dict[str, Any]:
        raw = botocore.loaders.Loader().load_service_model("sagemaker", "paginators-1")["pagination"]
        return {xform_name(k): v for k, v in raw.items()}

    def local_endpoint(self, EndpointName: str) -> dict[str, Any]:
        """Local-only: pid, port and `url` of the endpoint's server (the sagemaker-runtime endpoint_url)."""
        try:
            return self._backend.local_endpoint(EndpointName)
        except ServiceError as exc:
            raise exc.to_client_error("DescribeEndpoint") from None

    # --- pipelines and executions ----------------------------------------------------------------
    def create_pipeline(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("CreatePipeline", kwargs)

    def update_pipeline(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("UpdatePipeline", kwargs)

    def describe_pipeline(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("DescribePipeline", kwargs)

    def list_pipelines(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("ListPipelines", kwargs)

    def delete_pipeline(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("DeletePipeline", kwargs)

    def start_pipeline_execution(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("StartPipelineExecution", kwargs)

    def describe_pipeline_execution(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("DescribePipelineExecution", kwargs)

    def list_pipeline_executions(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("ListPipelineExecutions", kwargs)

    def stop_pipeline_execution(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("StopPipelineExecution", kwargs)

    def retry_pipeline_execution(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("RetryPipelineExecution", kwargs)

    def list_pipeline_execution_steps(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("ListPipelineExecutionSteps", kwargs)

    def describe_pipeline_definition_for_execution(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("DescribePipelineDefinitionForExecution", kwargs)

    def list_pipeline_parameters_for_execution(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("ListPipelineParametersForExecution", kwargs)

    # --- jobs ------------------------------------------------------------------------------------
    def describe_processing_job(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("DescribeProcessingJob", kwargs)

    def list_processing_jobs(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("ListProcessingJobs", kwargs)

    def describe_training_job(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("DescribeTrainingJob", kwargs)

    def list_training_jobs(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("ListTrainingJobs", kwargs)

    def describe_hyper_parameter_tuning_job(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("DescribeHyperParameterTuningJob", kwargs)

    def list_hyper_parameter_tuning_jobs(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("ListHyperParameterTuningJobs", kwargs)

    def list_training_jobs_for_hyper_parameter_tuning_job(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("ListTrainingJobsForHyperParameterTuningJob", kwargs)

    def describe_transform_job(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("DescribeTransformJob", kwargs)

    def list_transform_jobs(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("ListTransformJobs", kwargs)

    # --- model registry --------------------------------------------------------------------------
    def create_model_package_group(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("CreateModelPackageGroup", kwargs)

    def describe_model_package_group(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("DescribeModelPackageGroup", kwargs)

    def list_model_package_groups(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("ListModelPackageGroups", kwargs)

    def delete_model_package_group(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("DeleteModelPackageGroup", kwargs)

    def create_model_package(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("CreateModelPackage", kwargs)

    def describe_model_package(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("DescribeModelPackage", kwargs)

    def list_model_packages(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("ListModelPackages", kwargs)

    def update_model_package(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("UpdateModelPackage", kwargs)

    def delete_model_package(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("DeleteModelPackage", kwargs)

    # --- hosting ---------------------------------------------------------------------------------
    def create_model(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("CreateModel", kwargs)

    def describe_model(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("DescribeModel", kwargs)

    def list_models(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("ListModels", kwargs)

    def delete_model(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("DeleteModel", kwargs)

    def create_endpoint_config(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("CreateEndpointConfig", kwargs)

    def describe_endpoint_config(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("DescribeEndpointConfig", kwargs)

    def list_endpoint_configs(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("ListEndpointConfigs", kwargs)

    def delete_endpoint_config(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("DeleteEndpointConfig", kwargs)

    def create_endpoint(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("CreateEndpoint", kwargs)

    def update_endpoint(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("UpdateEndpoint", kwargs)

    def update_endpoint_weights_and_capacities(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("UpdateEndpointWeightsAndCapacities", kwargs)

    def describe_endpoint(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("DescribeEndpoint", kwargs)

    def list_endpoints(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("ListEndpoints", kwargs)

    def delete_endpoint(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("DeleteEndpoint", kwargs)
