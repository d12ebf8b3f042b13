"""Job plumbing shared by the model_code scripts: base dir, failure file, exit codes, schema arguments."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import pandas as pd

if __package__:
    from .features import PROBLEM_TYPES, FeatureError
else:
    from features import PROBLEM_TYPES, FeatureError

EXIT_BAD_INPUT = 2
EXIT_ERROR = 1
EXIT_SIGTERM = 143  # 128 + SIGTERM, as a shell reports a process stopped by SIGTERM


class JobError(Exception):
    """A job failure with a clear message; `exit_code` is 2 for bad data or arguments, else 1."""

    exit_code = EXIT_ERROR


class BadInputError(JobError):
    """Bad data or bad arguments (exit code 2)."""

    exit_code = EXIT_BAD_INPUT


def read_csv_files(files: Sequence[Path], what: str) -> pd.DataFrame:
    """Concatenate CSV files with header rows; empty files are skipped, unreadable ones are bad input.

    `what` names the data in messages (e.g. "channel 'train'"); an empty result is bad input too.
    """
    import pandas as pd

    frames = []
    for file in files:
        try:
            frames.append(pd.read_csv(file))
        except pd.errors.EmptyDataError:
            continue
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise BadInputError(f"{what}: {file.name} is not a readable CSV file: {exc}") from None
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if df.empty:
        raise BadInputError(f"{what} has no data rows in {', '.join(f.name for f in files)}")
    return df


def base_dir() -> Path:
    """`/opt/ml`, or `SAGEMAKER_BASE_DIR` as SageMaker's training toolkit honours it (read at call time)."""
    return Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))


def fail(message: str, exit_code: int) -> int:
    """Print `message` to stderr, write it to BASE/output/failure, and return `exit_code`."""
    print(message, file=sys.stderr, flush=True)
    failure = base_dir() / "output" / "failure"
    try:
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_text(message + "\n", encoding="utf-8")
    except OSError as exc:  # the message is on stderr already; a read-only base must not hide it
        print(f"(could not write {failure}: {exc})", file=sys.stderr)
    return exit_code


def run_job(name: str, job: Callable[[], None]) -> int:
    """Run `job` and turn its failure into one message, the failure file and the contract's exit code."""
    try:
        job()
    except (BadInputError, FeatureError) as exc:
        return fail(f"{name}: {exc}", EXIT_BAD_INPUT)
    except JobError as exc:
        return fail(f"{name}: {exc}", exc.exit_code)
    except Exception as exc:  # anything unexpected: keep the traceback for the log
        return fail(f"{name}: unexpected error: {exc!r}\n{traceback.format_exc()}", EXIT_ERROR)
    return 0


class JobArgumentParser(argparse.ArgumentParser):
    """argparse that raises BadInputError (exit 2 + failure file) instead of exiting on a bad argument."""

    def error(self, message: str) -> NoReturn:
        raise BadInputError(f"bad arguments: {message}")


def csv_list(text: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']; '' -> []."""
    return [item.strip() for item in text.split(",") if item.strip()]


def categories_arg(items: Sequence[str]) -> dict[str, list[str]]:
    """['type=H|L|M'] -> {'type': ['H', 'L', 'M']}."""
    result: dict[str, list[str]] = {}
    for item in items:
        column, sep, values = item.partition("=")
        allowed = [v.strip() for v in values.split("|") if v.strip()]
        if not sep or not column.strip() or not allowed:
            raise BadInputError(f"--categories {item!r}: expected COLUMN=VALUE|VALUE|...")
        result[column.strip()] = allowed
    return result


def add_schema_args(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """The schema arguments shared by preprocess and evaluate (contracts.md sec. 3)."""
    parser.add_argument("--target-column", required=required, help="target column name")
    parser.add_argument("--problem-type", choices=PROBLEM_TYPES, required=required)
    parser.add_argument("--numeric-columns", type=csv_list, default=[], help="comma-separated")
    parser.add_argument("--categorical-columns", type=csv_list, default=[], help="comma-separated, may be ''")
    parser.add_argument(
        "--categories", action="append", default=[], metavar="COL=A|B", help="allowed values (repeatable)"
    )
    parser.add_argument("--drop-columns", type=csv_list, default=[], help="comma-separated columns to drop")
    parser.add_argument("--max-nan-ratio", type=float, default=0.05, help="max share of missing values")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--split", default="0.70,0.15,0.15", help="train,validation,test fractions")
