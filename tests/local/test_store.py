"""ObjectStore: S3 URIs on a folder, refusal of escaping keys, atomic writes, S3 prefix semantics."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipelines.local.errors import NoSuchKey, StoreError
from pipelines.local.store import TMP_PREFIX, ObjectStore


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return ObjectStore(tmp_path / "s3")


def test_round_trip_and_layout(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("s3://my-bucket/a/b/c.txt", b"hello")
    assert (tmp_path / "s3" / "my-bucket" / "a" / "b" / "c.txt").read_bytes() == b"hello"
    assert store.get_bytes("s3://my-bucket/a/b/c.txt") == b"hello"
    assert store.exists("s3://my-bucket/a/b/c.txt") and not store.exists("s3://my-bucket/a/b")
    store.delete("s3://my-bucket/a/b/c.txt")
    store.delete("s3://my-bucket/a/b/c.txt")  # deleting a missing object is fine, as in S3
    with pytest.raises(NoSuchKey, match=r"c\.txt"):
        store.get_bytes("s3://my-bucket/a/b/c.txt")


@pytest.mark.parametrize(
    "key",
    [
        "../outside.txt",
        "a/../../outside.txt",
        "a/./b.txt",
        "/etc/passwd",
        "a//b.txt",
        "a\\..\\..\\outside.txt",
        "a\x00b",
        f"a/{TMP_PREFIX}x",
    ],
)
def test_keys_escaping_the_root_are_refused_by_name(store: ObjectStore, key: str) -> None:
    with pytest.raises(StoreError) as err:
        store.put_bytes(f"s3://bkt/{key}", b"x")
    assert repr(key)[1:-1] in str(err.value) or key in str(err.value)
    assert not any(store.root.parent.glob("outside*"))


@pytest.mark.parametrize(
    "uri", ["bkt/key", "file:///etc/passwd", "s3://../key", "s3://B/key", "s3://x/key", "s3://bkt"]
)
def test_malformed_uris_are_refused(store: ObjectStore, uri: str) -> None:
    with pytest.raises(StoreError):
        store.path_for(uri)


def test_symlink_inside_the_store_cannot_lead_outside(store: ObjectStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "bkt").mkdir(parents=True)
    os.symlink(outside, store.root / "bkt" / "link")
    with pytest.raises(StoreError, match="outside the store root"):
        store.put_bytes("s3://bkt/link/evil.txt", b"x")
    assert not (outside / "evil.txt").exists()


def test_failed_write_keeps_the_old_object_and_leaves_no_temp_file(store: ObjectStore) -> None:
    store.put_bytes("s3://bkt/data.bin", b"old")
    with pytest.raises(RuntimeError), store.open_write("s3://bkt/data.bin") as handle:
        handle.write(b"partial new content")
        raise RuntimeError("writer crashed")
    assert store.get_bytes("s3://bkt/data.bin") == b"old"
    assert [p.name for p in (store.root / "bkt").iterdir()] == ["data.bin"]


def test_writes_are_atomic_replacements(store: ObjectStore, tmp_path: Path) -> None:
    """A reader holding the old file keeps reading it whole: the new one arrives by rename, not in place."""
    store.put_bytes("s3://bkt/data.bin", b"A" * 1000)
    with open(store.path_for("s3://bkt/data.bin"), "rb") as reader:
        inode = os.fstat(reader.fileno()).st_ino
        local = tmp_path / "new.bin"
        local.write_bytes(b"B" * 10)
        store.put_file("s3://bkt/data.bin", local)
        assert reader.read() == b"A" * 1000
    assert os.stat(store.path_for("s3://bkt/data.bin")).st_ino != inode
    assert store.get_bytes("s3://bkt/data.bin") == b"B" * 10


def test_list_uses_s3_string_prefixes_and_skips_temp_files(store: ObjectStore) -> None:
    for key in ("data/train.csv", "data/train/part-1.csv", "data/test.csv", "database.txt", "other/x"):
        store.put_bytes(f"s3://bkt/{key}", b"x")
    (store.root / "bkt" / "data" / f"{TMP_PREFIX}abc").write_bytes(b"in flight")
    assert store.list("s3://bkt/data/tr") == ["s3://bkt/data/train.csv", "s3://bkt/data/train/part-1.csv"]
    assert store.list("s3://bkt/data") == [
        "s3://bkt/data/test.csv",
        "s3://bkt/data/train.csv",
        "s3://bkt/data/train/part-1.csv",
        "s3://bkt/database.txt",
    ]
    assert store.list("s3://bkt/") == sorted([*store.list("s3://bkt/data"), "s3://bkt/other/x"])
    assert store.list("s3://bkt/missing/") == []


def test_download_prefix_or_single_object(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("s3://bkt/in/a.csv", b"a")
    store.put_bytes("s3://bkt/in/sub/b.csv", b"b")
    store.put_bytes("s3://bkt/input-other.csv", b"not under in/")
    dest = tmp_path / "dest"
    written = store.download("s3://bkt/in", dest)
    assert sorted(p.relative_to(dest).as_posix() for p in written) == ["a.csv", "sub/b.csv"]
    single = store.download("s3://bkt/in/sub/b.csv", tmp_path / "one")
    assert single == [tmp_path / "one" / "b.csv"] and single[0].read_bytes() == b"b"
    with pytest.raises(NoSuchKey, match="s3://bkt/nothing"):
        store.download("s3://bkt/nothing", tmp_path / "none")


def test_upload_dir_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "nested").mkdir(parents=True)
    (src / "top.txt").write_text("top")
    (src / "nested" / "deep.txt").write_text("deep")
    uris = store.upload_dir(src, "s3://bkt/out/")
    assert uris == ["s3://bkt/out/top.txt", "s3://bkt/out/nested/deep.txt"]
    assert store.get_bytes("s3://bkt/out/nested/deep.txt") == b"deep"


def test_object_and_prefix_cannot_share_a_key(store: ObjectStore) -> None:
    store.put_bytes("s3://bkt/a", b"file")
    with pytest.raises(StoreError, match="parent of its key is an object"):
        store.put_bytes("s3://bkt/a/b", b"x")
    store.put_bytes("s3://bkt/c/d", b"x")
    with pytest.raises(StoreError, match="objects exist under that key"):
        store.put_bytes("s3://bkt/c", b"x")
