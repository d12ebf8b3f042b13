"""Shared fixtures for the model_code tests: job sandboxes laid out as SageMaker does, one run per problem."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL_CODE = ROOT / "model_code"
if str(ROOT) not in sys.path:  # tests import `model_code.x`
    sys.path.insert(0, str(ROOT))
if str(MODEL_CODE) not in sys.path:  # bare `x` as inside the container; appended, so it shadows nothing
    sys.path.append(str(MODEL_CODE))

from model_code.data import generate  # noqa: E402

NUMERIC = "air_temperature_k,process_temperature_k,rotational_speed_rpm,torque_nm,tool_wear_min"
LEAKS = ["twf", "hdf", "pwf", "osf", "rnf"]
TARGETS = {"binary": "machine_failure", "multiclass": "failure_type", "regression": "remaining_tool_life_min"}
GATE = {"binary": "auc", "multiclass": "accuracy", "regression": "rmse"}
ROWS, SEED = 3000, 11
TRAIN_HP = ["--num_round", "30", "--max_depth", "4", "--eta", "0.3", "--early_stopping_rounds", "10"]


def schema_args(problem: str) -> list[str]:
    """The contract's schema arguments (contracts.md sec. 3) for the built-in data set."""
    target = TARGETS[problem]
    drop = ["udi", "product_id", *[t for t in TARGETS.values() if t != target], *LEAKS]
    return [
        "--target-column", target,
        "--problem-type", problem,
        "--numeric-columns", NUMERIC,
        "--categorical-columns", "type",
        "--categories", "type=H|L|M",
        "--drop-columns", ",".join(drop),
        "--max-nan-ratio", "0.05",
        "--seed", "42",
        "--split", "0.70,0.15,0.15",
    ]  # fmt: skip


def run_script(
    script: str, args: list[str], base: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run model_code/<script> in a fresh interpreter with SAGEMAKER_BASE_DIR=<base>, as the engine does."""
    base.mkdir(parents=True, exist_ok=True)
    # One OpenMP thread: these jobs are tiny, and several run at once on a shared machine.
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "SAGEMAKER_BASE_DIR": str(base), **(env or {})}
    return subprocess.run(
        [sys.executable, str(MODEL_CODE / script), *args],
        env=full_env,
        cwd=base,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def check(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def training_env(base: Path, train: Path, validation: Path) -> dict[str, str]:
    """Lay out BASE/input/data/{train,validation} from the preprocess outputs; the SM_* variables to match."""
    channels = base / "input" / "data"
    for name, source in (("train", train), ("validation", validation)):
        if not (channels / name).exists():
            shutil.copytree(source, channels / name)
    return {
        "SM_CHANNEL_TRAIN": str(channels / "train"),
        "SM_CHANNEL_VALIDATION": str(channels / "validation"),
        "SM_MODEL_DIR": str(base / "model"),
        "SM_NUM_GPUS": "0",
    }


def make_tar(model_dir: Path, archive: Path) -> Path:
    """model.tar.gz with the contents of `model_dir` at the archive root, as SageMaker packs /opt/ml/model."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(model_dir)), recursive=False)
    return archive


def evaluation_layout(base: Path, model_dir: Path, test_csv: Path, champion: Path | None = None) -> Path:
    """BASE/processing/{model,test,champion} for the evaluate step; `champion` is a model dir or None."""
    processing = base / "processing"
    make_tar(model_dir, processing / "model" / "model.tar.gz")
    (processing / "test").mkdir(parents=True, exist_ok=True)
    shutil.copy(test_csv, processing / "test" / "test.csv")
    (processing / "champion").mkdir(parents=True, exist_ok=True)
    if champion is None:
        (processing / "champion" / "NO_CHAMPION").touch()
    else:
        make_tar(champion, processing / "champion" / "model.tar.gz")
    return processing


@dataclass
class Prepared:
    """Outputs of one preprocess job."""

    problem: str
    base: Path
    result: subprocess.CompletedProcess[str]

    @property
    def output(self) -> Path:
        return self.base / "processing" / "output"

    @property
    def train(self) -> Path:
        return self.output / "train"

    @property
    def validation(self) -> Path:
        return self.output / "validation"

    @property
    def test_csv(self) -> Path:
        return self.output / "test" / "test.csv"


@dataclass
class Chain:
    """One preprocess -> train -> evaluate run, each job in its own sandbox, as the pipeline runs them."""

    prepared: Prepared
    train_base: Path
    train: subprocess.CompletedProcess[str]
    eval_base: Path
    evaluate: subprocess.CompletedProcess[str]

    @property
    def model_dir(self) -> Path:
        return self.train_base / "model"

    @property
    def evaluation(self) -> dict:
        return json.loads((self.eval_base / "processing" / "evaluation" / "evaluation.json").read_text())


def _shared_root(factory: pytest.TempPathFactory) -> Path:
    """A folder all pytest-xdist workers of this run share (the session's own temp dir without xdist)."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _once(
    factory: pytest.TempPathFactory, name: str, make: Callable[[Path], list[subprocess.CompletedProcess[str]]]
) -> tuple[Path, list[subprocess.CompletedProcess[str]]]:
    """Run `make(folder)` once per test run, even across xdist workers; later callers reuse its results."""
    root = _shared_root(factory)
    folder, done = root / f"model-code-{name}", root / f"model-code-{name}.json"
    with _exclusive(root / f"model-code-{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            results = make(folder)
            saved = [[r.args, r.returncode, r.stdout, r.stderr] for r in results]
            done.write_text(json.dumps(saved))
    loaded = json.loads(done.read_text())
    return folder, [subprocess.CompletedProcess(a, rc, out, err) for a, rc, out, err in loaded]


def _run_chain(problem: str, folder: Path) -> list[subprocess.CompletedProcess[str]]:
    """preprocess -> train -> evaluate for one problem type, each job in its own sandbox under `folder`."""
    pre_base, train_base, eval_base = folder / "preprocess", folder / "train", folder / "evaluate"
    data = pre_base / "processing" / "input" / "data"
    data.mkdir(parents=True)
    generate(ROWS, SEED).to_csv(data / "pdm.csv", index=False)
    results = [check(run_script("preprocess.py", schema_args(problem), pre_base))]
    pre = Prepared(problem, pre_base, results[0])
    env = training_env(train_base, pre.train, pre.validation)
    results.append(check(run_script("train.py", [*TRAIN_HP, "--checkpoint_every", "10"], train_base, env)))
    evaluation_layout(eval_base, train_base / "model", pre.test_csv)
    args = [*schema_args(problem), "--gate-metric", GATE[problem]]
    results.append(check(run_script("evaluate.py", args, eval_base)))
    return results


@pytest.fixture(scope="session")
def pipeline_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Chain]:
    """The three chains (binary, multiclass, regression), run concurrently once per test run."""

    def make(folder: Path) -> list[subprocess.CompletedProcess[str]]:
        with ThreadPoolExecutor(len(TARGETS)) as pool:  # each job is a subprocess: threads just wait
            runs = list(pool.map(lambda p: _run_chain(p, folder / p), TARGETS))
        return [result for run in runs for result in run]

    folder, results = _once(tmp_path_factory, "chains", make)
    chains = {}
    for i, problem in enumerate(TARGETS):
        pre, trained, evaluated = results[3 * i : 3 * i + 3]
        base = folder / problem
        prepared = Prepared(problem, base / "preprocess", pre)
        chains[problem] = Chain(prepared, base / "train", trained, base / "evaluate", evaluated)
    return chains


@pytest.fixture(scope="session")
def prepared(pipeline_runs: dict[str, Chain]) -> Callable[[str], Prepared]:
    """prepared(problem): outputs of preprocess.py on ROWS generated rows (BASE/processing/output)."""
    return lambda problem: pipeline_runs[problem].prepared


@pytest.fixture(scope="session")
def chain(pipeline_runs: dict[str, Chain]) -> Callable[[str], Chain]:
    """chain(problem): preprocess -> train -> evaluate as subprocesses, each job in its own sandbox."""
    return lambda problem: pipeline_runs[problem]


@pytest.fixture
def job_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A sandbox for an in-process job run: SAGEMAKER_BASE_DIR points at it, SM_* variables are cleared."""
    base = tmp_path / "opt-ml"
    base.mkdir()
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(base))
    for name in ("SM_CHANNEL_TRAIN", "SM_CHANNEL_VALIDATION", "SM_MODEL_DIR", "SM_NUM_GPUS"):
        monkeypatch.delenv(name, raising=False)
    return base
