"""Batch transform benchmark: rows/s of `python -m deploy.batch` (local) over 1M rows vs. raw inplace_predict.

Why this shape: the user-facing command is measured as a user runs it (its own process, default settings,
all cores), its peak memory sampled from /proc for the job process and its workers, and its output checked
against the raw predictions; the raw figure is `Booster.inplace_predict` on the same rows already encoded in
memory, with XGBoost's default threads (all cores). A 100k-row run shows that memory does not grow with input.
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import procs
from bench.artefact import Artefact, build

ROWS, SMALL_ROWS = 1_000_000, 100_000
PARTS = 30  # the same rows as that many objects of ~1 MB (a prefix of part files, as Spark or Glue write)
QUICK_ROWS, QUICK_SMALL_ROWS = 200_000, 20_000  # `python -m bench --quick`: checks the harness only
SEED = 11
# Runs of the 1M-row job, alternated with ATTEMPTS + 1 runs of raw predict (3 predictions each). Seven, not
# five: single jobs on this shared VM spread ±25%, and the median of seven moves less between bench runs.
ATTEMPTS = 7
TARGET_RATIO = 0.5
BUCKET = "s3://pdm-bench"
JOB_TIMEOUT_S = 900
CHECKED_ROWS = 1000
_COMPLETED = re.compile(r"Completed in ([0-9.]+) s")
_LOG = re.compile(r"^log: (.+)$", re.MULTILINE)
_READY = re.compile(r"model ready in ([0-9.]+) s")

# Run in a fresh interpreter: XGBoost's default thread count (all cores), nothing else loaded.
_RAW_SCRIPT = """
import json, sys, time
import numpy as np, pandas as pd, xgboost as xgb
sys.path.insert(0, sys.argv[1] + "/code")
from features import FeatureSpec
spec = FeatureSpec.load(sys.argv[1] + "/feature_spec.json")
frame = pd.read_csv(sys.argv[2], header=None, names=spec.raw_columns)
x = spec.transform(frame)
booster = xgb.Booster()
booster.load_model(sys.argv[1] + "/xgboost-model.json")
booster.inplace_predict(x[:1000])
times = []
for _ in range(3):
    start = time.perf_counter()
    predictions = booster.inplace_predict(x)
    times.append(time.perf_counter() - start)
print(json.dumps({"rows": len(x), "seconds": sorted(times), "head": predictions[:int(sys.argv[3])].tolist()}))
"""


def _write_inputs(artefact: Artefact, folder: Path, sizes: tuple[int, int]) -> dict[int, Path]:
    """Raw CSV records (no header, raw column order), one file per size."""
    from model_code.data import generate

    frame = generate(max(sizes), SEED)[artefact.raw_columns]
    files = {}
    for rows in sizes:
        files[rows] = folder / f"records-{rows}.csv"
        frame.head(rows).to_csv(files[rows], index=False, header=False)
    return files


def _raw(artefact: Artefact, csv_path: Path) -> dict[str, Any]:
    env = {k: v for k, v in procs.python_env().items() if k != "OMP_NUM_THREADS"}
    result = subprocess.run(
        [procs.python(), "-c", _RAW_SCRIPT, str(artefact.model_dir), str(csv_path), str(CHECKED_ROWS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"raw inplace_predict failed: {result.stderr[-1500:]}")
    return json.loads(result.stdout)


def _transform(root: Path, rows: int | str, folder: Path, attempt: int = 0) -> dict[str, Any]:
    """Run the CLI as a user would; wall time, job time, CPU time and peak memory of its process tree."""
    argv = [
        procs.python(), "-m", "deploy.batch", "--target", "local", "--root", str(root),
        "--model-data", f"{BUCKET}/model/model.tar.gz", "--input", f"{BUCKET}/input-{rows}/",
        "--output", f"{BUCKET}/output-{rows}/", "--job-name", f"bench-{rows}-{attempt}",
    ]  # fmt: skip
    env = {k: v for k, v in procs.python_env().items() if k != "OMP_NUM_THREADS"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(folder / f"batch-{rows}-{attempt}.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=procs.REPO, env=env, stdout=subprocess.PIPE, stderr=log)
        with procs.PeakMemory(proc.pid) as memory:
            try:
                stdout, _ = proc.communicate(timeout=JOB_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = stdout.decode("utf-8", errors="replace")
    match = _COMPLETED.search(text)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"deploy.batch failed ({proc.returncode}): {text[-1500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    log = _LOG.search(text)
    ready = _READY.search(Path(log.group(1)).read_text()) if log else None
    return {
        "rows": rows,
        "wall_s": wall,
        "job_s": float(match.group(1)),
        "ready_s": float(ready.group(1)) if ready else float("nan"),
        "cpu_s": cpu,
        "root_mb": memory.root_mb,
        "worker_mb": memory.largest_child_mb,
        "total_mb": memory.total_mb,
        "processes": len(memory.peaks),
    }


def _stages(artefact: Artefact, csv_path: Path, folder: Path) -> dict[str, Any]:
    """Per-row cost of each hook stage on one full 6 MB request, on one core (why the ratio is what it is)."""
    data = csv_path.read_bytes()[: 6 * 1024 * 1024]
    body = folder / "request-6mb.csv"
    body.write_bytes(data[: data.rfind(b"\n")])
    floor = ["-m", "bench.floor", "--model-dir", str(artefact.model_dir), "--body-file", str(body)]
    argv = procs.pinned(0, [procs.python(), *floor, "--stages-only"])
    env = procs.python_env({"OMP_NUM_THREADS": "1"})
    result = subprocess.run(argv, env=env, cwd=procs.REPO, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"stage timing failed: {result.stderr[-1500:]}")
    return json.loads(result.stdout)


def measure(rows: int, small_rows: int) -> dict[str, Any]:
    from pipelines.local.store import ObjectStore

    artefact = build()
    with tempfile.TemporaryDirectory(prefix="pdm-bench-batch-") as tmp:
        folder = Path(tmp)
        root = folder / "mlops"
        store = ObjectStore(root / "s3")
        store.put_file(f"{BUCKET}/model/model.tar.gz", artefact.tarball)
        files = _write_inputs(artefact, folder, (rows, small_rows))
        for size, path in files.items():
            store.put_file(f"{BUCKET}/input-{size}/records.csv", path)
        lines = files[rows].read_bytes().splitlines(keepends=True)
        step = -(-len(lines) // PARTS)
        for part in range(PARTS):
            chunk = b"".join(lines[part * step : (part + 1) * step])
            store.put_bytes(f"{BUCKET}/input-parts/part-{part:05d}.csv", chunk)
        del lines
        # Alternated and repeated: a busy spell on a shared machine should not decide the ratio.
        raws, bigs = [_raw(artefact, files[rows])], []
        for attempt in range(ATTEMPTS):
            bigs.append(_transform(root, rows, folder, attempt))
            raws.append(_raw(artefact, files[rows]))
        raw = min(raws, key=lambda r: r["seconds"][0])
        # Each job against the raw predictions just before and after it: the machine's speed drifts by
        # more than the margins measured here, so a ratio is only taken within one time window. A job is
        # one sample, so it is set against the typical (median) of the 6 raw samples beside it, not the
        # fastest of them: the fastest of 6 noisy samples is faster than a typical one, which would
        # favour the raw side (shown too, as the figure earlier runs reported).
        beside = [raws[i]["seconds"] + raws[i + 1]["seconds"] for i in range(len(bigs))]
        typical, fastest = [statistics.median(s) for s in beside], [min(s) for s in beside]
        steady_s = [b["job_s"] - b["ready_s"] for b in bigs]
        paired = {
            "steady": sorted(r / t for r, t in zip(typical, steady_s, strict=True)),
            "steady_vs_fastest": sorted(r / t for r, t in zip(fastest, steady_s, strict=True)),
            "whole": sorted(r / b["job_s"] for r, b in zip(typical, bigs, strict=True)),
        }
        best = min(bigs, key=lambda r: r["job_s"] - r["ready_s"])
        runs = {small_rows: _transform(root, small_rows, folder), rows: best}
        parts = _transform(root, "parts", folder)
        runs[rows]["peak_worker_mb"] = max(r["worker_mb"] for r in bigs)
        out = store.path_for(f"{BUCKET}/output-{rows}/records.csv.out")
        with open(out, "rb") as handle:
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
        head = np.loadtxt(out, max_rows=CHECKED_ROWS)
        same = bool(np.allclose(head, raw["head"], rtol=0, atol=1e-6))
        stages = _stages(artefact, files[rows], folder)
        return {
            "rows": rows,
            "small_rows": small_rows,
            "raw": raw,
            "runs": runs,
            "parts": parts,
            "paired": paired,
            "lines": lines,
            "same": same,
            "input_mb": files[rows].stat().st_size / 2**20,
            "stages": stages,
            "cpus": len(procs.cpus()),
        }


def render(data: dict[str, Any]) -> str:
    raw, runs, stages = data["raw"], data["runs"], data["stages"]
    rows, small_rows = data["rows"], data["small_rows"]
    raw_s = raw["seconds"][0]
    raw_rps = raw["rows"] / raw_s
    big, small = runs[rows], runs[small_rows]
    big_steady_s = big["job_s"] - big["ready_s"]
    parts_steady_s = data["parts"]["job_s"] - data["parts"]["ready_s"]
    rps = rows / big["job_s"]
    steady = rows / big_steady_s
    paired = data["paired"]
    ratio, whole = statistics.median(paired["steady"]), statistics.median(paired["whole"])
    fastest = statistics.median(paired["steady_vs_fastest"])
    spread = f"{paired['steady'][0]:.2f}–{paired['steady'][-1]:.2f}"
    verdict = "met" if ratio >= TARGET_RATIO else f"**missed** by {(TARGET_RATIO - ratio) / TARGET_RATIO:.0%}"
    records = stages["records"]
    per_row = {k: v / records for k, v in stages["stages_us"].items()}
    python_us = sum(v for k, v in per_row.items() if "inplace_predict" not in k)
    predict_us = per_row.get("Booster.inplace_predict", float("nan"))
    ceiling = data["cpus"] * 1e6 / (python_us + predict_us)
    check = "equal to the raw predictions" if data["same"] else "**differ from the raw predictions**"
    workers = (
        "threads over one model" if not big["processes"] > 1 else f"{big['processes'] - 1} worker processes"
    )
    lines = [
        "## Batch transform",
        "",
        f"{rows:,} rows ({data['input_mb']:.0f} MB of raw CSV records, one object) through "
        "`python -m deploy.batch --target local` with its defaults (SplitType Line, MultiRecord, "
        f"MaxPayloadInMB 6, MaxConcurrentTransforms = {data['cpus']} CPUs, so the object is cut into runs "
        f"of up to 6 MB that shrink to 512 KB as the input runs out, {data['cpus']} requests in flight; "
        "SAGEMAKER_MODEL_SERVER_WORKERS "
        "unset, so the requests run on threads over one model, XGBoost's threads split between them), "
        "against `Booster.inplace_predict` on the same rows already encoded in memory (float32, XGBoost's "
        f"default threads = all CPUs). Job and raw prediction alternate ({ATTEMPTS} jobs, {ATTEMPTS + 1}×3 "
        "raw predictions); the rates shown are the best of each, the ratio is the median over the jobs of "
        "each job against the median of the raw predictions just before and after it (the machine's speed "
        "drifts between runs by more than the margins here, and a job is one sample: set against the "
        "fastest of the 6 raw samples beside it instead, the figure earlier runs reported, it is shown "
        "too). The ratio compares like with like: the raw figure "
        "excludes importing XGBoost and loading the model, so the transform's rate is counted from the "
        "moment its model is loaded (the one-off start, which a SageMaker job also pays when its container "
        "starts, is shown separately, and the whole-job ratio next to it).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| local batch transform, model loaded | **{steady:,.0f} rows/s** "
        f"({big_steady_s:.2f} s for {rows:,} rows) |",
        f"| raw `inplace_predict` | **{raw_rps:,.0f} rows/s** ({raw_s:.3f} s) |",
        f"| ratio (target ≥ {TARGET_RATIO}), median of {len(paired['steady'])} paired runs | **{ratio:.2f}** "
        f"(range {spread}): {verdict} |",
        f"| the same against the fastest raw sample beside each job | median {fastest:.2f} (range "
        f"{paired['steady_vs_fastest'][0]:.2f}–{paired['steady_vs_fastest'][-1]:.2f}) |",
        f"| best job against best raw run (best of {len(paired['steady'])} job samples against best of "
        f"{3 * (len(paired['steady']) + 1)} raw ones, which favours raw) | {steady / raw_rps:.2f} |",
        f"| model start (import of the hooks, `import xgboost`, which imports scikit-learn and SciPy, "
        f"model_fn) | {big['ready_s']:.2f} s |",
        f"| whole job, start included | {rps:,.0f} rows/s (job {big['job_s']:.2f} s; whole command "
        f"{big['wall_s']:.2f} s; {big['cpu_s']:.1f} CPU-s): median {whole:.2f}× raw |",
        f"| the same rows as {PARTS} objects of {data['input_mb'] / PARTS:.1f} MB (requests in flight across "
        "objects), model loaded | "
        f"{rows / parts_steady_s:,.0f} rows/s ({parts_steady_s:.2f} s; {big_steady_s / parts_steady_s:.2f}× "
        "the one-object rate) |",
        f"| peak RSS, {rows:,} rows | {big['total_mb']:.0f} MB ({workers}; {big['processes']} process(es)) |",
        f"| peak RSS, {small_rows:,} rows | {small['total_mb']:.0f} MB (memory does not grow with the "
        f"input; {small_rows / small['job_s']:,.0f} rows/s with the start) |",
        f"| output | {data['lines']:,} lines; the first {CHECKED_ROWS:,} {check} |",
        "",
        f"Where a request's time goes (one 6 MB request of {records:,} records through the artefact's hooks, "
        "one core, µs per row): "
        + ", ".join(f"{k} {v:.2f}" for k, v in per_row.items())
        + f". Parsing (pandas' C reader), encoding and formatting (numpy, `%.9g` text) take "
        f"{python_us:.2f} µs/row against XGBoost's {predict_us:.2f}; with every core busy that bounds a "
        f"runner at about {ceiling:,.0f} rows/s on {data['cpus']} CPUs, {ceiling / raw_rps:.2f}× raw.",
    ]
    return "\n".join(lines) + "\n"


def run() -> str:
    """Measure and return the markdown section (bench/__main__.py registry entry)."""
    quick = os.environ.get("BENCH_QUICK") == "1"
    return render(measure(*((QUICK_ROWS, QUICK_SMALL_ROWS) if quick else (ROWS, SMALL_ROWS))))
