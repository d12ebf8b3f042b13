"""`python -m deploy.endpoint list|describe NAME|stop NAME`: endpoints on the local engine or on SageMaker.

The same SageMaker API calls (list_endpoints, describe_endpoint, delete_endpoint) work on boto3's client
and on the local engine's `LocalSageMaker`, so this tool never branches on the target for its work.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError


def make_client(target: str, root: Path, region: str) -> Any:
    """The SageMaker client of the target: the local engine's or boto3's."""
    if target == "local":
        from pipelines.local.client import LocalSageMaker

        return LocalSageMaker(root=root, region=region)
    import boto3

    return boto3.client("sagemaker", region_name=region)


def list_endpoints(client: Any, out: TextIO) -> int:
    rows = []
    kwargs: dict[str, Any] = {}
    while True:
        page = client.list_endpoints(**kwargs)
        rows.extend(page["Endpoints"])
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    if not rows:
        print("no endpoints", file=out)
        return 0
    for row in rows:
        when = f"{row['LastModifiedTime']:%Y-%m-%d %H:%M:%S}"
        line = f"{row['EndpointName']:<40} {row['EndpointStatus']:<12} {when}"
        print(line + _local_url(client, row["EndpointName"]), file=out)
    return 0


def _local_url(client: Any, name: str) -> str:
    """Where a local endpoint listens (the local client's extension; SageMaker endpoints have no URL here)."""
    local = getattr(client, "local_endpoint", None)
    if local is None:
        return ""
    url = local(EndpointName=name).get("url")
    return f" {url}" if url else ""


def describe(client: Any, name: str, out: TextIO) -> int:
    response = {
        k: v for k, v in client.describe_endpoint(EndpointName=name).items() if k != "ResponseMetadata"
    }
    if hasattr(client, "local_endpoint"):
        local = client.local_endpoint(EndpointName=name)
        response["Local"] = {k: local[k] for k in ("url", "pid", "port", "generation") if k in local}
    print(json.dumps(response, indent=2, default=str), file=out)
    return 0


def stop(client: Any, name: str, out: TextIO) -> int:
    client.delete_endpoint(EndpointName=name)
    print(f"deleted endpoint {name}", file=out)
    return 0


def main(argv: list[str] | None = None, client: Any = None, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.endpoint", description=__doc__)
    parser.add_argument("--target", choices=["local", "sagemaker"], default="local")
    parser.add_argument("--root", type=Path, default=Path(".mlops"), help="local engine folder")
    parser.add_argument("--region", default="us-east-1")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="endpoints with status (and URL when local)")
    for command, text in (("describe", "DescribeEndpoint of one endpoint"), ("stop", "delete the endpoint")):
        sub.add_parser(command, help=text).add_argument("name")
    args = parser.parse_args(argv)
    try:
        client = client or make_client(args.target, args.root, args.region)
        if args.command == "list":
            return list_endpoints(client, out)
        if args.command == "describe":
            return describe(client, args.name, out)
        return stop(client, args.name, out)
    except ClientError as exc:
        print(f"error: {exc.response['Error']['Code']}: {exc.response['Error']['Message']}", file=sys.stderr)
        return 1
    except BotoCoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
