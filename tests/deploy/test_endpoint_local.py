"""Endpoints through the CLIs on the local engine: A/B variants, forced routing, promote, multi-model LRU."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import httpx
import pytest

from deploy import abtest, autoscaling, registry
from deploy import endpoint as endpoint_mod
from deploy.clients import Target
from deploy.endpoint import main_with_target as endpoint_cli
from deploy.serve.metrics import parse_prometheus
from pipelines.local.worker import pid_alive
from tests.deploy.conftest import CSV_RECORD, GROUP, Artefact, register, score

DEV = ["--dev", "--instance-count", "1", "--capture-uri", "s3://bucket/capture"]


def test_ab_endpoint_routing_counts_report_and_promote(
    local: Target, artefacts: dict[str, Artefact], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = local.sagemaker
    register(client, artefacts["v1"])
    register(client, artefacts["v2"])
    out = io.StringIO()
    variants = ["--variant", "champion=1:1", "--variant", "challenger=2:0"]
    create = ["--group", GROUP, "create", "ab", *variants, *DEV]
    assert abtest.main(create, local, out) == 0, capsys.readouterr().err
    weights = {
        v["VariantName"]: v["CurrentWeight"]
        for v in client.describe_endpoint(EndpointName="ab")["ProductionVariants"]
    }
    assert weights == {"champion": 1.0, "challenger": 0.0}

    # Weighted routing sends nothing to a zero-weight variant; --target-variant reaches it anyway.
    invoke = ["invoke", "ab", "--body", CSV_RECORD, "--accept", "text/csv"]
    for i in range(6):
        assert endpoint_cli([*invoke, "--inference-id", f"c{i}"], local, out) == 0
    assert capsys.readouterr().err.splitlines() == ["variant: champion"] * 6
    body = io.StringIO()
    assert endpoint_cli([*invoke, "--target-variant", "challenger", "--inference-id", "t0"], local, body) == 0
    assert capsys.readouterr().err.strip() == "variant: challenger"
    assert math.isclose(float(body.getvalue()), artefacts["v2"].score, rel_tol=1e-6)

    # A record the model cannot read: a ModelError (one line, exit 1) counted against the challenger.
    unreadable = ["invoke", "ab", "--body", "1,2,3", "--target-variant", "challenger"]
    assert endpoint_cli(unreadable, local, out) == 1
    assert capsys.readouterr().err.startswith("error: InvokeEndpoint: ModelError: ")

    # Per-variant counts come from the server's /metrics.
    counted = io.StringIO()
    assert abtest.main(["counts", "ab"], local, counted) == 0
    assert counted.getvalue().splitlines() == [
        "challenger               invocations=2 4xx=1 5xx=0",
        "champion                 invocations=6 4xx=0 5xx=0",
    ]

    # The report joins captures to outcomes by inference id; the challenger's one request is wrong.
    champion_label = int(artefacts["v1"].score >= 0.5)
    outcomes = tmp_path / "outcomes.csv"
    outcomes.write_text(
        "inference_id,label\n"
        + "".join(f"c{i},{champion_label}\n" for i in range(6))
        + f"t0,{1 - int(artefacts['v2'].score >= 0.5)}\n"
    )
    text = io.StringIO()
    assert abtest.main(["report", "ab", "--outcomes", str(outcomes), "--json"], local, text) == 0
    report = json.loads(text.getvalue())
    rows = {v["name"]: (v["joined"], v["successes"]) for v in report["variants"]}
    assert rows == {"champion": (6, 6), "challenger": (1, 0)}
    assert report["comparisons"][0]["control"] == "champion"  # the highest weight is the control
    assert report["comparisons"][0]["verdict"] == "worse"

    # Promote: all traffic to the challenger through a new server generation; the old one stops.
    before = client.local_endpoint(EndpointName="ab")
    config = client.describe_endpoint(EndpointName="ab")["EndpointConfigName"]
    assert abtest.main(["promote", "ab", "challenger"], local, out) == 0
    after = client.local_endpoint(EndpointName="ab")
    described = client.describe_endpoint(EndpointName="ab")
    weights = {v["VariantName"]: v["CurrentWeight"] for v in described["ProductionVariants"]}
    assert weights == {"champion": 0.0, "challenger": 1.0}
    assert described["EndpointConfigName"] == config  # weights change, the config does not
    assert after["generation"] == before["generation"] + 1 and not pid_alive(before["pid"])
    assert {score(local, "ab")[1] for _ in range(5)} == {"challenger"}
    server_config = json.loads((Path(after["directory"]) / "endpoint.json").read_text())
    assert {v["name"]: v["weight"] for v in server_config["variants"]} == weights
    assert abtest.main(["promote", "ab", "nobody"], local, out) == 2


def test_multi_model_endpoint_loads_targets_on_first_use_and_evicts_the_least_recently_used(
    local: Target, artefacts: dict[str, Artefact]
) -> None:
    client = local.sagemaker
    for name in ("v1", "v2", "v3"):
        client.store.put_bytes(f"s3://bucket/mme/{name}.tar.gz", artefacts[name].tar)
    args = ["create-multi-model", "mme", "--model-prefix", "s3://bucket/mme/", "--cache-size", "2", *DEV]
    assert endpoint_cli(args, local, io.StringIO()) == 0
    local_info = client.local_endpoint(EndpointName="mme")
    config = json.loads((Path(local_info["directory"]) / "endpoint.json").read_text())
    assert config["multi_model"]["cache_size"] == 2

    def call(model: str) -> float:
        out = io.StringIO()
        argv = ["invoke", "mme", "--body", CSV_RECORD, "--accept", "text/csv", "--target-model", model]
        assert endpoint_cli(argv, local, out) == 0
        return float(out.getvalue())

    def loads() -> tuple[float, float, float]:
        samples = parse_prometheus(httpx.get(f"{local_info['url']}/metrics", timeout=10).text)
        named = {name: value for (name, _), value in samples.items()}
        return (
            named["serve_model_loads_total"],
            named["serve_model_evictions_total"],
            named["serve_models_loaded"],
        )

    for name in ("v1", "v2", "v1", "v3"):  # v1 used again, so v2 is the least recently used
        assert math.isclose(call(f"{name}.tar.gz"), artefacts[name].score, rel_tol=1e-6)
    assert loads() == (3, 1, 2)
    call("v1.tar.gz")  # still cached
    assert loads() == (3, 1, 2)
    call("v2.tar.gz")  # evicted earlier: loaded again, evicting v3
    assert loads() == (4, 2, 2)
    # Without a target model the multi-model endpoint refuses the request (one line, exit 1).
    assert endpoint_cli(["invoke", "mme", "--body", CSV_RECORD], local, io.StringIO()) == 1
    empty = ["create-multi-model", "x", "--model-prefix", "s3://bucket/none/", *DEV]
    assert endpoint_cli(empty, local, io.StringIO()) == 2


def test_production_endpoints_need_two_instances_and_bad_input_exits_2(
    local: Target, artefacts: dict[str, Artefact], capsys: pytest.CaptureFixture[str]
) -> None:
    register(local.sagemaker, artefacts["v1"])
    argv = ["deploy", "ep", "--group", GROUP, "--instance-count", "1"]
    assert endpoint_cli(argv, local, io.StringIO()) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "instance_count must be >= 2 when production is true" in error
    assert local.sagemaker.list_models()["Models"] == []  # refused before anything was created
    assert endpoint_cli(["deploy", "ep", "--group", GROUP, "--version", "7"], local, io.StringIO()) == 2
    assert endpoint_cli(["invoke", "ep", "--body", "@/no/such/file"], local, io.StringIO()) == 2
    assert endpoint_cli(["describe", "ep"], local, io.StringIO()) == 1  # the target says: no such endpoint
    assert autoscaling.main(["apply", "ep"], local, io.StringIO()) == 2  # an AWS-only feature


@pytest.mark.parametrize(
    "cli",
    [
        (endpoint_mod.main, ["--target", "sagemaker", "list"]),
        (registry.main, ["--target", "sagemaker", "champion"]),
        (abtest.main, ["promote", "ep", "A", "--target", "sagemaker"]),
        (autoscaling.main, ["show", "ep", "--target", "sagemaker"]),
    ],
    ids=["endpoint", "registry", "abtest", "autoscaling"],
)
def test_without_aws_credentials_sagemaker_is_one_line_and_exit_3(
    cli: tuple, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    main, argv = cli
    assert main(argv) == 3
    captured = capsys.readouterr()
    assert captured.err.startswith("error: no AWS credentials found") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err + captured.out


def test_stop_all_is_local_only(local: Target) -> None:
    assert endpoint_cli(["stop", "--all"], local, io.StringIO()) == 0
    sagemaker_like = Target("sagemaker", local.sagemaker)
    assert endpoint_cli(["stop", "--all"], sagemaker_like, io.StringIO()) == 2


def test_a_failed_local_deploy_removes_what_it_created_and_keeps_what_served(
    local: Target, artefacts: dict[str, Artefact], capsys: pytest.CaptureFixture[str]
) -> None:
    client = local.sagemaker
    register(client, artefacts["broken"])
    register(client, artefacts["v1"])
    deploy = ["deploy", "ep", "--group", GROUP, *DEV]
    # A new endpoint whose server never becomes healthy: it ends Failed and goes, with its model and config.
    assert endpoint_cli([*deploy, "--version", "1"], local, io.StringIO()) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: endpoint ep is Failed: ")
    assert "removed what this deploy created: the failed endpoint ep, endpoint config ep-" in error
    assert client.list_endpoints()["Endpoints"] == []
    assert client.list_endpoint_configs()["EndpointConfigs"] == []
    assert client.list_models()["Models"] == []

    # A good deploy, then an update to the broken version: the old generation keeps serving, the update's
    # model and config are removed, the serving ones stay.
    assert endpoint_cli([*deploy, "--version", "2"], local, io.StringIO()) == 0
    serving_config = client.describe_endpoint(EndpointName="ep")["EndpointConfigName"]
    serving_models = [m["ModelName"] for m in client.list_models()["Models"]]
    assert endpoint_cli([*deploy, "--version", "1"], local, io.StringIO()) == 1
    error = capsys.readouterr().err
    assert f"keeps serving {serving_config}" in error and "removed what this deploy created" in error
    assert [c["EndpointConfigName"] for c in client.list_endpoint_configs()["EndpointConfigs"]] == [
        serving_config
    ]
    assert [m["ModelName"] for m in client.list_models()["Models"]] == serving_models
    assert math.isclose(score(local, "ep")[0], artefacts["v1"].score, rel_tol=1e-6)
