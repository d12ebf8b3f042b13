"""Runs a CreateTransformJob request locally: streams every input object through the model into `.out`."""

from __future__ import annotations

import collections
import csv
import gzip
import io
import json
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

from pipelines.local.errors import StoreError, UnsupportedError
from pipelines.local.jobs.context import JobContext, arn, clip_reason, now
from pipelines.local.jobs.jsonpath import CsvRow, FilterError, JsonPath, parse
from pipelines.local.jobs.launch import JobLog
from pipelines.local.jobs.transform_model import LoadedModel, ModelError, load_model
from pipelines.local.store import join_uri, split_uri

_ECHO_FIELDS = (
    "TransformJobName", "ModelName", "MaxConcurrentTransforms", "ModelClientConfig", "MaxPayloadInMB",
    "BatchStrategy", "Environment", "TransformInput", "TransformOutput", "DataCaptureConfig",
    "TransformResources", "DataProcessing", "ExperimentConfig",
)  # fmt: skip
MB = 1024 * 1024


class _Stopped(Exception):
    """The orchestration cancelled the job."""


def run_transform_job(
    request: Mapping[str, Any], ctx: JobContext, model: Mapping[str, Any]
) -> dict[str, Any]:
    """Run a batch transform job.

    Args:
        request: a boto3 CreateTransformJob request.
        ctx: the job context.
        model: the DescribeModel response of `request["ModelName"]`.

    Returns:
        DescribeTransformJob response dict; an object that fails leaves no `.out` and fails the job.

    Raises:
        UnsupportedError: an unsupported split type, data type, filter syntax, image or model layout.
    """
    desc: dict[str, Any] = {k: request[k] for k in _ECHO_FIELDS if k in request}
    name = request["TransformJobName"]
    desc.update(
        TransformJobArn=arn(ctx, "transform-job", name), TransformJobStatus="InProgress", CreationTime=now()
    )
    plan = _Plan(request)
    log = JobLog(ctx.log_path, ctx.max_log_bytes)
    try:
        desc["TransformStartTime"] = now()
        try:
            loaded = load_model(model, ctx, request.get("Environment", {}))
            objects = _input_objects(ctx, plan.source)
        except (StoreError, ModelError) as exc:
            return _end(desc, "Failed", f"ClientError: {exc}")
        log.engine(f"transform job {name}: {len(objects)} object(s), {plan.strategy}, split {plan.split}")
        failures: list[str] = []
        for uri, rel in objects:
            out_uri = join_uri(plan.output_path, rel + ".out")
            try:
                count = _transform_object(ctx, plan, loaded, uri, out_uri)
                log.engine(f"{uri} -> {out_uri}: {count} record(s)")
            except (ModelError, FilterError, StoreError, UnicodeDecodeError, ValueError) as exc:
                failures.append(f"{rel}: {exc}")
                log.engine(f"{uri} failed: {exc}")
        if failures:
            return _end(desc, "Failed", "ClientError: " + "; ".join(failures))
        return _end(desc, "Completed")
    except _Stopped:
        return _end(desc, "Stopped")
    finally:
        log.close()


def _end(desc: dict[str, Any], status: str, reason: str | None = None) -> dict[str, Any]:
    desc["TransformJobStatus"] = status
    desc["TransformEndTime"] = now()
    if reason:
        desc["FailureReason"] = clip_reason(reason)
    return desc


class _Plan:
    """The request's settings, validated once."""

    def __init__(self, request: Mapping[str, Any]) -> None:
        tin, tout = request["TransformInput"], request["TransformOutput"]
        self.source = tin["DataSource"]["S3DataSource"]
        if self.source["S3DataType"] not in ("S3Prefix", "ManifestFile"):
            raise UnsupportedError(
                f"TransformInput S3DataType {self.source['S3DataType']!r} (S3Prefix, ManifestFile)"
            )
        self.split = tin.get("SplitType", "None")
        if self.split not in ("None", "Line"):
            raise UnsupportedError(f"SplitType {self.split!r} is not supported locally (None, Line)")
        self.gzip = tin.get("CompressionType", "None") == "Gzip"
        self.strategy = request.get(
            "BatchStrategy", "MultiRecord" if self.split == "Line" else "SingleRecord"
        )
        if self.strategy == "MultiRecord" and self.split == "None":
            self.strategy = "SingleRecord"  # nothing to pack without a split
        payload = request.get("MaxPayloadInMB", 6) or 6
        self.max_payload = int(payload) * MB
        self.workers = max(1, int(request.get("MaxConcurrentTransforms") or 1))
        self.content_type = tin.get("ContentType") or "text/csv"
        self.accept = tout.get("Accept") or self.content_type
        self.output_path = tout["S3OutputPath"]
        self.line = tout.get("AssembleWith", "None") == "Line"
        processing = request.get("DataProcessing") or {}
        self.input_filter = parse(processing.get("InputFilter"))
        self.output_filter = parse(processing.get("OutputFilter"))
        self.join = processing.get("JoinSource", "None") == "Input"
        self.per_record = self.join or not self.output_filter.is_identity
        for path in (self.input_filter, self.output_filter):
            if not path.is_identity and _kind(self.content_type) == "other":
                raise UnsupportedError(
                    f"DataProcessing filters need CSV or JSON content, not {self.content_type!r}"
                )


def _kind(content_type: str) -> str:
    lowered = content_type.lower()
    return "csv" if "csv" in lowered else "json" if "json" in lowered else "other"


def _input_objects(ctx: JobContext, source: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(uri, relative name) of every input object; the relative name is kept under S3OutputPath."""
    uri = source["S3Uri"]
    if source["S3DataType"] == "S3Prefix":
        pairs = ctx.store.objects_under(uri)
        if not pairs:
            raise StoreError(f"no objects at or under {uri}")
        return pairs
    entries = json.loads(ctx.store.get_bytes(uri))
    prefix = entries[0]["prefix"]
    split_uri(prefix)
    return [(join_uri(prefix, rel), rel) for rel in entries[1:]]


def _records(handle: IO[bytes], split: str) -> Iterator[str]:
    """Records of an object: each non-empty line (Line) or the whole object (None)."""
    if split == "None":
        yield handle.read().decode("utf-8")
        return
    for raw in handle:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line.strip():
            yield line


def _batches(records: Iterator[str], plan: _Plan) -> Iterator[list[str]]:
    """SingleRecord: one record each; MultiRecord: as many as fit in MaxPayloadInMB."""
    batch: list[str] = []
    size = 0
    for record in records:
        length = len(record.encode("utf-8")) + 1
        if length > plan.max_payload:
            raise ValueError(f"a record of {length} bytes exceeds MaxPayloadInMB={plan.max_payload // MB}")
        if batch and (plan.strategy == "SingleRecord" or size + length > plan.max_payload):
            yield batch
            batch, size = [], 0
        batch.append(record)
        size += length
    if batch:
        yield batch


def _filter(path: JsonPath, record: str, kind: str) -> str:
    """Apply a filter to a serialised CSV row or JSON record and serialise the result back."""
    if path.is_identity:
        return record
    if kind == "csv":
        selected = path.apply(CsvRow(next(csv.reader([record]))))
        values = selected if isinstance(selected, list) else [selected]
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(values)
        return out.getvalue()
    return json.dumps(path.apply(json.loads(record)), separators=(",", ":"))


def _split_output(body: bytes, accept: str, count: int) -> list[str]:
    """A response cut into one output per input record (needed to join or filter per record)."""
    text = body.decode("utf-8").strip()
    parts: list[str] | None = None
    if _kind(accept) == "json":
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("predictions"), list):
            parsed = parsed["predictions"]
        if isinstance(parsed, list) and len(parsed) == count:
            parts = [json.dumps(p, separators=(",", ":")) for p in parsed]
        elif parsed is not None and count == 1:
            parts = [json.dumps(parsed, separators=(",", ":"))]
    if parts is None:
        parts = [line for line in text.splitlines() if line.strip()]
    if len(parts) != count:
        raise ModelError(f"the model returned {len(parts)} output record(s) for {count} input record(s)")
    return parts


def _join(record: str, output: str, kind: str) -> str:
    """JoinSource=Input: CSV columns appended; JSON output under SageMakerOutput."""
    if kind == "csv":
        return f"{record},{output}"
    source = json.loads(record)
    try:
        result: Any = json.loads(output)
    except ValueError:
        result = output
    joined = {**source, "SageMakerOutput": result} if isinstance(source, dict) else {
        "SageMakerInput": source, "SageMakerOutput": result}  # fmt: skip
    return json.dumps(joined, separators=(",", ":"))


def _handler(plan: _Plan, model: LoadedModel) -> Callable[[list[str]], bytes]:
    kind_in, kind_out = _kind(plan.content_type), _kind(plan.accept)

    def handle(batch: list[str]) -> bytes:
        body = "\n".join(_filter(plan.input_filter, r, kind_in) for r in batch)
        result, _ = model.invoke(body.encode("utf-8"), plan.content_type, plan.accept)
        if not plan.per_record:
            return result.rstrip(b"\n") + b"\n" if plan.line else result
        outputs = _split_output(result, plan.accept, len(batch))
        kind = kind_in if plan.join else kind_out
        rows = [
            _filter(plan.output_filter, _join(r, o, kind_in) if plan.join else o, kind)
            for r, o in zip(batch, outputs, strict=True)
        ]
        sep = "\n" if plan.line else ""
        return "".join(row + sep for row in rows).encode("utf-8")

    return handle


def _transform_object(ctx: JobContext, plan: _Plan, model: LoadedModel, uri: str, out_uri: str) -> int:
    """Stream one object through the model into its `.out` (atomic: absent unless every batch succeeded)."""
    handle_batch = _handler(plan, model)
    count = 0
    with open(ctx.store.path_for(uri), "rb") as raw, ctx.store.open_write(out_uri) as out:
        # gzip.GzipFile wraps (and is closed with) `raw`; it decompresses as the records are read.
        source: IO[bytes] = gzip.GzipFile(fileobj=raw) if plan.gzip else raw
        batches = _batches(_records(source, plan.split), plan)
        with ThreadPoolExecutor(max_workers=plan.workers, thread_name_prefix="transform") as pool:
            # A bounded window of in-flight batches keeps memory flat however large the object is,
            # and results are written in input order.
            window: collections.deque[tuple[Future[bytes], int]] = collections.deque()
            for batch in batches:
                if ctx.cancelled():
                    raise _Stopped
                window.append((pool.submit(handle_batch, batch), len(batch)))
                while len(window) >= 2 * plan.workers:
                    future, size = window.popleft()
                    out.write(future.result())
                    count += size
            while window:
                future, size = window.popleft()
                out.write(future.result())
                count += size
    return count
