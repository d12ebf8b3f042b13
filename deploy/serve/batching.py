"""Micro-batching: concurrent single-record CSV requests share one run of the hooks.

Why: a predict has a fixed cost per call (XGBoost's inplace_predict ~127 µs) that dwarfs the per-record
cost, so under concurrency the event loop spends most of its time paying it again and again. Requests that
are already waiting when the loop gets to them are joined into one body ("\\n".join), run through the hooks
once, and the CSV answer is split back by line. A batch is flushed with `loop.call_soon`, i.e. as soon as the
requests already ready in this loop iteration have joined it: a lone request waits for nothing.

Only requests whose answer cannot depend on the others qualify (`qualifies`): CSV in and out, one line, no
quotes (a quoted field could span lines once joined). If the joined run raises or answers a different number
of lines than there were requests (a header line, a bad record, a hook that does not answer line by line),
every request is run again alone, so errors reach the request that caused them exactly as without batching.
"""

from __future__ import annotations

import asyncio

from deploy.serve import constants as c
from deploy.serve.handler import ModelHandler

MAX_RECORDS = 64
# Per request, so that a full batch still stays well under the app's inline (no thread pool) size.
MAX_RECORD_BYTES = 1024

Result = tuple[bytes, str, float, float, float]


def qualifies(body: bytes, content_type: str, accept: str) -> bool:
    """A one-record CSV request answered in CSV, whose batched answer is one line of the joined answer."""
    if content_type != c.CSV or accept != c.CSV or len(body) > MAX_RECORD_BYTES:
        return False
    line = body.rstrip(b"\r\n")
    return bool(line.strip()) and b"\n" not in line and b"\r" not in line and b'"' not in line


class _Batch:
    __slots__ = ("bodies", "futures", "handler")

    def __init__(self, handler: ModelHandler) -> None:
        self.handler = handler
        self.bodies: list[bytes] = []
        self.futures: list[asyncio.Future[Result]] = []


class MicroBatcher:
    """Joins qualifying requests per handler (variant model or multi-model target) until the next flush."""

    def __init__(self, max_records: int = MAX_RECORDS) -> None:
        self._max = max_records
        # Keyed by id(handler): the pending batch holds the handler, so the id cannot be reused meanwhile.
        self._pending: dict[int, _Batch] = {}

    def submit(self, handler: ModelHandler, body: bytes) -> asyncio.Future[Result]:
        """Add a qualifying request to its handler's pending batch; the future gets `handler.run`'s answer."""
        loop = asyncio.get_running_loop()
        key = id(handler)
        batch = self._pending.get(key)
        if batch is None:
            batch = self._pending[key] = _Batch(handler)
            loop.call_soon(self._flush, key, batch)
        future: asyncio.Future[Result] = loop.create_future()
        batch.bodies.append(body)
        batch.futures.append(future)
        if len(batch.bodies) >= self._max:
            del self._pending[key]  # full: later requests start a new batch; this one flushes as scheduled
        return future

    def _flush(self, key: int, batch: _Batch) -> None:
        if self._pending.get(key) is batch:
            del self._pending[key]
        results = _run_joined(batch) if len(batch.bodies) > 1 else None
        if results is not None:
            for future, result in zip(batch.futures, results, strict=True):
                if not future.done():
                    future.set_result(result)
            return
        for body, future in zip(batch.bodies, batch.futures, strict=True):
            try:
                result = batch.handler.run(body, c.CSV, c.CSV)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)


def _run_joined(batch: _Batch) -> list[Result] | None:
    """One run on the joined bodies, split per request; None if that cannot be trusted (then run alone)."""
    n = len(batch.bodies)
    try:
        out, out_type, t_parse, t_predict, t_serialise = batch.handler.run(
            b"\n".join(b.rstrip(b"\r\n") for b in batch.bodies), c.CSV, c.CSV
        )
    except Exception:
        return None
    lines = out.splitlines(keepends=True)
    if len(lines) != n:
        return None
    return [(line, out_type, t_parse / n, t_predict / n, t_serialise / n) for line in lines]
