"""Closed-loop HTTP/1.1 load generator: C connections, one request in flight each, bounded in count and time.

Why our own: the benchmark may only need what `make bench` installs, and it must not cap the figures. It runs
in its own process (the benchmark pins it to the core the servers do not use), on uvloop with pre-encoded
requests and a minimal response parser; its CPU share is reported so a saturated client would show. Only
127.0.0.1 is accepted. Servers that close the connection after a response (gunicorn's sync worker) are
reconnected, and the connect time counts in that request's latency, as a client would see it.

`python -m bench.loadgen --port P --body-file F --concurrency C --seconds S [--warmup W] [--max-requests N]`
prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
MAX_CONCURRENCY = 256
MAX_SECONDS = 60.0
MAX_REQUESTS = 1_000_000
_CONNECT_RETRY_S = 0.05


@dataclass
class _State:
    """Shared by the clients: phase boundaries, the budget and what was measured."""

    measure_from: int
    stop_at: int
    max_requests: int
    latencies: list[int] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    last_done: int = 0
    completed: int = 0  # warm-up included: the server's CPU time is read around the whole run

    def done(self, now: int) -> bool:
        return now >= self.stop_at or len(self.latencies) >= self.max_requests


def build_request(path: str, body: bytes, content_type: str, accept: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: {content_type}\r\nAccept: {accept}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _client(port: int, request: bytes, state: _State) -> None:
    clock = time.perf_counter_ns
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while not state.done(clock()):
        start = clock()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port)
            assert reader is not None
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lower = head.lower()
            status = int(head[9:12])
            at = lower.find(b"content-length:")
            length = int(lower[at + 15 : lower.find(b"\r\n", at)]) if at >= 0 else 0
            if length:
                await reader.readexactly(length)
            close = b"connection: close" in lower
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            state.errors += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(_CONNECT_RETRY_S)
            continue
        end = clock()
        state.completed += 1
        if start >= state.measure_from and end <= state.stop_at:
            state.latencies.append(end - start)
            state.statuses[status] = state.statuses.get(status, 0) + 1
            state.last_done = end
        if close:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def _run(port: int, request: bytes, concurrency: int, warmup: float, seconds: float, cap: int) -> dict:
    now = time.perf_counter_ns()
    measure_from = now + int(warmup * 1e9)
    state = _State(measure_from, measure_from + int(seconds * 1e9), cap)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(_client(port, request, state) for _ in range(concurrency)))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    # The window ends at its deadline, or earlier when the request budget ran out.
    window = max(1, (min(state.stop_at, state.last_done or state.stop_at) - measure_from)) / 1e9
    lat = sorted(state.latencies)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6 if lat else float("nan")

    busy = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    ok = state.statuses.get(200, 0)
    return {
        "requests": len(lat),
        "completed": state.completed,
        "ok": ok,
        "statuses": {str(k): v for k, v in state.statuses.items()},
        "errors": state.errors,
        "seconds": window,
        "rps": ok / window,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": sum(lat) / len(lat) / 1e6 if lat else float("nan"),
        "client_cpu": busy / ((time.perf_counter_ns() - now) / 1e9),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/invocations")
    parser.add_argument("--body-file", type=Path, required=True)
    parser.add_argument("--content-type", default="text/csv")
    parser.add_argument("--accept", default="text/csv")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    args = parser.parse_args(argv)
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        parser.error(f"--concurrency must be in 1..{MAX_CONCURRENCY}")
    if not 0 < args.seconds <= MAX_SECONDS or not 0 <= args.warmup <= MAX_SECONDS:
        parser.error(f"--seconds and --warmup must be within {MAX_SECONDS} s")
    cap = min(args.max_requests, MAX_REQUESTS)
    request = build_request(args.path, args.body_file.read_bytes(), args.content_type, args.accept)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # plain asyncio still works, with a lower ceiling (reported as client_cpu)
        runner = asyncio.run
    result = runner(_run(args.port, request, args.concurrency, args.warmup, args.seconds, cap))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
