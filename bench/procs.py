"""Processes the benchmarks start: pinned to a core, always stopped, their peak memory sampled from /proc.

Why here: every server and helper a benchmark starts must be stopped whatever happens (house rule), and the
pinning and memory sampling must be the same for all the things compared.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 20.0
START_TIMEOUT_S = 90.0


def cpus() -> list[int]:
    """The CPUs this process may use (affinity), sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def can_pin() -> bool:
    """Pinning servers and clients apart needs taskset (util-linux) and at least two CPUs."""
    return shutil.which("taskset") is not None and len(cpus()) >= 2


def pinned(core: int | None, argv: Sequence[str]) -> list[str]:
    """`taskset -c CORE argv...` when pinning is possible (else argv unchanged)."""
    if core is None or not can_pin():
        return list(argv)
    return ["taskset", "-c", str(core), *argv]


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment with the repository importable and `extra` applied."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **(extra or {})}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Started:
    """A process group we started: its own session, so stopping it stops its children too."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            list(argv),
            cwd=REPO,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.port: int | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]

    def wait_file(self, path: Path, timeout: float = START_TIMEOUT_S) -> dict[str, Any]:
        """The JSON the process writes to `path` when ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            if path.exists():
                return json.loads(path.read_text(encoding="utf-8"))
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log()}")

    def wait_http(self, port: int, path: str = "/ping", timeout: float = START_TIMEOUT_S) -> None:
        """Until GET `path` answers 200 on 127.0.0.1:port."""
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2.0).status_code == 200:
                    self.port = port
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not answering {path} after {timeout:.0f} s:\n{self.log()}")

    def stop(self) -> None:
        """SIGTERM to the whole group, SIGKILL after the grace time; idempotent."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        else:
            # The leader is gone; its group (e.g. workers it spawned) may not be.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if not self._log.closed:
            self._log.close()


@contextlib.contextmanager
def started(processes: list[Started]) -> Iterator[list[Started]]:
    """Stop every process in the list (appended to while inside) on the way out, whatever happened."""
    try:
        yield processes
    finally:
        for proc in processes:
            proc.stop()


def _tree(root: int) -> list[int]:
    """`root` and its descendants, from /proc (children files, else a scan of stat parents)."""
    pids, queue = [], [root]
    while queue:
        pid = queue.pop()
        pids.append(pid)
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        queue.extend(int(c) for c in children)
    return pids


def cpu_seconds(root: int) -> float:
    """User + system CPU time of `root` and its live descendants (/proc stat, clock-tick resolution)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in _tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return total / tick


def _hwm_kb(pid: int) -> int | None:
    """Peak resident set size (VmHWM) of a live process, in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Samples the peak RSS of a process and of every descendant it starts until stopped.

    VmHWM only grows, so the last sample of each process is its peak however short the sampling gaps.
    """

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid in _tree(self.pid):
                value = _hwm_kb(pid)
                if value is not None:
                    self.peaks[pid] = max(self.peaks.get(pid, 0), value)
            self._stop.wait(self.interval)

    @property
    def root_mb(self) -> float:
        return self.peaks.get(self.pid, 0) / 1024

    @property
    def largest_child_mb(self) -> float:
        return max((v for p, v in self.peaks.items() if p != self.pid), default=0) / 1024

    @property
    def total_mb(self) -> float:
        """Sum of the per-process peaks: an upper bound of the tree's peak (peaks need not coincide)."""
        return sum(self.peaks.values()) / 1024


def python() -> str:
    return sys.executable
