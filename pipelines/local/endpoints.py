"""Endpoint server processes: write endpoint.json, start `deploy.serve` detached, health-check it, stop it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines.local.store import ObjectStore
from pipelines.local.worker import pid_alive, reap_later

# SageMaker gives a container 4 minutes to pass /ping; locally a server loads in seconds.
READY_TIMEOUT = 120.0
PING_TIMEOUT = 2.0


class ServerError(Exception):
    """A server that did not come up healthy; the message says why (with its log's last lines)."""


@dataclass
class Server:
    """A running endpoint generation, as recorded with the endpoint."""

    pid: int
    port: int
    url: str
    generation: int
    directory: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def extract_model(store: ObjectStore, container: dict[str, Any], dest: Path) -> Path:
    """Materialise a container's model data (ModelDataUrl tar.gz or uncompressed ModelDataSource)."""
    dest.mkdir(parents=True, exist_ok=True)
    source = container.get("ModelDataSource", {}).get("S3DataSource")
    if source and source.get("CompressionType", "None") == "None":
        store.download(source["S3Uri"], dest)
        return dest
    url = container.get("ModelDataUrl") or (source or {}).get("S3Uri")
    if not url:
        raise ServerError("the model has no ModelDataUrl or ModelDataSource to serve")
    try:
        path = store.path_for(url)
    except Exception as exc:
        raise ServerError(f"cannot read model data {url}: {exc}") from None
    if not path.is_file():
        raise ServerError(f"model data {url} does not exist")
    try:
        with tarfile.open(path, "r:*") as archive:
            # The data filter refuses absolute paths, links out of dest and device files (a tar from S3
            # is untrusted input).
            archive.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise ServerError(f"model data {url} is not a readable tar.gz: {exc}") from None
    return dest


def server_config(
    endpoint_name: str,
    ready_file: Path,
    variants: Sequence[dict[str, Any]],
    data_capture: dict[str, Any] | None,
    store: ObjectStore,
    multi_model_root: Path | None = None,
    multi_model_cache_size: int | None = None,
    metrics_dir: Path | None = None,
) -> dict[str, Any]:
    """endpoint.json (contracts sec. 11) from the variants' local model dirs and the DataCaptureConfig.

    `multi_model_cache_size` (models kept loaded) is left to the server's default when None. `metrics_dir`
    is where the server's workers keep their counters: one folder per endpoint, shared by its generations,
    so the counts of a stopped generation stay in the totals of the next (deploy/serve/metrics.py).
    """
    capture = None
    if data_capture and data_capture.get("EnableCapture", True):
        options: list[str] = []
        for option in data_capture.get("CaptureOptions", []):
            mode = option.get("CaptureMode")
            options.extend(["Input", "Output"] if mode == "InputAndOutput" else [mode])
        capture = {
            "enabled": True,
            "sampling_percentage": data_capture.get("InitialSamplingPercentage", 100),
            "destination_dir": str(store.path_for(data_capture["DestinationS3Uri"], prefix=True)),
            "capture_options": sorted(set(options)) or ["Input", "Output"],
        }
        if header := data_capture.get("CaptureContentTypeHeader"):
            capture["csv_content_types"] = header.get("CsvContentTypes", [])
            capture["json_content_types"] = header.get("JsonContentTypes", [])
    return {
        "endpoint_name": endpoint_name,
        "host": "127.0.0.1",
        "port": 0,
        "workers": 1,
        "ready_file": str(ready_file),
        "variants": list(variants),
        "data_capture": capture,
        "multi_model": _multi_model(multi_model_root, multi_model_cache_size),
    } | ({"metrics_dir": str(metrics_dir)} if metrics_dir is not None else {})


def _multi_model(root: Path | None, cache_size: int | None) -> dict[str, Any] | None:
    if root is None:
        return None
    return {"model_root": str(root)} | ({"cache_size": cache_size} if cache_size is not None else {})


def start_server(
    command: Sequence[str],
    config: dict[str, Any],
    directory: Path,
    generation: int,
    env: dict[str, str],
    timeout: float = READY_TIMEOUT,
) -> Server:
    """Start one server generation detached (own session: it outlives the worker) and wait until healthy.

    Raises:
        ServerError: it exited, never wrote its ready file, or /ping did not answer 200; it is stopped.
    """
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "endpoint.json"
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    ready_file = Path(config["ready_file"])
    ready_file.unlink(missing_ok=True)
    log_path = directory / "server.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [*command, "--config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    reap_later(process)
    deadline = time.monotonic() + timeout
    try:
        while not ready_file.is_file():
            if process.poll() is not None:
                raise ServerError(f"server exited with code {process.returncode}: {log_tail(log_path)}")
            if time.monotonic() > deadline:
                raise ServerError(f"server not ready after {timeout:.0f} s: {log_tail(log_path)}")
            time.sleep(0.05)
        ready = json.loads(ready_file.read_text(encoding="utf-8"))
        url = str(ready["url"]).rstrip("/")
        if not ping(url):
            raise ServerError(f"GET {url}/ping did not answer 200: {log_tail(log_path)}")
        return Server(
            pid=process.pid, port=int(ready["port"]), url=url, generation=generation, directory=str(directory)
        )
    except (ServerError, ValueError, KeyError) as exc:
        stop_server(process.pid)
        if isinstance(exc, ServerError):
            raise
        raise ServerError(f"unreadable ready file {ready_file}: {exc}") from None


def ping(url: str, attempts: int = 5) -> bool:
    """GET /ping answers 200 (a few tries: the socket may accept before the app is wired)."""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=PING_TIMEOUT) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1 * (attempt + 1))
    return False


def stop_server(pid: int, grace: float = 10.0) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after `grace` seconds (as SageMaker does)."""
    if not pid_alive(pid):
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.05)


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"
