"""`python -m deploy.serve --config endpoint.json` (or `--model-data model.tar.gz`): the process entry point.

The only place that reads the command line and the environment; everything below receives a ServeConfig.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from deploy.serve import constants as c
from deploy.serve.config import ConfigError, ServeConfig, load_config, single_model_config
from deploy.serve.handler import LoadError
from deploy.serve.models import extract_model_tar
from deploy.serve.server import serve


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m deploy.serve", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="endpoint.json written by the local engine")
    source.add_argument("--model-data", type=Path, help="serve one model.tar.gz as variant AllTraffic")
    parser.add_argument("--port", type=int, help="port (0 = any free port); overrides the config")
    parser.add_argument("--host", help="bind address; overrides the config (default 127.0.0.1)")
    parser.add_argument("--workers", type=int, help="worker processes; overrides the config")
    parser.add_argument("--ready-file", type=Path, help="where to write the ready file; overrides the config")
    parser.add_argument(
        "--no-batching", action="store_true", help="run every request alone (no micro-batching)"
    )
    parser.add_argument("--endpoint-name", default="local-endpoint", help="endpoint name for --model-data")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the configuration from arguments and environment, then serve until stopped."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # One OpenMP thread per worker unless the caller chose otherwise: requests run concurrently across
    # workers, and XGBoost's default of one thread per core makes a single-record predict take milliseconds
    # instead of ~0.1 ms once the cores are busy (OpenMP threads wait on each other). Set before any
    # user module imports xgboost, which reads it when its OpenMP runtime loads; spawned workers inherit it.
    os.environ.setdefault(c.ENV_OMP_THREADS, "1")
    program = os.environ.get(c.ENV_PROGRAM) or c.DEFAULT_PROGRAM
    accept = os.environ.get(c.ENV_DEFAULT_ACCEPT) or c.JSON
    scratch: Path | None = None
    try:
        if args.config is not None:
            config = load_config(args.config, program=program, default_accept=accept)
        else:
            # Our own scratch folder for the extracted artefact, removed when the server stops.
            scratch = Path(tempfile.mkdtemp(prefix="pdm-serve-model-"))
            model_dir = extract_model_tar(args.model_data, scratch / "model")
            config = single_model_config(
                model_dir, endpoint_name=args.endpoint_name, program=program, default_accept=accept
            )
        config = _override(config, args)
        return serve(config)
    except (ConfigError, LoadError, OSError) as exc:
        print(f"deploy.serve: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _override(config: ServeConfig, args: argparse.Namespace) -> ServeConfig:
    changes: dict[str, object] = {}
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            raise ConfigError(f"--port must be in 0..65535, got {args.port}")
        changes["port"] = args.port
    if args.host:
        changes["host"] = args.host
    if args.workers is not None:
        if args.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {args.workers}")
        changes["workers"] = args.workers
    elif workers := os.environ.get(c.ENV_WORKERS):
        # The inference toolkit's variable (a model's container Environment on the local engine).
        if not workers.isdigit() or int(workers) < 1:
            raise ConfigError(f"{c.ENV_WORKERS} must be a whole number >= 1, got {workers!r}")
        changes["workers"] = int(workers)
    if args.ready_file is not None:
        changes["ready_file"] = args.ready_file.resolve()
    if args.no_batching:
        changes["batching"] = False
    return dataclasses.replace(config, **changes) if changes else config


if __name__ == "__main__":
    raise SystemExit(main())
