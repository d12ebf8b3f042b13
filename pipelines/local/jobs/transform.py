"""Runs a CreateTransformJob request locally: streams every input object through the model into `.out`.

Why it is shaped this way: an object is read in runs of whole lines of at most MaxPayloadInMB (MultiRecord
sends such a run as one request, as SageMaker does, except that runs get smaller as the job's input runs
out, see `_run_target`), and a run goes to the model as the bytes read, with no per-record Python work
unless a filter, a join or SingleRecord needs the records; blank lines are dropped and records counted on
the request's own thread, so the reader only reads and cuts. Up to MaxConcurrentTransforms requests are in
flight, across object boundaries, on threads over one model loaded here (the default: the artefact's hooks
parse with pandas' C reader, predict in XGBoost and format with numpy, which mostly run without the GIL,
so threads use every core without starting any process), or, when the model sets
SAGEMAKER_MODEL_SERVER_WORKERS > 1 as a serving container would, on that many worker processes with a model
copy each (transform_workers; for hooks whose pure-Python work would hold the GIL). XGBoost's threads are
split between the requests in flight instead of each request taking every core. Results are written in
input order, atomically per object, and memory stays bounded by the in-flight window however large the
input is.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import gzip
import io
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

import numpy as np

from pipelines.local.errors import StoreError, UnsupportedError
from pipelines.local.jobs.context import JobContext, arn, clip_reason, now
from pipelines.local.jobs.jsonpath import CsvRow, FilterError, JsonPath, parse
from pipelines.local.jobs.launch import JobLog
from pipelines.local.jobs.transform_model import LoadedModel, ModelError, ModelSource, prepare_model
from pipelines.local.jobs.transform_workers import Worker, WorkerDied, WorkerPool
from pipelines.local.store import join_uri, split_uri

_ECHO_FIELDS = (
    "TransformJobName", "ModelName", "MaxConcurrentTransforms", "ModelClientConfig", "MaxPayloadInMB",
    "BatchStrategy", "Environment", "TransformInput", "TransformOutput", "DataCaptureConfig",
    "TransformResources", "DataProcessing", "ExperimentConfig",
)  # fmt: skip
MB = 1024 * 1024
# CreateTransformJob limits: MaxPayloadInMB <= 100 and MaxConcurrentTransforms x MaxPayloadInMB <= 100.
MAX_PAYLOAD_MB = 100
DEFAULT_PAYLOAD_MB = 6
# Worker processes take a second or two to start (interpreter, xgboost, model_fn): below this much input
# the threads here finish first even when the model asks for workers. Module-level so tests can lower it.
PROCESS_MIN_BYTES = 8 * MB
# A line break followed by one of these betrays a blank or whitespace-led line inside a run of lines; runs
# without any (and without CR: nearly all) go to the model untouched, the others are normalised record by
# record first.
_WHITESPACE = np.frombuffer(b"\n \t\x0b\x0c", dtype=np.uint8)

# Smallest run `_run_target` cuts when the input runs out (unless the payload limit is smaller): ~17,000 of
# the built-in records, ~35 ms of work against ~2 ms of fixed cost per request.
MIN_RUN = 512 * 1024
# Read past a run's target by this much, so the line crossing the target usually ends within the first read.
_SLACK = 64 * 1024

# A batch is either the raw bytes read (a run of lines, or a whole object with SplitType None) or the
# records themselves; a request returns its output and the number of records it held.
Batch = bytes | list[str]


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
        Limits SageMaker validates (MaxPayloadInMB, MaxConcurrentTransforms x MaxPayloadInMB) fail the job
        with "ValidationException: ...".

    Raises:
        UnsupportedError: an unsupported split type, data type, filter syntax, image or model layout.
    """
    desc: dict[str, Any] = {k: request[k] for k in _ECHO_FIELDS if k in request}
    name = request["TransformJobName"]
    desc.update(
        TransformJobArn=arn(ctx, "transform-job", name), TransformJobStatus="InProgress", CreationTime=now()
    )
    plan = _Plan(request)
    if plan.invalid:
        return _end(desc, "Failed", f"ValidationException: {plan.invalid}")
    log = JobLog(ctx.log_path, ctx.max_log_bytes)
    try:
        desc["TransformStartTime"] = now()
        try:
            objects = _input_objects(ctx, plan.source)
            source = prepare_model(model, ctx, request.get("Environment", {}))
        except (StoreError, ModelError) as exc:
            return _end(desc, "Failed", f"ClientError: {exc}")
        sizes = [_size(ctx, uri) for uri, _ in objects]
        size = sum(sizes)
        processes = plan.processes(size, source.workers)
        where = f"{processes} worker processes" if processes else "threads"
        log.engine(
            f"transform job {name}: {len(objects)} object(s), {size} bytes, {plan.strategy}, split "
            f"{plan.split}, up to {plan.concurrency} request(s) in flight on {where}"
        )
        started = time.perf_counter()
        with _Dispatcher(plan, source, processes, log, ctx.grace_seconds) as dispatch:
            try:
                dispatch.start()
            except (StoreError, ModelError, WorkerDied) as exc:
                return _end(desc, "Failed", f"ClientError: {exc}")
            log.engine(f"model ready in {time.perf_counter() - started:.2f} s")
            try:
                failures = _transform_objects(ctx, plan, dispatch, objects, sizes, log)
            except WorkerDied as exc:  # killed or out of memory: no later object can run either
                return _end(desc, "Failed", f"ClientError: {exc}")
        if failures:
            return _end(desc, "Failed", "ClientError: " + "; ".join(failures))
        return _end(desc, "Completed")
    except _Stopped:
        return _end(desc, "Stopped")
    finally:
        log.close()


def _size(ctx: JobContext, uri: str) -> int:
    """Bytes of an input object (0 when missing: reading it fails that object later, with its name)."""
    try:
        return ctx.store.path_for(uri).stat().st_size
    except OSError:
        return 0


def _end(desc: dict[str, Any], status: str, reason: str | None = None) -> dict[str, Any]:
    desc["TransformJobStatus"] = status
    desc["TransformEndTime"] = now()
    if reason:
        desc["FailureReason"] = clip_reason(reason)
    return desc


def _cpus() -> int:
    """CPUs this process may run on (taskset / cgroup affinity included)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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
        payload = int(request.get("MaxPayloadInMB", DEFAULT_PAYLOAD_MB))
        given = int(request.get("MaxConcurrentTransforms") or 0)
        # Unset (or 0): SageMaker asks the container's /execution-parameters, and the local model server
        # (deploy/serve) answers one request per CPU, within the 100 MB limit.
        self.concurrency = given or max(1, min(_cpus(), MAX_PAYLOAD_MB // max(1, payload)))
        self.invalid = None
        if not 0 <= payload <= MAX_PAYLOAD_MB:
            self.invalid = f"MaxPayloadInMB must be between 0 and {MAX_PAYLOAD_MB}, got {payload}"
        elif self.concurrency * payload > MAX_PAYLOAD_MB:
            self.invalid = (
                f"MaxConcurrentTransforms x MaxPayloadInMB must not exceed {MAX_PAYLOAD_MB} MB, got "
                f"{self.concurrency} x {payload}"
            )
        # 0 asks for chunked (unbounded) requests: a whole object for SplitType None; Line runs keep the
        # default size so memory stays bounded.
        self.max_payload = (payload or (0 if self.split == "None" else DEFAULT_PAYLOAD_MB)) * MB
        # In flight: the requests being served plus as many read ahead, so no worker waits for the reader.
        self.window = 2 * self.concurrency
        self.content_type = tin.get("ContentType") or "text/csv"
        self.accept = tout.get("Accept") or self.content_type
        self.output_path = tout["S3OutputPath"]
        self.line = tout.get("AssembleWith", "None") == "Line"
        processing = request.get("DataProcessing") or {}
        self.input_filter = parse(processing.get("InputFilter"))
        self.output_filter = parse(processing.get("OutputFilter"))
        self.join = processing.get("JoinSource", "None") == "Input"
        self.per_record = self.join or not self.output_filter.is_identity
        # Records are needed one by one for filters, joins and SingleRecord over lines; otherwise runs (or
        # whole objects) pass as the bytes read.
        single_lines = self.strategy == "SingleRecord" and self.split == "Line"
        self.records = self.per_record or not self.input_filter.is_identity or single_lines
        for path in (self.input_filter, self.output_filter):
            if not path.is_identity and _kind(self.content_type) == "other":
                raise UnsupportedError(
                    f"DataProcessing filters need CSV or JSON content, not {self.content_type!r}"
                )

    def processes(self, input_bytes: int, workers: int) -> int:
        """Worker processes: the model's SAGEMAKER_MODEL_SERVER_WORKERS (at most one per request in
        flight); 0, threads here, when it is unset or 1, or the input is too small to repay their start."""
        count = min(self.concurrency, workers)
        return count if count > 1 and input_bytes >= PROCESS_MIN_BYTES else 0


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


def _runs(handle: IO[bytes], limit: int, target: Callable[[int], int] | None = None) -> Iterator[bytes]:
    """Runs of whole lines of at most `limit` bytes (a newline counted per line), minus the last newline.

    With a `target`, called with the bytes already cut, a run ends at the first line end at or after that
    many bytes (`_run_target`); 0, or no target, fills the run to the limit. The limit always holds.

    Raises:
        ValueError: a line longer than the limit (SageMaker fails a record larger than MaxPayloadInMB).
    """
    pending, cut_so_far = b"", 0
    while True:
        goal = min(limit, target(cut_so_far)) if target else 0
        # Only a little past the target is read: the rest is not copied into this run and out again.
        block, ended = _fill(handle, pending, min(limit, goal + _SLACK) if goal else limit)
        cut = block.find(b"\n", goal) if goal else -1
        if cut < 0 and not ended and len(block) < limit:  # a line longer than the slack crosses the goal
            block, ended = _fill(handle, block, limit)
            cut = block.find(b"\n", goal)
        if cut < 0:
            if ended:
                if block:
                    yield block
                return
            cut = block.rfind(b"\n")
            if cut < 0:
                raise ValueError(_too_large(len(block), limit))
        yield block[:cut]
        pending = block[cut + 1 :]
        cut_so_far += cut + 1


def _fill(handle: IO[bytes], pending: bytes, size: int) -> tuple[bytes, bool]:
    """`pending` plus what is read, up to `size` bytes; and whether the object ended (its last line break,
    if any, then dropped). A gzip stream may return short reads, so reading goes on until `size`."""
    parts, have = [pending], len(pending)
    while have < size:
        data = handle.read(size - have)
        if not data:
            block = b"".join(parts)
            return (block[:-1] if block.endswith(b"\n") else block), True
        parts.append(data)
        have += len(data)
    return b"".join(parts), False


def _run_target(remaining: int, limit: int, concurrency: int) -> int:
    """Bytes for the next run while `remaining` bytes of the job's input are still to be cut (0: fill).

    Filled runs end a job unevenly: the last requests start at different times and take ~0.4 s each at
    6 MB, so one core idles while another finishes (measured: 30-210 ms at the end of a 1.1 s job on 2
    CPUs). So each run is a 1/(2 x concurrency) share of what is left (guided self-scheduling), within
    MIN_RUN and the limit: large runs while much is left, small ones at the end, where the requests in
    flight now finish within a few milliseconds of each other. Every run still holds whole records and
    fits MaxPayloadInMB, the contract a model relies on; SageMaker fills its runs instead.
    """
    if concurrency < 2:
        return 0
    return min(limit, max(MIN_RUN, -(-remaining // (2 * concurrency))))


def _too_large(size: int, limit: int) -> str:
    return f"a record of at least {size} bytes exceeds MaxPayloadInMB={limit // MB}"


def _whitespace_after_break(body: bytes) -> bool:
    """Whether some line break is followed by whitespace.

    numpy, not five `in` searches: each of those stops at every line break (a 6 MB run has 200,000) and
    holds the GIL for ~7 ms, while this takes ~3 ms, mostly without it, next to the requests running.
    """
    data = np.frombuffer(body, dtype=np.uint8)
    after = np.flatnonzero(data[:-1] == ord("\n")) + 1
    return bool(np.isin(data[after], _WHITESPACE).any())


def _regular(body: bytes) -> bytes:
    """The run without blank or whitespace-only lines and without CRs before newlines (rarely needed)."""
    if not body[:1].isspace() and b"\r" not in body and not _whitespace_after_break(body):
        return body
    return b"\n".join(line.rstrip(b"\r") for line in body.split(b"\n") if line.strip())


def _batches(handle: IO[bytes], plan: _Plan, size: int = 0, after: int = 0) -> Iterator[Batch]:
    """Runs as read (MultiRecord), or records when they are needed one by one.

    `size` is the object's byte count when known (not for gzip) and `after` that of the objects after it:
    MultiRecord runs then shrink as the job's input runs out (`_run_target`).
    """
    if plan.split == "None":
        limit = plan.max_payload
        data = handle.read(limit + 1) if limit else handle.read()
        if limit and len(data) > limit:
            raise ValueError(f"the object exceeds MaxPayloadInMB={limit // MB}; use SplitType Line")
        # A whole object is one record: sent as read, or decoded when a filter or join needs it.
        yield [data.decode("utf-8")] if plan.records else data
        return
    target = None
    if plan.strategy == "MultiRecord" and size:

        def target(cut: int) -> int:
            return _run_target(size - cut + after, plan.max_payload, plan.concurrency)

    for run in _runs(handle, plan.max_payload, target):
        if not plan.records:
            yield run  # blank lines dropped where the request runs (_Handler.run), not by the reader
            continue
        body = _regular(run)
        if not body:
            continue
        if plan.strategy == "SingleRecord":
            for record in body.decode("utf-8").split("\n"):
                yield [record]
        else:
            yield body.decode("utf-8").split("\n")


def _csv_fields(record: str) -> list[str]:
    # Plain records split by hand: several times faster than csv.reader, same result without quotes.
    return record.split(",") if '"' not in record else next(csv.reader([record]))


def _csv_line(values: list[Any]) -> str:
    texts = [str(v) for v in values]
    if not any(('"' in t or "," in t or "\n" in t or "\r" in t) for t in texts):
        return ",".join(texts)
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(values)
    return out.getvalue()


def _filter(path: JsonPath, record: str, kind: str) -> str:
    """Apply a filter to a serialised CSV row or JSON record and serialise the result back."""
    if path.is_identity:
        return record
    if kind == "csv":
        selected = path.apply(CsvRow(_csv_fields(record)))
        return _csv_line(selected if isinstance(selected, list) else [selected])
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


@dataclass(frozen=True)
class _Handler:
    """One request's work: filter, invoke, split, join, assemble. Picklable, so workers run it too."""

    content_type: str
    accept: str
    input_filter: JsonPath
    output_filter: JsonPath
    join: bool
    per_record: bool
    line: bool
    runs: bool  # bytes batches are runs of lines (SplitType Line), not whole objects

    @classmethod
    def of(cls, plan: _Plan) -> _Handler:
        return cls(
            plan.content_type,
            plan.accept,
            plan.input_filter,
            plan.output_filter,
            plan.join,
            plan.per_record,
            plan.line,
            plan.split == "Line",
        )

    def run_with_threads(self, model: LoadedModel, batch: Batch, threads: int) -> tuple[bytes, int]:
        """`run` with the model's XGBoost predictions on `threads` threads (its config is per thread)."""
        xgboost = sys.modules.get("xgboost")  # imported by the model's hooks, if they use it
        if xgboost is None:
            return self.run(model, batch)
        with xgboost.config_context(nthread=threads):
            return self.run(model, batch)

    def run(self, model: LoadedModel, batch: Batch) -> tuple[bytes, int]:
        """The assembled output of one batch, and its record count (a run with only blank lines: none)."""
        if isinstance(batch, bytes):
            count = 1
            if self.runs:
                batch = _regular(batch)
                if not batch:
                    return b"", 0
                count = batch.count(b"\n") + 1
            result, _ = model.invoke(batch, self.content_type, self.accept)
            return (result.rstrip(b"\n") + b"\n" if self.line else result), count
        kind_in = _kind(self.content_type)
        body = "\n".join(_filter(self.input_filter, r, kind_in) for r in batch)
        result, _ = model.invoke(body.encode("utf-8"), self.content_type, self.accept)
        if not self.per_record:
            return (result.rstrip(b"\n") + b"\n" if self.line else result), len(batch)
        outputs = _split_output(result, self.accept, len(batch))
        kind = kind_in if self.join else _kind(self.accept)
        rows = [
            _filter(self.output_filter, _join(r, o, kind_in) if self.join else o, kind)
            for r, o in zip(batch, outputs, strict=True)
        ]
        sep = "\n" if self.line else ""
        return "".join(row + sep for row in rows).encode("utf-8"), len(batch)


class _Dispatcher:
    """Where batches run: threads over the model loaded here, or worker processes with a copy each."""

    def __init__(self, plan: _Plan, source: ModelSource, processes: int, log: JobLog, grace: float) -> None:
        self._handler = _Handler.of(plan)
        self._source = source
        self._loaded: LoadedModel | None = None
        self._cores = _cpus()
        threads = max(1, self._cores // max(1, processes))
        # Forked together from one process that imports the model's code once (transform_workers).
        self._pool = WorkerPool(source, processes, threads, log, grace) if processes else None
        self._idle: queue.SimpleQueue[Worker] = queue.SimpleQueue()
        for worker in self._pool.workers if self._pool else []:
            self._idle.put(worker)
        # One thread per request in flight; with workers each thread only waits on a pipe (no GIL held).
        self._threads = ThreadPoolExecutor(processes or plan.concurrency, thread_name_prefix="transform")
        self._concurrency = processes or plan.concurrency
        self._ended = False
        self._active_bytes = 0
        self._active_lock = threading.Lock()

    def start(self) -> None:
        """Load the model here, or wait until every worker has loaded its own (a broken model fails here)."""
        if self._pool is None:
            if "xgboost" not in sys.modules:
                # OpenMP threads that spin while waiting for work take the cores from the other requests
                # running here (measured: a quarter more CPU per row); libgomp reads this once, when
                # XGBoost's library loads, so only a model loaded first in this process gets it.
                os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            self._loaded = self._source.load()
        else:
            self._pool.wait_ready()

    def submit(self, batch: Batch) -> Future[tuple[bytes, int]]:
        if self._pool is not None:
            return self._threads.submit(self._remote, batch)
        assert self._loaded is not None, "start() first"
        return self._threads.submit(self._local, self._loaded, batch)

    def input_ended(self) -> None:
        """Every batch of the job is submitted: from now on the requests running share the cores."""
        self._ended = True

    @contextlib.contextmanager
    def _share(self, batch: Batch) -> Iterator[int]:
        """XGBoost threads for a request starting now: the cores in proportion to its size among the
        requests in flight. Until the last batch is submitted the window counts as full (a request that
        starts first is soon joined by others); after it, only the requests still running count, so the
        last ones get the cores the finished ones leave."""
        size = max(1, len(batch) if isinstance(batch, bytes) else sum(len(r) for r in batch))
        with self._active_lock:
            self._active_bytes += size
            among = self._active_bytes if self._ended else max(self._active_bytes, size * self._concurrency)
            share = max(1, round(self._cores * size / among))
        try:
            yield share
        finally:
            with self._active_lock:
                self._active_bytes -= size

    def _local(self, model: LoadedModel, batch: Batch) -> tuple[bytes, int]:
        with self._share(batch) as threads:
            return self._handler.run_with_threads(model, batch, threads)

    def _remote(self, batch: Batch) -> tuple[bytes, int]:
        worker = self._idle.get()
        try:
            with self._share(batch) as threads:
                return worker.call(self._handler, batch, threads)
        finally:
            self._idle.put(worker)

    def __enter__(self) -> _Dispatcher:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # After a stop or an engine error the workers' pending batches are not wanted: kill them first,
        # so the threads blocked on their pipes return at once.
        if self._pool is not None:
            self._pool.stop(now=exc is not None)
        self._threads.shutdown(wait=True, cancel_futures=True)


class _Output:
    """One input object's `.out`, written as its batches come back; committed only if all of them did."""

    def __init__(self, ctx: JobContext, index: int, rel: str, uri: str, out_uri: str) -> None:
        self.index, self.rel, self.uri, self.out_uri = index, rel, uri, out_uri
        self.records = 0
        self.in_flight = 0  # its batches sent and not written yet
        self.read = False  # every batch of it is sent
        self.committed = False
        self.failure: Exception | None = None
        self._stack = contextlib.ExitStack()
        self._handle = self._stack.enter_context(ctx.store.open_write(out_uri))

    def write(self, data: bytes, records: int) -> None:
        self._handle.write(data)
        self.records += records

    def commit(self) -> None:
        self._stack.close()
        self.committed = True

    def abort(self, failure: Exception) -> None:
        """Drop what was written (the store removes its temporary file); the object has no `.out`."""
        if self.failure is None and not self.committed:
            self.failure = failure
            self._stack.__exit__(type(failure), failure, failure.__traceback__)


# Failures that end one object's output and not the job. OSError: a manifest entry with no object;
# ValueError covers UnicodeDecodeError and a record over MaxPayloadInMB.
_OBJECT_ERRORS = (ModelError, FilterError, StoreError, OSError, ValueError)


def _transform_objects(
    ctx: JobContext,
    plan: _Plan,
    dispatch: _Dispatcher,
    objects: list[tuple[str, str]],
    sizes: list[int],
    log: JobLog,
) -> list[str]:
    """Stream every object (with its byte count, `_size`) through the model into its `.out`; returns the
    failures ("rel: why").

    The requests in flight run across object boundaries, so an input of many small objects keeps every
    worker busy (measured: a job over 30 objects of 1 MB took 3.2-3.9 s, against 2.3-2.6 s for the same
    rows as one object, while each object's last request had to come back before the next object's
    first was sent; 2.3-3.1 s since).
    A bounded window of batches keeps memory flat however large the input is; each output is written in
    input order, and is atomic: an object whose batch fails leaves no `.out`, and the others go on.
    """
    window: collections.deque[tuple[Future[tuple[bytes, int]], _Output]] = collections.deque()
    failures: dict[int, str] = {}  # by object index: reported in input order

    def fail(output: _Output, exc: Exception) -> None:
        output.abort(exc)
        failures[output.index] = f"{output.rel}: {exc}"
        log.engine(f"{output.uri} failed: {exc}")

    def finish(output: _Output) -> None:
        """Commit the output once all of it is read and written (an empty object: an empty `.out`)."""
        if output.read and not output.in_flight and output.failure is None:
            try:
                output.commit()
            except _OBJECT_ERRORS as exc:  # e.g. the disk filled: this object fails, not the one being read
                fail(output, exc)
                return
            log.engine(f"{output.uri} -> {output.out_uri}: {output.records} record(s)")

    def drain_one() -> None:
        future, output = window.popleft()
        output.in_flight -= 1
        if output.failure is not None:  # its object already failed: the result is not wanted
            error = None if future.cancel() else future.exception()
            if isinstance(error, WorkerDied):
                raise error
            return
        try:
            output.write(*future.result())
        except _OBJECT_ERRORS as exc:
            fail(output, exc)
            return
        except WorkerDied as exc:
            log.engine(f"{output.uri} failed: {exc}")
            raise WorkerDied(f"{output.rel}: {exc}") from exc
        finish(output)

    outputs: list[_Output] = []
    # Runs shrink as the whole input runs out, not each object: the bytes of the objects still to come
    # (gzip: the sizes read are not the bytes the runs are cut from, so its runs are filled).
    sizes = [0] * len(objects) if plan.gzip else sizes
    later = sum(sizes)
    try:
        for index, (uri, rel) in enumerate(objects):
            later -= sizes[index]
            out_uri = join_uri(plan.output_path, rel + ".out")
            output: _Output | None = None
            try:
                with open(ctx.store.path_for(uri), "rb") as raw:
                    output = _Output(ctx, index, rel, uri, out_uri)
                    outputs.append(output)
                    # gzip.GzipFile wraps (and is closed with) `raw`; it decompresses as runs are read.
                    source: IO[bytes] = gzip.GzipFile(fileobj=raw) if plan.gzip else raw
                    for batch in _batches(source, plan, sizes[index], later):
                        if ctx.cancelled():
                            raise _Stopped
                        # Room first, then send: the last batch goes out as soon as it is read, and
                        # input_ended() below follows it at once.
                        while len(window) >= plan.window:
                            drain_one()
                        if output.failure is not None:
                            break  # a batch of it came back failed: read no further
                        window.append((dispatch.submit(batch), output))
                        output.in_flight += 1
                    output.read = True
                    finish(output)
            except _OBJECT_ERRORS as exc:
                if output is None:  # it could not even be opened
                    failures[index] = f"{rel}: {exc}"
                    log.engine(f"{uri} failed: {exc}")
                else:
                    fail(output, exc)
        dispatch.input_ended()
        while window:
            drain_one()
    except BaseException as exc:
        # Stopped, a worker gone, an engine error: the outputs not complete yet are not committed.
        for future, _ in window:  # batches not started yet are not run at all
            future.cancel()
        for output in outputs:
            output.abort(exc if isinstance(exc, Exception) else RuntimeError("interrupted"))
        raise
    return [failures[i] for i in sorted(failures)]
