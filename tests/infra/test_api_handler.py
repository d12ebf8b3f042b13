"""The inline API Lambda handler of api.yaml does its job: health from the endpoint status, predictions."""

from __future__ import annotations

import base64
import io
import json
import types
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from tests.infra.cfn_helpers import branches, props

ENDPOINT = "pdm-mlops-dev"


@pytest.fixture
def handler(templates: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """The ZipFile code loaded as a module, its two boto3 clients stubbed."""
    (inline,) = [
        b["ZipFile"] for b in branches(props(templates["api"], "ApiFunction")["Code"]) if "ZipFile" in b
    ]
    monkeypatch.setenv("ENDPOINT_NAME", ENDPOINT)
    module = types.ModuleType("index")
    exec(compile(inline, "api.yaml:ApiFunction", "exec"), module.__dict__)
    with Stubber(module.runtime) as runtime, Stubber(module.sagemaker) as sagemaker:
        module.stubs = types.SimpleNamespace(runtime=runtime, sagemaker=sagemaker)
        yield module
        runtime.assert_no_pending_responses()
        sagemaker.assert_no_pending_responses()


def _predict_event(
    body: str | bytes, content_type: str = "application/json", b64: bool = False
) -> dict[str, Any]:
    raw = body.encode() if isinstance(body, str) else body
    return {
        "resource": "/predict",
        "httpMethod": "POST",
        "headers": {"Content-Type": content_type},
        "body": base64.b64encode(raw).decode() if b64 else raw.decode(),
        "isBase64Encoded": b64,
    }


def _body(payload: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(payload), len(payload))


@pytest.mark.parametrize(("status", "code"), [("InService", 200), ("Updating", 200), ("Failed", 503)])
def test_health_reflects_the_endpoint_status(handler: Any, status: str, code: int) -> None:
    handler.stubs.sagemaker.add_response(
        "describe_endpoint",
        {
            "EndpointName": ENDPOINT,
            "EndpointArn": f"arn:aws:sagemaker:eu-west-1:123456789012:endpoint/{ENDPOINT}",
            "EndpointConfigName": "config",
            "EndpointStatus": status,
            "CreationTime": "2024-06-01T00:00:00Z",
            "LastModifiedTime": "2024-06-01T00:00:00Z",
        },
        {"EndpointName": ENDPOINT},
    )
    response = handler.handler({"resource": "/health", "httpMethod": "GET"}, None)
    assert response["statusCode"] == code
    assert json.loads(response["body"]) == {"status": status}


def test_health_fails_when_the_endpoint_is_missing(handler: Any) -> None:
    handler.stubs.sagemaker.add_client_error(
        "describe_endpoint",
        service_error_code="ValidationException",
        service_message="Could not find endpoint",
    )
    response = handler.handler({"resource": "/health"}, None)
    assert response["statusCode"] == 503


@pytest.mark.parametrize(
    ("body", "content_type", "b64"),
    [
        ('{"instances": [[298.1, 308.6, 1551, 42.8, 0, "M"]]}', "application/json", False),
        ("298.1,308.6,1551,42.8,0,M\n", "text/csv", False),
        ("298.1,308.6,1551,42.8,0,M\n", "text/csv; charset=utf-8", True),
    ],
)
def test_predict_forwards_the_body_to_the_endpoint(
    handler: Any, body: str, content_type: str, b64: bool
) -> None:
    handler.stubs.runtime.add_response(
        "invoke_endpoint",
        {
            "Body": _body(b'{"predictions": [0.03]}'),
            "ContentType": "application/json",
            "InvokedProductionVariant": "AllTraffic",
        },
        {
            "EndpointName": ENDPOINT,
            "ContentType": content_type.split(";")[0],
            "Accept": "application/json",
            "Body": ANY,
        },
    )
    response = handler.handler(_predict_event(body, content_type, b64), None)
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {"predictions": [0.03]}
    assert response["headers"]["X-Invoked-Production-Variant"] == "AllTraffic"


@pytest.mark.parametrize(
    ("event", "code"),
    [
        (_predict_event("a,b", "text/plain"), 415),
        (_predict_event("   "), 400),
        (_predict_event("{not json"), 400),
        (_predict_event(b"1," * (3 * 1024 * 1024 + 1), "text/csv"), 413),
    ],
)
def test_bad_requests_are_4xx_without_calling_the_endpoint(
    handler: Any, event: dict[str, Any], code: int
) -> None:
    response = handler.handler(event, None)
    assert response["statusCode"] == code
    assert json.loads(response["body"])["message"]


@pytest.mark.parametrize(
    ("error", "fields", "code"),
    [
        ("ModelError", {"OriginalStatusCode": 400, "OriginalMessage": "expected 6 features, got 5"}, 400),
        ("ModelError", {"OriginalStatusCode": 500, "OriginalMessage": "boom"}, 502),
        ("ThrottlingException", {}, 429),
        ("ServiceUnavailable", {}, 502),
    ],
)
def test_endpoint_errors_are_mapped(handler: Any, error: str, fields: dict[str, Any], code: int) -> None:
    handler.stubs.runtime.add_client_error(
        "invoke_endpoint", service_error_code=error, service_message="endpoint said no", modeled_fields=fields
    )
    response = handler.handler(_predict_event('{"instances": [[1, 2, 3, 4, 5, "L"]]}'), None)
    assert response["statusCode"] == code
    if code == 400:
        assert json.loads(response["body"])["message"] == "expected 6 features, got 5"
