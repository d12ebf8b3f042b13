"""SM_* environment, command-line args and config files of a job, built the way SageMaker's toolkits do."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.local.jobs.sandbox import Sandbox, num_gpus

HOST = "algo-1"
GROUP = "homogeneousCluster"
# Hyperparameters the training toolkit keeps out of SM_HPS and the script's arguments
# (sagemaker_training.params.SAGEMAKER_HYPERPARAMETERS); other `sagemaker_*` ones become framework params.
RESERVED_HPS = frozenset(
    {
        "sagemaker_program",
        "sagemaker_submit_directory",
        "sagemaker_enable_cloudwatch_metrics",
        "sagemaker_region",
        "sagemaker_container_log_level",
        "sagemaker_job_name",
        "default_user_module_name",
        "_tuning_objective_metric",
        "sagemaker_s3_output",
    }
)


def decode_hyperparameters(raw: Mapping[str, str]) -> dict[str, Any]:
    """Toolkit rule: each value is tried as JSON, and kept as the raw string when that fails."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


def split_hyperparameters(decoded: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(user HPs, sagemaker HPs): reserved names and anything prefixed `sagemaker_` go to the second."""
    user = {k: v for k, v in decoded.items() if k not in RESERVED_HPS and not k.startswith("sagemaker_")}
    return user, {k: v for k, v in decoded.items() if k not in user}


def to_cmd_args(mapping: Mapping[str, Any]) -> list[str]:
    """`sagemaker_training.mapping.to_cmd_args`: sorted keys, `--key value` (`-k` for one letter),
    dicts as `k1=v1,k2=v2`, everything else `str()` (so JSON `true` becomes `True`)."""
    args: list[str] = []
    for key in sorted(mapping):
        name = str(key)
        args.append(f"--{name}" if len(name) > 1 else f"-{name}")
        value = mapping[key]
        if hasattr(value, "items"):
            args.append(",".join(f"{k}={v}" for k, v in sorted(value.items())))
        else:
            args.append("" if value is None else str(value))
    return args


def to_env_vars(mapping: Mapping[str, Any]) -> dict[str, str]:
    """`sagemaker_training.mapping.to_env_vars`: `SM_<KEY>`; str as is, None -> "", else compact JSON."""

    def fmt(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    return {f"SM_{str(k).upper()}": fmt(v) for k, v in mapping.items()}


def resource_config(instance_type: str) -> dict[str, Any]:
    """resourceconfig.json of a single-host job."""
    return {
        "current_host": HOST,
        "current_instance_type": instance_type,
        "current_group_name": GROUP,
        "hosts": [HOST],
        "instance_groups": [{"instance_group_name": GROUP, "instance_type": instance_type, "hosts": [HOST]}],
        "network_interface_name": "eth0",
    }


def input_data_config(channels: list[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """inputdataconfig.json: one entry per channel with the fields the toolkit documents."""
    config: dict[str, dict[str, Any]] = {}
    for channel in channels:
        s3 = channel.get("DataSource", {}).get("S3DataSource", {})
        entry = {
            "TrainingInputMode": channel.get("InputMode", "File"),
            "S3DistributionType": s3.get("S3DataDistributionType", "FullyReplicated"),
            "RecordWrapperType": channel.get("RecordWrapperType", "None"),
        }
        if channel.get("ContentType"):
            entry["ContentType"] = channel["ContentType"]
        config[channel["ChannelName"]] = entry
    return config


def write_json(path: Path, obj: Any) -> None:
    """Write a config file (the folder is created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=str), encoding="utf-8")


def training_environment(
    sandbox: Sandbox,
    *,
    job_name: str,
    hyperparameters: Mapping[str, Any],
    data_config: Mapping[str, Any],
    resources: Mapping[str, Any],
    entry_point: str | None,
    module_dir: str,
) -> dict[str, str]:
    """The SM_* variables the training toolkit exports (`Environment.to_env_vars`), sandbox paths.

    Args:
        hyperparameters: decoded hyperparameters (all of them; the split happens here).
        data_config: inputdataconfig.json content; resources: resourceconfig.json content.
        entry_point: the user program (None for the built-in algorithm).
        module_dir: `sagemaker_submit_directory` (an S3 URI) or the code folder.
    """
    user, sm = split_hyperparameters(hyperparameters)
    framework = {k: v for k, v in sm.items() if k not in RESERVED_HPS}
    base = sandbox.base
    channels = {name: str(base / "input" / "data" / name) for name in data_config}
    paths = {
        "model_dir": str(base / "model"),
        "input_dir": str(base / "input"),
        "input_config_dir": str(base / "input" / "config"),
        "output_dir": str(base / "output"),
        "output_data_dir": str(base / "output" / "data"),
        "output_intermediate_dir": str(base / "output" / "intermediate"),
    }
    cpus, gpus = os.cpu_count() or 1, num_gpus()
    module_name = entry_point[:-3] if entry_point and entry_point.endswith(".py") else entry_point
    groups = {GROUP: {"instance_group_name": GROUP, "instance_type": resources["current_instance_type"],
                      "hosts": [HOST]}}  # fmt: skip
    training_env: dict[str, Any] = {
        **paths,
        "additional_framework_parameters": framework,
        "channel_input_dirs": channels,
        "current_host": HOST,
        "current_instance_group": GROUP,
        "current_instance_group_hosts": [HOST],
        "current_instance_type": resources["current_instance_type"],
        "distribution_hosts": [],
        "distribution_instance_groups": [],
        "framework_module": None,
        "hosts": [HOST],
        "hyperparameters": user,
        "input_data_config": dict(data_config),
        "instance_groups": [GROUP],
        "instance_groups_dict": groups,
        "is_hetero": False,
        "is_master": True,
        "job_name": job_name,
        "log_level": sm.get("sagemaker_container_log_level", 20),
        "master_hostname": HOST,
        "module_dir": module_dir,
        "module_name": module_name,
        "network_interface_name": "eth0",
        "num_cpus": cpus,
        "num_gpus": gpus,
        "num_neurons": 0,
        "resource_config": dict(resources),
        "user_entry_point": entry_point,
    }
    env: dict[str, Any] = {
        **paths,
        "hosts": [HOST],
        "network_interface_name": "eth0",
        "hps": user,
        "user_entry_point": entry_point,
        "framework_params": framework,
        "resource_config": dict(resources),
        "input_data_config": dict(data_config),
        "channels": sorted(channels),
        "current_host": HOST,
        "current_instance_type": resources["current_instance_type"],
        "current_instance_group": GROUP,
        "current_instance_group_hosts": [HOST],
        "instance_groups": [GROUP],
        "instance_groups_dict": groups,
        "distribution_instance_groups": [],
        "is_hetero": False,
        "module_name": module_name,
        "log_level": training_env["log_level"],
        "framework_module": None,
        "num_cpus": cpus,
        "num_gpus": gpus,
        "num_neurons": 0,
        "module_dir": module_dir,
        "training_env": training_env,
        "user_args": to_cmd_args(user),
    }
    env.update({f"channel_{name}": path for name, path in channels.items()})
    env.update({f"hp_{key}": value for key, value in user.items()})
    out = to_env_vars(env)
    out.update({"CURRENT_HOST": HOST, "TRAINING_JOB_NAME": job_name})
    return out
