"""Security requirements of the templates: least-privilege IAM, KMS, private TLS-only buckets, VPC."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.infra.cfn_helpers import (
    IAM_POLICY_TYPES,
    as_list,
    branches,
    policy_documents,
    props,
    resources,
    statements,
    stringify,
)

REQUIRED_INTERFACE_ENDPOINTS = {"sagemaker.api", "sagemaker.runtime", "sts", "logs", "ecr.api", "ecr.dkr"}


def _all_statements(templates: dict[str, dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (name, logical_id, statement)
        for name, template in templates.items()
        for logical_id, document in policy_documents(template)
        for statement in statements(document)
    ]


def test_there_are_iam_roles_per_component(templates: dict[str, dict[str, Any]]) -> None:
    roles = {(name, lid) for name, t in templates.items() for lid in resources(t, "AWS::IAM::Role")}
    # One role per component, not one shared admin role.
    assert len(roles) >= 15
    for name, logical_id in roles:
        trust = props(templates[name], logical_id)["AssumeRolePolicyDocument"]["Statement"]
        principals = [p for s in trust for p in as_list(s["Principal"].get("Service", []))]
        assert len(principals) == 1, f"{name}/{logical_id} is assumable by {principals}"


def test_no_identity_policy_allows_a_wildcard_action(templates: dict[str, dict[str, Any]]) -> None:
    statements_seen = _all_statements(templates)
    assert len(statements_seen) > 60
    for name, logical_id, statement in statements_seen:
        for action in as_list(statement["Action"]):
            assert "*" not in action, f"{name}/{logical_id}: wildcard action {action}"


def test_no_identity_policy_allows_star_on_star(templates: dict[str, dict[str, Any]]) -> None:
    for name, logical_id, statement in _all_statements(templates):
        actions = as_list(statement["Action"])
        resources_ = [stringify(r) for r in as_list(statement.get("Resource", []))]
        assert not ("*" in actions and "*" in resources_), f"{name}/{logical_id}"
        assert statement["Effect"] == "Allow"


def _statement_blocks(text: str) -> list[tuple[list[str], list[str]]]:
    """(comments right above, lines) of each statement of IAM role and policy documents, from raw YAML."""
    blocks: list[tuple[list[str], list[str]]] = []
    resource_type = ""
    statements_indent: int | None = None  # indent of the "Statement:" key being read, if any
    item_indent: int | None = None
    comments: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if statements_indent is not None and stripped and indent <= statements_indent:
            statements_indent = None
        if statements_indent is None:
            type_match = re.match(r"^    Type: (\S+)", line)
            resource_type = type_match.group(1) if type_match else resource_type
            key = re.match(r"^(\s*)Statement:\s*$", line)
            if key and resource_type in IAM_POLICY_TYPES:
                statements_indent, item_indent, comments = len(key.group(1)), None, []
            continue
        if not stripped:
            continue
        if stripped.startswith(("- ", "#")) and item_indent in (None, indent):
            if stripped.startswith("#"):
                comments.append(stripped)
                continue
            item_indent = indent
            blocks.append((comments, [line]))
            comments = []
        elif blocks:
            blocks[-1][1].append(line)
    return blocks


def _wildcard_statements(text: str) -> tuple[int, list[str]]:
    """(number of statements with a wildcard resource, those among them without a comment saying why)."""
    found, unjustified = 0, []
    for comments, block in _statement_blocks(text):
        body = "\n".join(block)
        # Only the Resource part; Sub variables like ${AWS::Region} are not wildcards.
        resource_part = body.split("Resource:", 1)[1] if "Resource:" in body else ""
        resource_part = re.split(r"\n\s*Condition:", resource_part)[0]
        if "*" not in re.sub(r"\$\{[^}]*\}", "", resource_part):
            continue
        found += 1
        if not comments and not any(line.strip().startswith("#") for line in block):
            unjustified.append(body)
    return found, unjustified


def test_every_wildcard_resource_is_justified_in_a_comment(template_texts: dict[str, str]) -> None:
    total = 0
    for name, text in template_texts.items():
        found, unjustified = _wildcard_statements(text)
        total += found
        assert unjustified == [], f"{name}: wildcard resources without a comment saying why"
    # The parser found the statements it is meant to check (a parser bug must not pass silently).
    assert total >= 25


def test_the_wildcard_check_catches_an_unexplained_wildcard() -> None:
    text = """Resources:
  Role:
    Type: AWS::IAM::Role
    Properties:
      Policies:
        - PolicyName: p
          PolicyDocument:
            Statement:
              # Streams get generated names.
              - Effect: Allow
                Action: logs:PutLogEvents
                Resource: "arn:aws:logs:eu-west-1:123456789012:log-group:g:log-stream:*"
              - Effect: Allow
                Action: s3:GetObject
                Resource: "arn:aws:s3:::bucket/*"
              - Effect: Allow
                Action: s3:ListBucket
                Resource: "arn:aws:s3:::bucket"
"""
    found, unjustified = _wildcard_statements(text)
    assert found == 2
    assert len(unjustified) == 1 and "s3:GetObject" in unjustified[0]


def test_kms_keys_rotate_and_cover_every_data_class(templates: dict[str, dict[str, Any]]) -> None:
    keys = resources(templates["keys"], "AWS::KMS::Key")
    assert set(keys) == {"DataKey", "ModelKey", "LogsKey", "EndpointKey"}
    every_key = [(n, k, r) for n, t in templates.items() for k, r in resources(t, "AWS::KMS::Key").items()]
    assert len(every_key) == 5  # + the replica key of the secondary region
    for name, logical_id, key in every_key:
        assert key["Properties"]["EnableKeyRotation"] is True, f"{name}/{logical_id}"
        assert key["DeletionPolicy"] == "Retain"
    exports = {o["Export"]["Name"]["Fn::Sub"] for o in templates["keys"]["Outputs"].values()}
    assert exports == {
        "${ProjectName}-${Environment}-data-key-arn",
        "${ProjectName}-${Environment}-model-key-arn",
        "${ProjectName}-${Environment}-logs-key-arn",
        "${ProjectName}-${Environment}-endpoint-key-arn",
    }


def _bucket_policies(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        p["Properties"]["Bucket"]["Ref"]: p["Properties"]["PolicyDocument"]
        for p in resources(template, "AWS::S3::BucketPolicy").values()
    }


def _all_buckets(templates: dict[str, dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (n, k, r["Properties"])
        for n, t in templates.items()
        for k, r in resources(t, "AWS::S3::Bucket").items()
    ]


def test_every_bucket_is_sse_kms_versioned_and_private(templates: dict[str, dict[str, Any]]) -> None:
    buckets = _all_buckets(templates)
    assert len(buckets) == 5
    for name, logical_id, bucket in buckets:
        rule = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms", f"{name}/{logical_id}"
        assert rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"], f"{name}/{logical_id}"
        assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
        assert all(
            bucket["PublicAccessBlockConfiguration"][k] is True
            for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
        )
        assert bucket["OwnershipControls"]["Rules"][0]["ObjectOwnership"] == "BucketOwnerEnforced"


def test_every_bucket_has_a_tls_only_policy(templates: dict[str, dict[str, Any]]) -> None:
    for name, template in templates.items():
        policies = _bucket_policies(template)
        for logical_id in resources(template, "AWS::S3::Bucket"):
            assert logical_id in policies, f"{name}/{logical_id} has no bucket policy"
            denies = [
                s
                for s in policies[logical_id]["Statement"]
                if s["Effect"] == "Deny"
                and s["Principal"] == "*"
                and s["Condition"].get("Bool", {}).get("aws:SecureTransport") == "false"
            ]
            assert denies, f"{name}/{logical_id}: no Deny on aws:SecureTransport=false"
            covered = [stringify(r) for r in as_list(denies[0]["Resource"])]
            assert f"{logical_id}.Arn" in covered and f"${{{logical_id}.Arn}}/*" in covered
            assert denies[0]["Action"] in ("s3:*", ["s3:*"])


def test_buckets_tier_old_objects_and_abort_incomplete_uploads(templates: dict[str, dict[str, Any]]) -> None:
    for name, logical_id, bucket in _all_buckets(templates):
        rules = bucket["LifecycleConfiguration"]["Rules"]
        assert any("AbortIncompleteMultipartUpload" in r for r in rules), f"{name}/{logical_id}"
        classes = [t["StorageClass"] for r in rules for t in r.get("Transitions", [])]
        assert "GLACIER" in classes, f"{name}/{logical_id}"
    for logical_id in ("DataBucket", "ArtifactsBucket"):
        rules = props(templates["storage"], logical_id)["LifecycleConfiguration"]["Rules"]
        transitions = [t["StorageClass"] for r in rules for t in r.get("Transitions", [])]
        # Intelligent-Tiering first, Glacier for what is old.
        assert transitions[:2] == ["INTELLIGENT_TIERING", "GLACIER"]


def test_primary_buckets_replicate_to_the_replica_stack_with_the_replica_key(
    templates: dict[str, dict[str, Any]],
) -> None:
    storage, replica = templates["storage"], templates["replica"]
    replica_names = {
        props(replica, lid)["BucketName"]["Fn::Sub"].replace("${AWS::Region}", "${SecondaryRegion}")
        for lid in resources(replica, "AWS::S3::Bucket")
    }
    alias = props(replica, "ReplicaKeyAlias")["AliasName"]["Fn::Sub"]
    for logical_id in ("DataBucket", "ArtifactsBucket"):
        configuration = props(storage, logical_id)["ReplicationConfiguration"]
        assert configuration["Fn::If"][0] == "Replicate"
        (rule,) = configuration["Fn::If"][1]["Rules"]
        assert rule["SourceSelectionCriteria"]["SseKmsEncryptedObjects"]["Status"] == "Enabled"
        destination = rule["Destination"]
        bucket_arn = destination["Bucket"]["Fn::Sub"]
        assert bucket_arn.removeprefix("arn:${AWS::Partition}:s3:::") in replica_names
        assert destination["EncryptionConfiguration"]["ReplicaKmsKeyID"]["Fn::Sub"].endswith(alias)
    assert props(storage, "DataBucket")["ReplicationConfiguration"]["Fn::If"][1]["Rules"][0]["Filter"] == {
        "Prefix": {"Ref": "DataPrefix"}
    }


def test_network_is_private_in_two_or_more_azs_with_privatelink(templates: dict[str, dict[str, Any]]) -> None:
    network = templates["network"]
    for forbidden in (
        "AWS::EC2::InternetGateway",
        "AWS::EC2::NatGateway",
        "AWS::EC2::EIP",
        "AWS::EC2::Route",
    ):
        assert not resources(network, forbidden), forbidden
    subnets = resources(network, "AWS::EC2::Subnet")
    unconditional = {k: s for k, s in subnets.items() if "Condition" not in s}
    assert len(unconditional) >= 2
    azs = {s["Properties"]["AvailabilityZone"]["Fn::Select"][0] for s in subnets.values()}
    assert azs == {0, 1, 2}
    assert all(s["Properties"]["MapPublicIpOnLaunch"] is False for s in subnets.values())
    endpoints = resources(network, "AWS::EC2::VPCEndpoint").values()
    interface = {
        e["Properties"]["ServiceName"]["Fn::Sub"].split("${AWS::Region}.")[1]
        for e in endpoints
        if e["Properties"]["VpcEndpointType"] == "Interface" and e["Properties"]["PrivateDnsEnabled"] is True
    }
    assert interface >= REQUIRED_INTERFACE_ENDPOINTS
    gateways = [e["Properties"] for e in endpoints if e["Properties"]["VpcEndpointType"] == "Gateway"]
    assert [g["ServiceName"]["Fn::Sub"] for g in gateways] == ["com.amazonaws.${AWS::Region}.s3"]
    assert gateways[0]["RouteTableIds"] == [{"Ref": "PrivateRouteTable"}]
    assert resources(network, "AWS::EC2::FlowLog")


def test_sagemaker_jobs_are_forced_into_the_vpc(templates: dict[str, dict[str, Any]]) -> None:
    role = props(templates["cicd"], "SageMakerExecutionRole")
    (create,) = [
        s
        for p in role["Policies"]
        for s in p["PolicyDocument"]["Statement"]
        if s["Sid"] == "CreateJobsInVpcOnly"
    ]
    assert {"sagemaker:CreateTrainingJob", "sagemaker:CreateProcessingJob"} <= set(create["Action"])
    assert create["Condition"] == {"Null": {"sagemaker:VpcSubnets": "false"}}
    env = {v["Name"] for v in props(templates["cicd"], "TrainProject")["Environment"]["EnvironmentVariables"]}
    assert {
        "PDM_SECURITY__SUBNETS",
        "PDM_SECURITY__SECURITY_GROUP_IDS",
        "PDM_SECURITY__KMS_KEY_ID",
        "PDM_SECURITY__VOLUME_KMS_KEY_ID",
    } <= env


def test_endpoint_is_in_the_vpc_isolated_and_encrypted(templates: dict[str, dict[str, Any]]) -> None:
    serving = templates["serving"]
    model = props(serving, "Model")
    assert model["EnableNetworkIsolation"] is True
    assert set(model["VpcConfig"]) == {"Subnets", "SecurityGroupIds"}
    config = props(serving, "EndpointConfig")
    assert config["KmsKeyId"] == {
        "Fn::ImportValue": {"Fn::Sub": "${ProjectName}-${Environment}-endpoint-key-arn"}
    }
    assert config["DataCaptureConfig"]["KmsKeyId"]
    rollback = props(serving, "Endpoint")["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]
    assert [a["AlarmName"]["Ref"] for a in rollback] == ["Endpoint5xxAlarm", "EndpointLatencyAlarm"]


def test_lambdas_run_in_the_vpc_with_encrypted_environment(templates: dict[str, dict[str, Any]]) -> None:
    functions = [
        (n, k, r["Properties"])
        for n, t in templates.items()
        for k, r in resources(t, "AWS::Lambda::Function").items()
    ]
    assert functions
    for name, logical_id, function in functions:
        assert set(function["VpcConfig"]) == {"SubnetIds", "SecurityGroupIds"}, f"{name}/{logical_id}"
        assert function["KmsKeyArn"]
        assert function["ReservedConcurrentExecutions"]
        assert function["TracingConfig"] == {"Mode": "Active"}


def test_log_groups_are_encrypted_and_expire(templates: dict[str, dict[str, Any]]) -> None:
    groups = [
        (n, k, r["Properties"])
        for n, t in templates.items()
        for k, r in resources(t, "AWS::Logs::LogGroup").items()
    ]
    assert len(groups) >= 8
    for name, logical_id, group in groups:
        assert group["KmsKeyId"], f"{name}/{logical_id}"
        assert group["RetentionInDays"], f"{name}/{logical_id}"


@pytest.mark.parametrize(
    ("template", "logical_id", "key"),
    [
        ("alerts", "AlertsTopic", "KmsMasterKeyId"),
        ("alerts", "ApprovalsTopic", "KmsMasterKeyId"),
        ("streaming", "MaintenanceTopic", "KmsMasterKeyId"),
        ("streaming", "MaintenanceQueue", "KmsMasterKeyId"),
        ("streaming", "MaintenanceDeadLetterQueue", "KmsMasterKeyId"),
        ("storage", "SharedFileSystem", "KmsKeyId"),
        ("batch", "JobRepository", "EncryptionConfiguration"),
    ],
)
def test_messaging_and_file_storage_use_customer_keys(
    templates: dict[str, dict[str, Any]], template: str, logical_id: str, key: str
) -> None:
    assert props(templates[template], logical_id)[key]


def test_conditional_statements_are_unwrapped_by_the_helpers() -> None:
    # The helpers above must see both branches of an Fn::If statement, or a bad branch could hide.
    node = {"Fn::If": ["C", {"Effect": "Allow"}, {"Ref": "AWS::NoValue"}]}
    assert branches(node) == [{"Effect": "Allow"}]


def test_log_stream_arns_are_not_built_from_the_group_arn(template_texts: dict[str, str]) -> None:
    # A log group's GetAtt Arn ends in ":*", so "${Group.Arn}:log-stream:*" would match no stream at all.
    for name, text in template_texts.items():
        assert not re.search(r"\.Arn\}:log-stream", text), name
