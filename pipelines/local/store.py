"""Local object store: `s3://bucket/key` lives at `root/bucket/key`, so jobs exchange data without AWS."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pipelines.local.errors import NoSuchKey, StoreError

# Temp files live next to their target (os.replace is only atomic within one file system); this prefix
# marks them so listings skip them and no key can collide with one.
TMP_PREFIX = ".~store-tmp-"
# S3 bucket naming rules (lower case, digits, dots, hyphens; 3..63 chars), relaxed for '_' used by tests.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")


def split_uri(uri: str) -> tuple[str, str]:
    """Split `s3://bucket/key` into (bucket, key); key may be "" or end in "/" (a prefix).

    Raises:
        StoreError: not an s3:// URI or a bad bucket name.
    """
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise StoreError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise StoreError(f"invalid bucket name {bucket!r} in {uri!r}")
    return bucket, key


def join_uri(prefix_uri: str, relative: str) -> str:
    """Join a prefix URI and a relative key with exactly one '/' between them."""
    return prefix_uri.rstrip("/") + "/" + relative.lstrip("/")


def _check_key(key: str, uri: str, *, prefix: bool) -> list[str]:
    """Return the key's path segments, refusing anything that could leave the bucket folder."""
    if "\x00" in key or "\\" in key:
        raise StoreError(f"key {key!r} of {uri!r} contains a NUL byte or a backslash")
    if key.startswith("/"):
        raise StoreError(f"key {key!r} of {uri!r} is absolute")
    body = key[:-1] if prefix and key.endswith("/") else key
    if not body:
        return []
    parts = body.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise StoreError(f"key {key!r} of {uri!r} has an empty, '.' or '..' segment")
        if part.startswith(TMP_PREFIX):
            raise StoreError(f"key {key!r} of {uri!r} uses the reserved prefix {TMP_PREFIX!r}")
    return parts


class ObjectStore:
    """S3-shaped store over a folder: atomic writes, prefix listing, directory upload and download."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    # --- addressing -------------------------------------------------------------------------------
    def path_for(self, uri: str, *, prefix: bool = False) -> Path:
        """Local path of an object (or of a prefix folder when `prefix`); refuses keys escaping the root.

        Raises:
            StoreError: malformed URI, or a key with `..`, absolute, NUL or backslash segments, or
                one whose resolved path (symlinks followed) lies outside the root.
        """
        bucket, key = split_uri(uri)
        parts = _check_key(key, uri, prefix=prefix)
        if not parts and not prefix:
            raise StoreError(f"URI {uri!r} names a bucket, not an object")
        path = self.root.joinpath(bucket, *parts)
        # A symlink planted inside the store could still point outside it: check the resolved path.
        resolved = path.resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise StoreError(f"key {key!r} of {uri!r} resolves outside the store root")
        return path

    def exists(self, uri: str) -> bool:
        """True if the object exists (a prefix with objects under it is not an object)."""
        return self.path_for(uri).is_file()

    # --- writes (all atomic: temp file in the same folder, then os.replace) ---------------------
    @contextlib.contextmanager
    def open_write(self, uri: str) -> Iterator[IO[bytes]]:
        """Write an object incrementally; readers see the old object or the whole new one, never part."""
        path = self.path_for(uri)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise StoreError(f"cannot write {uri!r}: a parent of its key is an object") from exc
        if path.is_dir():
            raise StoreError(f"cannot write {uri!r}: objects exist under that key as a prefix")
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def put_bytes(self, uri: str, data: bytes) -> None:
        """Store `data` at `uri`."""
        with self.open_write(uri) as handle:
            handle.write(data)

    def put_file(self, uri: str, path: Path) -> None:
        """Copy the local file `path` to `uri`."""
        with open(path, "rb") as src, self.open_write(uri) as dst:
            shutil.copyfileobj(src, dst, 1024 * 1024)

    def delete(self, uri: str) -> None:
        """Delete an object; a missing object is not an error (as in S3)."""
        with contextlib.suppress(FileNotFoundError):
            self.path_for(uri).unlink()

    # --- reads ---------------------------------------------------------------------------------
    def get_bytes(self, uri: str) -> bytes:
        """Content of the object at `uri`.

        Raises:
            NoSuchKey: no object there.
        """
        path = self.path_for(uri)
        if not path.is_file():
            raise NoSuchKey(f"no object at {uri}")
        return path.read_bytes()

    def list(self, prefix_uri: str) -> list[str]:
        """Sorted URIs of every object whose key starts with the prefix's key (S3 string-prefix semantics)."""
        bucket, key = split_uri(prefix_uri)
        # Walk only the deepest folder the prefix fully names; the last partial segment filters names.
        folder_key = key.rsplit("/", 1)[0] if "/" in key else ""
        folder = self.path_for(f"s3://{bucket}/{folder_key}", prefix=True)
        if not folder.is_dir():
            return []
        bucket_dir = self.root / bucket
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for name in filenames:
                if name.startswith(TMP_PREFIX):
                    continue
                rel = Path(dirpath, name).relative_to(bucket_dir).as_posix()
                if rel.startswith(key):
                    found.append(f"s3://{bucket}/{rel}")
        return sorted(found)

    def objects_under(self, uri: str) -> list[tuple[str, str]]:
        """(uri, relative path) pairs for `uri`: the single object if it exists, else all under `uri/`."""
        bucket, key = split_uri(uri)
        if key and not key.endswith("/") and self.path_for(uri).is_file():
            return [(uri, key.rsplit("/", 1)[-1])]
        folder_uri = join_uri(f"s3://{bucket}/{key}", "") if key else f"s3://{bucket}/"
        _, folder_key = split_uri(folder_uri)
        return [(obj, split_uri(obj)[1][len(folder_key) :]) for obj in self.list(folder_uri)]

    def download(self, uri_or_prefix: str, dest_dir: Path) -> list[Path]:
        """Copy the object at `uri`, or every object under `uri/`, into `dest_dir` keeping relative paths.

        Raises:
            NoSuchKey: nothing at or under the URI (SageMaker fails such an input too).
        """
        pairs = self.objects_under(uri_or_prefix)
        if not pairs:
            raise NoSuchKey(f"no objects at or under {uri_or_prefix}")
        dest_dir = Path(dest_dir)
        written: list[Path] = []
        for obj, rel in pairs:
            target = dest_dir.joinpath(*rel.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.path_for(obj), target)
            written.append(target)
        return written

    def upload_dir(self, local_dir: Path, prefix_uri: str) -> list[str]:
        """Upload every file under `local_dir` to `prefix_uri/<relative path>`; returns the URIs written."""
        local_dir = Path(local_dir)
        written: list[str] = []
        for dirpath, dirnames, filenames in os.walk(local_dir):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath, name)
                uri = join_uri(prefix_uri, path.relative_to(local_dir).as_posix())
                self.put_file(uri, path)
                written.append(uri)
        return written
