"""Stream analytics (analytics.yaml): Glue table over what Firehose lands, Athena workgroup, named queries.

The table's location and columns are checked against their sources (the streaming stack's Firehose and
IoT rule, model_code/data.py's records, the storage stack's exports), not against a copy in this file.
moto's CloudFormation models neither Glue tables nor Athena workgroups, so this stack is covered by
cfn-lint, checkov and these structural tests only (not by test_moto_deploy.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pandas as pd
import pytest
import sqlparse
from cfnlint.schema import PROVIDER_SCHEMA_MANAGER
from sqlparse import tokens as T

from deploy.infra.stacks import PRIMARY, load_environment, plan
from model_code import data
from pipelines.config import SchemaConfig
from tests.infra.cfn_helpers import (
    as_list,
    parameter_defaults,
    policy_documents,
    props,
    resolve,
    resources,
    statements,
    stringify,
)

ACCOUNT, REGION = "123456789012", "eu-west-1"
DATA_BUCKET = f"pdm-dev-data-{ACCOUNT}-{REGION}"
DATA_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/data"
COST_TAGS = {"project", "environment", "cost-center"}
# Labels a machine cannot send: remaining_tool_life_min is known only once the tool has been replaced.
HINDSIGHT_COLUMNS = {"remaining_tool_life_min"}
# What the IoT rule's SQL functions return (AWS IoT SQL reference): the topic segment, epoch milliseconds.
IOT_FUNCTION_TYPES = {"topic": "string", "timestamp": "bigint"}
# Athena engine 3 (Trino) functions the named queries may call; a typo (e.g. stdev) is not one of them.
ATHENA_FUNCTIONS = {
    "avg",
    "cast",
    "count",
    "date_format",
    "from_unixtime",
    "round",
    "row_number",
    "stddev_samp",
    "sum",
}
REQUIRED_QUERIES = {"failure-rate-by-type-per-day", "sensor-drift-per-day", "tool-wear-near-failure"}


@pytest.fixture(scope="module")
def analytics(templates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return templates["analytics"]


@pytest.fixture(scope="module")
def context(analytics: dict[str, Any]) -> dict[str, Any]:
    """Resolution context with the template's defaults, dev names and the imports it uses."""
    return {
        **parameter_defaults(analytics),
        "ProjectName": "pdm",
        "Environment": "dev",
        "AWS::AccountId": ACCOUNT,
        "AWS::Region": REGION,
        "AWS::Partition": "aws",
        "AnalyticsDatabase": "pdm_dev_analytics",
        "TelemetryTable": "telemetry",
        "WorkGroup": "pdm-dev-analytics",
        "exports": {
            "pdm-dev-data-bucket": DATA_BUCKET,
            "pdm-dev-data-bucket-arn": f"arn:aws:s3:::{DATA_BUCKET}",
            "pdm-dev-data-key-arn": DATA_KEY,
            "pdm-dev-data-prefix": "data/",
        },
        "conditions": {},
    }


def _table(analytics: dict[str, Any]) -> dict[str, Any]:
    return props(analytics, "TelemetryTable")["TableInput"]


def _firehose_destination(templates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return props(templates["streaming"], "TelemetryFirehose")["ExtendedS3DestinationConfiguration"]


def _queries(analytics: dict[str, Any], context: dict[str, Any]) -> dict[str, str]:
    """Named query name -> SQL with the template's parameters filled in."""
    return {
        q["Properties"]["Name"]: resolve(q["Properties"]["QueryString"], context)
        for q in resources(analytics, "AWS::Athena::NamedQuery").values()
    }


# ---------------------------------------------------------------------------------------- workgroup
def test_workgroup_enforces_kms_encrypted_results_a_scan_cutoff_and_metrics(
    analytics: dict[str, Any], context: dict[str, Any]
) -> None:
    (logical_id,) = resources(analytics, "AWS::Athena::WorkGroup")
    configuration = props(analytics, logical_id)["WorkGroupConfiguration"]
    assert configuration["EnforceWorkGroupConfiguration"] is True
    assert configuration["PublishCloudWatchMetricsEnabled"] is True
    assert configuration["BytesScannedCutoffPerQuery"] == {"Ref": "BytesScannedCutoffPerQuery"}
    result = resolve(configuration["ResultConfiguration"], context)
    assert result["EncryptionConfiguration"] == {"EncryptionOption": "SSE_KMS", "KmsKey": DATA_KEY}
    assert result["ExpectedBucketOwner"] == ACCOUNT
    assert result["OutputLocation"] == f"s3://{DATA_BUCKET}/athena-results/"


def test_query_results_land_outside_the_retraining_data_and_the_table(
    templates: dict[str, dict[str, Any]], analytics: dict[str, Any], context: dict[str, Any]
) -> None:
    location = resolve(props(analytics, "WorkGroup")["WorkGroupConfiguration"], context)[
        "ResultConfiguration"
    ]["OutputLocation"]
    key_prefix = location.removeprefix(f"s3://{DATA_BUCKET}/")
    assert not key_prefix.startswith(context["exports"]["pdm-dev-data-prefix"])  # would retrain
    assert not key_prefix.startswith(_firehose_destination(templates)["Prefix"].split("!{")[0])
    # ... and do not pile up: the data bucket expires them.
    rules = props(templates["storage"], "DataBucket")["LifecycleConfiguration"]["Rules"]
    expiring = [r for r in rules if r.get("Prefix") == key_prefix and r.get("ExpirationInDays")]
    assert expiring and expiring[0]["Status"] == "Enabled"


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_every_environment_deploys_analytics_with_a_valid_cutoff(env: str) -> None:
    (spec,) = plan(load_environment(env), ["analytics"])
    cutoff = int(spec.parameters["BytesScannedCutoffPerQuery"])
    assert 10 * 1024**2 <= cutoff <= 100 * 1024**3  # Athena's minimum; and a real cost guard
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}", spec.parameters["TelemetryStartDate"])
    assert spec.tags.keys() >= COST_TAGS


# ------------------------------------------------------------------------------------------- table
def test_table_location_and_partitions_follow_the_firehose_prefix(
    templates: dict[str, dict[str, Any]], analytics: dict[str, Any], context: dict[str, Any]
) -> None:
    prefix = _firehose_destination(templates)["Prefix"]
    static, dynamic = prefix.split("!{", 1)[0], prefix[prefix.index("!{") :]
    table = resolve(_table(analytics), context)
    assert table["StorageDescriptor"]["Location"] == f"s3://{DATA_BUCKET}/{static}"
    parameters = table["Parameters"]
    ((key,),) = [[k["Name"] for k in table["PartitionKeys"]]]
    assert parameters["projection.enabled"] == "true"
    assert parameters[f"projection.{key}.type"] == "date"
    assert parameters["storage.location.template"] == f"s3://{DATA_BUCKET}/{static}${{{key}}}/"
    # !{timestamp:yyyy}/!{timestamp:MM}/!{timestamp:dd}/ -> yyyy/MM/dd: Firehose's day prefix, in UTC.
    assert re.sub(r"!\{timestamp:([^}]+)\}", r"\1", dynamic) == parameters[f"projection.{key}.format"] + "/"
    assert parameters[f"projection.{key}.interval.unit"] == "DAYS"
    assert parameters[f"projection.{key}.range"].endswith(",NOW")
    # Failed deliveries go elsewhere, so they never show up as rows.
    assert not _firehose_destination(templates)["ErrorOutputPrefix"].startswith(static)


def test_table_and_firehose_agree_on_bucket_format_and_compression(
    templates: dict[str, dict[str, Any]], analytics: dict[str, Any]
) -> None:
    destination = _firehose_destination(templates)
    storage_outputs = templates["storage"]["Outputs"]
    # The Firehose writes to the bucket behind data-bucket-arn, the table reads the one behind data-bucket.
    exported = {o["Export"]["Name"]["Fn::Sub"]: o["Value"] for o in storage_outputs.values()}
    assert exported["${ProjectName}-${Environment}-data-bucket"] == {"Ref": "DataBucket"}
    assert exported["${ProjectName}-${Environment}-data-bucket-arn"] == {"Fn::GetAtt": ["DataBucket", "Arn"]}
    assert "data-bucket-arn" in json.dumps(destination["BucketARN"])
    assert '-data-bucket"' in json.dumps(_table(analytics)["StorageDescriptor"]["Location"])
    # GZIP JSON, one record per line: Kinesis records carry no delimiter, so Firehose must append one.
    assert "DataFormatConversionConfiguration" not in destination
    assert destination["CompressionFormat"] == "GZIP"
    assert _table(analytics)["Parameters"]["compressionType"] == "gzip"
    processing = destination.get("ProcessingConfiguration", {})
    assert processing.get("Enabled") is True
    assert {"Type": "AppendDelimiterToRecord"} in processing.get("Processors", [])
    serde = _table(analytics)["StorageDescriptor"]["SerdeInfo"]
    assert serde["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"
    assert _table(analytics)["Parameters"]["classification"] == "json"


def _glue_type(dtype: Any) -> str:
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_integer_dtype(dtype):
        return "bigint"
    if pd.api.types.is_float_dtype(dtype):
        return "double"
    return "string"


def _iot_rule_fields(templates: dict[str, dict[str, Any]]) -> dict[str, str]:
    sql = props(templates["streaming"], "TelemetryRule")["TopicRulePayload"]["Sql"]["Fn::Sub"]
    select = re.match(r"\s*SELECT\s+(.*?)\s+FROM\s", sql, re.DOTALL | re.IGNORECASE)
    assert select, sql
    items = [i.strip() for i in select.group(1).split(",")]
    assert items[0] == "*", "the rule must pass the machine's whole record on"
    fields = {}
    for item in items[1:]:
        match = re.fullmatch(r"(\w+)\([^)]*\)\s+AS\s+(\w+)", item, re.IGNORECASE)
        assert match, f"unexpected rule field {item!r}"
        fields[match.group(2)] = IOT_FUNCTION_TYPES[match.group(1)]
    return fields


def test_table_columns_are_the_sensor_record_plus_the_iot_rule_fields(
    templates: dict[str, dict[str, Any]], analytics: dict[str, Any]
) -> None:
    assert set(data.COLUMNS) >= HINDSIGHT_COLUMNS  # a renamed label must be looked at again
    record = data.generate(200, seed=0)
    assert list(record.columns) == data.COLUMNS
    expected = {c: _glue_type(record[c].dtype) for c in data.COLUMNS if c not in HINDSIGHT_COLUMNS}
    rule_fields = _iot_rule_fields(templates)
    assert set(rule_fields) == {"machine_id", "received_at"}
    expected.update(rule_fields)
    columns = {c["Name"]: c["Type"] for c in _table(analytics)["StorageDescriptor"]["Columns"]}
    assert columns == expected
    # The model's features are all there (the drift query needs them), and the partition key is extra.
    schema = SchemaConfig()
    assert {*schema.numeric_columns, *schema.categorical_columns, schema.target_column} <= set(columns)
    assert not {k["Name"] for k in _table(analytics)["PartitionKeys"]} & set(columns)


# ------------------------------------------------------------------------------------------ queries
def _names(statement: Any) -> tuple[set[str], set[str], set[str], set[str]]:
    """(identifiers, function names, names defined by AS, names right after FROM) of a statement."""
    tokens = [t for t in statement.flatten() if not t.is_whitespace and t.ttype not in T.Comment]
    names, functions, defined, sources = set(), set(), set(), set()
    for i, token in enumerate(tokens):
        if token.ttype is not T.Name:
            continue
        before = tokens[i - 1] if i else None
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        if after is not None and after.value == "(":
            functions.add(token.value.lower())
        elif before is not None and before.normalized == "AS":
            defined.add(token.value)
        elif after is not None and after.normalized == "AS" and tokens[i + 2].value == "(":
            defined.add(token.value)  # WITH name AS ( ... )
        elif before is not None and before.normalized == "FROM":
            sources.add(token.value)
        else:
            names.add(token.value)
    return names, functions, defined, sources


def test_named_queries_parse_and_read_the_table_that_exists(
    analytics: dict[str, Any], context: dict[str, Any]
) -> None:
    table = _table(analytics)
    columns = {c["Name"] for c in table["StorageDescriptor"]["Columns"]}
    columns |= {k["Name"] for k in table["PartitionKeys"]}
    named = resources(analytics, "AWS::Athena::NamedQuery")
    assert {q["Properties"]["Name"] for q in named.values()} >= REQUIRED_QUERIES
    for logical_id, query in named.items():
        assert query["Properties"]["Database"] == {"Ref": "AnalyticsDatabase"}, logical_id
        assert query["Properties"]["WorkGroup"] == {"Ref": "WorkGroup"}, logical_id
    for name, sql in _queries(analytics, context).items():
        assert "${" not in sql, name
        assert sql.count("(") == sql.count(")"), name
        assert sql.count("'") % 2 == 0, name
        parsed = [s for s in sqlparse.parse(sql) if s.value.strip()]
        assert len(parsed) == 1 and parsed[0].get_type() == "SELECT", name
        names, functions, defined, sources = _names(parsed[0])
        assert sources and sources <= {table["Name"], *defined}, (name, sources)
        assert table["Name"] in sources, name
        assert functions <= ATHENA_FUNCTIONS, (name, functions - ATHENA_FUNCTIONS)
        assert names <= columns | defined, (name, names - columns - defined)
        # Partition pruning: every query reads a bounded number of days.
        assert re.search(r"WHERE\s+dt\s*>=", sql), name


def test_sensor_drift_covers_every_numeric_feature(
    analytics: dict[str, Any], context: dict[str, Any]
) -> None:
    sql = _queries(analytics, context)["sensor-drift-per-day"]
    for column in SchemaConfig().numeric_columns:
        assert f"avg({column})" in sql and f"stddev_samp({column})" in sql, column
    assert "GROUP BY dt" in sql


def test_failure_rate_is_per_product_type_and_day(analytics: dict[str, Any], context: dict[str, Any]) -> None:
    sql = _queries(analytics, context)["failure-rate-by-type-per-day"]
    (category,) = SchemaConfig().categorical_columns
    assert re.search(rf"GROUP BY dt, {category}\b", sql)
    assert f"avg(CAST({SchemaConfig().target_column} AS double))" in sql


def test_near_failure_band_matches_the_data_rules(analytics: dict[str, Any], context: dict[str, Any]) -> None:
    sql = _queries(analytics, context)["tool-wear-near-failure"]
    threshold = int(context["ToolWearAlertMinutes"])
    # Warns before tools reach the end-of-life band, not after it.
    assert 0 < threshold < data.TOOL_LIFE_MIN[0]
    assert f"tool_wear_min >= {threshold}" in sql
    for product_type, limit in zip(data.TYPES, data.OSF_LIMIT_MIN_NM, strict=True):
        assert f"WHEN '{product_type}' THEN {int(limit)}" in sql, product_type
    assert "PARTITION BY machine_id ORDER BY received_at DESC" in sql


# -------------------------------------------------------------------------------------- tags, IAM, order
def test_every_taggable_resource_has_the_cost_tags(analytics: dict[str, Any]) -> None:
    checked = 0
    for logical_id, resource in analytics["Resources"].items():
        tagging = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", resource["Type"]).schema.get(
            "tagging", {}
        )
        if not tagging.get("taggable"):
            continue
        tags = resource["Properties"][tagging["tagProperty"].removeprefix("/properties/")]
        assert {t["Key"] for t in tags} >= COST_TAGS, logical_id
        assert {t["Key"]: t["Value"] for t in tags}["cost-center"] == {"Ref": "CostCenter"}
        checked += 1
    assert checked >= 1  # the workgroup (Glue databases/tables and named queries take no tags)


def test_query_policy_is_least_privilege(analytics: dict[str, Any], context: dict[str, Any]) -> None:
    seen = [s for _, doc in policy_documents(analytics) for s in statements(doc)]
    assert seen
    writes = []
    for statement in seen:
        actions = as_list(statement["Action"])
        resources_ = [resolve(r, context) for r in as_list(statement["Resource"])]
        assert statement["Effect"] == "Allow"
        assert all("*" not in a for a in actions), actions
        assert "*" not in resources_ and all(stringify(r) != "*" for r in resources_)
        if any(a.startswith("athena:") for a in actions):
            assert resources_ == [f"arn:aws:athena:{REGION}:{ACCOUNT}:workgroup/pdm-dev-analytics"]
        if any(a.startswith("glue:") for a in actions):
            assert all(r.startswith(f"arn:aws:glue:{REGION}:{ACCOUNT}:") for r in resources_)
            assert not any(r.endswith("*") for r in resources_)
        if any(a.startswith("kms:") for a in actions):
            assert resources_ == [DATA_KEY]
            assert statement["Condition"]["StringEquals"]["kms:ViaService"]
        if "s3:ListBucket" in actions:
            assert statement["Condition"]["StringLike"]["s3:prefix"]
        if any(a in ("s3:PutObject", "s3:DeleteObject") for a in actions):
            writes.extend(resources_)
    # The only S3 write: the workgroup's own result prefix.
    assert writes == [f"arn:aws:s3:::{DATA_BUCKET}/athena-results/*"]


def _exports_by_template(templates: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {
        stringify(o["Export"]["Name"]): name
        for name, t in templates.items()
        for o in t.get("Outputs", {}).values()
        if "Export" in o
    }


def test_analytics_deploys_after_every_stack_it_imports_from(templates: dict[str, dict[str, Any]]) -> None:
    text = json.dumps(templates["analytics"])
    imported = set(re.findall(r'"Fn::ImportValue": \{"Fn::Sub": "([^"]+)"\}', text))
    assert imported
    exporters = _exports_by_template(templates)
    for name in imported:
        assert name in exporters, f"nothing exports {name}"
        assert PRIMARY.index(exporters[name]) < PRIMARY.index("analytics"), name
    # After streaming too: it queries what streaming's Firehose writes.
    assert PRIMARY.index("streaming") < PRIMARY.index("analytics")
