"""Runs a CreateHyperParameterTuningJob request locally: optuna picks hyperparameters, trials run as jobs."""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import optuna

from pipelines.local.errors import UnsupportedError
from pipelines.local.jobs.context import JobContext, arn, clip_reason, now
from pipelines.local.jobs.launch import JobLog
from pipelines.local.jobs.tuning_space import Param, RangeError, grid, search_space
from pipelines.local.store import join_uri

_DEFINITION_TO_REQUEST = (
    "RoleArn",
    "InputDataConfig",
    "VpcConfig",
    "OutputDataConfig",
    "StoppingCondition",
    "EnableNetworkIsolation",
    "EnableInterContainerTrafficEncryption",
    "EnableManagedSpotTraining",
    "RetryStrategy",
    "Environment",
)
_ALGORITHM_FIELDS = ("TrainingImage", "TrainingInputMode", "AlgorithmName", "MetricDefinitions")

RunTraining = Callable[[dict[str, Any]], dict[str, Any]]


def run_tuning_job(request: Mapping[str, Any], ctx: JobContext, run_training: RunTraining) -> dict[str, Any]:
    """Run a tuning job: sample hyperparameters, run each trial through `run_training`, pick the best.

    Trials run in waves of MaxParallelTrainingJobs: the sampler is asked for a whole wave, the wave
    runs on a thread pool, and results are told back in trial order, so a given seed (RandomSeed, else
    `ctx.seed`, else one derived from the job name) always yields the same trials. Hyperband runs as
    Random without early stopping; TrainingJobEarlyStoppingType Auto is accepted but not emulated.

    Args:
        request: a boto3 CreateHyperParameterTuningJob request (one TrainingJobDefinition).
        ctx: the job context.
        run_training: runs one CreateTrainingJob request and returns its DescribeTrainingJob dict
            (supplied by the orchestration so that each trial is recorded).

    Returns:
        DescribeHyperParameterTuningJob response dict plus "TrainingJobSummaries" (best first).

    Raises:
        UnsupportedError: several training job definitions, Autotune, or an unsupported trial.
    """
    name: str = request["HyperParameterTuningJobName"]
    config = request["HyperParameterTuningJobConfig"]
    definitions = request.get("TrainingJobDefinitions") or []
    if definitions and (len(definitions) > 1 or request.get("TrainingJobDefinition")):
        raise UnsupportedError("TrainingJobDefinitions with several definitions is not supported locally")
    definition = request.get("TrainingJobDefinition") or definitions[0]
    objective = config.get("HyperParameterTuningJobObjective") or definition.get("TuningObjective")
    desc: dict[str, Any] = {
        k: copy.deepcopy(request[k])
        for k in (
            "HyperParameterTuningJobConfig",
            "TrainingJobDefinition",
            "TrainingJobDefinitions",
            "WarmStartConfig",
        )
        if k in request
    }
    job_counters = ("Completed", "InProgress", "RetryableError", "NonRetryableError", "Stopped")
    desc.update(
        HyperParameterTuningJobName=name,
        HyperParameterTuningJobArn=arn(ctx, "hyper-parameter-tuning-job", name),
        HyperParameterTuningJobStatus="InProgress",
        CreationTime=now(),
        TrainingJobStatusCounters=dict.fromkeys(job_counters, 0),
        ObjectiveStatusCounters=dict.fromkeys(("Succeeded", "Pending", "Failed"), 0),
        TrainingJobSummaries=[],
    )
    log = JobLog(ctx.log_path, ctx.max_log_bytes)
    started = time.monotonic()
    try:
        if not objective:
            raise RangeError("HyperParameterTuningJobObjective is required")
        params = search_space(config.get("ParameterRanges") or definition.get("HyperParameterRanges") or {})
        study, max_jobs = _study(config, params, ctx, name, objective["Type"])
    except RangeError as exc:
        log.close()
        return _end(desc, "Failed", started, f"ValidationException: {exc}")
    except BaseException:
        log.close()
        raise
    parallel = max(1, int(config["ResourceLimits"].get("MaxParallelTrainingJobs", 1)))
    max_runtime = config["ResourceLimits"].get("MaxRuntimeInSeconds")
    target = (config.get("TuningJobCompletionCriteria") or {}).get("TargetObjectiveMetricValue")
    if config.get("TrainingJobEarlyStoppingType") == "Auto":
        log.engine("TrainingJobEarlyStoppingType Auto: trials run to completion locally (not emulated)")
    log.engine(f"tuning job {name}: {config['Strategy']}, {max_jobs} job(s), {parallel} in parallel")
    distributions = {p.name: p.distribution for p in params}
    results: list[dict[str, Any]] = []
    stopped = False
    try:
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="tuning-trial") as pool:
            while len(results) < max_jobs:
                if ctx.cancelled() or (max_runtime and time.monotonic() - started >= max_runtime):
                    stopped = ctx.cancelled()
                    log.engine("stopped" if stopped else "MaxRuntimeInSeconds reached: no new trials")
                    break
                wave = [study.ask(distributions) for _ in range(min(parallel, max_jobs - len(results)))]
                requests = [
                    _trial_request(definition, objective, name, len(results) + i + 1, params, t)
                    for i, t in enumerate(wave)
                ]
                for trial, (req, tuned), described in zip(
                    wave, requests, pool.map(lambda r: _run_one(run_training, r[0]), requests), strict=True
                ):
                    results.append(_record(study, trial, req, tuned, described, objective, desc, log, ctx))
                if target is not None and _reached(results, objective, float(target)):
                    log.engine(f"TargetObjectiveMetricValue {target} reached")
                    break
    finally:
        log.close()
    summaries = _ranked(results, objective)
    desc["TrainingJobSummaries"] = summaries
    if summaries and "FinalHyperParameterTuningJobObjectiveMetric" in summaries[0]:
        desc["BestTrainingJob"] = summaries[0]
    if stopped:
        return _end(desc, "Stopped", started)
    if "BestTrainingJob" not in desc:
        reasons = [s.get("FailureReason", "no objective metric") for s in summaries]
        return _end(
            desc,
            "Failed",
            started,
            "No training job reported the objective metric; last: " + (reasons or ["none run"])[-1],
        )
    return _end(desc, "Completed", started)


def _study(
    config: Mapping[str, Any], params: list[Param], ctx: JobContext, name: str, direction: str
) -> tuple[optuna.Study, int]:
    """The optuna study for the strategy, and how many trials to run."""
    seed = config.get("RandomSeed", ctx.seed)
    if seed is None:
        seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big")
    max_jobs = int(config["ResourceLimits"].get("MaxNumberOfTrainingJobs") or 0)
    strategy = config["Strategy"]
    sampler: optuna.samplers.BaseSampler
    if strategy == "Bayesian":
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, max_jobs // 3)))
    elif strategy in ("Random", "Hyperband"):
        sampler = optuna.samplers.RandomSampler(seed=seed)
    elif strategy == "Grid":
        points = grid(params)
        size = math.prod(len(v) for v in points.values())
        max_jobs = min(max_jobs, size) if max_jobs else size
        sampler = _AskTellGridSampler(points, seed=seed)
    else:
        raise UnsupportedError(f"tuning Strategy {strategy!r} (Bayesian, Random, Grid, Hyperband)")
    if max_jobs < 1:
        raise RangeError("ResourceLimits.MaxNumberOfTrainingJobs is required for this strategy")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        sampler=sampler, direction="maximize" if direction == "Maximize" else "minimize"
    )
    return study, max_jobs


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler whose exhausted grid does not call `study.stop()` (only legal inside `optimize`);
    the trial budget is capped at the grid size instead."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


def _trial_request(
    definition: Mapping[str, Any],
    objective: Mapping[str, Any],
    tuning_name: str,
    index: int,
    params: list[Param],
    trial: optuna.Trial,
) -> tuple[dict[str, Any], dict[str, str]]:
    """CreateTrainingJob request of trial `index` and its tuned hyperparameters."""
    digest = hashlib.sha256(f"{tuning_name}/{index}".encode()).hexdigest()[:8]
    job = f"{tuning_name[: 63 - 13].rstrip('-')}-{index:03d}-{digest}"
    tuned = {p.name: p.to_hp(trial.params[p.name]) for p in params}
    hps = {
        **definition.get("StaticHyperParameters", {}),
        **tuned,
        "_tuning_objective_metric": objective["MetricName"],
    }
    spec = definition["AlgorithmSpecification"]
    req: dict[str, Any] = {
        "TrainingJobName": job,
        "HyperParameters": hps,
        "AlgorithmSpecification": {k: copy.deepcopy(spec[k]) for k in _ALGORITHM_FIELDS if k in spec},
    }
    req.update({k: copy.deepcopy(definition[k]) for k in _DEFINITION_TO_REQUEST if k in definition})
    resources = definition.get("ResourceConfig") or definition.get("HyperParameterTuningResourceConfig") or {}
    req["ResourceConfig"] = {
        k: resources[k] for k in ("InstanceType", "InstanceCount", "VolumeSizeInGB") if k in resources
    }
    if definition.get("CheckpointConfig"):
        # SageMaker gives each trial its own checkpoint prefix (the job name appended to S3Uri).
        req["CheckpointConfig"] = {
            **definition["CheckpointConfig"],
            "S3Uri": join_uri(definition["CheckpointConfig"]["S3Uri"], job),
        }
    return req, tuned


def _run_one(run_training: RunTraining, req: dict[str, Any]) -> dict[str, Any]:
    """Run a trial; an unexpected exception becomes a failed trial (UnsupportedError propagates)."""
    try:
        return run_training(req)
    except UnsupportedError:
        raise
    except Exception as exc:  # one broken trial must not lose the others' results
        return {
            "TrainingJobName": req["TrainingJobName"],
            "TrainingJobStatus": "Failed",
            "FailureReason": clip_reason(f"InternalServerError: {type(exc).__name__}: {exc}"),
            "_retryable": True,
        }


def _record(
    study: optuna.Study,
    trial: optuna.Trial,
    req: dict[str, Any],
    tuned: dict[str, str],
    described: dict[str, Any],
    objective: Mapping[str, Any],
    desc: dict[str, Any],
    log: JobLog,
    ctx: JobContext,
) -> dict[str, Any]:
    """Tell optuna the trial's outcome, update the counters, and return the trial's summary."""
    status = described.get("TrainingJobStatus", "Failed")
    metric = next(
        (m for m in described.get("FinalMetricDataList", []) if m["MetricName"] == objective["MetricName"]),
        None,
    )
    counters = desc["TrainingJobStatusCounters"]
    if status == "Completed":
        counters["Completed"] += 1
    elif status == "Stopped":
        counters["Stopped"] += 1
    else:
        counters["RetryableError" if described.get("_retryable") else "NonRetryableError"] += 1
    summary: dict[str, Any] = {
        "TrainingJobName": req["TrainingJobName"],
        "TrainingJobArn": described.get("TrainingJobArn") or arn(ctx, "training-job", req["TrainingJobName"]),
        "TuningJobName": desc["HyperParameterTuningJobName"],
        "CreationTime": described.get("CreationTime") or now(),
        "TrainingJobStatus": status,
        "TunedHyperParameters": tuned,
    }
    for key in ("TrainingStartTime", "TrainingEndTime", "FailureReason"):
        if key in described:
            summary[key] = described[key]
    if status == "Completed" and metric is not None:
        study.tell(trial, float(metric["Value"]))
        desc["ObjectiveStatusCounters"]["Succeeded"] += 1
        summary["ObjectiveStatus"] = "Succeeded"
        summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
            "Type": objective["Type"],
            "MetricName": objective["MetricName"],
            "Value": float(metric["Value"]),
        }
    else:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        desc["ObjectiveStatusCounters"]["Failed"] += 1
        summary["ObjectiveStatus"] = "Failed"
    value = summary.get("FinalHyperParameterTuningJobObjectiveMetric", {}).get("Value")
    log.engine(f"{req['TrainingJobName']}: {status}, {objective['MetricName']}={value} {tuned}")
    return summary


def _ranked(results: list[dict[str, Any]], objective: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Summaries best first (by objective direction); trials without a value keep their order, last."""
    sign = -1.0 if objective["Type"] == "Maximize" else 1.0
    scored = [r for r in results if "FinalHyperParameterTuningJobObjectiveMetric" in r]
    scored.sort(key=lambda r: sign * r["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
    return scored + [r for r in results if "FinalHyperParameterTuningJobObjectiveMetric" not in r]


def _reached(results: list[dict[str, Any]], objective: Mapping[str, Any], target: float) -> bool:
    values = [
        r["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
        for r in results
        if "FinalHyperParameterTuningJobObjectiveMetric" in r
    ]
    if not values:
        return False
    return max(values) >= target if objective["Type"] == "Maximize" else min(values) <= target


def _end(desc: dict[str, Any], status: str, started: float, reason: str | None = None) -> dict[str, Any]:
    desc["HyperParameterTuningJobStatus"] = status
    desc["HyperParameterTuningEndTime"] = desc["LastModifiedTime"] = now()
    desc["ConsumedResources"] = {"RuntimeInSeconds": max(1, math.ceil(time.monotonic() - started))}
    if reason:
        desc["FailureReason"] = clip_reason(reason)
    return desc
