"""Moving job data between the object store and a sandbox: S3 inputs, manifests, tarballs."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

from pipelines.local.errors import NoSuchKey, StoreError, UnsupportedError
from pipelines.local.store import ObjectStore, join_uri


def download_input(store: ObjectStore, s3_uri: str, data_type: str, dest: Path) -> list[Path]:
    """Fetch an S3 input (S3Prefix: the object or everything under the prefix; ManifestFile: its list).

    Raises:
        NoSuchKey: nothing there (SageMaker fails the job the same way).
        UnsupportedError: AugmentedManifestFile or another data type.
    """
    dest.mkdir(parents=True, exist_ok=True)
    if data_type == "S3Prefix":
        return store.download(s3_uri, dest)
    if data_type == "ManifestFile":
        return _download_manifest(store, s3_uri, dest)
    raise UnsupportedError(f"S3DataType {data_type!r} is not supported locally (S3Prefix, ManifestFile)")


def _download_manifest(store: ObjectStore, manifest_uri: str, dest: Path) -> list[Path]:
    """Basic manifest: `[{"prefix": "s3://b/p/"}, "rel/key1", ...]`; each object lands at dest/rel."""
    try:
        entries = json.loads(store.get_bytes(manifest_uri))
        prefix = entries[0]["prefix"]
        keys = entries[1:]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise StoreError(f"manifest {manifest_uri} is not [{{'prefix': ...}}, key, ...]: {exc}") from exc
    written: list[Path] = []
    for rel in keys:
        if not isinstance(rel, str) or rel.startswith("/") or ".." in rel.split("/"):
            raise StoreError(f"manifest {manifest_uri} has a bad relative key {rel!r}")
        target = dest.joinpath(*rel.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.get_bytes(join_uri(prefix, rel)))
        written.append(target)
    return written


def make_tarball(src_dir: Path, dest: Path) -> Path:
    """gzip tar of the folder's contents at the archive root (the model.tar.gz layout)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        for path in sorted(src_dir.rglob("*")):
            tar.add(path, arcname=path.relative_to(src_dir).as_posix(), recursive=False)
    return dest


def extract_tarball(archive: Path, dest: Path) -> None:
    """Extract a gzip tar; the `data` filter refuses members escaping `dest` (links, `..`, absolute)."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise StoreError(f"cannot extract {archive.name}: {exc}") from exc


def fetch_and_extract(store: ObjectStore, uri: str, scratch: Path, dest: Path) -> None:
    """Download a `.tar.gz` object (e.g. sourcedir.tar.gz, model.tar.gz) and extract it into `dest`."""
    scratch.mkdir(parents=True, exist_ok=True)
    archive = scratch / uri.rstrip("/").rsplit("/", 1)[-1]
    if not store.exists(uri):
        raise NoSuchKey(f"no object at {uri}")
    shutil.copyfile(store.path_for(uri), archive)
    extract_tarball(archive, dest)
