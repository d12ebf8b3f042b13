"""Errors in SageMaker's runtime error shape, so botocore raises the modeled ClientError for each failure."""

from __future__ import annotations

import json
from typing import Any

from deploy.serve import constants as c

# Exceptions from the user's hooks that mean "the request is bad", not "the model is broken": the contract's
# InputError is a ValueError, and so are XGBoostError, JSONDecodeError and UnicodeDecodeError. Everything
# else a hook raises is a server-side fault of the model (container status 500).
CLIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (ValueError, TypeError, LookupError)


class ServeError(Exception):
    """A request that cannot be served: the HTTP status, the runtime error code and a message.

    The body is `{"__type": code, "message": ..., **extra}` and the code is also sent as `x-amzn-ErrorType`;
    botocore's rest-json parser reads either, then re-parses the body with the modeled shape (so ModelError's
    OriginalStatusCode, OriginalMessage and LogStreamArn reach the caller).
    """

    def __init__(self, status: int, code: str, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}

    def body(self) -> bytes:
        """The JSON error document."""
        return json.dumps({"__type": self.code, "message": self.message, **self.extra}).encode()


class ModelFailure(Exception):
    """The model container's own failure: what a real container would answer (400, 406, 415, 500...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def validation_error(message: str, status: int = 400) -> ServeError:
    """A request the runtime front rejects before it reaches a model (modeled ValidationError)."""
    return ServeError(status, "ValidationError", message)


def payload_too_large(limit: int) -> ServeError:
    """Body over the 6 MB InvokeEndpoint limit: status 413, code ValidationError so botocore maps it."""
    return validation_error(f"Request payload exceeds the {limit}-byte limit of InvokeEndpoint.", status=413)


def from_hook_exception(exc: BaseException) -> ModelFailure:
    """Classify an exception raised by a user hook as the container's 4xx or 5xx answer."""
    if isinstance(exc, ModelFailure):
        return exc
    status = 400 if isinstance(exc, CLIENT_EXCEPTIONS) else 500
    text = str(exc) or type(exc).__name__
    return ModelFailure(status, text)


def for_container(failure: ModelFailure) -> ServeError:
    """The container-contract answer (`POST /invocations`): the model's own status and message."""
    code = "InternalFailure" if failure.status >= 500 else "ValidationError"
    return ServeError(failure.status, code, failure.message)


def for_runtime(failure: ModelFailure, endpoint_name: str) -> ServeError:
    """The runtime-API answer: any non-200 from the container becomes ModelError 424, as SageMaker does.

    The message follows the service's wording so code that parses it on AWS also works locally.
    """
    kind = "server" if failure.status >= 500 else "client"
    log_group = f"/aws/sagemaker/Endpoints/{endpoint_name}"
    message = (
        f'Received {kind} error ({failure.status}) from primary with message "{failure.message}". '
        f"See the local endpoint log for {log_group} in account {c.LOCAL_ACCOUNT} for more information."
    )
    extra = {
        "OriginalStatusCode": failure.status,
        "OriginalMessage": failure.message,
        "LogStreamArn": f"arn:aws:logs:{c.LOCAL_REGION}:{c.LOCAL_ACCOUNT}:log-group:{log_group}",
    }
    return ServeError(424, "ModelError", message, extra)
