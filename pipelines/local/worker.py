"""Detached process running one pipeline execution, so it outlives its caller and can be killed like on AWS.

`python -m pipelines.local.worker <execution-arn> --root .mlops`
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path

HEARTBEAT_SECONDS = 1.0
log = logging.getLogger("pipelines.local.worker")


def pid_alive(pid: int | None) -> bool:
    """True if `pid` runs and is not a zombie (a killed child not yet reaped still answers kill(pid, 0))."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs (macOS): trust kill(pid, 0)
    return stat.rsplit(")", 1)[-1].split()[0] not in {"Z", "X"}


def reap_later(process: subprocess.Popen[bytes]) -> None:
    """Collect a detached child's exit status when it ends, so it does not linger as a zombie."""
    threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()


def spawn_worker(
    root: Path, execution_arn: str, log_path: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start the worker in its own session: a Ctrl-C or exit of the caller does not stop the execution."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.local.worker", execution_arn, "--root", str(root)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    reap_later(process)
    return process


def _heartbeat(records: object, arn: str, pid: int, cancel: threading.Event, done: threading.Event) -> None:
    """Beat every second; a stop request (status Stopping) cancels the running jobs."""
    from pipelines.local.records import Records

    assert isinstance(records, Records)
    while not done.wait(HEARTBEAT_SECONDS):
        try:
            if records.beat(arn, pid) == "Stopping":
                cancel.set()
        except Exception as exc:  # a busy database must not kill the execution; the next beat retries
            log.warning("heartbeat failed: %s", exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.local.worker", description=__doc__)
    parser.add_argument("execution_arn")
    parser.add_argument("--root", type=Path, default=Path(".mlops"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s")

    from pipelines.local.api_common import now
    from pipelines.local.executor import run_execution
    from pipelines.local.records import Records

    records = Records(args.root)
    row = records.get_execution(args.execution_arn)
    if row is None:
        print(f"worker: no execution {args.execution_arn} under {args.root}", file=sys.stderr)
        return 2
    pid = os.getpid()
    records.set_execution(args.execution_arn, worker_pid=pid, heartbeat=now())
    cancel, done = threading.Event(), threading.Event()
    # SIGTERM/SIGINT stop the execution cleanly (steps Stopped), like StopPipelineExecution.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: cancel.set())
    beat = threading.Thread(
        target=_heartbeat,
        args=(records, args.execution_arn, pid, cancel, done),
        name="heartbeat",
        daemon=True,
    )
    beat.start()
    try:
        status = run_execution(args.root, args.execution_arn, cancel)
    except Exception as exc:
        log.error("execution crashed:\n%s", traceback.format_exc())
        records.finish_execution(
            args.execution_arn, "Failed", f"Local engine error: {type(exc).__name__}: {exc}"
        )
        return 1
    finally:
        done.set()
    log.info("execution %s finished: %s", args.execution_arn, status)
    return 0 if status == "Succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
