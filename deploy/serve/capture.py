"""Data capture in SageMaker's JSONL format, written by a background thread so it never delays a response."""

from __future__ import annotations

import base64
import json
import logging
import queue
import random
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any

from deploy.serve.config import CaptureConfig

log = logging.getLogger("deploy.serve")

# (variant, epoch seconds, input body, input content type, output body, output content type, inference id)
_Record = tuple[str, float, bytes, str, bytes, str, str | None]
_STOP: Any = object()
# The writer sleeps between batches so a busy endpoint wakes it ~50 times a second, not once per request.
_BATCH_PAUSE_S = 0.02


class CaptureWriter:
    """Samples invocations and appends them to `<dest>/<endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl`.

    Files are named like SageMaker's (`MM-SS-mmm-<uuid>.jsonl`, the time of the first record in the hour), so
    several worker processes never write the same file.
    """

    def __init__(self, config: CaptureConfig, endpoint: str, rng: random.Random) -> None:
        self._config = config
        self._root = config.destination_dir / endpoint
        self._percent = config.sampling_percentage
        self._random = rng.random
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._files: dict[tuple[str, str], IO[str]] = {}
        self._csv = {t.lower() for t in config.csv_content_types}
        self._json = {t.lower() for t in config.json_content_types}
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="data-capture", daemon=True)
        self._thread.start()

    def submit(
        self,
        variant: str,
        body: bytes,
        content_type: str,
        out: bytes,
        out_type: str,
        inference_id: str | None,
    ) -> None:
        """Queue one invocation if sampled; sampling comes first so unsampled requests cost one random()."""
        if self._percent < 100 and self._random() * 100 >= self._percent:
            return
        self._queue.put((variant, time.time(), body, content_type, out, out_type, inference_id))

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, close the files and stop the thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is _STOP or _STOP in batch:
                stopping = True
                batch = [r for r in batch if r is not _STOP]
            self._write(batch)
            if not stopping:
                time.sleep(_BATCH_PAUSE_S)
        for handle in self._files.values():
            handle.close()
        self._files.clear()

    def _write(self, batch: list[_Record]) -> None:
        touched: set[IO[str]] = set()
        try:
            for record in batch:
                handle = self._file(record[0], record[1])
                handle.write(json.dumps(self._event(record), separators=(",", ":")) + "\n")
                touched.add(handle)
            for handle in touched:
                handle.flush()
        except OSError as exc:
            # Capture must never take the endpoint down: report once, keep serving.
            if not self._failed:
                log.error("data capture to %s failed, records dropped: %s", self._root, exc)
                self._failed = True

    def _file(self, variant: str, when: float) -> IO[str]:
        hour = time.strftime("%Y/%m/%d/%H", time.gmtime(when))
        key = (variant, hour)
        handle = self._files.get(key)
        if handle is None:
            # A new hour: close this variant's previous file, start a new one in the hour's folder.
            for old in [k for k in self._files if k[0] == variant]:
                self._files.pop(old).close()
            folder = self._root / variant / hour
            folder.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%M-%S", time.gmtime(when)) + f"-{int(when * 1000) % 1000:03d}"
            # Kept open for the hour (closed on the next hour or at close()), hence no `with`.
            handle = self._files[key] = open(  # noqa: SIM115
                Path(folder, f"{stamp}-{uuid.uuid4()}.jsonl"), "a", encoding="utf-8"
            )
        return handle

    def _event(self, record: _Record) -> dict[str, Any]:
        _, when, body, content_type, out, out_type, inference_id = record
        data: dict[str, Any] = {}
        if self._config.capture_input:
            data["endpointInput"] = self._payload(body, content_type, "INPUT")
        if self._config.capture_output:
            data["endpointOutput"] = self._payload(out, out_type, "OUTPUT")
        meta = {
            "eventId": str(uuid.uuid4()),
            "inferenceTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)),
        }
        if inference_id:
            meta["inferenceId"] = inference_id
        return {"captureData": data, "eventMetadata": meta, "eventVersion": "0"}

    def _payload(self, payload: bytes, content_type: str, mode: str) -> dict[str, str]:
        media = content_type.split(";", 1)[0].strip().lower()
        encoding = "CSV" if media in self._csv else "JSON" if media in self._json else "BASE64"
        if encoding != "BASE64":
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                encoding = "BASE64"
        if encoding == "BASE64":
            text = base64.b64encode(payload).decode("ascii")
        return {"observedContentType": content_type, "mode": mode, "data": text, "encoding": encoding}
