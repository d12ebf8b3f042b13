"""`package`: upload the templates and the inference API's Lambda bundle to the artefacts bucket."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from deploy.infra.stacks import StackSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
# The API Lambda runs deploy/api (its handler module) with boto3 from the Lambda runtime.
API_PACKAGE = Path("deploy") / "api"
# Fixed timestamps make the zip (and so its hash and S3 key) depend on file contents only.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass
class PackageResult:
    """Where `package` put things, and the parameters that point the stacks at them."""

    bucket: str
    template_urls: dict[str, str] = field(default_factory=dict)
    api_code_key: str = ""
    api_code_version: str = ""

    def parameters(self) -> dict[str, str]:
        """Parameter overrides for the api stacks (empty when there was no API code to package)."""
        if not self.api_code_key:
            return {}
        return {"ApiCodeS3Key": self.api_code_key, "ApiCodeVersion": self.api_code_version}


def build_api_bundle(root: Path = REPO_ROOT) -> tuple[bytes, str] | None:
    """Deterministic zip of deploy/__init__.py + deploy/api/**.py and its sha256 (None: no deploy/api)."""
    api_dir = root / API_PACKAGE
    if not api_dir.is_dir():
        return None
    files = [root / "deploy" / "__init__.py", *sorted(api_dir.rglob("*.py"))]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def _exists(s3: Any, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def _url(bucket: str, region: str, key: str) -> str:
    return f"https://{bucket}.s3.{region}.amazonaws.com/{key}"


def package(
    s3: Any, bucket: str, region: str, specs: Sequence[StackSpec], env_name: str, root: Path = REPO_ROOT
) -> PackageResult:
    """Upload each selected template (content-addressed keys) and the API bundle; skip what is there."""
    result = PackageResult(bucket=bucket)
    for spec in specs:
        body = spec.template_path.read_bytes()
        digest = hashlib.sha256(body).hexdigest()[:16]
        key = f"infra/{env_name}/templates/{spec.template}-{digest}.yaml"
        if not _exists(s3, bucket, key):
            s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/x-yaml")
        result.template_urls[spec.unit] = _url(bucket, region, key)
    bundle = build_api_bundle(root)
    if bundle is not None:
        data, digest = bundle
        key = f"infra/{env_name}/lambda/api-{digest[:16]}.zip"
        if not _exists(s3, bucket, key):
            s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/zip")
        result.api_code_key = key
        result.api_code_version = digest[:16]
    return result
