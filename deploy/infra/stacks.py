"""The deployment plan: which stacks an environment has, in which region and order, with which parameters."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.infra import ENVIRONMENTS, PARAMS_DIR, TEMPLATES_DIR
from deploy.infra.cfn import load_template

DR_SUFFIX = "@dr"
# Deployment order. The secondary region's keys and replica buckets come first: the primary buckets'
# replication rules name them, and S3 refuses a replication destination that does not exist yet.
DR_FIRST = ("keys", "replica")
PRIMARY = (
    "keys",
    "network",
    "alerts",
    "storage",
    "governance",
    "cicd",
    "serving",
    "api",
    "streaming",
    # Queries what streaming lands in the data bucket (imports the storage and keys exports).
    "analytics",
    "batch",
)
# The rest of the secondary region needs the replicated model, so it follows the primary stacks.
DR_AFTER = ("network", "alerts", "serving", "api")
ENV_FILE_KEYS = {
    "project",
    "environment",
    "primaryRegion",
    "secondaryRegion",
    "disasterRecovery",
    "tags",
    "parameters",
    "stacks",
}
# Parameters the plan derives from the environment file's own fields; setting them by hand could make two
# stacks of one environment disagree (e.g. a bucket name built from a different project name).
DERIVED_PARAMETERS = frozenset(
    {
        "ProjectName",
        "Environment",
        "CostCenter",
        "RegionRole",
        "SecondaryRegion",
        "EnableReplication",
        "EnableDisasterRecovery",
    }
)
PLACEHOLDER = re.compile(r"<[^<>]+>")
# The cost allocation tags every resource carries; project and environment are filled in from the file's
# own fields, cost-center must be given (it becomes the CostCenter parameter of every template).
COST_TAGS = ("project", "environment", "cost-center")


class PlanError(ValueError):
    """A bad environment file, stack name or parameter; the message says which and what is allowed."""


@dataclass(frozen=True)
class EnvironmentConfig:
    """One `params/<env>.json` file."""

    name: str
    project: str
    primary_region: str
    secondary_region: str
    disaster_recovery: bool
    tags: dict[str, str]
    parameters: dict[str, str]
    stacks: dict[str, dict[str, str]]
    source: Path


@dataclass(frozen=True)
class StackSpec:
    """One stack to validate, diff, deploy or delete."""

    unit: str
    template: str
    region: str
    region_role: str
    stack_name: str
    template_path: Path
    parameters: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def _as_parameter_value(value: Any) -> str:
    # CloudFormation parameters are strings; JSON booleans become the "true"/"false" the templates expect.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _string_map(raw: Any, where: str) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise PlanError(f"{where} must be a JSON object")
    return {str(k): _as_parameter_value(v) for k, v in raw.items()}


def load_environment(name: str, params_dir: Path = PARAMS_DIR) -> EnvironmentConfig:
    """Read and check `params/<name>.json`."""
    if name not in ENVIRONMENTS:
        raise PlanError(f"unknown environment {name!r} (one of {', '.join(ENVIRONMENTS)})")
    path = params_dir / f"{name}.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise PlanError(f"{path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise PlanError(f"{path} is not valid JSON: {exc}") from None
    unknown = sorted(set(raw) - ENV_FILE_KEYS)
    if unknown:
        raise PlanError(f"{path}: unknown keys {unknown} (allowed: {sorted(ENV_FILE_KEYS)})")
    missing = sorted(k for k in ("project", "primaryRegion") if not raw.get(k))
    if missing:
        raise PlanError(f"{path}: missing {', '.join(missing)}")
    if raw.get("environment", name) != name:
        raise PlanError(f"{path}: environment is {raw['environment']!r}, expected {name!r}")
    tags = _string_map(raw.get("tags", {}), f"{path}: tags")
    if not tags.get("cost-center"):
        raise PlanError(f"{path}: tags must include the cost allocation tag cost-center")
    for key, expected in (("project", str(raw["project"])), ("environment", name)):
        if tags.setdefault(key, expected) != expected:
            raise PlanError(f"{path}: tag {key}={tags[key]!r} disagrees with {key} {expected!r}")
    stacks = raw.get("stacks", {})
    if not isinstance(stacks, dict):
        raise PlanError(f"{path}: stacks must be a JSON object of unit -> parameters")
    parameters = _string_map(raw.get("parameters", {}), f"{path}: parameters")
    stack_params = {unit: _string_map(p, f"{path}: stacks.{unit}") for unit, p in stacks.items()}
    for where, values in [("parameters", parameters), *((f"stacks.{u}", p) for u, p in stack_params.items())]:
        reserved = sorted(DERIVED_PARAMETERS & set(values))
        if reserved:
            raise PlanError(
                f"{path}: {where} sets {reserved}; these come from project, environment, tags.cost-center,"
                " secondaryRegion and disasterRecovery"
            )
    return EnvironmentConfig(
        name=name,
        project=str(raw["project"]),
        primary_region=str(raw["primaryRegion"]),
        secondary_region=str(raw.get("secondaryRegion", "")),
        disaster_recovery=bool(raw.get("disasterRecovery", False)),
        tags=tags,
        parameters=parameters,
        stacks=stack_params,
        source=path,
    )


def template_parameters(path: Path) -> dict[str, dict[str, Any]]:
    """The Parameters section of a template (name -> definition)."""
    return dict(load_template(path).get("Parameters", {}))


def all_units(env: EnvironmentConfig) -> list[str]:
    """Every unit of the environment in deployment order: `name` (primary region), `name@dr` (secondary)."""
    if not env.disaster_recovery:
        return list(PRIMARY)
    return (
        [u + DR_SUFFIX for u in DR_FIRST]
        + list(PRIMARY)
        + [u + DR_SUFFIX for u in DR_AFTER if u not in DR_FIRST]
    )


def known_units() -> list[str]:
    """Every unit name that can exist in some environment."""
    return list(PRIMARY) + [u + DR_SUFFIX for u in (*DR_FIRST, *DR_AFTER)]


def select_units(env: EnvironmentConfig, requested: Sequence[str] | None) -> list[str]:
    """Validate `--stack` values and return them in deployment order (all units when none is given)."""
    units = all_units(env)
    if not requested:
        return units
    wanted = [w.strip() for item in requested for w in item.split(",") if w.strip()]
    for unit in wanted:
        if unit in units:
            continue
        if unit in known_units():
            raise PlanError(
                f"{unit!r} is not deployed in {env.name}: disaster recovery is off in {env.source.name}"
            )
        raise PlanError(f"unknown stack {unit!r} (one of {', '.join(units)})")
    return [u for u in units if u in wanted]


def _spec(env: EnvironmentConfig, unit: str, overrides: Mapping[str, str]) -> StackSpec:
    template = unit.removesuffix(DR_SUFFIX)
    secondary = unit.endswith(DR_SUFFIX)
    path = TEMPLATES_DIR / f"{template}.yaml"
    declared = template_parameters(path)
    # Derived from the environment file, so the same facts cannot disagree between stacks.
    derived = {
        "ProjectName": env.project,
        "Environment": env.name,
        "CostCenter": env.tags["cost-center"],
        "RegionRole": "secondary" if secondary else "primary",
        "SecondaryRegion": env.secondary_region,
        "EnableReplication": _as_parameter_value(env.disaster_recovery),
        "EnableDisasterRecovery": _as_parameter_value(env.disaster_recovery),
    }
    derived = {k: v for k, v in derived.items() if v}
    stack_level = env.stacks.get(unit, {})
    unknown = sorted(set(stack_level) - set(declared))
    if unknown:
        raise PlanError(
            f"{env.source.name}: stacks.{unit} sets {unknown}, which {template}.yaml does not declare"
        )
    merged = {**derived, **env.parameters, **stack_level, **overrides}
    # An explicit empty string from the file is a value too (e.g. ConnectionArn with CodeCommit).
    params = {k: v for k, v in merged.items() if k in declared}
    missing = sorted(k for k, d in declared.items() if "Default" not in d and k not in params)
    if missing:
        raise PlanError(f"{unit}: no value for {', '.join(missing)} (set it in {env.source.name})")
    tags = dict(env.tags)
    return StackSpec(
        unit=unit,
        template=template,
        region=env.secondary_region if secondary else env.primary_region,
        region_role="secondary" if secondary else "primary",
        stack_name=f"{env.project}-{env.name}-{template}",
        template_path=path,
        parameters=params,
        tags=tags,
    )


def plan(
    env: EnvironmentConfig,
    requested: Sequence[str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> list[StackSpec]:
    """The stacks to work on, in deployment order, with their resolved parameters."""
    if env.disaster_recovery and not env.secondary_region:
        raise PlanError(f"{env.source.name}: disasterRecovery is on but secondaryRegion is not set")
    units = select_units(env, requested)
    overrides = dict(overrides or {})
    specs = [_spec(env, unit, overrides) for unit in units]
    unused = sorted(k for k in overrides if not any(k in template_parameters(s.template_path) for s in specs))
    if unused:
        raise PlanError(f"--param {', '.join(unused)}: not a parameter of the selected stacks")
    return specs


def parse_overrides(pairs: Sequence[str]) -> dict[str, str]:
    """`Key=Value` strings from `--param` -> dict."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise PlanError(f"--param {pair!r}: expected Key=Value")
        out[key.strip()] = value
    return out


def check_placeholders(specs: Sequence[StackSpec]) -> None:
    """Refuse to send `<...>` placeholder values (e.g. a connection ARN nobody filled in) to AWS."""
    for spec in specs:
        bad = sorted(k for k, v in spec.parameters.items() if PLACEHOLDER.search(v))
        if bad:
            raise PlanError(
                f"{spec.unit}: replace the placeholder value of {', '.join(bad)} in params/*.json"
            )
