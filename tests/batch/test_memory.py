"""A local batch transform streams: its peak memory does not grow with the input (100k vs 1M rows).

The job runs as a user runs it (`python -m deploy.batch`, its own process) under a small wrapper whose only
child it is, so RUSAGE_CHILDREN's ru_maxrss is the job's peak resident set (the largest of the job and any
worker it waited for).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from model_code.data import generate
from pipelines.local.store import ObjectStore
from tests.batch.conftest import MODEL_URI
from tests.serve.serve_helpers import RAW_COLUMNS, REPO

SMALL, LARGE = 100_000, 1_000_000
BLOCK = 10_000
# Same settings for both sizes, so both take the same path (threads, 1 MB requests): the input grows by
# ~28 MB, so reading it whole, or keeping the ~20 MB of results, would show far above this margin.
MARGIN_MB = 12
WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)\n"
)


def job_peak_mb(root: Path, rows: int) -> float:
    """Peak RSS (MB) of `python -m deploy.batch` scoring `rows` rows; the job must complete."""
    job = [
        sys.executable, "-m", "deploy.batch", "--root", str(root), "--model-data", MODEL_URI,
        "--input", f"s3://data/in-{rows}/", "--output", f"s3://data/out-{rows}/", "--job-name", f"mem-{rows}",
        "--concurrency", "1", "--max-payload-mb", "1",
    ]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", WRAPPER, *job], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    peak_kb, code = result.stdout.split()
    assert code == "0", result.stderr
    return int(peak_kb) / 1024


def test_peak_memory_does_not_grow_from_100k_to_1m_rows(root: Path) -> None:
    store = ObjectStore(root / "s3")
    block = generate(BLOCK, 5)[RAW_COLUMNS].to_csv(index=False, header=False).encode()
    for rows in (SMALL, LARGE):
        with store.open_write(f"s3://data/in-{rows}/records.csv") as handle:
            for _ in range(rows // BLOCK):
                handle.write(block)
    small, large = job_peak_mb(root, SMALL), job_peak_mb(root, LARGE)
    for rows in (SMALL, LARGE):
        with open(store.path_for(f"s3://data/out-{rows}/records.csv.out"), "rb") as out:
            assert sum(chunk.count(b"\n") for chunk in iter(lambda: out.read(1 << 20), b"")) == rows
    assert large <= small + MARGIN_MB, (
        f"peak RSS {small:.0f} MB for {SMALL:,} rows, {large:.0f} MB for {LARGE:,}"
    )
