"""run_tuning_job: strategies, limits, parallelism, objective direction, failures, determinism."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pipelines.local.jobs import run_training_job, run_tuning_job
from tests.local.test_jobs_support import ROLE, SKLEARN_IMAGE, assert_shape, make_ctx
from tests.local.test_jobs_training import sourcedir

OBJECTIVE = "validation:score"


def tuning_request(
    strategy: str,
    *,
    max_jobs: int | None = 6,
    parallel: int = 2,
    direction: str = "Maximize",
    ranges: dict[str, Any] | None = None,
    **config: Any,
) -> dict[str, Any]:
    limits: dict[str, Any] = {"MaxParallelTrainingJobs": parallel}
    if max_jobs is not None:
        limits["MaxNumberOfTrainingJobs"] = max_jobs
    return {
        "HyperParameterTuningJobName": f"tune-{strategy.lower()}",
        "HyperParameterTuningJobConfig": {
            "Strategy": strategy,
            "HyperParameterTuningJobObjective": {"Type": direction, "MetricName": OBJECTIVE},
            "ResourceLimits": limits,
            "ParameterRanges": ranges
            or {
                "IntegerParameterRanges": [{"Name": "depth", "MinValue": "1", "MaxValue": "4"}],
                "ContinuousParameterRanges": [
                    {"Name": "x", "MinValue": "0.001", "MaxValue": "1", "ScalingType": "Logarithmic"}
                ],
                "CategoricalParameterRanges": [{"Name": "kind", "Values": ["a", "b"]}],
            },
            **config,
        },
        "TrainingJobDefinition": {
            "StaticHyperParameters": {"static": "1", "sagemaker_program": '"train.py"'},
            "AlgorithmSpecification": {
                "TrainingImage": SKLEARN_IMAGE,
                "TrainingInputMode": "File",
                "MetricDefinitions": [{"Name": OBJECTIVE, "Regex": "score=(\\S+)"}],
            },
            "RoleArn": ROLE,
            "InputDataConfig": [
                {
                    "ChannelName": "train",
                    "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bkt/d"}},
                }
            ],
            "OutputDataConfig": {"S3OutputPath": "s3://bkt/tuning"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
            "StoppingCondition": {"MaxRuntimeInSeconds": 60},
            "CheckpointConfig": {"S3Uri": "s3://bkt/ck"},
        },
    }


class FakeTrainer:
    """Stands in for the orchestration's run_training: scores HPs, records requests and concurrency."""

    def __init__(self, fail_depth: str | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.active = 0
        self.peak = 0
        self.fail_depth = fail_depth
        self._lock = threading.Lock()

    def __call__(self, req: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.requests.append(req)
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.05)
        with self._lock:
            self.active -= 1
        hps = req["HyperParameters"]
        name = req["TrainingJobName"]
        if hps.get("depth") == self.fail_depth:
            return {"TrainingJobName": name, "TrainingJobStatus": "Failed", "FailureReason": "boom"}
        score = (
            float(hps.get("x", "0.5"))
            + 0.1 * int(hps.get("depth", "1"))
            + (0.05 if hps.get("kind") == "b" else 0)
        )
        return {
            "TrainingJobName": name,
            "TrainingJobStatus": "Completed",
            "FinalMetricDataList": [{"MetricName": OBJECTIVE, "Value": score}],
        }


def score_of(summary: dict[str, Any]) -> float:
    return float(summary["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])


@pytest.mark.parametrize("strategy", ["Bayesian", "Random", "Hyperband"])
@pytest.mark.parametrize("direction", ["Maximize", "Minimize"])
def test_strategies_respect_limits_and_pick_the_best(tmp_path: Path, strategy: str, direction: str) -> None:
    trainer = FakeTrainer(fail_depth="2")
    req = tuning_request(strategy, max_jobs=7, parallel=3, direction=direction)
    desc = run_tuning_job(req, make_ctx(tmp_path), trainer)
    assert desc["HyperParameterTuningJobStatus"] == "Completed", desc.get("FailureReason")
    assert len(trainer.requests) == 7 and trainer.peak == 3
    summaries = desc.pop("TrainingJobSummaries")
    assert_shape("DescribeHyperParameterTuningJob", desc)
    assert_shape("ListTrainingJobsForHyperParameterTuningJob", {"TrainingJobSummaries": summaries})
    scored = [score_of(s) for s in summaries if s["ObjectiveStatus"] == "Succeeded"]
    assert scored == sorted(scored, reverse=direction == "Maximize")  # best first
    assert desc["BestTrainingJob"] == summaries[0] and score_of(summaries[0]) == scored[0]
    failed = sum(1 for r in trainer.requests if r["HyperParameters"]["depth"] == "2")
    counters = desc["TrainingJobStatusCounters"]
    assert counters["Completed"] == 7 - failed and counters["NonRetryableError"] == failed
    assert desc["ObjectiveStatusCounters"] == {"Succeeded": 7 - failed, "Pending": 0, "Failed": failed}
    assert all(s["ObjectiveStatus"] == "Failed" for s in summaries[len(scored) :])


def test_trial_requests(tmp_path: Path) -> None:
    trainer = FakeTrainer()
    run_tuning_job(tuning_request("Random", max_jobs=3, parallel=1), make_ctx(tmp_path), trainer)
    for index, req in enumerate(trainer.requests, 1):
        assert re.fullmatch(rf"tune-random-{index:03d}-[0-9a-f]{{8}}", req["TrainingJobName"])
        hps = req["HyperParameters"]
        assert hps["_tuning_objective_metric"] == OBJECTIVE and hps["static"] == "1"
        assert hps["sagemaker_program"] == '"train.py"' and set(hps) >= {"depth", "x", "kind"}
        assert all(isinstance(v, str) for v in hps.values()) and 0.001 <= float(hps["x"]) <= 1
        assert req["CheckpointConfig"]["S3Uri"] == f"s3://bkt/ck/{req['TrainingJobName']}"
        assert req["AlgorithmSpecification"]["MetricDefinitions"][0]["Name"] == OBJECTIVE


def test_long_tuning_job_names_fit_in_63_characters(tmp_path: Path) -> None:
    trainer = FakeTrainer()
    req = tuning_request("Random", max_jobs=1, parallel=1)
    req["HyperParameterTuningJobName"] = "t" * 60
    run_tuning_job(req, make_ctx(tmp_path), trainer)
    assert len(trainer.requests[0]["TrainingJobName"]) <= 63


def test_same_seed_same_trials(tmp_path: Path) -> None:
    first, second = FakeTrainer(), FakeTrainer()
    run_tuning_job(tuning_request("Bayesian", max_jobs=5, parallel=2), make_ctx(tmp_path, "a"), first)
    run_tuning_job(tuning_request("Bayesian", max_jobs=5, parallel=2), make_ctx(tmp_path, "b"), second)
    hps = [sorted(r["HyperParameters"].items()) for r in first.requests]
    assert hps == [sorted(r["HyperParameters"].items()) for r in second.requests]
    other = FakeTrainer()
    run_tuning_job(
        tuning_request("Bayesian", max_jobs=5, parallel=2, RandomSeed=7), make_ctx(tmp_path, "c"), other
    )
    assert hps != [sorted(r["HyperParameters"].items()) for r in other.requests]


def test_grid_covers_every_point_once(tmp_path: Path) -> None:
    trainer = FakeTrainer()
    ranges = {
        "IntegerParameterRanges": [{"Name": "depth", "MinValue": "1", "MaxValue": "3"}],
        "CategoricalParameterRanges": [{"Name": "kind", "Values": ["a", "b"]}],
    }
    desc = run_tuning_job(
        tuning_request("Grid", max_jobs=None, parallel=2, ranges=ranges), make_ctx(tmp_path), trainer
    )
    points = sorted((r["HyperParameters"]["depth"], r["HyperParameters"]["kind"]) for r in trainer.requests)
    assert points == [(d, k) for d in "123" for k in "ab"]
    assert desc["BestTrainingJob"]["TunedHyperParameters"] == {"depth": "3", "kind": "b"}


def test_grid_rejects_continuous_ranges(tmp_path: Path) -> None:
    trainer = FakeTrainer()
    desc = run_tuning_job(tuning_request("Grid"), make_ctx(tmp_path), trainer)
    assert (
        desc["HyperParameterTuningJobStatus"] == "Failed" and "continuous range 'x'" in desc["FailureReason"]
    )
    assert trainer.requests == []


def test_all_trials_failing_fails_the_tuning_job(tmp_path: Path) -> None:
    def broken(req: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("orchestration hiccup")

    desc = run_tuning_job(tuning_request("Random", max_jobs=2, parallel=2), make_ctx(tmp_path), broken)
    assert desc["HyperParameterTuningJobStatus"] == "Failed" and "BestTrainingJob" not in desc
    assert desc["TrainingJobStatusCounters"]["RetryableError"] == 2
    assert "orchestration hiccup" in desc["TrainingJobSummaries"][0]["FailureReason"]


def test_tuning_with_real_training_jobs(tmp_path: Path) -> None:
    """The trial requests are valid CreateTrainingJob requests: run them with run_training_job."""
    ctx = make_ctx(tmp_path)
    ctx.store.put_bytes("s3://bkt/d/a.csv", b"1\n")
    code = (
        "import argparse\np = argparse.ArgumentParser()\n"
        "p.add_argument('--depth', type=int)\np.add_argument('--static')\n"
        "a = p.parse_args()\nprint(f'score={a.depth * 0.1}')\n"
    )
    ctx.store.put_bytes("s3://bkt/code/sourcedir.tar.gz", sourcedir({"train.py": code}))
    req = tuning_request(
        "Random",
        max_jobs=3,
        parallel=2,
        ranges={"IntegerParameterRanges": [{"Name": "depth", "MinValue": "1", "MaxValue": "9"}]},
    )
    definition = req["TrainingJobDefinition"]
    definition["StaticHyperParameters"]["sagemaker_submit_directory"] = '"s3://bkt/code/sourcedir.tar.gz"'
    del definition["CheckpointConfig"]

    def run_training(trial: dict[str, Any]) -> dict[str, Any]:
        return run_training_job(trial, make_ctx(tmp_path, trial["TrainingJobName"]))

    desc = run_tuning_job(req, ctx, run_training)
    assert desc["HyperParameterTuningJobStatus"] == "Completed", desc.get("FailureReason")
    best = desc["BestTrainingJob"]
    assert score_of(best) == pytest.approx(int(best["TunedHyperParameters"]["depth"]) * 0.1)
    assert best["TrainingJobArn"].endswith(best["TrainingJobName"]) and best["TrainingStartTime"]
