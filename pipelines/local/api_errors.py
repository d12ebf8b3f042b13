"""AWS-coded service errors of the local client, built in one place so callers handle both targets alike."""

from __future__ import annotations

from typing import ClassVar

from botocore.exceptions import ClientError


class ServiceError(Exception):
    """Base of every error the local SageMaker backend raises; `code` is the AWS error code."""

    code: ClassVar[str] = "InternalFailure"
    http_status: ClassVar[int] = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_client_error(self, operation_name: str) -> ClientError:
        """The `botocore.exceptions.ClientError` boto3 would raise for this error."""
        response = {
            "Error": {"Code": self.code, "Message": self.message, "Type": "Sender"},
            "ResponseMetadata": {"HTTPStatusCode": self.http_status, "HTTPHeaders": {}, "RetryAttempts": 0},
            "Message": self.message,
        }
        return ClientError(response, operation_name)  # type: ignore[arg-type]


class ValidationError(ServiceError):
    code = "ValidationException"


class ResourceNotFound(ServiceError):
    code = "ResourceNotFound"


class ResourceInUse(ServiceError):
    code = "ResourceInUse"


class ConflictError(ServiceError):
    code = "ConflictException"
    http_status = 409


class ResourceLimitExceeded(ServiceError):
    code = "ResourceLimitExceeded"


def not_found(kind: str, name: str) -> ServiceError:
    """SageMaker answers a missing job, pipeline or package with a ValidationException or ResourceNotFound.

    Describe* of jobs, models, endpoints and endpoint configs say "Could not find ..." as a
    ValidationException; pipelines, executions and package groups use ResourceNotFound.
    """
    if kind in {"Pipeline", "Pipeline execution", "Model package group"}:
        return ResourceNotFound(f"{kind} '{name}' does not exist.")
    if kind in {"Endpoint", "Endpoint configuration", "Model"}:
        return ValidationError(f'Could not find {kind.lower()} "{name}".')
    return ValidationError(f"Could not find {kind.lower()} '{name}'.")
