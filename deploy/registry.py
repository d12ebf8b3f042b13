"""`python -m deploy.registry`: approve, reject and roll back versions, keeping gate and endpoint in step."""

# The champion is the latest Approved version of the group, found with exactly the query the pipeline's gate
# uses (pipelines/run.py); a rollback or a rejection of the deployed version changes which version that is,
# and redeploys it, so the gate and the endpoint agree.

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import Any, TextIO

from botocore.exceptions import ClientError

from deploy.clients import (
    Target,
    UsageError,
    cli_parser,
    is_not_found,
    paginate,
    run_cli,
    target_from_args,
)

APPROVED, REJECTED, PENDING = "Approved", "Rejected", "PendingManualApproval"
MAX_DESCRIPTION = 1024  # ApprovalDescription's limit in the SageMaker API


def champion(client: Any, group: str) -> dict[str, Any] | None:
    """DescribeModelPackage of the latest Approved version of `group`, or None (no group, none approved).

    The same ListModelPackages request as pipelines/run.py's gate, so both always name the same version.
    """
    try:
        page = client.list_model_packages(
            ModelPackageGroupName=group,
            ModelApprovalStatus=APPROVED,
            SortBy="CreationTime",
            SortOrder="Descending",
            MaxResults=1,
        )
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise
    summaries = page.get("ModelPackageSummaryList", [])
    if not summaries:
        return None
    return _describe(client, summaries[0]["ModelPackageArn"])


def versions(client: Any, group: str) -> list[dict[str, Any]]:
    """Every version's summary, oldest first (ModelPackageVersion, else the ARN's last segment)."""
    try:
        items = list(
            paginate(
                client.list_model_packages,
                "ModelPackageSummaryList",
                ModelPackageGroupName=group,
                SortBy="CreationTime",
                SortOrder="Ascending",
            )
        )
    except ClientError as exc:
        if is_not_found(exc):
            raise UsageError(f"model package group {group} does not exist") from None
        raise
    for item in items:
        item.setdefault("ModelPackageVersion", int(item["ModelPackageArn"].rsplit("/", 1)[-1]))
    return sorted(items, key=lambda item: item["ModelPackageVersion"])


def resolve(client: Any, group: str, ref: str | int | None) -> dict[str, Any]:
    """A version of the group by number, a package by ARN, `latest` (the newest version, whatever its
    status: what a manual approval in CodePipeline approves), or (ref None) the champion."""
    if str(ref) == "latest":
        every = versions(client, group)
        if not every:
            raise UsageError(f"group {group} has no versions")
        return _describe(client, every[-1]["ModelPackageArn"])
    if ref is None:
        found = champion(client, group)
        if found is None:
            raise UsageError(f"group {group} has no Approved version; name one with --version")
        return found
    text = str(ref)
    if text.startswith("arn:"):
        return _describe(client, text)
    if not text.isdigit():
        raise UsageError(f"{text!r} is neither a version number, `latest`, nor a model package ARN")
    for item in versions(client, group):
        if item["ModelPackageVersion"] == int(text):
            return _describe(client, item["ModelPackageArn"])
    raise UsageError(f"group {group} has no version {text}")


def data_urls(client: Any, group: str) -> dict[str, str]:
    """ModelDataUrl -> package ARN of every version (to recognise models created from artefacts)."""
    out: dict[str, str] = {}
    for item in versions(client, group):
        package = _describe(client, item["ModelPackageArn"])
        for container in package.get("InferenceSpecification", {}).get("Containers", []):
            if url := container.get("ModelDataUrl"):
                out.setdefault(url, package["ModelPackageArn"])
    return out


def _describe(client: Any, arn: str) -> dict[str, Any]:
    described = client.describe_model_package(ModelPackageName=arn)
    return {k: v for k, v in described.items() if k != "ResponseMetadata"}


def current_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in a bare container
        return "unknown"


def note(action: str, by: str, reason: str) -> str:
    """The ApprovalDescription recorded with each change: what, who, when (UTC) and why."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"{action} by {by} at {stamp}: {reason}"[:MAX_DESCRIPTION]


def set_approval(client: Any, package: dict[str, Any], status: str, description: str) -> None:
    client.update_model_package(
        ModelPackageArn=package["ModelPackageArn"],
        ModelApprovalStatus=status,
        ApprovalDescription=description,
    )


def _check_reason(by: str, reason: str) -> None:
    if not reason.strip():
        raise UsageError("--reason must say why (it is recorded with the version)")
    if not by.strip():
        raise UsageError("--by must name who makes the change")


def approve(
    target: Target,
    group: str,
    ref: str | None,
    by: str,
    reason: str,
    deploy_to: str | None = None,
    settings: Any = None,
    out: TextIO = sys.stdout,
) -> dict[str, Any]:
    """Approve a version (it becomes the champion if it is the newest approved); optionally deploy it."""
    _check_reason(by, reason)
    package = resolve(target.sagemaker, group, ref)
    set_approval(target.sagemaker, package, APPROVED, note("approved", by, reason))
    print(f"approved {group} version {package.get('ModelPackageVersion')} ({by}: {reason})", file=out)
    if deploy_to:
        from deploy.endpoint import SINGLE_VARIANT, VariantSpec, deploy, load_settings

        spec = VariantSpec(SINGLE_VARIANT, package["ModelPackageArn"], 1.0)
        deploy(target, deploy_to, [spec], settings or load_settings(None), out=out)
    return package


def reject(
    target: Target,
    group: str,
    ref: str,
    by: str,
    reason: str,
    endpoint: str | None = None,
    settings: Any = None,
    redeploy: bool = True,
    out: TextIO = sys.stdout,
) -> dict[str, Any]:
    """Reject a version; if `endpoint` serves it, first redeploy the champion that remains (a rollback)."""
    _check_reason(by, reason)
    package = resolve(target.sagemaker, group, ref)
    _retire(target, group, package, by, reason, endpoint if redeploy else None, settings, out, "rejected")
    return package


def rollback(
    target: Target,
    group: str,
    by: str,
    reason: str,
    endpoint: str | None = None,
    settings: Any = None,
    out: TextIO = sys.stdout,
) -> dict[str, Any]:
    """Reject the champion, re-approve the previous Approved version and redeploy it to `endpoint`.

    Returns:
        DescribeModelPackage of the version now serving (the new champion).
    """
    _check_reason(by, reason)
    current = champion(target.sagemaker, group)
    if current is None:
        raise UsageError(f"group {group} has no Approved version: nothing to roll back")
    fallback = _retire(target, group, current, by, reason, endpoint, settings, out, "rolled back", force=True)
    assert fallback is not None  # _retire refuses a rollback without one
    return fallback


def _retire(
    target: Target,
    group: str,
    bad: dict[str, Any],
    by: str,
    reason: str,
    endpoint: str | None,
    settings: Any,
    out: TextIO,
    action: str,
    force: bool = False,
) -> dict[str, Any] | None:
    """Take `bad` out of service: redeploy where it serves, then record the registry change.

    The endpoint moves first: if its update fails (health check, alarm), nothing in the registry changed
    and the error says so. `force` (rollback) needs a fallback and redeploys a single-variant endpoint even
    when it does not serve `bad` (the endpoint then serves the new champion).
    """
    from deploy.endpoint import deployed_packages, find_endpoint, load_settings, replace_models

    client = target.sagemaker
    bad_arn = bad["ModelPackageArn"]
    version = bad.get("ModelPackageVersion", bad_arn.rsplit("/", 1)[-1])
    approved = [
        item
        for item in versions(client, group)
        if item.get("ModelApprovalStatus") == APPROVED and item["ModelPackageArn"].lower() != bad_arn.lower()
    ]
    fallback = _describe(client, approved[-1]["ModelPackageArn"]) if approved else None
    if force and fallback is None:
        raise UsageError(
            f"version {version} is the only Approved version of {group}: nothing to roll back to"
        )
    serving: list[str] = []
    if endpoint and find_endpoint(client, endpoint) is not None:
        deployed = deployed_packages(target, endpoint, group)
        serving = [v for v, arn in deployed.items() if arn and arn.lower() == bad_arn.lower()]
        if force and not serving and len(deployed) == 1:
            serving = list(deployed)
    elif endpoint and force:
        print(f"endpoint {endpoint} does not exist: only the registry changes", file=out)
    if serving:
        if fallback is None:
            raise UsageError(
                f"version {version} is deployed on {endpoint} and no other version of {group} is Approved "
                "to roll back to: approve one first, or reject with --no-redeploy"
            )
        target_version = fallback.get("ModelPackageVersion")
        print(f"redeploying {endpoint} ({', '.join(serving)}) with version {target_version}", file=out)
        replace_models(
            target,
            endpoint,
            dict.fromkeys(serving, fallback["ModelPackageArn"]),
            settings or load_settings(None),
            out=out,
        )
    suffix = f" (now serving version {fallback.get('ModelPackageVersion')})" if serving and fallback else ""
    set_approval(client, bad, REJECTED, note(action, by, reason + suffix))
    print(f"{action} {group} version {version} ({by}: {reason})", file=out)
    if fallback is not None and (serving or force):
        set_approval(
            client, fallback, APPROVED, note("re-approved", by, f"{action} version {version}: {reason}")
        )
        print(f"re-approved {group} version {fallback.get('ModelPackageVersion')}", file=out)
    return fallback


# --- CLI ---------------------------------------------------------------------------------------------
def list_versions(client: Any, group: str, status: str | None, limit: int, out: TextIO) -> int:
    items = versions(client, group)
    best = champion(client, group)
    best_arn = best["ModelPackageArn"] if best else None
    if status:
        items = [i for i in items if i.get("ModelApprovalStatus") == status]
    if not items:
        print(f"no versions in {group}" + (f" with status {status}" if status else ""), file=out)
        return 0
    print(f"{'':1} {'version':>7}  {'status':<22} {'created':<19}  note", file=out)
    for item in items[-limit:]:
        described = _describe(client, item["ModelPackageArn"])
        mark = "*" if item["ModelPackageArn"] == best_arn else ""
        created = f"{item['CreationTime']:%Y-%m-%d %H:%M:%S}"
        text = described.get("ApprovalDescription") or described.get("ModelPackageDescription", "")
        status_text = item.get("ModelApprovalStatus", "")
        print(f"{mark:1} {item['ModelPackageVersion']:>7}  {status_text:<22} {created:<19}  {text}", file=out)
    print("* champion (latest Approved: what the pipeline's gate compares against)", file=out)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser, sub, common = cli_parser("python -m deploy.registry", __doc__)
    listing = sub.add_parser("list", parents=[common], help="versions with status and last approval note")
    listing.add_argument("--status", choices=[APPROVED, REJECTED, PENDING])
    listing.add_argument("--max", type=int, default=20, help="newest N versions (default 20)")
    sub.add_parser("describe", parents=[common], help="DescribeModelPackage").add_argument(
        "version", help="version number or ARN"
    )
    sub.add_parser("champion", parents=[common], help="the latest Approved version")

    def change(name: str, text: str, with_version: bool = True) -> argparse.ArgumentParser:
        command = sub.add_parser(name, parents=[common], help=text)
        if with_version:
            command.add_argument("version", help="version number or ARN")
        command.add_argument("--reason", required=True, help="why (recorded as the approval description)")
        command.add_argument("--by", default=None, help="who (default: your login name)")
        command.add_argument("--endpoint", help="endpoint to redeploy (default endpoint_name, pdm-mlops-dev)")
        return command

    approve_cmd = change("approve", "approve a version")
    approve_cmd.add_argument("--deploy", action="store_true", help="also deploy it to --endpoint")
    reject_cmd = change("reject", "reject a version; if it is deployed, roll the endpoint back")
    reject_cmd.add_argument("--no-redeploy", action="store_true", help="leave the endpoint as it is")
    change("rollback", "reject the champion, re-approve the previous version and redeploy it", False)
    return parser


def main(argv: list[str] | None = None, target: Target | None = None, out: TextIO = sys.stdout) -> int:
    """Entry point; tests pass a `target` (local client or stubbed boto3 clients)."""
    args = _parser().parse_args(argv)
    return run_cli(lambda: _run(args, target or target_from_args(args), out))


def _run(args: argparse.Namespace, target: Target, out: TextIO) -> int:
    from deploy.endpoint import load_settings

    settings = load_settings(args.settings, {"model_package_group": args.group})
    group = settings.model_package_group
    client = target.sagemaker
    if args.command == "list":
        return list_versions(client, group, args.status, args.max, out)
    if args.command == "describe":
        print(json.dumps(resolve(client, group, args.version), indent=2, default=str), file=out)
        return 0
    if args.command == "champion":
        best = champion(client, group)
        if best is None:
            print(f"no Approved version in {group}", file=out)
            return 0
        print(f"{group} version {best.get('ModelPackageVersion')}: {best['ModelPackageArn']}", file=out)
        return 0
    by = args.by or current_user()
    endpoint = args.endpoint or settings.endpoint_name
    if args.command == "approve":
        approve(
            target, group, args.version, by, args.reason, endpoint if args.deploy else None, settings, out
        )
    elif args.command == "reject":
        reject(target, group, args.version, by, args.reason, endpoint, settings, not args.no_redeploy, out)
    else:
        rollback(target, group, by, args.reason, endpoint, settings, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
