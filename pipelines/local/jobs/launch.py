"""One worker object per job subprocess: starts it, streams its output into a capped log, stops it."""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ENGINE_PREFIX = "[local-engine] "


class JobLog:
    """A job's log stream: engine lines and process output, capped with one visible truncation line.

    The cap applies to process output only, so the engine's own lines (downloads, Spot restarts,
    uploads) always land; output past the cap is still fed to listeners (metrics) and kept in `tail`.
    """

    def __init__(self, path: Path, max_bytes: int, tail_lines: int = 50) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.written = 0
        self.truncated = False
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self._lock = threading.Lock()
        # Append: a Spot restart or a retry continues the same stream, as CloudWatch would.
        self._handle = open(self.path, "a", encoding="utf-8", errors="replace", buffering=1)  # noqa: SIM115

    def engine(self, message: str) -> None:
        """Write a line from the engine itself (never truncated)."""
        with self._lock:
            self._handle.write(ENGINE_PREFIX + message.rstrip("\n") + "\n")

    def output(self, line: str) -> None:
        """Write one line of process output, honouring the cap."""
        line = line.rstrip("\n")
        with self._lock:
            self.tail.append(line)
            if self.truncated:
                return
            size = len(line.encode("utf-8", errors="replace")) + 1
            if self.written + size > self.max_bytes:
                self.truncated = True
                self._handle.write(
                    f"{ENGINE_PREFIX}log truncated: job output exceeded {self.max_bytes} bytes; "
                    "further lines are dropped (metrics are still parsed)\n"
                )
                return
            self.written += size
            self._handle.write(line + "\n")

    def close(self) -> None:
        """Close the file; later writes are errors."""
        with self._lock:
            self._handle.close()


@dataclass
class LaunchResult:
    """How a job process ended.

    Attributes:
        exit_code: the process's return code (negative = killed by that signal).
        killed: True when the engine signalled it (stop, timeout, Spot interruption).
        stop_reason: why the engine stopped it ("cancelled", "MaxRuntimeExceeded", "Interrupted", ...).
        seconds: wall-clock run time.
    """

    exit_code: int
    killed: bool
    stop_reason: str | None
    seconds: float


class _CoreShare:
    """Counts job processes running in this engine process, to split the machine's cores between them.

    On SageMaker every job has its instance's cores to itself; here concurrent jobs (a training step next
    to tuning trials) share one machine, and OpenMP libraries such as XGBoost each start one spinning
    thread per core, which oversubscribes the cores and burns CPU in spin-waits. A job started while N
    jobs run gets `OMP_NUM_THREADS = max(1, cores // N)` unless its environment already sets it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running = 0

    def acquire(self) -> int:
        with self._lock:
            self.running += 1
            return max(1, (os.cpu_count() or 1) // self.running)

    def release(self) -> None:
        with self._lock:
            self.running = max(0, self.running - 1)


CORES = _CoreShare()


class JobWorker:
    """Owns one Popen: stderr merged into stdout, line-buffered into the JobLog, SIGTERM then SIGKILL."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        log: JobLog,
        *,
        on_line: Callable[[str], None] | None = None,
        grace_seconds: float = 10.0,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = Path(cwd)
        self.log = log
        self.on_line = on_line
        self.grace_seconds = grace_seconds
        self.stop_reason: str | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._term_sent_at: float | None = None
        self._lock = threading.Lock()
        self._holds_share = False

    def start(self) -> None:
        """Start the process in its own session so a stop reaches its children (bash -> python)."""
        # stderr is merged into stdout: one ordered stream, like a container's log (and kfp's handler).
        self._started = time.monotonic()
        threads = CORES.acquire()
        self._holds_share = True
        env = dict(self.env)
        env.setdefault("OMP_NUM_THREADS", str(threads))
        try:
            self._proc = self._popen(env)
        except BaseException:
            self._release_share()
            raise
        self._reader = threading.Thread(target=self._pump, name="job-log-pump", daemon=True)
        self._reader.start()

    def _release_share(self) -> None:
        if self._holds_share:
            self._holds_share = False
            CORES.release()

    def _popen(self, env: dict[str, str]) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            start_new_session=True,
        )

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self.log.output(line)
            if self.on_line is not None:
                self.on_line(line.rstrip("\n"))

    def stop(self, reason: str) -> None:
        """Ask the process to stop (SIGTERM to its group); `wait` escalates to SIGKILL after the grace."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None or self._term_sent_at is not None:
                return
            self.stop_reason = reason
            self._term_sent_at = time.monotonic()
            self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)

    def wait(self, *, cancel: threading.Event | None = None, deadline: float | None = None) -> LaunchResult:
        """Block until the process ends, stopping it on `cancel` or at `deadline` (time.monotonic()).

        Returns:
            The LaunchResult; `stop_reason` is "cancelled" or "MaxRuntimeExceeded" for those stops,
            or whatever reason another thread passed to `stop`.
        """
        assert self._proc is not None, "start() first"
        while self._proc.poll() is None:
            if cancel is not None and cancel.is_set():
                self.stop("cancelled")
            if deadline is not None and time.monotonic() >= deadline:
                self.stop("MaxRuntimeExceeded")
            with self._lock:
                sent = self._term_sent_at
            if sent is not None and time.monotonic() - sent >= self.grace_seconds:
                self._signal(signal.SIGKILL)
            time.sleep(0.05)
        self._release_share()
        # Children that outlived the leader (a bash script's python) must not keep writing the log.
        if self._term_sent_at is not None:
            self._signal(signal.SIGKILL)
        self._reader.join(timeout=5)
        return LaunchResult(
            exit_code=self._proc.returncode,
            killed=self._term_sent_at is not None,
            stop_reason=self.stop_reason,
            seconds=time.monotonic() - self._started,
        )

    def run(self, *, cancel: threading.Event | None = None, deadline: float | None = None) -> LaunchResult:
        """start() then wait()."""
        self.start()
        return self.wait(cancel=cancel, deadline=deadline)
