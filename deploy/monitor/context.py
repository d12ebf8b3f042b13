"""What every deploy.monitor command shares: the resolved options, object writes, the baseline files."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from botocore.exceptions import ClientError

from deploy.clients import Target, UsageError, is_not_found, split_s3
from deploy.monitor import requests as rq

LOCAL_ROLE = "arn:aws:iam::000000000000:role/pdm-mlops-local"
# Waits between polls (a baselining job, a schedule being deleted); tests replace it.
sleep: Callable[[float], None] = time.sleep


def suffix() -> str:
    """UTC time to the second plus 4 random hex digits (new job and definition names never collide)."""
    from deploy.endpoint import unique_suffix

    return unique_suffix()


@dataclass(frozen=True)
class Context:
    """Everything a command needs, resolved once from the options and the pipeline config."""

    target: Target
    cfg: Any
    project: str
    env: str
    endpoint: str
    baseline_uri: str
    reports_uri: str
    out: TextIO

    def schedule(self, kind: str) -> str:
        return rq.schedule_name(self.project, self.env, kind)

    def role(self, override: str | None) -> str:
        role = override or self.cfg.role_arn
        if not self.target.is_local and role == LOCAL_ROLE:
            raise UsageError("a real execution role is needed on SageMaker: --role-arn or PDM_ROLE_ARN")
        return str(role)


# --- object I/O ----------------------------------------------------------------------------------------
def put_object(target: Target, uri: str, data: bytes, kms_key: str | None = None) -> None:
    """Write one object: atomically in the local store (temp file + rename), or one S3 PutObject."""
    if target.is_local:
        target.sagemaker.store.put_bytes(uri, data)
        return
    bucket, key = split_s3(uri)
    request: dict[str, Any] = {"Bucket": bucket, "Key": key, "Body": data}
    if kms_key:
        request |= {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key}
    target.aws("s3").put_object(**request)


def json_bytes(value: Any) -> bytes:
    """Indented JSON, as the analyzer writes its files, so reports diff and read well by hand."""
    return (json.dumps(value, indent=2) + "\n").encode("utf-8")


def read_baseline(target: Target, baseline_uri: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(statistics, constraints) of a baseline; a missing or unreadable one is the user's to fix."""
    objects = target.objects()
    out = []
    for name in ("statistics.json", "constraints.json"):
        uri = f"{baseline_uri.rstrip('/')}/{name}"
        if uri not in objects.list(uri):
            raise UsageError(f"no baseline {name} at {uri}: run `python -m deploy.monitor baseline` first")
        try:
            out.append(json.loads(objects.read(uri)))
        except ValueError as exc:
            raise UsageError(f"baseline {uri} is not valid JSON: {exc}") from None
    return out[0], out[1]


def raw_columns(cfg: Any) -> list[str]:
    """The model's input columns as the endpoint receives them: numeric, then categorical."""
    return [*cfg.schema_.numeric_columns, *cfg.schema_.categorical_columns]


def capture_destination(target: Target, endpoint: str) -> str:
    """The endpoint's DataCaptureConfig destination; refuses a missing endpoint or one without capture."""
    try:
        described = target.sagemaker.describe_endpoint(EndpointName=endpoint)
    except ClientError as exc:
        if is_not_found(exc):
            raise UsageError(f"endpoint {endpoint} does not exist (--endpoint)") from None
        raise
    capture = described.get("DataCaptureConfig") or {}
    if not capture.get("EnableCapture") or not capture.get("DestinationS3Uri"):
        raise UsageError(
            f"endpoint {endpoint} has no data capture: Model Monitor has nothing to analyse "
            "(deploy it with data capture on)"
        )
    return str(capture["DestinationS3Uri"])
