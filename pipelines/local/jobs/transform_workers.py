"""Worker processes of a batch transform: one new process imports the model's code, then forks the workers.

Why this shape: importing the hooks is most of a model's start (`import xgboost` imports scikit-learn and
SciPy: over a second), and workers started one by one each pay it, in parallel on the cores they are
about to use (measured: 2 workers ready in 1.8-2.4 s against 1.2-1.4 s for one model loaded in the job).
Forked after the imports, as gunicorn's preload forks its workers, they pay it once; each then runs
model_fn itself, so no OpenMP thread pool exists before the fork (libgomp's does not survive one). The
forking process (the "zygote") is a new interpreter (`python -c`), never the caller, which may run threads
of its own (the local engine runs steps on threads) and whose __main__ need not be import-safe (as
multiprocessing's spawn would need).

Messages are length-prefixed pickles. Each worker has its own request and reply pipe, created here and
passed to the zygote with `pass_fds`. The zygote's stdout carries its own news: ("forked", pids) or
("failed", exception), then (pid, exit code) as each worker ends; its stderr, shared by the workers, goes
to the job log.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.local.jobs.launch import JobLog
    from pipelines.local.jobs.transform_model import LoadedModel, ModelSource

from pipelines.local.jobs.sandbox import PROJECT_ROOT
from pipelines.local.jobs.transform_model import ModelError

_LENGTH = struct.Struct("<Q")
_ZYGOTE_CODE = "from pipelines.local.jobs.transform_workers import zygote_main; zygote_main()"


class WorkerDied(RuntimeError):
    """A worker process exited (killed, out of memory) while it had a batch; the job cannot go on."""


def _send(stream: IO[bytes], message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LENGTH.pack(len(data)))
    stream.write(data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    """The next message, or None at end of stream (the other side closed or died)."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    data = stream.read(size)
    return None if len(data) < size else pickle.loads(data)


def _portable(exc: BaseException) -> BaseException:
    """The exception itself if it survives pickling (ModelError, FilterError, ...), else a ModelError."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return ModelError(f"{type(exc).__name__}: {exc}")
    return exc


# --- in the zygote and its workers -----------------------------------------------------------------------
def zygote_main() -> None:
    """Read (ModelSource, channels) from stdin, import the model's code, fork a worker per channel, and
    report each worker's exit until all have ended."""
    status = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever the hooks print goes to stderr (the job log), never into a channel
    setup = _receive(sys.stdin.buffer)
    if setup is None:
        return
    source, channels = setup
    try:
        finish = source.preload()
        import pipelines.local.jobs.transform  # noqa: F401  (the handlers' module: every worker unpickles one)
    except Exception as exc:
        _send(status, ("failed", _portable(exc)))
        return
    pids: list[int] = []
    for index, (requests, replies) in enumerate(channels):
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker: its own channel only
            code = 1
            try:
                status.close()
                for later in channels[index + 1 :]:
                    for fd in later:
                        os.close(fd)
                _serve(finish, requests, replies)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        os.close(requests)
        os.close(replies)
        pids.append(pid)
    _send(status, ("forked", pids))
    remaining = set(pids)
    while remaining:
        pid, wait_status = os.wait()
        remaining.discard(pid)
        with contextlib.suppress(OSError):  # the job may have stopped listening
            _send(status, (pid, os.waitstatus_to_exitcode(wait_status)))


def _serve(finish: Callable[[], LoadedModel], requests_fd: int, replies_fd: int) -> None:
    """Load the model, say so, then answer (handler, batch, threads) requests until the pipe closes."""
    with os.fdopen(requests_fd, "rb") as requests, os.fdopen(replies_fd, "wb") as replies:
        try:
            model = finish()
        except Exception as exc:
            _send(replies, (False, _portable(exc)))
            return
        _send(replies, (True, os.getpid()))
        while (message := _receive(requests)) is not None:
            handler, batch, threads = message
            try:
                reply: tuple[bool, object] = (True, handler.run_with_threads(model, batch, threads))
            except Exception as exc:
                reply = (False, _portable(exc))
            _send(replies, reply)


# --- in the job --------------------------------------------------------------------------------------------
class Worker:
    """The job's end of one worker's pipes."""

    def __init__(self, pool: WorkerPool, requests: IO[bytes], replies: IO[bytes]) -> None:
        self.pool, self.requests, self.replies = pool, requests, replies
        self.pid = 0

    def call(self, handler: object, batch: object, threads: int) -> Any:
        """What the handler returned for one batch; raises what the hooks raised, or WorkerDied."""
        try:
            _send(self.requests, (handler, batch, threads))
        except (BrokenPipeError, ValueError) as exc:  # ValueError: the pipe was closed by stop()
            raise WorkerDied(self.pool.gone(self.pid)) from exc
        return self.result(_receive(self.replies))

    def result(self, reply: Any) -> Any:
        if reply is None:
            raise WorkerDied(self.pool.gone(self.pid))
        ok, value = reply
        if not ok:
            raise value
        return value


class WorkerPool:
    """`count` workers forked by one zygote process, each with `threads` OpenMP threads by default."""

    def __init__(self, source: ModelSource, count: int, threads: int, log: JobLog, grace: float) -> None:
        self._grace = grace
        ours, theirs = [], []
        for _ in range(count):
            request_read, request_write = os.pipe()
            reply_read, reply_write = os.pipe()
            ours.append((request_write, reply_read))
            theirs.append((request_read, reply_write))
        pythonpath = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)
        # The workers' model threads share the cores with the other workers instead of oversubscribing
        # (XGBoost's are set per request, see transform._Dispatcher._share); idle OpenMP threads sleep
        # instead of spinning.
        env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": str(threads)}
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _ZYGOTE_CODE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                pass_fds=[fd for pair in theirs for fd in pair],
            )
        except BaseException:
            for fd in [fd for pair in ours + theirs for fd in pair]:
                os.close(fd)
            raise
        for fd in [fd for pair in theirs for fd in pair]:
            os.close(fd)
        self.workers = [Worker(self, os.fdopen(w, "wb"), os.fdopen(r, "rb")) for w, r in ours]
        assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None
        self._pump = threading.Thread(target=self._log, args=(self.proc.stderr, log), daemon=True)
        self._pump.start()
        self._news: list[Any] = []
        self._news_arrived = threading.Condition()
        self._listener = threading.Thread(target=self._listen, args=(self.proc.stdout,), daemon=True)
        self._listener.start()
        with contextlib.suppress(BrokenPipeError):  # died at once: wait_ready() reports it
            _send(self.proc.stdin, (source, theirs))
        with contextlib.suppress(OSError):
            self.proc.stdin.close()

    @staticmethod
    def _log(stream: IO[bytes], log: JobLog) -> None:
        for raw in stream:
            log.output(raw.decode("utf-8", errors="replace"))

    def _listen(self, stream: IO[bytes]) -> None:
        while (message := _receive(stream)) is not None:
            with self._news_arrived:
                self._news.append(message)
                self._news_arrived.notify_all()
        with self._news_arrived:
            self._news.append(None)  # the zygote has ended
            self._news_arrived.notify_all()

    def _wait_for(self, test: Callable[[Any], bool], timeout: float | None) -> Any:
        """The first news passing `test`; None when the zygote ended (or the timeout passed) first."""
        with self._news_arrived:
            found: list[Any] = []

            def ready() -> bool:
                found[:] = [m for m in self._news if m is None or test(m)][:1]
                return bool(found)

            self._news_arrived.wait_for(ready, timeout)
            return found[0] if found else None

    def _exit_code(self, pid: int, timeout: float) -> int | None:
        news = self._wait_for(lambda m: m[0] == pid, timeout)
        return news[1] if news else None

    def gone(self, pid: int) -> str:
        """Why a worker stopped answering, with its exit code once the zygote has reported it."""
        code = self._exit_code(pid, self._grace) if pid else None
        if code is None and not pid:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self.proc.wait(self._grace)
        who = f"worker process {pid}" if pid else "the worker processes' parent"
        return f"{who} exited with code {code}" if code is not None else f"{who} is gone"

    def wait_ready(self) -> None:
        """Until every worker has loaded its model; raises what loading raised, or WorkerDied."""
        news = self._wait_for(lambda m: m[0] in ("forked", "failed"), None)
        if news is None:
            raise WorkerDied(self.gone(0))
        if news[0] == "failed":
            raise news[1]
        for worker, pid in zip(self.workers, news[1], strict=True):
            worker.pid = pid
        for worker in self.workers:
            worker.result(_receive(worker.replies))

    def stop(self, now: bool) -> None:
        """Close the requests (idle workers exit) or kill the workers outright; wait for them either way."""
        for worker in self.workers:
            with contextlib.suppress(OSError, ValueError):
                worker.requests.close()
        if now:
            self._kill()
        try:
            self.proc.wait(self._grace + 5)
        except subprocess.TimeoutExpired:
            self._kill()
            self.proc.wait()
        self._pump.join(self._grace)
        self._listener.join(self._grace)
        for worker in self.workers:
            worker.replies.close()

    def _kill(self) -> None:
        with self._news_arrived:
            ended = {m[0] for m in self._news if m is not None and isinstance(m[0], int)}
        for worker in self.workers:
            if worker.pid and worker.pid not in ended:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(worker.pid, signal.SIGKILL)
        self.proc.kill()
