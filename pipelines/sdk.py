"""The one adapter between this package and the SageMaker SDK v3: building a definition is offline and fast.

What the SDK would otherwise do while a definition is built (see ../shared/sdk-v3-notes.md), and what this
module does instead:
- it needs a region at import time -> `prepare_environment` sets one before the first SDK import;
- it validates the role with an IAM call -> disabled (`SAGEMAKER_VALIDATE_ROLE=false`); config checks the ARN;
- it looks up or creates the default bucket -> `OfflinePipelineSession.default_bucket` returns the configured;
- it uploads code during `pipeline.definition()` -> uploads are collected in `session.pending_uploads` and
  published afterwards to the target's object store (local folder or S3) by `publish_uploads`;
- telemetry starts network calls from decorated functions -> the sender is replaced by a no-op (the SDK's own
  opt-out is a config file whose presence makes every lookup re-validate it: 10-20x slower builds);
- credentials: the build session uses static placeholder credentials so botocore never walks the credential
  chain (which probes the instance metadata endpoint over the network).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tarfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODEL_CODE_DIR = Path(__file__).resolve().parent.parent / "model_code"
_SOURCE_EXCLUDE = {"__pycache__", ".ipynb_checkpoints", ".pytest_cache"}
_prepared = False


def prepare_environment(region: str) -> None:
    """Set what the SDK reads at import time; idempotent, and never overrides the user's own choices."""
    global _prepared
    os.environ.setdefault("AWS_DEFAULT_REGION", region)
    os.environ["SAGEMAKER_VALIDATE_ROLE"] = "false"
    if _prepared:
        return
    from sagemaker.core.telemetry import telemetry_logging

    telemetry_logging._send_telemetry_request = _no_telemetry
    # Import the heavy modules now so that their loggers exist when they are quietened below.
    import sagemaker.mlops.workflow.pipeline
    import sagemaker.serve.model_builder
    import sagemaker.train.model_trainer  # noqa: F401

    # The SDK logs every default it applies, and warns that job names are dropped from the definition
    # (intended: SageMaker names jobs per execution); the run CLI shows what matters in its own table.
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("sagemaker")] + [
        "sagemaker",
        "botocore.credentials",
    ]:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Running within a PipelineSession")
    _prepared = True


@contextlib.contextmanager
def quiet_sdk() -> Iterator[None]:
    """Silence the SDK while building: it reconfigures the root logger, logs every default it applies and
    warns about its own internal deprecations, none of which a user of this package can act on.

    `logging.disable` and the warnings filter are process-wide and restored on exit; builds are short and
    single-threaded.
    """
    previous = logging.root.manager.disable
    root_level, root_handlers = logging.root.level, list(logging.root.handlers)
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
        logging.root.setLevel(root_level)
        logging.root.handlers[:] = root_handlers


def _no_telemetry(*_args: Any, **_kwargs: Any) -> None:
    """Replacement for the SDK's telemetry sender: building a definition must not touch the network."""


@dataclass(frozen=True)
class SourceBundle:
    """`model_code/` packed deterministically, addressed by content so unchanged code keeps its URI."""

    data: bytes
    sha256: str

    def uri(self, s3_root: str) -> str:
        return f"{s3_root}/code/{self.sha256[:20]}/sourcedir.tar.gz"


def _source_files(root: Path) -> Iterable[Path]:
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in _SOURCE_EXCLUDE for part in rel.parts) or path.suffix in {".pyc", ".pyo"}:
            continue
        if path.is_file():
            yield path


def local_imports(root: Path, entry: str, extra: Iterable[str] = ()) -> list[str]:
    """`entry` plus every module of `root` it imports, transitively (`import x`, `from x import`, `from .x`).

    Each job ships only the files it runs, so editing `train.py` changes the training bundle alone and
    preprocessing keeps its cache hit.
    """
    import ast

    available = {p.stem: p.name for p in root.glob("*.py")}
    wanted, queue = set(), [entry, *extra]
    while queue:
        name = queue.pop()
        if name in wanted:
            continue
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"model code file {path} does not exist")
        wanted.add(name)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            modules: list[str] = []
            if isinstance(node, ast.Import):
                modules = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level in (0, 1):
                modules = [node.module.split(".")[0]]
            queue += [available[m] for m in modules if m in available]
    return sorted(wanted)


def pack_source(root: Path = MODEL_CODE_DIR, files: Iterable[str] | None = None) -> SourceBundle:
    """tar.gz with sorted members, zeroed mtimes/owners and a zero gzip timestamp: same files, same bytes.

    `files` (names relative to `root`) limits the bundle to what one job needs; default: the whole folder.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"model code folder {root} does not exist")
    paths = _source_files(root) if files is None else [root / name for name in sorted(files)]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in paths:
            info = tarfile.TarInfo(str(path.relative_to(root)))
            data = path.read_bytes()
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    import gzip

    data = gzip.compress(raw.getvalue(), mtime=0)
    return SourceBundle(data=data, sha256=hashlib.sha256(data).hexdigest())


def pack_entry(entry: str, extra: Iterable[str] = (), root: Path = MODEL_CODE_DIR) -> SourceBundle:
    """The bundle of one job: its entry script and the model-code modules it imports."""
    return pack_source(root, local_imports(root, entry, extra))


def make_session(region: str, bucket: str) -> Any:
    """A PipelineSession that never calls AWS: fixed bucket, collected uploads, placeholder credentials."""
    prepare_environment(region)
    import boto3
    from sagemaker.core.workflow.pipeline_context import PipelineSession

    class OfflinePipelineSession(PipelineSession):
        """PipelineSession whose uploads are recorded instead of sent (published later per target)."""

        def __init__(self) -> None:
            boto_session = boto3.Session(
                region_name=region,
                aws_access_key_id="offline-build",
                aws_secret_access_key="offline-build",
            )
            super().__init__(boto_session=boto_session, default_bucket=bucket)
            self.pending_uploads: dict[str, bytes] = {}

        def default_bucket(self) -> str:
            return bucket

        def upload_data(
            self,
            path: str,
            bucket: str | None = None,
            key_prefix: str = "data",
            callback: Any = None,
            extra_args: Any = None,
        ) -> str:
            bucket = bucket or self.default_bucket()
            src = Path(path)
            files = list(_source_files(src)) if src.is_dir() else [src]
            for file in files:
                rel = file.relative_to(src) if src.is_dir() else Path(file.name)
                self.pending_uploads[f"s3://{bucket}/{key_prefix}/{rel.as_posix()}"] = file.read_bytes()
            suffix = "" if src.is_dir() else f"/{src.name}"
            return f"s3://{bucket}/{key_prefix}{suffix}"

        def upload_string_as_file_body(
            self, body: str | bytes, bucket: str, key: str, kms_key: str | None = None
        ) -> str:
            data = body.encode() if isinstance(body, str) else body
            self.pending_uploads[f"s3://{bucket}/{key}"] = data
            return f"s3://{bucket}/{key}"

    return OfflinePipelineSession()


def publish_uploads(uploads: dict[str, bytes], put: Any) -> int:
    """Send collected uploads with `put(uri, data)`; returns how many were sent."""
    for uri, data in sorted(uploads.items()):
        put(uri, data)
    return len(uploads)


def image_uri(framework: str, version: str, region: str, instance_type: str | None = None) -> str:
    """AWS framework image URI from the SDK's bundled table (no network)."""
    from sagemaker.core import image_uris

    return image_uris.retrieve(framework, region=region, version=version, instance_type=instance_type)
