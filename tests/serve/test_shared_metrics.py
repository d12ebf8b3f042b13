"""/metrics sums every worker and every earlier process that wrote to the same metrics folder."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import httpx
import pytest

from deploy.serve.metrics import Metrics, parse_prometheus, variant_counts
from tests.serve.serve_helpers import ServerProcess

# Hooks that import nothing heavy; a JSON body `hold:<started>|<release>` makes predict_fn block the worker's
# event loop until the test creates <release>, so that worker cannot accept connections meanwhile.
HOLDING_HOOKS = """
import os, time

def model_fn(model_dir):
    return 0.5

def input_fn(body, content_type):
    return body

def predict_fn(data, model):
    if data.startswith("hold:"):
        started, release = data[5:].split("|")
        open(started, "w").close()
        for _ in range(3000):
            if os.path.exists(release):
                break
            time.sleep(0.01)
    return model

def output_fn(prediction, accept):
    return f"{prediction}\\n", "text/csv"
"""
CSV = {"content-type": "text/csv", "accept": "text/csv"}


@pytest.fixture(scope="module")
def holding_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("holding") / "model"
    (root / "code").mkdir(parents=True)
    (root / "code" / "inference.py").write_text(HOLDING_HOOKS)
    return root


def _pid(response: httpx.Response) -> int:
    """The answering process: the request id starts with its pid in hex."""
    return int(response.headers["x-amzn-requestid"].split("-")[0], 16)


def _invocations(text: str) -> dict[str, float]:
    return {name: row["invocations"] for name, row in variant_counts(text).items()}


class Held:
    """A request that blocks the worker that accepted it until `release()`: meanwhile the other worker of a
    two-worker server accepts every new connection (no timing involved)."""

    def __init__(self, url: str, folder: Path) -> None:
        self._started, self._release = folder / "started", folder / "release"
        folder.mkdir(parents=True)
        self.response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._post, args=(url,))
        self._thread.start()
        for _ in range(3000):  # wait for the condition, not for a time
            if self._started.exists() or not self._thread.is_alive():
                break
            threading.Event().wait(0.01)
        assert self._started.exists(), "the held request never reached predict_fn"

    def _post(self, url: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            body = f"hold:{self._started}|{self._release}"
            self.response = client.post(
                "/invocations", content=body, headers={"content-type": "application/json"}
            )

    def release(self) -> httpx.Response:
        self._release.touch()
        self._thread.join(60)
        assert self.response is not None and self.response.status_code == 200
        return self.response


def test_metrics_of_two_workers_are_summed_whichever_answers(tmp_path: Path, holding_model: Path) -> None:
    config = {
        "endpoint_name": "pdm-shared",
        "workers": 2,
        "variants": [{"name": "AllTraffic", "weight": 1, "model_dir": str(holding_model)}],
    }
    proc = ServerProcess.from_config(tmp_path, config)
    try:
        first = Held(proc.url, tmp_path / "first")
        others: set[int] = set()
        for _ in range(5):
            with httpx.Client(base_url=proc.url, timeout=30) as client:
                response = client.post("/invocations", content="1,2,3", headers=CSV)
                assert response.status_code == 200
                others.add(_pid(response))
        held_pid = _pid(first.release())
        assert len(others) == 1 and held_pid not in others, "both workers answered"
        # Now one worker counted 1 invocation and the other 5. Block either of them: the scrape is answered
        # by the other one, and must report both (its own count alone would be 1 or 5).
        second = Held(proc.url, tmp_path / "second")
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            text = client.get("/metrics").text
        second.release()
        assert _invocations(text) == {"AllTraffic": 6.0}
        samples = parse_prometheus(text)
        count = [
            v
            for (name, labels), v in samples.items()
            if name == "serve_request_duration_seconds_count" and ("phase", "total") in labels
        ]
        assert count == [6.0]
        assert not any(name == "worker" for (_, labels) in samples for name, _ in labels)
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            assert _invocations(client.get("/metrics").text) == {"AllTraffic": 7.0}
    finally:
        for name in ("first", "second"):
            with contextlib.suppress(OSError):
                (tmp_path / name / "release").touch()
        assert proc.stop() == 0, proc.log()


def test_a_new_process_counts_on_from_the_earlier_ones_in_the_folder(tmp_path: Path) -> None:
    """What a new server generation sees: the finished numbers of the earlier ones, each counted once."""
    folder = tmp_path / "metrics"
    old = Metrics("ep", ["A", "B"], folder)
    old.variants["A"].succeeded(0.001, 0.002, 0.0001, 0.004)
    old.variants["B"].failed(424)
    old.variants["B"].failed(500)
    old.reject("ValidationError")
    old.model_loads = 2
    old.models_loaded = 1
    old.close()
    # The next generation serves B only (A was promoted away) and also keeps counting.
    new = Metrics("ep", ["B"], folder)
    new.variants["B"].succeeded(0.001, 0.002, 0.0001, 0.004)
    counts = variant_counts(new.render())
    assert counts == {
        "B": {"invocations": 3.0, "errors_4xx": 1.0, "errors_5xx": 1.0},
        "A": {"invocations": 1.0, "errors_4xx": 0.0, "errors_5xx": 0.0},
    }
    samples = {name: value for (name, _), value in parse_prometheus(new.render()).items()}
    assert samples["serve_rejected_requests_total"] == 1.0
    assert samples["serve_model_loads_total"] == 2.0
    # The old file was written by this (live) process, so its gauge still counts; a stopped pid's would not.
    assert samples["serve_models_loaded"] == 1.0
    # Another endpoint's files in the folder are not summed.
    Metrics("other", ["B"], folder).variants["B"].succeeded(0.1, 0.1, 0.1, 0.3)
    assert variant_counts(new.render())["B"]["invocations"] == 3.0
    new.close()


def test_without_a_folder_only_this_process_counts(tmp_path: Path) -> None:
    metrics = Metrics("ep", ["A"])
    metrics.variants["A"].succeeded(0.001, 0.002, 0.0001, 0.004)
    metrics.variants["A"].succeeded(20.0, 0.002, 0.0001, 20.1)  # beyond the last bound: +Inf
    assert metrics.variants["A"].invocations == 2 and metrics.variants["A"].total.counts[-1] == 1
    assert variant_counts(metrics.render()) == {
        "A": {"invocations": 2.0, "errors_4xx": 0.0, "errors_5xx": 0.0}
    }
    assert list(tmp_path.iterdir()) == []


def test_workers_come_from_the_toolkit_variable_unless_the_flag_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local engine passes a model's SAGEMAKER_MODEL_SERVER_WORKERS in the server's environment."""
    from deploy.serve.__main__ import _override, _parse_args
    from deploy.serve.config import ConfigError, single_model_config

    config = single_model_config(tmp_path)
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "3")
    assert _override(config, _parse_args(["--config", "x"])).workers == 3
    assert _override(config, _parse_args(["--config", "x", "--workers", "2"])).workers == 2
    monkeypatch.setenv("SAGEMAKER_MODEL_SERVER_WORKERS", "many")
    with pytest.raises(ConfigError, match="SAGEMAKER_MODEL_SERVER_WORKERS"):
        _override(config, _parse_args(["--config", "x"]))
