"""run_transform_job: splits, batch strategies, `.out` names, assembly, filters, joins, streaming, workers."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pipelines.local.jobs.transform as transform
from pipelines.local.errors import UnsupportedError
from pipelines.local.jobs import JobContext, run_training_job, run_transform_job
from pipelines.local.jobs.jsonpath import CsvRow, FilterError, parse
from tests.local.test_jobs_support import SKLEARN_IMAGE, XGBOOST_IMAGE, assert_shape, make_ctx
from tests.local.test_jobs_training import channel, request, sourcedir

INFERENCE = """
import json
from pathlib import Path
import helper  # a sibling module in code/, as model_code's inference.py imports features.py

def model_fn(model_dir):
    return {"dir": Path(model_dir), "w": float((Path(model_dir) / "weight.txt").read_text())}

def input_fn(body, content_type):
    text = body.decode() if isinstance(body, bytes) else body
    if "json" in content_type:
        return [json.loads(line) for line in text.splitlines()]
    return [[float(v) for v in line.split(",")] for line in text.splitlines()]

def predict_fn(data, model):
    with open(model["dir"] / "calls.txt", "a") as f:
        f.write(f"{len(data)}\\n")
    return [helper.score(r["features"] if isinstance(r, dict) else r, model["w"]) for r in data]

def output_fn(prediction, accept):
    if accept == "application/json":
        return json.dumps({"predictions": [{"score": p} for p in prediction]}), accept
    return "".join(f"{p}\\n" for p in prediction), "text/csv"
"""


def model_tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def script_model(ctx: JobContext) -> dict[str, Any]:
    ctx.store.put_bytes(
        "s3://bkt/model/model.tar.gz",
        model_tarball(
            {
                "weight.txt": b"2",
                "code/inference.py": INFERENCE.encode(),
                "code/helper.py": b"def score(row, w):\n    return round(sum(row) * w, 6)\n",
            }
        ),
    )
    return {
        "ModelName": "m",
        "ModelArn": "arn:aws:sagemaker:us-east-1:000000000000:model/m",
        "CreationTime": None,
        "PrimaryContainer": {
            "Image": SKLEARN_IMAGE,
            "ModelDataUrl": "s3://bkt/model/model.tar.gz",
            "Environment": {
                "SAGEMAKER_PROGRAM": "inference.py",
                "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
            },
        },
    }


def hooks_model(
    ctx: JobContext, code: str | bytes, environment: dict[str, str] | None = None, **files: bytes
) -> dict[str, Any]:
    """A DescribeModel of an artefact whose code/inference.py is `code` (plus `files`), stored in ctx."""
    source = code.encode() if isinstance(code, str) else code
    ctx.store.put_bytes("s3://bkt/model/model.tar.gz", model_tarball({"code/inference.py": source, **files}))
    container: dict[str, Any] = {"Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://bkt/model/model.tar.gz"}
    if environment:
        container["Environment"] = environment
    return {"ModelName": "m", "PrimaryContainer": container}


def transform_request(name: str, **settings: Any) -> dict[str, Any]:
    tin = {
        "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": settings.pop("uri", "s3://bkt/in")}
        },
        "ContentType": settings.pop("content_type", "text/csv"),
        "SplitType": settings.pop("split", "Line"),
    }
    tout = {"S3OutputPath": f"s3://bkt/out/{name}", "AssembleWith": settings.pop("assemble", "Line")}
    if "accept" in settings:
        tout["Accept"] = settings.pop("accept")
    return {
        "TransformJobName": name,
        "ModelName": "m",
        "TransformInput": tin,
        "TransformOutput": tout,
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        **settings,
    }


def calls(ctx: JobContext) -> list[int]:
    return [int(n) for n in (ctx.job_dir / "model" / "calls.txt").read_text().split()]


def test_out_naming_and_batch_strategies(tmp_path: Path) -> None:
    for strategy, expected_calls in (("SingleRecord", [1, 1, 1, 1, 1]), ("MultiRecord", [2, 3])):
        ctx = make_ctx(tmp_path, strategy)
        model = script_model(ctx)
        ctx.store.put_bytes("s3://bkt/in/a.csv", b"1,2\n3,4\n")
        ctx.store.put_bytes("s3://bkt/in/nested/b.csv", b"1,1\n\n2,2\n3,3\n")
        req = transform_request(strategy, BatchStrategy=strategy, MaxConcurrentTransforms=3)
        desc = run_transform_job(req, ctx, model)
        assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
        assert_shape("DescribeTransformJob", desc)
        assert ctx.store.list(f"s3://bkt/out/{strategy}/") == [
            f"s3://bkt/out/{strategy}/a.csv.out",
            f"s3://bkt/out/{strategy}/nested/b.csv.out",
        ]
        assert ctx.store.get_bytes(f"s3://bkt/out/{strategy}/nested/b.csv.out") == b"4.0\n8.0\n12.0\n"
        assert sorted(calls(ctx)) == sorted(expected_calls)  # output order holds with 3 workers


COUNTING = """
import time
from pathlib import Path

def model_fn(model_dir):
    return Path(model_dir)

def transform_fn(model, body, content_type, accept):
    count = body.count(b"\\n") + 1
    time.sleep(0.03)  # slower than reading: the window of pending batches is always full
    with open(model / "calls.txt", "a") as f:
        f.write(f"{count}\\n")
    return "1\\n" * count, "text/csv"
"""


def test_multirecord_batches_fit_the_payload_and_memory_stays_flat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory peak does not grow with the input: records stream through a bounded window of batches."""
    # Both sizes on threads in this process, where tracemalloc sees every allocation.
    monkeypatch.setattr(transform, "PROCESS_MIN_BYTES", 1 << 40)
    row = "0.123456789," * 19 + "0.123456789\n"  # 240 bytes: about 4400 records per 1 MB batch
    peaks = []
    for rows in (30_000, 120_000):  # 7 MB and 29 MB
        ctx = make_ctx(tmp_path, f"big{rows}")
        model = hooks_model(ctx, COUNTING)
        ctx.store.put_bytes("s3://bkt/in/big.csv", (row * rows).encode())
        req = transform_request(
            f"big{rows}", BatchStrategy="MultiRecord", MaxPayloadInMB=1, MaxConcurrentTransforms=2
        )
        tracemalloc.start()
        desc = run_transform_job(req, ctx, model)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
        batches = calls(ctx)
        assert (
            sum(batches) == rows
            and max(batches) * len(row) <= 1024 * 1024
            and len(batches) >= rows * len(row) // 2**20
        )
        assert ctx.store.get_bytes(f"s3://bkt/out/big{rows}/big.csv.out").count(b"\n") == rows
    assert peaks[1] < peaks[0] * 1.3 and peaks[1] < 29e6 / 2, peaks  # 4x the input, about the same peak


def test_assemble_with_none_and_line_for_whole_objects(tmp_path: Path) -> None:
    for assemble, expected in (
        ("None", b'{"predictions": [{"score": 6.0}]}'),
        ("Line", b'{"predictions": [{"score": 6.0}]}\n'),
    ):
        ctx = make_ctx(tmp_path, assemble)
        model = script_model(ctx)
        ctx.store.put_bytes("s3://bkt/in/doc.json", b'{"features": [1, 2]}')
        req = transform_request(
            assemble,
            split="None",
            assemble=assemble,
            content_type="application/json",
            accept="application/json",
        )
        desc = run_transform_job(req, ctx, model)
        assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
        assert ctx.store.get_bytes(f"s3://bkt/out/{assemble}/doc.json.out") == expected


def test_csv_input_filter_join_and_output_filter(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    model = script_model(ctx)
    ctx.store.put_bytes("s3://bkt/in/rows.csv", b"id1,1,2\nid2,3,4\n")
    processing = {"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"}
    desc = run_transform_job(
        transform_request("csvjoin", BatchStrategy="MultiRecord", DataProcessing=processing), ctx, model
    )
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    assert ctx.store.get_bytes("s3://bkt/out/csvjoin/rows.csv.out") == b"id1,6.0\nid2,14.0\n"


def test_json_lines_filter_and_join(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    model = script_model(ctx)
    ctx.store.put_bytes(
        "s3://bkt/in/objects.jsonl", b'{"id": "r1", "features": [1, 2]}\n{"id": "r2", "features": [3, 4]}\n'
    )
    ctx.store.put_bytes("s3://bkt/in2/arrays.jsonl", b"[1, 2]\n[5, 5]\n")
    common = {
        "content_type": "application/jsonlines",
        "accept": "application/json",
        "BatchStrategy": "MultiRecord",
    }
    desc = run_transform_job(
        transform_request(
            "jobj",
            DataProcessing={
                "InputFilter": "$.features",
                "JoinSource": "Input",
                "OutputFilter": "$['id','SageMakerOutput']",
            },
            **common,
        ),
        ctx,
        model,
    )
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    lines = ctx.store.get_bytes("s3://bkt/out/jobj/objects.jsonl.out").decode().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"id": "r1", "SageMakerOutput": {"score": 6.0}},
        {"id": "r2", "SageMakerOutput": {"score": 14.0}},
    ]
    desc = run_transform_job(
        transform_request("jarr", uri="s3://bkt/in2", DataProcessing={"JoinSource": "Input"}, **common),
        make_ctx(tmp_path, "arr"),
        model,
    )
    lines = ctx.store.get_bytes("s3://bkt/out/jarr/arrays.jsonl.out").decode().splitlines()
    assert json.loads(lines[1]) == {"SageMakerInput": [5, 5], "SageMakerOutput": {"score": 20.0}}


def test_a_failing_object_writes_no_out_and_fails_the_job(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    model = script_model(ctx)
    ctx.store.put_bytes("s3://bkt/in/good.csv", b"1,2\n")
    ctx.store.put_bytes("s3://bkt/in/bad.csv", b"1,2\nnot,numbers\n")
    desc = run_transform_job(transform_request("fail", BatchStrategy="SingleRecord"), ctx, model)
    assert desc["TransformJobStatus"] == "Failed"
    assert "bad.csv" in desc["FailureReason"] and "could not convert" in desc["FailureReason"]
    assert ctx.store.list("s3://bkt/out/fail/") == ["s3://bkt/out/fail/good.csv.out"]


def test_builtin_xgboost_model(tmp_path: Path) -> None:
    import xgboost as xgb

    rng = np.random.default_rng(0)
    x = rng.random((60, 3))
    booster = xgb.train({"objective": "binary:logistic"}, xgb.DMatrix(x, label=(x[:, 0] > 0.5)), 3)
    ctx = make_ctx(tmp_path)
    ctx.store.put_bytes(
        "s3://bkt/xgbmodel/model.tar.gz", model_tarball({"xgboost-model": bytes(booster.save_raw("ubj"))})
    )
    ctx.store.put_bytes(
        "s3://bkt/in/x.csv", "\n".join(",".join(f"{v:.6f}" for v in row) for row in x[:5]).encode()
    )
    model = {
        "ModelName": "xgb",
        "PrimaryContainer": {"Image": XGBOOST_IMAGE, "ModelDataUrl": "s3://bkt/xgbmodel/model.tar.gz"},
    }
    desc = run_transform_job(transform_request("xgb", BatchStrategy="MultiRecord"), ctx, model)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    got = [float(v) for v in ctx.store.get_bytes("s3://bkt/out/xgb/x.csv.out").split()]
    want = booster.predict(xgb.DMatrix(np.round(x[:5], 6).astype(np.float32)))
    assert got == pytest.approx(want.tolist(), abs=1e-5)


def test_unsupported_settings_raise(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    model = script_model(ctx)
    with pytest.raises(UnsupportedError, match="RecordIO"):
        run_transform_job(transform_request("r", split="RecordIO"), ctx, model)
    with pytest.raises(UnsupportedError, match=r"\$\.\.x"):
        run_transform_job(transform_request("r", DataProcessing={"InputFilter": "$..x"}), ctx, model)


def test_jsonpath_subset() -> None:
    row = CsvRow(["a", "b", "c", "d"])
    assert parse("$[1:]").apply(row) == ["b", "c", "d"] and parse("$[0,2:]").apply(row) == ["a", "c", "d"]
    assert parse("$[-1]").apply(row) == ["d"] and parse("$").apply(row) == row
    record = {"id": 1, "f": {"x": [1, 2, 3]}}
    assert parse("$.f.x[1]").apply(record) == 2 and parse("$['id']").apply(record) == 1
    assert parse("$['id','f']").apply(record) == record
    with pytest.raises(FilterError, match="out of range"):
        parse("$[7]").apply(row)
    with pytest.raises(FilterError, match="'missing'"):
        parse("$.missing").apply(record)
    with pytest.raises(UnsupportedError):
        parse("$[?(@.x)]")


@pytest.mark.skipif(not Path("model_code/train.py").is_file(), reason="model_code not present")
def test_model_code_artefact_end_to_end(tmp_path: Path) -> None:
    """Train with model_code/train.py (script mode), then batch-transform raw records with its artefact."""
    from model_code.data import generate
    from model_code.features import FeatureSpec

    df = generate(400, seed=3)
    numeric = [
        "air_temperature_k",
        "process_temperature_k",
        "rotational_speed_rpm",
        "torque_nm",
        "tool_wear_min",
    ]
    spec = FeatureSpec.fit(
        df, target="machine_failure", problem_type="binary", numeric=numeric, categorical=["type"]
    )
    ctx = make_ctx(tmp_path, "train")
    columns = [*spec.raw_columns, "machine_failure"]
    ctx.store.put_bytes("s3://bkt/pdm/train/train.csv", df[columns][:300].to_csv(index=False).encode())
    ctx.store.put_bytes("s3://bkt/pdm/train/feature_spec.json", json.dumps(spec.to_dict()).encode())
    ctx.store.put_bytes(
        "s3://bkt/pdm/validation/validation.csv", df[columns][300:].to_csv(index=False).encode()
    )
    code = {
        name: Path("model_code", name).read_text()
        for name in ("train.py", "common.py", "features.py", "formatting.py", "inference.py")
    }
    ctx.store.put_bytes("s3://bkt/pdm/code/sourcedir.tar.gz", sourcedir(code))
    hps = {
        "num_round": "5",
        "max_depth": "3",
        "sagemaker_program": '"train.py"',
        "sagemaker_submit_directory": '"s3://bkt/pdm/code/sourcedir.tar.gz"',
    }
    req = request(
        "pdm-train",
        XGBOOST_IMAGE,
        hps,
        [channel("train", "s3://bkt/pdm/train"), channel("validation", "s3://bkt/pdm/validation")],
    )
    req["AlgorithmSpecification"]["MetricDefinitions"] = [
        {"Name": "validation:auc", "Regex": "validation-auc:([-+0-9.eE]+)"}
    ]
    desc = run_training_job(req, ctx)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert 0.0 <= desc["FinalMetricDataList"][0]["Value"] <= 1.0

    raw = df[spec.raw_columns][300:320].to_csv(index=False, header=False).encode()
    ctx.store.put_bytes("s3://bkt/pdm/batch/records.csv", raw)
    model = {
        "ModelName": "pdm",
        "PrimaryContainer": {
            "Image": XGBOOST_IMAGE,
            "ModelDataUrl": desc["ModelArtifacts"]["S3ModelArtifacts"],
            "Environment": {
                "SAGEMAKER_PROGRAM": "inference.py",
                "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
            },
        },
    }
    out = run_transform_job(
        transform_request(
            "pdm-batch", uri="s3://bkt/pdm/batch", accept="text/csv", BatchStrategy="MultiRecord"
        ),
        make_ctx(tmp_path, "batch"),
        model,
    )
    assert out["TransformJobStatus"] == "Completed", out.get("FailureReason")
    scores = [float(v) for v in ctx.store.get_bytes("s3://bkt/out/pdm-batch/records.csv.out").split()]
    assert len(scores) == 20 and all(0.0 <= s <= 1.0 for s in scores)


# --- reading runs of lines ----------------------------------------------------------------------------
def run_bodies(data: bytes, limit: int, chunk: int | None = None) -> list[bytes]:
    """The runs _runs cuts from `data` (optionally read in short pieces, like a gzip stream)."""

    class Short(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            return super().read(min(size, chunk) if chunk and size and size > 0 else size)

    return list(transform._runs(Short(data), limit))


def test_runs_cut_whole_lines_within_the_payload() -> None:
    data = b"aaaa\nbb\ncccccc\nd\n"
    assert run_bodies(data, 8) == [b"aaaa\nbb", b"cccccc", b"d"]
    assert run_bodies(data, 8, chunk=3) == [b"aaaa\nbb", b"cccccc", b"d"]  # short reads fill the run first
    assert run_bodies(data, 100) == [b"aaaa\nbb\ncccccc\nd"]
    assert run_bodies(b"aaaa\nbb", 100) == [b"aaaa\nbb"]  # no newline at the end
    assert run_bodies(b"", 100) == []
    # A record plus its newline may fill the payload exactly; one byte more is refused.
    assert run_bodies(b"abcdefg\n", 8) == [b"abcdefg"]
    with pytest.raises(ValueError, match="exceeds MaxPayloadInMB"):
        run_bodies(b"abcdefgh\n", 8)


def test_run_targets_shrink_as_the_input_runs_out() -> None:
    mb = 1024 * 1024
    # A quarter of what is left for 2 requests in flight, within MIN_RUN and the payload limit.
    assert transform._run_target(30 * mb, 6 * mb, 2) == 6 * mb
    assert transform._run_target(10 * mb, 6 * mb, 2) == 10 * mb // 4
    assert transform._run_target(mb, 6 * mb, 2) == transform.MIN_RUN
    assert transform._run_target(mb, 100_000, 4) == 100_000  # a payload below MIN_RUN still holds
    assert transform._run_target(30 * mb, 6 * mb, 1) == 0  # one request at a time: filled runs


@pytest.mark.parametrize("slack", [3, 64 * 1024])
@pytest.mark.parametrize("chunk", [None, 7])
def test_runs_shrink_toward_the_end_and_never_pass_the_payload(
    monkeypatch: pytest.MonkeyPatch, slack: int, chunk: int | None
) -> None:
    """Guided runs: large while much is left, small at the end; every record once, in order, within the
    limit, however the reads come (gzip's short reads) and however far a line crosses the target."""
    monkeypatch.setattr(transform, "MIN_RUN", 30)
    monkeypatch.setattr(transform, "_SLACK", slack)
    data = b"".join(b"%09d\n" % i for i in range(100))  # a hundred 10-byte lines

    def cut(body: bytes) -> list[bytes]:
        handle = io.BytesIO(body)
        read = handle.read
        handle.read = lambda size=-1: read(min(size, chunk) if chunk and size > 0 else size)  # type: ignore[method-assign]
        return list(
            transform._runs(handle, 120, lambda done: transform._run_target(len(body) - done, 120, 2))
        )

    runs = cut(data)
    sizes = [len(run) + 1 for run in runs]
    assert b"\n".join(runs) + b"\n" == data
    # 1000 bytes: filled runs while a quarter of what is left exceeds the limit (120), then a quarter of
    # what is left (at least MIN_RUN, 30), each ending at the first line end at or past it.
    assert sizes == [120, 120, 120, 120, 120, 110, 80, 60, 40, 40, 40, 30]
    assert cut(data[:-1]) == runs  # no final line break: the same runs


def batch_sizes_seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(object size, bytes after it) that the job passes to `_batches` for each object, in order."""
    seen: list[tuple[int, int]] = []
    real = transform._batches

    def spy(handle: Any, plan: Any, size: int = 0, after: int = 0) -> Any:
        seen.append((size, after))
        return real(handle, plan, size, after)

    monkeypatch.setattr(transform, "_batches", spy)
    return seen


def test_runs_shrink_as_the_whole_input_runs_out_not_each_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each object is read knowing the bytes of the objects after it: only the job's end gets small runs."""
    seen = batch_sizes_seen(monkeypatch)
    ctx = make_ctx(tmp_path)
    model = script_model(ctx)
    ctx.store.put_bytes("s3://bkt/in/a.csv", b"1,2\n" * 5)
    ctx.store.put_bytes("s3://bkt/in/b.csv", b"3,4\n" * 3)
    ctx.store.put_bytes("s3://bkt/in/c.csv", b"5,6\n")
    desc = run_transform_job(transform_request("later", BatchStrategy="MultiRecord"), ctx, model)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    assert seen == [(20, 16), (12, 4), (4, 0)]
    assert ctx.store.get_bytes("s3://bkt/out/later/b.csv.out") == b"14.0\n" * 3


def test_gzip_inputs_are_decompressed_as_read_in_filled_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gzip object's stored size is not the size of the lines cut from it: its runs are filled."""
    seen = batch_sizes_seen(monkeypatch)
    ctx = make_ctx(tmp_path)
    model = script_model(ctx)
    ctx.store.put_bytes("s3://bkt/in/a.csv.gz", gzip.compress(b"1,2\n\n3,4\n"))
    ctx.store.put_bytes("s3://bkt/in/b.csv.gz", gzip.compress(b"5,6\n"))
    req = transform_request("gz", BatchStrategy="MultiRecord", MaxConcurrentTransforms=2)
    req["TransformInput"]["CompressionType"] = "Gzip"
    desc = run_transform_job(req, ctx, model)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    assert ctx.store.get_bytes("s3://bkt/out/gz/a.csv.gz.out") == b"6.0\n14.0\n"
    assert ctx.store.get_bytes("s3://bkt/out/gz/b.csv.gz.out") == b"22.0\n"
    assert seen == [(0, 0), (0, 0)]


def test_irregular_lines_are_dropped_or_trimmed_like_records() -> None:
    assert transform._regular(b"1,2\n3,4") == b"1,2\n3,4"
    assert transform._regular(b"\n1,2\r\n\n  \n\t\n3,4\r") == b"1,2\n3,4"
    assert transform._regular(b" 5,6\n7,8") == b" 5,6\n7,8"  # leading blanks of a record are kept
    assert transform._regular(b"\n \n") == b""


def plan(**settings: Any) -> Any:
    return transform._Plan(transform_request("p", **settings))


def test_batches_follow_the_strategy() -> None:
    data = b"1,2\n\n3,4\r\n5,6"
    # One run, passed as read: the request's thread drops its blank lines (_Handler.run).
    multi = list(transform._batches(io.BytesIO(data), plan(BatchStrategy="MultiRecord")))
    assert multi == [data]
    single = list(transform._batches(io.BytesIO(data), plan(BatchStrategy="SingleRecord")))
    assert single == [["1,2"], ["3,4"], ["5,6"]]
    joined = list(
        transform._batches(
            io.BytesIO(data), plan(BatchStrategy="MultiRecord", DataProcessing={"JoinSource": "Input"})
        )
    )
    assert joined == [["1,2", "3,4", "5,6"]]
    whole = list(transform._batches(io.BytesIO(b"x\ny"), plan(split="None")))
    assert whole == [b"x\ny"]


class Echo:
    """A loaded model that answers each request with its body and keeps the bodies it was sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        self.bodies.append(body)
        return body, accept


def test_a_run_loses_its_blank_lines_and_counts_its_records_where_it_runs() -> None:
    model = Echo()
    runs = transform._Handler.of(plan(BatchStrategy="MultiRecord"))
    assert runs.run(model, b"1,2\n\n3,4\r\n5,6") == (b"1,2\n3,4\n5,6\n", 3)  # type: ignore[arg-type]
    assert runs.run(model, b"\n \n\t") == (b"", 0)  # type: ignore[arg-type]
    assert model.bodies == [b"1,2\n3,4\n5,6"]  # a blank run is not sent at all
    whole = transform._Handler.of(plan(split="None", assemble="None"))
    assert whole.run(model, b"x\n\ny") == (b"x\n\ny", 1)  # type: ignore[arg-type]  # one record, as read


def test_whole_object_larger_than_the_payload_fails_that_object(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    model = script_model(ctx)
    ctx.store.put_bytes("s3://bkt/in/big.json", b'{"features": [1, 2]}' + b" " * (1024 * 1024))
    ctx.store.put_bytes("s3://bkt/in/small.json", b'{"features": [1, 2]}')
    req = transform_request(
        "whole", split="None", content_type="application/json", accept="application/json", MaxPayloadInMB=1
    )
    desc = run_transform_job(req, ctx, model)
    assert desc["TransformJobStatus"] == "Failed" and "big.json" in desc["FailureReason"]
    assert ctx.store.list("s3://bkt/out/whole/") == ["s3://bkt/out/whole/small.json.out"]


def test_limits_sagemaker_rejects_fail_the_job(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    model = script_model(ctx)
    for settings, text in (
        ({"MaxPayloadInMB": 101}, "between 0 and 100"),
        ({"MaxPayloadInMB": 30, "MaxConcurrentTransforms": 4}, "must not exceed 100"),
    ):
        desc = run_transform_job(transform_request("limits", **settings), ctx, model)
        assert desc["TransformJobStatus"] == "Failed"
        assert desc["FailureReason"].startswith("ValidationException") and text in desc["FailureReason"]


def test_a_failing_model_fn_fails_the_job(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    model = hooks_model(ctx, "def model_fn(model_dir):\n    raise OSError('weights missing')\n")
    ctx.store.put_bytes("s3://bkt/in/a.csv", b"1,2\n")
    desc = run_transform_job(transform_request("broken"), ctx, model)
    assert desc["TransformJobStatus"] == "Failed" and "OSError: weights missing" in desc["FailureReason"]


# --- worker processes ---------------------------------------------------------------------------------
WORKER_MODEL = """
import os, sys
from pathlib import Path

def model_fn(model_dir):
    if (Path(model_dir) / "BROKEN").exists():
        raise ValueError("cannot load")
    return Path(model_dir)

def transform_fn(model, body, content_type, accept):
    lines = body.decode().split("\\n")
    print(f"hook stdout {os.getpid()}")  # must land in the log, never in the replies
    print(f"hook stderr {os.getpid()}", file=sys.stderr)
    if any(line == "die" for line in lines):
        os._exit(3)
    with open(model / "calls.txt", "a") as f:
        f.write(f"{os.getpid()} {len(lines)}\\n")
    return "".join(f"{float(line.split(',')[0]) * 2}\\n" for line in lines), "text/csv"
"""


def worker_model(ctx: JobContext, broken: bool = False) -> dict[str, Any]:
    files = {"BROKEN": b""} if broken else {}
    # A worker process per request.
    return hooks_model(ctx, WORKER_MODEL, {"SAGEMAKER_MODEL_SERVER_WORKERS": "2"}, **files)


def test_worker_processes_give_the_same_output_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transform, "PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(transform, "_cpus", lambda: 2)
    rows = b"".join(f"{i},{i}\n".encode() for i in range(3000))  # 1 MB runs: several batches
    outputs = {}
    for concurrency in (1, 2):
        ctx = make_ctx(tmp_path, f"w{concurrency}")
        model = worker_model(ctx)
        ctx.store.put_bytes("s3://bkt/in/rows.csv", rows * 100)
        req = transform_request(f"w{concurrency}", MaxPayloadInMB=1, MaxConcurrentTransforms=concurrency)
        desc = run_transform_job(req, ctx, model)
        assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
        outputs[concurrency] = ctx.store.get_bytes(f"s3://bkt/out/w{concurrency}/rows.csv.out")
        pids = {line.split()[0] for line in (ctx.job_dir / "model" / "calls.txt").read_text().splitlines()}
        log = ctx.log_path.read_text()
        if concurrency == 1:
            assert pids == {str(os.getpid())}  # one request at a time: threads here, no workers
            assert "on threads" in log
        else:
            assert len(pids) == 2 and str(os.getpid()) not in pids
            assert "on 2 worker processes" in log
            assert "hook stdout" in log and "hook stderr" in log
    expected = b"".join(f"{float(i) * 2}\n".encode() for i in range(3000)) * 100
    assert outputs[1] == outputs[2] == expected


def test_a_dying_worker_fails_the_job_without_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transform, "PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(transform, "_cpus", lambda: 2)
    ctx = make_ctx(tmp_path)
    model = worker_model(ctx)
    ctx.store.put_bytes("s3://bkt/in/a.csv", b"1,1\n" * 10 + b"die\n" + b"2,2\n")
    req = transform_request("dies", BatchStrategy="SingleRecord", MaxConcurrentTransforms=2)
    desc = run_transform_job(req, ctx, model)
    assert desc["TransformJobStatus"] == "Failed"
    assert "a.csv" in desc["FailureReason"] and "exited with code 3" in desc["FailureReason"]
    assert ctx.store.list("s3://bkt/out/dies/") == []


def test_a_model_failing_to_load_in_workers_fails_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transform, "PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(transform, "_cpus", lambda: 2)
    ctx = make_ctx(tmp_path)
    model = worker_model(ctx, broken=True)
    ctx.store.put_bytes("s3://bkt/in/a.csv", b"1,1\n")
    desc = run_transform_job(transform_request("nomodel", MaxConcurrentTransforms=2), ctx, model)
    assert desc["TransformJobStatus"] == "Failed" and "cannot load" in desc["FailureReason"]


@pytest.mark.parametrize("processes", [False, True])
def test_cancel_stops_the_job_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: bool
) -> None:
    if processes:
        monkeypatch.setattr(transform, "PROCESS_MIN_BYTES", 0)
        monkeypatch.setattr(transform, "_cpus", lambda: 2)
    cancel = threading.Event()
    ctx = make_ctx(tmp_path, cancel=cancel)
    model = worker_model(ctx)
    ctx.store.put_bytes("s3://bkt/in/a.csv", b"1,1\n" * 200)
    real = transform._batches

    def cancelling(handle: Any, plan: Any, size: int = 0, after: int = 0) -> Any:
        for number, item in enumerate(real(handle, plan, size, after)):
            if number == 5:
                cancel.set()
            yield item

    monkeypatch.setattr(transform, "_batches", cancelling)
    req = transform_request("stop", BatchStrategy="SingleRecord", MaxConcurrentTransforms=2)
    desc = run_transform_job(req, ctx, model)
    assert desc["TransformJobStatus"] == "Stopped"
    assert ctx.store.list("s3://bkt/out/stop/") == []


def test_unset_concurrency_is_one_request_per_cpu_within_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """As SageMaker asks the container's /execution-parameters, which the local model server answers so."""
    monkeypatch.setattr(transform, "_cpus", lambda: 4)
    assert plan().concurrency == 4
    assert plan(MaxPayloadInMB=30).concurrency == 3  # 4 x 30 MB would pass the 100 MB limit
    assert plan(MaxConcurrentTransforms=1).concurrency == 1


def test_worker_processes_only_when_the_model_asks_for_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads over one model by default; SAGEMAKER_MODEL_SERVER_WORKERS > 1 starts worker processes."""
    monkeypatch.setattr(transform, "_cpus", lambda: 4)
    big = transform.PROCESS_MIN_BYTES
    assert plan(MaxConcurrentTransforms=2).processes(big, workers=0) == 0  # unset: threads
    assert plan(MaxConcurrentTransforms=2).processes(big, workers=1) == 0
    assert plan(MaxConcurrentTransforms=2).processes(big, workers=4) == 2  # one per request in flight
    assert plan(MaxConcurrentTransforms=4).processes(big, workers=3) == 3
    assert plan(MaxConcurrentTransforms=2).processes(big - 1, workers=4) == 0  # small: threads


def test_xgboost_threads_are_shared_between_the_requests_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transform, "_cpus", lambda: 4)
    settings = plan(MaxConcurrentTransforms=2)
    dispatch = transform._Dispatcher(settings, None, 0, None, 1.0)  # type: ignore[arg-type]
    try:
        # While input keeps coming, a request that starts alone is soon joined: it takes its half.
        with dispatch._share(b"x" * 100) as first, dispatch._share(b"x" * 100) as second:
            assert first == second == 2
        dispatch.input_ended()
        # The tail: the requests still running share what the finished ones left.
        with dispatch._share(b"x" * 100) as alone:
            assert alone == 4
            with dispatch._share(b"x" * 300) as big:
                assert big == 3  # 300 of the 400 bytes in flight
    finally:
        dispatch.__exit__(None, None, None)


THREADS_MODEL = """
import os
from pathlib import Path
import xgboost

def model_fn(model_dir):
    return Path(model_dir)

def transform_fn(model, body, content_type, accept):
    with open(model / "threads.txt", "a") as f:
        f.write(f"{os.getpid()} {xgboost.get_config()['nthread']}\\n")
    return body, "text/csv"
"""


@pytest.mark.parametrize("workers", ["1", "2"])
def test_each_request_runs_xgboost_on_its_share_of_the_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    """On threads here and in worker processes alike, XGBoost's thread count is set for every request."""
    monkeypatch.setattr(transform, "PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(transform, "_cpus", lambda: 4)
    ctx = make_ctx(tmp_path)
    model = hooks_model(ctx, THREADS_MODEL, {"SAGEMAKER_MODEL_SERVER_WORKERS": workers})
    ctx.store.put_bytes("s3://bkt/in/rows.csv", b"1,2\n" * 600_000)  # 2.4 MB: runs of 1 MB or less
    req = transform_request("threads", MaxPayloadInMB=1, MaxConcurrentTransforms=2)
    desc = run_transform_job(req, ctx, model)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    seen = [line.split() for line in (ctx.job_dir / "model" / "threads.txt").read_text().splitlines()]
    assert len(seen) >= 3
    # Never XGBoost's default (0: all cores); a small last run may get a single core.
    assert {int(threads) for _, threads in seen} <= {1, 2, 3, 4}
    assert (len({pid for pid, _ in seen}) == 2) == (workers == "2")


CONCURRENCY_MODEL = """
import threading, time
from pathlib import Path

LOCK = threading.Lock()
ACTIVE = [0]

def model_fn(model_dir):
    return Path(model_dir)

def transform_fn(model, body, content_type, accept):
    with LOCK:
        ACTIVE[0] += 1
        with open(model / "active.txt", "a") as f:
            f.write(f"{ACTIVE[0]}\\n")
    time.sleep(0.05)
    if b"bad" in body:
        with LOCK:
            ACTIVE[0] -= 1
        raise ValueError("bad record")
    with LOCK:
        ACTIVE[0] -= 1
    return body.replace(b",", b"-"), "text/csv"
"""


def test_requests_in_flight_span_objects_and_a_failure_stays_with_its_object(tmp_path: Path) -> None:
    """Many small objects keep every request slot busy; a failing object has no .out, the others do."""
    ctx = make_ctx(tmp_path)
    model = hooks_model(ctx, CONCURRENCY_MODEL)
    names = [f"{i:02d}.csv" for i in range(8)]
    for i, name in enumerate(names):
        body = b"bad\n" if i in (3, 6) else b"%d,%d\n" % (i, i)
        ctx.store.put_bytes(f"s3://bkt/in/{name}", body)
    ctx.store.put_bytes("s3://bkt/in/empty.csv", b"")
    desc = run_transform_job(transform_request("span", MaxConcurrentTransforms=2), ctx, model)
    assert desc["TransformJobStatus"] == "Failed"
    # Every failure, in input order, each naming its object.
    assert desc["FailureReason"].startswith("ClientError: 03.csv: ValueError: bad record; 06.csv: ")
    outs = ctx.store.list("s3://bkt/out/span/")
    expected = [f"s3://bkt/out/span/{n}.out" for i, n in enumerate(names) if i not in (3, 6)]
    assert outs == sorted([*expected, "s3://bkt/out/span/empty.csv.out"])
    for i, name in enumerate(names):
        if i not in (3, 6):
            assert ctx.store.get_bytes(f"s3://bkt/out/span/{name}.out") == b"%d-%d\n" % (i, i)
    assert ctx.store.get_bytes("s3://bkt/out/span/empty.csv.out") == b""
    active = [int(n) for n in (ctx.job_dir / "model" / "active.txt").read_text().split()]
    assert len(active) == 8 and max(active) == 2  # two objects' requests at once, never more


def test_a_batch_failing_inside_a_large_object_drops_all_of_it_and_keeps_the_next(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    model = hooks_model(ctx, CONCURRENCY_MODEL)
    row = b"1,2,3,4,5,6,7,8,9\n"  # 18 bytes: 1 MB runs of ~58,000 records
    ctx.store.put_bytes("s3://bkt/in/a.csv", row * 100_000 + b"bad\n" + row * 100_000)  # 3.6 MB
    ctx.store.put_bytes("s3://bkt/in/b.csv", row * 100_000)
    desc = run_transform_job(
        transform_request("mid", MaxPayloadInMB=1, MaxConcurrentTransforms=2), ctx, model
    )
    assert desc["TransformJobStatus"] == "Failed" and "a.csv: ValueError: bad record" in desc["FailureReason"]
    assert ctx.store.list("s3://bkt/out/mid/") == ["s3://bkt/out/mid/b.csv.out"]
    assert ctx.store.get_bytes("s3://bkt/out/mid/b.csv.out") == (row * 100_000).replace(b",", b"-")
    # Nothing of a.csv's output is left behind, not even a temporary file.
    assert sorted(p.name for p in ctx.store.path_for("s3://bkt/out/mid/b.csv.out").parent.iterdir()) == [
        "b.csv.out"
    ]


def test_an_output_that_cannot_be_saved_fails_its_own_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed commit (disk full) is that object's failure, even while a later object is being read."""
    import pipelines.local.store as store

    ctx = make_ctx(tmp_path)
    model = script_model(ctx)
    for name in ("a", "b", "c"):
        ctx.store.put_bytes(f"s3://bkt/in/{name}.csv", b"1,2\n")
    real_fsync, calls = store.os.fsync, []

    def full_once(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(store.os, "fsync", full_once)
    desc = run_transform_job(transform_request("full", MaxConcurrentTransforms=2), ctx, model)
    assert desc["FailureReason"] == "ClientError: a.csv: [Errno 28] No space left on device"
    assert ctx.store.list("s3://bkt/out/full/") == [
        "s3://bkt/out/full/b.csv.out",
        "s3://bkt/out/full/c.csv.out",
    ]


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_bad_worker_count_fails_the_job(tmp_path: Path, value: str) -> None:
    ctx = make_ctx(tmp_path)
    model = worker_model(ctx)
    model["PrimaryContainer"]["Environment"]["SAGEMAKER_MODEL_SERVER_WORKERS"] = value
    ctx.store.put_bytes("s3://bkt/in/a.csv", b"1,1\n")
    desc = run_transform_job(transform_request("badworkers"), ctx, model)
    assert desc["TransformJobStatus"] == "Failed"
    assert "SAGEMAKER_MODEL_SERVER_WORKERS must be a positive integer" in desc["FailureReason"]
    assert ctx.store.list("s3://bkt/out/badworkers/") == []


def test_jsonpath_wildcards() -> None:
    assert parse("$[*]").apply(CsvRow(["a", "b"])) == ["a", "b"]
    assert parse("$.*").apply({"a": 1, "b": 2}) == [1, 2]
    assert parse("$.items[*].x").apply({"items": [{"x": 1}, {"x": 2}]}) == [1, 2]
    assert parse("$[*][0]").apply([[1, 2], [3, 4]]) == [1, 3]
    with pytest.raises(FilterError, match="wildcard"):
        parse("$.a.*").apply({"a": 5})
    with pytest.raises(UnsupportedError):
        parse("$..x")


def test_manifest_entry_without_object_fails_that_object(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    model = script_model(ctx)
    ctx.store.put_bytes("s3://bkt/data/a.csv", b"1,2\n")
    ctx.store.put_bytes(
        "s3://bkt/manifest.json", json.dumps([{"prefix": "s3://bkt/data/"}, "a.csv", "gone.csv"]).encode()
    )
    req = transform_request("manifest", uri="s3://bkt/manifest.json")
    req["TransformInput"]["DataSource"]["S3DataSource"]["S3DataType"] = "ManifestFile"
    desc = run_transform_job(req, ctx, model)
    assert desc["TransformJobStatus"] == "Failed" and "gone.csv" in desc["FailureReason"]
    assert ctx.store.list("s3://bkt/out/manifest/") == ["s3://bkt/out/manifest/a.csv.out"]
