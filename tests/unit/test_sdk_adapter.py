"""The SDK adapter: deterministic code bundles and collected (not sent) uploads."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from pipelines.sdk import make_session, pack_source


def test_source_bundle_is_deterministic_and_content_addressed(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("print('a')\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    first = pack_source(tmp_path)
    (tmp_path / "a.py").touch()  # a new mtime alone must not change the bundle
    assert pack_source(tmp_path) == first
    with tarfile.open(fileobj=io.BytesIO(first.data)) as tar:
        assert tar.getnames() == ["a.py"]
    (tmp_path / "a.py").write_text("print('b')\n")
    assert pack_source(tmp_path).sha256 != first.sha256
    assert first.uri("s3://b/p").startswith("s3://b/p/code/" + first.sha256[:20])


def test_session_collects_uploads_instead_of_sending(tmp_path: Path) -> None:
    session = make_session("us-east-1", "my-bucket")
    assert session.default_bucket() == "my-bucket"
    (tmp_path / "x.txt").write_text("x")
    uri = session.upload_data(str(tmp_path / "x.txt"), key_prefix="pre")
    assert uri == "s3://my-bucket/pre/x.txt"
    assert (
        session.upload_string_as_file_body("body", "my-bucket", "k/runproc.sh")
        == "s3://my-bucket/k/runproc.sh"
    )
    assert session.pending_uploads == {
        "s3://my-bucket/pre/x.txt": b"x",
        "s3://my-bucket/k/runproc.sh": b"body",
    }
