"""Local engine benchmarks: engine overhead against the same scripts run directly, and cached vs. cold runs.

Everything is measured in one run on this machine (no stored baselines): the default `make run` pipeline
on a fresh engine root, then the same scripts with the same arguments and inputs run as plain processes,
then an unchanged re-run of the pipeline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MODEL_CODE = REPO / "model_code"
PY = sys.executable
OVERHEAD_TARGET = 1.15
CACHE_TARGET = 10.0


def _timed(argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run(list(argv), env={**os.environ, **(env or {})}, cwd=cwd or REPO,
                            capture_output=True, text=True)  # fmt: skip
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:4])} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return elapsed


def _execution_seconds(client: Any, arn: str) -> float:
    desc = client.describe_pipeline_execution(PipelineExecutionArn=arn)
    return (desc["LastModifiedTime"] - desc["CreationTime"]).total_seconds()


def _latest_execution(client: Any) -> str:
    page = client.list_pipeline_executions(PipelineName="pdm-mlops", SortOrder="Descending")
    return page["PipelineExecutionSummaries"][0]["PipelineExecutionArn"]


def _hp_args(hyperparameters: dict[str, str]) -> list[str]:
    """The training toolkit's `--key value` CLI, without the reserved sagemaker_* entries."""
    args: list[str] = []
    for key in sorted(hyperparameters):
        if not key.startswith("sagemaker_") and not key.startswith("_"):
            args += [f"--{key}", hyperparameters[key]]
    return args


class DirectRun:
    """The pipeline's scripts as plain processes, with the arguments and inputs the engine gave them."""

    def __init__(self, client: Any, arn: str, work: Path) -> None:
        self.client, self.work = client, work
        self.store = client.store
        self.steps = {s["StepName"]: s for s in client.list_pipeline_execution_steps(
            PipelineExecutionArn=arn, MaxResults=100)["PipelineExecutionSteps"]}  # fmt: skip
        self.times: dict[str, float] = {}

    def _job(self, step: str, kind: str) -> dict[str, Any]:
        name = self.steps[step]["Metadata"][kind]["Arn"].rsplit("/", 1)[-1]
        if kind == "ProcessingJob":
            return self.client.describe_processing_job(ProcessingJobName=name)
        if kind == "TrainingJob":
            return self.client.describe_training_job(TrainingJobName=name)
        return self.client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)

    def preprocess(self) -> float:
        job = self._job("Preprocess", "ProcessingJob")
        base = self.work / "preprocess"
        data = next(i for i in job["ProcessingInputs"] if i["InputName"] == "data")["S3Input"]["S3Uri"]
        self.store.download(data, base / "processing" / "input" / "data")
        argv = [PY, str(MODEL_CODE / "preprocess.py"), *job["AppSpecification"]["ContainerArguments"]]
        self.times["preprocess"] = _timed(argv, {"SAGEMAKER_BASE_DIR": str(base)})
        return self.times["preprocess"]

    def train(self, label: str, hyperparameters: dict[str, str]) -> float:
        base = self.work / label
        out = self.work / "preprocess" / "processing" / "output"
        env = {
            "SAGEMAKER_BASE_DIR": str(base), "SM_MODEL_DIR": str(base / "model"), "SM_NUM_GPUS": "0",
            "SM_CHANNEL_TRAIN": str(out / "train"), "SM_CHANNEL_VALIDATION": str(out / "validation"),
        }  # fmt: skip
        self.times[label] = _timed([PY, str(MODEL_CODE / "train.py"), *_hp_args(hyperparameters)], env)
        return self.times[label]

    def trials(self) -> list[tuple[str, dict[str, str]]]:
        """(trial job name, its hyperparameters) in start order; the job name labels the direct run."""
        tuning = self._job("Tune", "TuningJob")
        summaries = self.client.list_training_jobs_for_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=tuning["HyperParameterTuningJobName"], MaxResults=100
        )["TrainingJobSummaries"]
        names = sorted(s["TrainingJobName"] for s in summaries)
        return [(n, self.client.describe_training_job(TrainingJobName=n)["HyperParameters"]) for n in names]

    def evaluate(self, best: str) -> float:
        job = self._job("Evaluate", "ProcessingJob")
        base = self.work / "evaluate"
        model_dir = base / "processing" / "model"
        model_dir.mkdir(parents=True)
        with tarfile.open(model_dir / "model.tar.gz", "w:gz") as tar:
            for path in sorted((self.work / best / "model").iterdir()):
                tar.add(path, arcname=path.name)
        shutil.copytree(
            self.work / "preprocess" / "processing" / "output" / "test", base / "processing" / "test"
        )
        champion = base / "processing" / "champion"
        champion.mkdir(parents=True)
        (champion / "NO_CHAMPION").write_text("none\n")
        argv = [PY, str(MODEL_CODE / "evaluate.py"), *job["AppSpecification"]["ContainerArguments"]]
        self.times["evaluate"] = _timed(argv, {"SAGEMAKER_BASE_DIR": str(base)})
        return self.times["evaluate"]

    def serve(self) -> float:
        """The endpoint's work: start the model server on the artefact and wait until it answers."""
        ready = self.work / "ready.json"
        archive = self.work / "evaluate" / "processing" / "model" / "model.tar.gz"
        start = time.perf_counter()
        proc = subprocess.Popen([PY, "-m", "deploy.serve", "--model-data", str(archive), "--port", "0",
                                 "--ready-file", str(ready)], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            import httpx

            while True:
                if proc.poll() is not None:
                    raise RuntimeError("model server exited before it was ready")
                if ready.exists():
                    url = json.loads(ready.read_text())["url"]
                    if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                        break
                time.sleep(0.02)
            self.times["serve"] = time.perf_counter() - start
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        return self.times["serve"]

    def run(self) -> float:
        """Each script alone, one after another (its own time, undisturbed); returns the sum."""
        self.preprocess()
        self.train("train", self._job("Train", "TrainingJob")["HyperParameters"])
        for name, hyperparameters in self.trials():
            self.train(name, hyperparameters)
        self.evaluate(self._job("Tune", "TuningJob")["BestTrainingJob"]["TrainingJobName"])
        self.serve()
        return sum(self.times.values())


def _fresh_clone_seconds() -> str:
    """`git clone` + `make run` in a temp folder (installs ~1 GB: minutes). Only with BENCH_FRESH_CLONE=1."""
    if os.environ.get("BENCH_FRESH_CLONE") != "1":
        return "not measured in this run (set BENCH_FRESH_CLONE=1; it installs the package from scratch)"
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        try:
            seconds = _timed(["make", "run"], {"PDM_ROOT": str(Path(tmp) / "root")}, cwd=clone)
        finally:
            subprocess.run(
                [
                    str(clone / ".venv" / "bin" / "python"),
                    "-m",
                    "deploy.endpoint",
                    "--root",
                    str(Path(tmp) / "root"),
                    "stop",
                    "pdm-mlops-dev",
                ],
                cwd=clone,
                capture_output=True,
            )
    return f"{seconds:.0f} s"


def run() -> str:
    """Run the pipeline benchmarks; returns the markdown section for bench/results.md."""
    from pipelines.config import load_config
    from pipelines.local.client import LocalSageMaker
    from steps.parameters import no_champion_uri

    with tempfile.TemporaryDirectory(prefix="pdm-bench-") as tmp:
        root = Path(tmp) / ".mlops"
        cli = [PY, "-m", "pipelines.run", "--root", str(root), "--wait"]
        cold_cli = _timed(cli)
        client = LocalSageMaker(root=root)
        cold_arn = _latest_execution(client)
        cold = _execution_seconds(client, cold_arn)
        config = load_config(environ={})
        scripts_sum = DirectRun(client, cold_arn, Path(tmp) / "direct").run()
        # The same pipeline with the same parameters: the champion is pinned to what the cold run saw.
        warm_cli = _timed([*cli, "--param", f"ChampionModelUri={no_champion_uri(config)}"])
        warm_arn = _latest_execution(client)
        warm = _execution_seconds(client, warm_arn)
        warm_steps = client.list_pipeline_execution_steps(PipelineExecutionArn=warm_arn, MaxResults=100)
        hits = sum(1 for s in warm_steps["PipelineExecutionSteps"] if s.get("CacheHitResult"))
        for endpoint in client.list_endpoints()["Endpoints"]:
            client.delete_endpoint(EndpointName=endpoint["EndpointName"])

    overhead_sum = cold / scripts_sum
    speedup = cold / warm
    mark = {True: "met", False: "**missed**"}
    return "\n".join(
        [
            "## Local engine (pipeline_bench)",
            "",
            f"Default `make run` pipeline ({config.data.builtin_rows:,} rows, "
            f"{config.tuning.max_jobs} tuning jobs, {config.tuning.max_parallel} in parallel) "
            f"on {os.cpu_count()} cores.",
            "",
            "| measure | seconds |",
            "|---|---|",
            "| the same scripts run directly, one after another (preprocess, train, each tuning trial, "
            f"evaluate, model server start): sum | {scripts_sum:.1f} |",
            f"| engine, cold execution (records: start to end) | {cold:.1f} |",
            "| engine, cold `python -m pipelines.run` (plus SDK import, compile, data generation) "
            f"| {cold_cli:.1f} |",
            f"| engine, unchanged re-run execution ({hits} cache hits) | {warm:.1f} |",
            f"| engine, unchanged re-run `python -m pipelines.run` | {warm_cli:.1f} |",
            "",
            f"- Engine overhead, cold execution / sum of script times: **{overhead_sum:.2f}x** "
            f"(target <= {OVERHEAD_TARGET}x: {mark[overhead_sum <= OVERHEAD_TARGET]}). The engine runs "
            "independent steps and tuning trials in parallel, which is why it can beat the serial sum.",
            f"- Cached re-run: execution **{speedup:.1f}x** faster than cold (target >= {CACHE_TARGET:.0f}x: "
            f"{mark[speedup >= CACHE_TARGET]}); whole CLI {cold_cli / warm_cli:.1f}x.",
            f"- Time from a fresh clone to a finished `make run`: {_fresh_clone_seconds()}.",
            "",
        ]
    )


if __name__ == "__main__":
    print(run())
