"""CheckpointConfig emulation: restore from S3 at start, sync the local folder to S3 while the job runs."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from pipelines.local.store import ObjectStore, join_uri

Snapshot = dict[str, tuple[int, int]]


class CheckpointSync:
    """Mirrors a job's checkpoint folder to `S3Uri` (sync semantics: new/changed up, deleted removed).

    A file is uploaded once it looks complete: same size and mtime on two consecutive polls, so a
    checkpoint caught mid-write is not taken for a finished one.
    """

    def __init__(self, store: ObjectStore, local_dir: Path, s3_uri: str, interval: float = 0.5) -> None:
        self.store = store
        self.local_dir = Path(local_dir)
        self.s3_uri = s3_uri
        self.interval = interval
        # Called with each file uploaded while the job runs (the Spot emulation interrupts on the first).
        self.on_upload: Callable[[str], None] | None = None
        self._uploaded: Snapshot = {}
        self._seen: Snapshot = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def restore(self) -> list[str]:
        """Start of an attempt: a fresh local folder filled with what S3 holds (the resume point)."""
        if self.local_dir.exists():
            shutil.rmtree(self.local_dir)
        self.local_dir.mkdir(parents=True)
        pairs = self.store.objects_under(join_uri(self.s3_uri, ""))
        restored: list[str] = []
        for obj, rel in pairs:
            target = self.local_dir.joinpath(*rel.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.store.path_for(obj), target)
            restored.append(rel)
        self._uploaded = self._scan()
        self._seen = dict(self._uploaded)
        return restored

    def _scan(self) -> Snapshot:
        found: Snapshot = {}
        if not self.local_dir.is_dir():
            return found
        for path in self.local_dir.rglob("*"):
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            if path.is_file():
                found[path.relative_to(self.local_dir).as_posix()] = (info.st_size, info.st_mtime_ns)
        return found

    def sync(self, *, require_stable: bool = True) -> list[str]:
        """Upload new/changed files, delete removed ones; returns the relative paths uploaded."""
        with self._lock:
            current = self._scan()
            uploaded: list[str] = []
            for rel, sig in sorted(current.items()):
                if self._uploaded.get(rel) == sig:
                    continue
                if require_stable and self._seen.get(rel) != sig:
                    continue
                try:
                    self.store.put_file(join_uri(self.s3_uri, rel), self.local_dir / rel)
                except FileNotFoundError:
                    continue
                self._uploaded[rel] = sig
                uploaded.append(rel)
                if self.on_upload is not None:
                    self.on_upload(rel)
            for rel in [r for r in self._uploaded if r not in current]:
                self.store.delete(join_uri(self.s3_uri, rel))
                del self._uploaded[rel]
            self._seen = current
            return uploaded

    def start(self) -> None:
        """Poll in a background thread until `stop`."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="checkpoint-sync", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sync()

    def stop(self, *, final_sync: bool) -> None:
        """Stop polling; `final_sync` uploads everything present (a job that ended normally)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if final_sync:
            self.sync(require_stable=False)
