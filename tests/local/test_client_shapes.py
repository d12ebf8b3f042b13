"""Every response of the local client matches botocore's output shape for the operation; errors as boto3's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from tests.local.conftest import ROLE, FakeRunners, create, start_inline, steps_of
from tests.local.test_executor import PARAMETERS, all_steps

SPEC = {
    "Containers": [{"Image": "img", "ModelDataUrl": "s3://bucket/m.tar.gz"}],
    "SupportedContentTypes": ["text/csv"],
    "SupportedResponseMIMETypes": ["text/csv"],
}


@pytest.fixture
def executed(client: Any, fake: FakeRunners, tmp_path: Path) -> dict[str, Any]:
    handler = tmp_path / "notify.py"
    create(client, "shapes", all_steps(handler), PARAMETERS)
    client._backend.options.lambda_handlers = {"notify": f"{handler}:handler"}
    arn = start_inline(client, "shapes", fake.runners())
    steps = steps_of(client, arn)
    assert {s["StepStatus"] for s in steps.values()} == {"Succeeded"}
    return {"arn": arn, "steps": steps}


def _name(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def test_pipeline_and_execution_responses_match_botocore(
    client: Any, executed: dict[str, Any], assert_shape: Any
) -> None:
    arn = executed["arn"]
    calls = [
        ("DescribePipeline", client.describe_pipeline(PipelineName="shapes")),
        ("ListPipelines", client.list_pipelines()),
        ("UpdatePipeline", client.update_pipeline(PipelineName="shapes", PipelineDescription="d")),
        ("DescribePipelineExecution", client.describe_pipeline_execution(PipelineExecutionArn=arn)),
        ("ListPipelineExecutions", client.list_pipeline_executions(PipelineName="shapes")),
        ("ListPipelineExecutionSteps", client.list_pipeline_execution_steps(PipelineExecutionArn=arn)),
        (
            "DescribePipelineDefinitionForExecution",
            client.describe_pipeline_definition_for_execution(PipelineExecutionArn=arn),
        ),
        (
            "ListPipelineParametersForExecution",
            client.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn),
        ),
    ]
    for operation, response in calls:
        assert_shape(operation, response)
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_job_responses_match_botocore(client: Any, executed: dict[str, Any], assert_shape: Any) -> None:
    steps = executed["steps"]
    tuning = _name(steps["Tune"]["Metadata"]["TuningJob"]["Arn"])
    calls = [
        (
            "DescribeProcessingJob",
            client.describe_processing_job(
                ProcessingJobName=_name(steps["Prep"]["Metadata"]["ProcessingJob"]["Arn"])
            ),
        ),
        ("ListProcessingJobs", client.list_processing_jobs()),
        (
            "DescribeTrainingJob",
            client.describe_training_job(
                TrainingJobName=_name(steps["Train"]["Metadata"]["TrainingJob"]["Arn"])
            ),
        ),
        ("ListTrainingJobs", client.list_training_jobs(SortBy="Status")),
        (
            "DescribeHyperParameterTuningJob",
            client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning),
        ),
        ("ListHyperParameterTuningJobs", client.list_hyper_parameter_tuning_jobs()),
        (
            "ListTrainingJobsForHyperParameterTuningJob",
            client.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName=tuning),
        ),
        (
            "DescribeTransformJob",
            client.describe_transform_job(
                TransformJobName=_name(steps["Batch"]["Metadata"]["TransformJob"]["Arn"])
            ),
        ),
        ("ListTransformJobs", client.list_transform_jobs()),
    ]
    for operation, response in calls:
        assert_shape(operation, response)
    trials = calls[6][1]["TrainingJobSummaries"]
    assert len(trials) == 2 and all(t["TuningJobName"] for t in trials)


def test_registry_and_hosting_responses_match_botocore(
    client: Any, executed: dict[str, Any], assert_shape: Any
) -> None:
    steps = executed["steps"]
    package = steps["Register"]["Metadata"]["RegisterModel"]["Arn"]
    model = _name(steps["CreateModel"]["Metadata"]["Model"]["Arn"])
    config = _name(steps["EPConfig"]["Metadata"]["EndpointConfig"]["Arn"])
    calls = [
        ("DescribeModelPackageGroup", client.describe_model_package_group(ModelPackageGroupName="pdm-group")),
        ("ListModelPackageGroups", client.list_model_package_groups()),
        (
            "CreateModelPackage",
            client.create_model_package(ModelPackageGroupName="pdm-group", InferenceSpecification=SPEC),
        ),
        (
            "UpdateModelPackage",
            client.update_model_package(
                ModelPackageArn=package,
                ModelApprovalStatus="Rejected",
                ApprovalDescription="worse than champion",
                CustomerMetadataProperties={"k": "v"},
            ),
        ),
        ("DescribeModelPackage", client.describe_model_package(ModelPackageName=package)),
        ("ListModelPackages", client.list_model_packages(ModelPackageGroupName="pdm-group")),
        ("DescribeModel", client.describe_model(ModelName=model)),
        ("ListModels", client.list_models()),
        ("DescribeEndpointConfig", client.describe_endpoint_config(EndpointConfigName=config)),
        ("ListEndpointConfigs", client.list_endpoint_configs()),
        ("DescribeEndpoint", client.describe_endpoint(EndpointName="pdm-test")),
        ("ListEndpoints", client.list_endpoints()),
        ("UpdateEndpoint", client.update_endpoint(EndpointName="pdm-test", EndpointConfigName=config)),
        ("DeleteEndpoint", client.delete_endpoint(EndpointName="pdm-test")),
        ("DeleteEndpointConfig", client.delete_endpoint_config(EndpointConfigName=config)),
        ("DeleteModel", client.delete_model(ModelName=model)),
    ]
    for operation, response in calls:
        assert_shape(operation, response)
    described = client.describe_model_package(ModelPackageName=package)
    assert (described["ModelApprovalStatus"], described["ApprovalDescription"]) == (
        "Rejected",
        "worse than champion",
    )
    assert described["ModelPackageVersion"] == 1 and described["ModelMetrics"]["ModelQuality"]


def test_model_package_versions_filters_sorting_and_pagination(client: Any, assert_shape: Any) -> None:
    client.create_model_package_group(ModelPackageGroupName="reg")
    for status in ("Approved", "Rejected", "Approved"):
        client.create_model_package(
            ModelPackageGroupName="reg", InferenceSpecification=SPEC, ModelApprovalStatus=status
        )
    pending = client.create_model_package(ModelPackageGroupName="reg", InferenceSpecification=SPEC)
    assert pending["ModelPackageArn"] == "arn:aws:sagemaker:us-east-1:000000000000:model-package/reg/4"
    assert (
        client.describe_model_package(ModelPackageName=pending["ModelPackageArn"])["ModelApprovalStatus"]
        == "PendingManualApproval"
    )
    approved = client.list_model_packages(
        ModelPackageGroupName="reg",
        ModelApprovalStatus="Approved",
        SortBy="CreationTime",
        SortOrder="Descending",
    )["ModelPackageSummaryList"]
    assert [p["ModelPackageVersion"] for p in approved] == [3, 1]
    pages, token = [], None
    while True:
        page = client.list_model_packages(
            ModelPackageGroupName="reg", MaxResults=3, **({"NextToken": token} if token else {})
        )
        assert_shape("ListModelPackages", page)
        pages.append([p["ModelPackageVersion"] for p in page["ModelPackageSummaryList"]])
        token = page.get("NextToken")
        if not token:
            break
    assert pages == [[1, 2, 3], [4]]
    paginated = client.get_paginator("list_model_packages").paginate(
        ModelPackageGroupName="reg", PaginationConfig={"PageSize": 2}
    )
    assert [len(p["ModelPackageSummaryList"]) for p in paginated] == [2, 2]


@pytest.mark.parametrize(
    "call, code",
    [
        (lambda c: c.describe_pipeline(PipelineName="nope"), "ResourceNotFound"),
        (
            lambda c: c.describe_pipeline_execution(
                PipelineExecutionArn="arn:aws:sagemaker:us-east-1:000000000000:pipeline/p/execution/x"
            ),
            "ResourceNotFound",
        ),
        (lambda c: c.describe_training_job(TrainingJobName="nope"), "ValidationException"),
        (lambda c: c.describe_endpoint(EndpointName="nope"), "ValidationException"),
        (lambda c: c.describe_model_package_group(ModelPackageGroupName="nope"), "ResourceNotFound"),
        (
            lambda c: c.create_model_package(ModelPackageGroupName="nope", InferenceSpecification=SPEC),
            "ResourceNotFound",
        ),
        (lambda c: c.create_endpoint(EndpointName="e", EndpointConfigName="nope"), "ValidationException"),
        (lambda c: c.list_models(MaxResults=1000), "ValidationException"),
        (lambda c: c.list_models(NextToken="garbage"), "ValidationException"),
    ],
)
def test_errors_are_client_errors_with_aws_codes(client: Any, call: Any, code: str) -> None:
    with pytest.raises(ClientError) as err:
        call(client)
    assert err.value.response["Error"]["Code"] == code
    assert err.value.response["Error"]["Message"]


def test_duplicate_creates_say_already_exists_like_sagemaker(client: Any) -> None:
    definition = '{"Version": "2020-12-01", "Steps": []}'
    client.create_pipeline(PipelineName="dup", PipelineDefinition=definition, RoleArn=ROLE)
    with pytest.raises(ClientError) as err:
        client.create_pipeline(PipelineName="dup", PipelineDefinition=definition, RoleArn=ROLE)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "already exists" in err.value.response["Error"]["Message"]


def test_requests_are_validated_like_boto3(client: Any) -> None:
    with pytest.raises(ParamValidationError, match="Unknown parameter"):
        client.describe_pipeline(PipelineName="x", Nope=1)
    with pytest.raises(ParamValidationError, match="Missing required parameter"):
        client.create_model_package_group()


def test_start_is_idempotent_on_client_request_token(client: Any) -> None:
    create(client, "idem", [{"Name": "F", "Type": "Fail", "Arguments": {"ErrorMessage": "x"}}])
    client._backend._launch = lambda _arn: None
    token = "t" * 32
    first = client.start_pipeline_execution(PipelineName="idem", ClientRequestToken=token)
    second = client.start_pipeline_execution(PipelineName="idem", ClientRequestToken=token)
    assert first["PipelineExecutionArn"] == second["PipelineExecutionArn"]


def test_botocore_waiters_work_on_the_local_client(client: Any, executed: dict[str, Any]) -> None:
    client.get_waiter("endpoint_in_service").wait(EndpointName="pdm-test", WaiterConfig={"Delay": 0.1})
