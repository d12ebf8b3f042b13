"""The in-process floor of serving: the artefact's hooks called in a loop, no HTTP, on one pinned core.

Why: it is the most any server on that core can deliver with this model and inference.py, so a server's
requests/s over it says how much the server itself costs. Also times each stage (parse, encode,
inplace_predict, format) so a miss can be attributed.

`python -m bench.floor --model-dir DIR --body-file F [--seconds S]` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.peers.hooks import Hooks

CONTENT_TYPE = ACCEPT = "text/csv"


def _rate(call: Callable[[], Any], seconds: float) -> tuple[float, float]:
    """Calls per second of `call` over about `seconds`, and CPU microseconds per call (this process)."""
    count, start, cpu = 0, time.perf_counter(), time.process_time()
    deadline = start + seconds
    while True:
        for _ in range(20):
            call()
        count += 20
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start), (time.process_time() - cpu) / count * 1e6


def _stage_us(call: Callable[[], Any], repeat: int, tries: int = 5) -> float:
    """Best-of-`tries` mean microseconds of `call` (the minimum filters out other processes' interference)."""
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        for _ in range(repeat):
            call()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best * 1e6


def _cold_us(call: Callable[[], Any], calls: int = 300) -> float:
    """Best-of-3 microseconds of `call` when 4 MB of other memory is touched between calls.

    A server does HTTP work between two hooks calls; this shows how much a call slows once that work
    has cooled the caches (the sweep itself is not timed).
    """
    sweep = bytearray(4 * 1024 * 1024)
    ones = b"\x01" * (len(sweep) // 64)
    best = float("inf")
    for _ in range(3):
        total = 0.0
        for _ in range(calls):
            sweep[::64] = ones
            start = time.perf_counter()
            call()
            total += time.perf_counter() - start
        best = min(best, total / calls)
    return best * 1e6


def measure(model_dir: Path, body: bytes, seconds: float, stages_only: bool = False) -> dict[str, Any]:
    """Calls/s of the whole hook chain (unless `stages_only`) and the microseconds of each stage."""
    hooks = Hooks(model_dir)
    records = body.count(b"\n") + 1
    result: dict[str, Any] = {"records": records}
    if not stages_only:
        for _ in range(200):  # warm caches and XGBoost's thread-local buffers
            hooks.run(body, CONTENT_TYPE, ACCEPT)
        rate, cpu_us = _rate(lambda: hooks.run(body, CONTENT_TYPE, ACCEPT), seconds)
        result.update(calls_per_s=rate, us_per_call=1e6 / rate, cpu_us_per_call=cpu_us)
        result["cold_us_per_call"] = _cold_us(lambda: hooks.run(body, CONTENT_TYPE, ACCEPT))
    # Stage split, through the hooks' own objects where inference.py exposes them (contracts sec. 8).
    mod, model = hooks.module, hooks.model
    text = body.decode("utf-8")
    repeat = max(1, int(2000 / records))
    tries = 5 if records < 10_000 else 2  # a multi-megabyte body takes a good fraction of a second
    parsed = mod.input_fn(text, CONTENT_TYPE)
    stages = {"input_fn (parse)": _stage_us(lambda: mod.input_fn(text, CONTENT_TYPE), repeat, tries)}
    encode = getattr(mod, "_features", None)
    if encode is not None and hasattr(model, "encoder") and hasattr(model, "booster"):
        matrix = encode(parsed, model.encoder)
        stages["encode (feature spec)"] = _stage_us(lambda: encode(parsed, model.encoder), repeat, tries)
        predict = model.booster.inplace_predict
        stages["Booster.inplace_predict"] = _stage_us(lambda: predict(matrix), repeat, tries)
    else:
        stages["predict_fn"] = _stage_us(lambda: mod.predict_fn(parsed, model), repeat, tries)
    prediction = mod.predict_fn(parsed, model)
    stages["output_fn (format)"] = _stage_us(lambda: mod.output_fn(prediction, ACCEPT), repeat, tries)
    result["stages_us"] = stages
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--body-file", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--stages-only", action="store_true", help="only the per-stage times (large bodies)")
    args = parser.parse_args(argv)
    body = args.body_file.read_bytes()
    print(json.dumps(measure(args.model_dir, body, min(args.seconds, 30.0), args.stages_only)))


if __name__ == "__main__":
    main()
