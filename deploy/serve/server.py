"""Runs the app on uvicorn: binds the socket, writes the ready file, stops cleanly on SIGTERM/SIGINT.

One worker serves in this process. More workers are spawned processes sharing one listening socket (as
uvicorn and gunicorn do); each loads the models itself, and this process writes the ready file once every
worker is listening, restarts a worker that dies, and forwards SIGTERM. Workers keep their counters in one
shared metrics folder, so /metrics answers for all of them whichever one serves the scrape.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime as dt
import json
import logging
import multiprocessing
import os
import queue
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from deploy.serve.app import build_app
from deploy.serve.config import ServeConfig

log = logging.getLogger("deploy.serve")
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_WORKER_STOP_TIMEOUT_S = 30.0  # SageMaker's SIGTERM-to-SIGKILL grace
_KEEP_ALIVE_S = 60
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class _Server(uvicorn.Server):
    """uvicorn's server with a start callback and our own signal handling (exit 0, no signal re-raise)."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # run_worker installs the handlers; uvicorn's would re-raise the signal after shutdown and the
        # process would die by SIGTERM instead of exiting 0 after flushing data capture.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound socket (port 0 = a free port chosen by the kernel); uvicorn starts listening on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto is TCP,
    # and without it Nagle + delayed ACK add ~40 ms to every response written in two parts.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def write_ready_file(path: Path, host: str, port: int) -> None:
    """Atomically write {"pid", "port", "url", "started"} (temp file in the same folder + os.replace)."""
    url_host = "127.0.0.1" if host in ("0.0.0.0", "") else (f"[{host}]" if ":" in host else host)
    doc = {
        "pid": os.getpid(),
        "port": port,
        "url": f"http://{url_host}:{port}",
        "started": dt.datetime.now(dt.UTC).isoformat(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ready-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def serve(config: ServeConfig) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    sock = bind_socket(config.host, config.port)
    port = sock.getsockname()[1]

    def announce() -> None:
        if config.ready_file is not None:
            write_ready_file(config.ready_file, config.host, port)
        log.warning(
            "endpoint %s listening on %s:%d (%d worker(s))",
            config.endpoint_name,
            config.host,
            port,
            config.workers,
        )

    if config.workers == 1:
        return run_worker(config, sock, announce)
    if config.metrics_dir is not None:
        return _supervise(config, sock, announce)
    # Workers need a shared metrics folder for /metrics to count them all; without one from the config, a
    # private one for this server's lifetime.
    scratch = Path(tempfile.mkdtemp(prefix="pdm-serve-metrics-"))
    try:
        return _supervise(dataclasses.replace(config, metrics_dir=scratch), sock, announce)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_worker(config: ServeConfig, sock: socket.socket, on_started: Callable[[], None]) -> int:
    """Load the models, serve on sock until told to stop, then flush capture; returns the exit code."""
    server: _Server | None = None

    def stop(signum: int, frame: FrameType | None) -> None:
        if server is None:
            raise SystemExit(0)  # still loading models: nothing to drain
        if server.should_exit and signum == signal.SIGINT:
            server.force_exit = True  # a second Ctrl-C stops without waiting for open connections
        server.should_exit = True

    for sig in _STOP_SIGNALS:
        signal.signal(sig, stop)
    app = build_app(config)
    try:
        uv_config = uvicorn.Config(
            app,
            http="auto",  # httptools when installed (uvicorn[standard]), else h11
            loop="auto",  # uvloop when installed
            lifespan="off",
            interface="asgi3",
            proxy_headers=False,  # no proxy in front; skips a middleware on every request
            server_header=False,
            access_log=False,
            log_config=None,
            log_level="warning",
            timeout_graceful_shutdown=int(_WORKER_STOP_TIMEOUT_S),
            # Longer than uvicorn's 5 s default: boto3 keeps idle connections pooled without an idle timeout,
            # and a connection the server closed just as the client reuses it costs the client a retry.
            timeout_keep_alive=_KEEP_ALIVE_S,
        )
        server = _Server(uv_config, on_started)
        server.run(sockets=[sock])
    finally:
        app.close()
    return 0


def _worker_main(config: ServeConfig, sock: socket.socket, started: Any) -> None:
    """Entry of a spawned worker process."""
    # If the supervisor is killed outright (SIGKILL), take the workers down too instead of orphaning them.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    raise SystemExit(run_worker(config, sock, lambda: started.put(os.getpid())))


def _supervise(config: ServeConfig, sock: socket.socket, announce: Callable[[], None]) -> int:
    """Run config.workers worker processes on the shared socket until SIGTERM/SIGINT."""
    # spawn, not fork: XGBoost's OpenMP runtime is not fork-safe once its thread pool exists.
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Queue()
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    for sig in _STOP_SIGNALS:
        signal.signal(sig, stop)

    def spawn() -> multiprocessing.process.BaseProcess:
        proc = ctx.Process(target=_worker_main, args=(config, sock, started), daemon=False)
        proc.start()
        return proc

    workers = [spawn() for _ in range(config.workers)]
    ready: set[int] = set()
    announced = False
    code = 0
    try:
        while not stopping:
            with contextlib.suppress(queue.Empty):
                ready.add(started.get(timeout=0.2))
            if not announced and len(ready) == config.workers:
                announce()
                announced = True
            for i, proc in enumerate(workers):
                if proc.exitcode is None:
                    continue
                if not announced:
                    # Died before all workers listened (bad artefact, ...): a restart would fail the same way.
                    log.error("worker %s exited with %s while loading; stopping", proc.pid, proc.exitcode)
                    stopping, code = True, 1
                    break
                log.error("worker %s exited with %s; starting a new one", proc.pid, proc.exitcode)
                workers[i] = spawn()
    finally:
        for proc in workers:
            if proc.exitcode is None and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + _WORKER_STOP_TIMEOUT_S
        for proc in workers:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.exitcode is None:
                proc.kill()
                proc.join()
        sock.close()
    return code
