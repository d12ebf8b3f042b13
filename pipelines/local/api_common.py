"""Helpers every resource family shares: ARNs, times, JSON with datetimes, declared list pagination."""

from __future__ import annotations

import base64
import functools
import json
import secrets
import string
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import botocore.loaders
import botocore.model
import botocore.validate

from pipelines.local.api_errors import ValidationError

_ID_ALPHABET = string.ascii_lowercase + string.digits


def arn(resource_type: str, name: str, account_id: str, region: str) -> str:
    """The one ARN builder; SageMaker lower-cases resource names inside ARNs."""
    return f"arn:aws:sagemaker:{region}:{account_id}:{resource_type}/{name.lower()}"


def random_id(length: int = 12) -> str:
    """Lower-case alphanumeric id, like pipeline execution ids (`8ik7ppl7o0uk`)."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def now() -> float:
    """Epoch seconds; records store times as REAL."""
    return datetime.now(UTC).timestamp()


def to_dt(epoch: float | None) -> datetime | None:
    """Records keep epoch seconds; responses carry tz-aware datetimes like botocore's parser."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def as_epoch(value: Any) -> float:
    """A datetime or number given in a request (e.g. CreationTimeAfter) as epoch seconds."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return float(value)


def _encode(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return {"$dt": (obj if obj.tzinfo else obj.replace(tzinfo=UTC)).timestamp()}
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _decode(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and "$dt" in obj:
        return datetime.fromtimestamp(obj["$dt"], UTC)
    return obj


def dumps(value: Any) -> str:
    """JSON for records: datetimes survive the round trip (job runners return datetimes)."""
    return json.dumps(value, default=_encode, sort_keys=True)


def loads(text: str | None) -> Any:
    """Inverse of `dumps`."""
    return None if text is None else json.loads(text, object_hook=_decode)


# Declared once: operation -> (result list key, default MaxResults, largest MaxResults).
PAGINATION: dict[str, tuple[str, int, int]] = {
    "ListPipelines": ("PipelineSummaries", 50, 100),
    "ListPipelineExecutions": ("PipelineExecutionSummaries", 50, 100),
    "ListPipelineExecutionSteps": ("PipelineExecutionSteps", 50, 100),
    "ListPipelineParametersForExecution": ("PipelineParameters", 50, 100),
    "ListProcessingJobs": ("ProcessingJobSummaries", 10, 100),
    "ListTrainingJobs": ("TrainingJobSummaries", 10, 100),
    "ListHyperParameterTuningJobs": ("HyperParameterTuningJobSummaries", 10, 100),
    "ListTrainingJobsForHyperParameterTuningJob": ("TrainingJobSummaries", 10, 100),
    "ListTransformJobs": ("TransformJobSummaries", 10, 100),
    "ListModelPackageGroups": ("ModelPackageGroupSummaryList", 10, 100),
    "ListModelPackages": ("ModelPackageSummaryList", 10, 100),
    "ListModels": ("Models", 10, 100),
    "ListEndpointConfigs": ("EndpointConfigs", 10, 100),
    "ListEndpoints": ("Endpoints", 10, 100),
}


def paginate(operation: str, request: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    """One page of `items` per the operation's declared pagination; NextToken is an opaque offset."""
    key, default, largest = PAGINATION[operation]
    limit = int(request.get("MaxResults") or default)
    if not 1 <= limit <= largest:
        raise ValidationError(f"MaxResults must be between 1 and {largest}, got {limit}.")
    start = 0
    if token := request.get("NextToken"):
        try:
            start = int(base64.urlsafe_b64decode(token.encode()).decode().split(":", 1)[1])
        except (ValueError, IndexError) as exc:
            raise ValidationError(f"Invalid pagination token: {token}") from exc
    page: dict[str, Any] = {key: items[start : start + limit]}
    if start + limit < len(items):
        page["NextToken"] = base64.urlsafe_b64encode(f"{operation}:{start + limit}".encode()).decode()
    return page


def filter_sort(
    items: Iterable[dict[str, Any]],
    request: dict[str, Any],
    *,
    name_key: str,
    time_key: str = "CreationTime",
    status_key: str | None = None,
    sort_keys: dict[str, str] | None = None,
    default_order: str = "Descending",
) -> list[dict[str, Any]]:
    """Apply the common List* filters (NameContains, Creation/Created Before/After, StatusEquals, SortBy)."""
    result = list(items)
    if contains := request.get("NameContains"):
        result = [i for i in result if contains.lower() in str(i.get(name_key, "")).lower()]
    if prefix := request.get("PipelineNamePrefix"):
        result = [i for i in result if str(i.get(name_key, "")).startswith(prefix)]
    after = request.get("CreationTimeAfter") or request.get("CreatedAfter")
    before = request.get("CreationTimeBefore") or request.get("CreatedBefore")
    if after is not None:
        result = [i for i in result if i[time_key].timestamp() > as_epoch(after)]
    if before is not None:
        result = [i for i in result if i[time_key].timestamp() < as_epoch(before)]
    if status_key and (status := request.get("StatusEquals")):
        result = [i for i in result if i.get(status_key) == status]
    sort_map = {"Name": name_key, "CreationTime": time_key, "CreatedTime": time_key}
    sort_map.update(sort_keys or {})
    sort_by = request.get("SortBy") or "CreationTime"
    if sort_by not in sort_map:
        raise ValidationError(f"SortBy must be one of {sorted(sort_map)}, got {sort_by!r}.")
    field = sort_map[sort_by]
    order = request.get("SortOrder") or default_order
    if order not in {"Ascending", "Descending"}:
        raise ValidationError(f"SortOrder must be Ascending or Descending, got {order!r}.")
    result.sort(key=_sort_key(field), reverse=order == "Descending")
    return result


def _sort_key(field: str) -> Callable[[dict[str, Any]], Any]:
    def key(item: dict[str, Any]) -> Any:
        value = item.get(field)
        return (value is not None, value if value is not None else 0)

    return key


def pick(source: dict[str, Any], *keys: str) -> dict[str, Any]:
    """The members of `source` named in `keys` that are set (responses omit unset members like AWS)."""
    return {k: source[k] for k in keys if source.get(k) is not None}


@functools.cache
def service_model() -> dict[str, Any]:
    """botocore's SageMaker service model (raw JSON), loaded once: the source of our response shapes."""
    return botocore.loaders.Loader().load_service_model("sagemaker", "service-2")


def shape_members(shape_name: str) -> set[str]:
    """Member names of a structure shape of the SageMaker model, e.g. `DescribeTrainingJobResponse`."""
    return set(service_model()["shapes"][shape_name].get("members", {}))


@functools.cache
def service() -> botocore.model.ServiceModel:
    """The SageMaker ServiceModel (operations with input/output shapes) for validation like boto3's."""
    return botocore.model.ServiceModel(service_model(), "sagemaker")


def validation_report(operation: str, params: dict[str, Any]) -> str | None:
    """botocore's client-side parameter validation of `params` for `operation`; None when valid."""
    shape = service().operation_model(operation).input_shape
    report = botocore.validate.ParamValidator().validate(params, shape)
    return report.generate_report() if report.has_errors() else None
