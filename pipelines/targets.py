"""Where a compiled pipeline runs: the local engine or Amazon SageMaker, behind one boto3-shaped surface.

Both targets expose `client` (the SageMaker API: boto3's client or the local engine's `LocalSageMaker`) and
an object store (`put`, `get`, `exists`); everything above this module is target-agnostic.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse


class TargetError(RuntimeError):
    """A target cannot be used (no credentials, unreachable store); the message is one line for the CLI."""


class Target(Protocol):
    name: str
    client: Any
    compile_cache: Path | None  # where compiled definitions are reused across runs, if anywhere

    def put(self, uri: str, data: bytes) -> None: ...

    def get(self, uri: str) -> bytes: ...

    def exists(self, prefix_uri: str) -> bool: ...


def split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"{uri!r} is not an s3:// URI")
    return parsed.netloc, parsed.path.lstrip("/")


class LocalTarget:
    """The embedded engine: records and objects under `root` (default `.mlops/`)."""

    name = "local"

    def __init__(self, root: Path, region: str, spot_interruptions: int | None = None) -> None:
        from pipelines.local.client import LocalSageMaker

        self.root = root
        self.compile_cache = root / "compiled"
        self.client = LocalSageMaker(root=root, region=region, spot_interruptions=spot_interruptions)
        self.store = self.client.store

    def put(self, uri: str, data: bytes) -> None:
        self.store.put_bytes(uri, data)

    def get(self, uri: str) -> bytes:
        return self.store.get_bytes(uri)

    def exists(self, prefix_uri: str) -> bool:
        return bool(self.store.list(prefix_uri))


class SageMakerTarget:
    """Amazon SageMaker through boto3; fails early, in one line, when no credentials are configured."""

    name = "sagemaker"
    compile_cache = None

    def __init__(self, region: str, session: Any = None) -> None:
        import boto3

        self.session = session or boto3.Session(region_name=region)
        if self.session.get_credentials() is None:
            raise TargetError(
                "no AWS credentials found: configure a profile or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                "(or run with --target local)"
            )
        self.client = self.session.client("sagemaker")
        self.s3 = self.session.client("s3")

    def put(self, uri: str, data: bytes) -> None:
        bucket, key = split_s3(uri)
        self.s3.put_object(Bucket=bucket, Key=key, Body=data)

    def get(self, uri: str) -> bytes:
        bucket, key = split_s3(uri)
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def exists(self, prefix_uri: str) -> bool:
        bucket, key = split_s3(prefix_uri)
        return self.s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1).get("KeyCount", 0) > 0


def make_target(
    name: str, region: str, root: Path | None = None, spot_interruptions: int | None = None
) -> Target:
    if name == "local":
        return LocalTarget(root or Path(os.environ.get("PDM_ROOT", ".mlops")), region, spot_interruptions)
    if name == "sagemaker":
        return SageMakerTarget(region)
    raise TargetError(f"unknown target {name!r}: choose local or sagemaker")
