"""Registry on the local engine: the champion, approvals with who/why, rollback and rejection redeploying."""

from __future__ import annotations

import io
import math

import pytest

from deploy import registry
from deploy.clients import Target
from deploy.endpoint import SINGLE_VARIANT, VariantSpec, deploy
from deploy.endpoint import main_with_target as endpoint_cli
from pipelines.run import champion_model_uri
from tests.deploy.conftest import GROUP, Artefact, dev_settings, register, score, serving


def statuses(client: object) -> dict[int, str]:
    return {v["ModelPackageVersion"]: v["ModelApprovalStatus"] for v in registry.versions(client, GROUP)}


def data_url(client: object, arn: str) -> str:
    return client.describe_model_package(ModelPackageName=arn)["InferenceSpecification"]["Containers"][0][
        "ModelDataUrl"
    ]


def test_champion_is_the_latest_approved_version_exactly_as_the_pipeline_gate_finds_it(
    local: Target, artefacts: dict[str, Artefact]
) -> None:
    client = local.sagemaker
    assert registry.champion(client, GROUP) is None  # no group yet: no champion, like run.py
    v1 = register(client, artefacts["v1"])
    register(client, artefacts["v2"], status="PendingManualApproval")
    v3 = register(client, artefacts["v3"])
    register(client, artefacts["v1"], status="Rejected")
    best = registry.champion(client, GROUP)
    assert best is not None and best["ModelPackageArn"] == v3
    assert champion_model_uri(client, GROUP) == data_url(client, v3)
    registry.reject(local, GROUP, "3", "qa", "drift", endpoint=None, out=io.StringIO())
    best = registry.champion(client, GROUP)
    assert best is not None and best["ModelPackageArn"] == v1
    assert champion_model_uri(client, GROUP) == data_url(client, v1)


def test_approve_and_reject_record_who_and_why_and_list_shows_them(
    local: Target, artefacts: dict[str, Artefact], capsys: pytest.CaptureFixture[str]
) -> None:
    client = local.sagemaker
    register(client, artefacts["v1"])
    v2 = register(client, artefacts["v2"], status="PendingManualApproval")
    out = io.StringIO()
    cli = ["--group", GROUP]
    assert (
        registry.main([*cli, "approve", "2", "--reason", "beats v1 on recall", "--by", "alice"], local, out)
        == 0
    )
    described = client.describe_model_package(ModelPackageName=v2)
    assert described["ModelApprovalStatus"] == "Approved"
    assert described["ApprovalDescription"].startswith("approved by alice at ")
    assert described["ApprovalDescription"].endswith(": beats v1 on recall")
    # The endpoint named by default does not exist: rejecting only changes the registry.
    assert registry.main([*cli, "reject", "2", "--reason", "leaks a feature", "--by", "bob"], local, out) == 0
    assert statuses(client) == {1: "Approved", 2: "Rejected"}
    assert "rejected by bob" in client.describe_model_package(ModelPackageName=v2)["ApprovalDescription"]
    listing = io.StringIO()
    assert registry.main([*cli, "list"], local, listing) == 0
    lines = listing.getvalue().splitlines()
    assert any(line.startswith("*") and " 1 " in line for line in lines)  # the champion is marked
    assert any("Rejected" in line and "leaks a feature" in line for line in lines)
    # Bad input: one line, exit 2, nothing changed.
    assert registry.main([*cli, "approve", "9", "--reason", "x"], local, out) == 2
    assert registry.main([*cli, "approve", "2", "--reason", "  "], local, out) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: group {GROUP} has no version 9",
        "error: --reason must say why (it is recorded with the version)",
    ]
    assert statuses(client) == {1: "Approved", 2: "Rejected"}
    with pytest.raises(SystemExit) as exited:
        registry.main([*cli, "approve", "2"], local, out)  # --reason is required
    assert exited.value.code == 2


def test_rejecting_the_deployed_version_and_rollback_redeploy_the_previous_version(
    local: Target, artefacts: dict[str, Artefact]
) -> None:
    client = local.sagemaker
    v1, v2, v3 = (register(client, artefacts[name], key=name) for name in ("v1", "v2", "v3"))
    settings = dev_settings()
    deploy(local, "ep", [VariantSpec(SINGLE_VARIANT, v3, 1.0)], settings, out=io.StringIO())
    assert math.isclose(score(local, "ep")[0], artefacts["v3"].score, rel_tol=1e-6)

    # Rejecting the version the endpoint serves rolls it back to the remaining champion first.
    registry.reject(local, GROUP, "3", "carol", "drift", endpoint="ep", settings=settings, out=io.StringIO())
    assert serving(client, "ep") == {SINGLE_VARIANT: data_url(client, v2)}
    assert math.isclose(score(local, "ep")[0], artefacts["v2"].score, rel_tol=1e-6)
    assert statuses(client) == {1: "Approved", 2: "Approved", 3: "Rejected"}
    v2_note = client.describe_model_package(ModelPackageName=v2)["ApprovalDescription"]
    assert v2_note.startswith("re-approved by carol") and "rejected version 3: drift" in v2_note
    assert (
        "now serving version 2" in client.describe_model_package(ModelPackageName=v3)["ApprovalDescription"]
    )

    # Rollback: the champion (v2) is rejected, v1 re-approved and redeployed; the gate's champion is v1.
    out = io.StringIO()
    argv = ["--group", GROUP, "rollback", "--reason", "bad recall", "--by", "dan", "--endpoint", "ep"]
    code = registry.main(argv, local, out)
    assert code == 0, out.getvalue()
    assert serving(client, "ep") == {SINGLE_VARIANT: data_url(client, v1)}
    assert math.isclose(score(local, "ep")[0], artefacts["v1"].score, rel_tol=1e-6)
    assert statuses(client) == {1: "Approved", 2: "Rejected", 3: "Rejected"}
    assert champion_model_uri(client, GROUP) == data_url(client, v1)
    # The model was created from the package, so the endpoint knows which version it serves.
    assert registry.champion(client, GROUP)["ModelPackageArn"] == v1

    # Nothing older is approved: a further rollback is refused and changes nothing.
    before = client.describe_endpoint(EndpointName="ep")["EndpointConfigName"]
    assert (
        registry.main(["--group", GROUP, "rollback", "--reason", "again", "--endpoint", "ep"], local, out)
        == 2
    )
    assert client.describe_endpoint(EndpointName="ep")["EndpointConfigName"] == before
    assert statuses(client) == {1: "Approved", 2: "Rejected", 3: "Rejected"}


def test_a_new_version_failing_its_health_check_leaves_the_old_one_serving_and_the_registry_as_is(
    local: Target, artefacts: dict[str, Artefact], capsys: pytest.CaptureFixture[str]
) -> None:
    client = local.sagemaker
    register(client, artefacts["broken"], key="broken")  # version 1, approved but unloadable
    v2 = register(client, artefacts["v2"], key="v2")
    common = ["--group", GROUP, "--dev", "--instance-count", "1", "--capture-uri", "s3://bucket/capture"]
    assert endpoint_cli(["deploy", "ep", "--version", "2", *common], local, io.StringIO()) == 0
    pid = client.local_endpoint(EndpointName="ep")["pid"]

    # deploy.endpoint: the update to the broken version fails its health check; v2 keeps serving.
    assert endpoint_cli(["deploy", "ep", "--version", "1", *common], local, io.StringIO()) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "did not move to" in error[0] and "Update failed" in error[0]
    assert client.local_endpoint(EndpointName="ep")["pid"] == pid
    assert serving(client, "ep") == {SINGLE_VARIANT: data_url(client, v2)}
    assert math.isclose(score(local, "ep")[0], artefacts["v2"].score, rel_tol=1e-6)

    # A rollback onto it fails the same way, before the registry is touched.
    out = io.StringIO()
    code = registry.main(["--group", GROUP, "rollback", "--reason", "r", "--endpoint", "ep"], local, out)
    assert code == 1
    assert statuses(client) == {1: "Approved", 2: "Approved"}
    assert registry.champion(client, GROUP)["ModelPackageArn"] == v2
    assert math.isclose(score(local, "ep")[0], artefacts["v2"].score, rel_tol=1e-6)
