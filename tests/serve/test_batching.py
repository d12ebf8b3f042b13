"""Micro-batching: concurrent one-record CSV requests share one hook run and still get their own answers.

In-process tests drive the ASGI app directly with asyncio.gather: every request reaches the batcher before
the flush the first one scheduled, so batches form deterministically and hook calls can be counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.serve.__main__ import _override, _parse_args
from deploy.serve.app import InferenceApp, build_app
from deploy.serve.batching import MAX_RECORDS, qualifies
from deploy.serve.config import ConfigError, parse_config, single_model_config
from tests.serve.serve_helpers import ServerProcess, csv_line, synthetic_rows

CSV = "text/csv"
JSON = "application/json"
Response = tuple[int, dict[str, str], bytes]


class _Counted:
    """An app whose (only) handler counts predict_fn calls."""

    def __init__(self, model_dir: Path, batching: bool = True) -> None:
        self.app: InferenceApp = build_app(single_model_config(model_dir, batching=batching))
        handler = self.app.variants.by_name["AllTraffic"].handler
        assert handler is not None
        self.calls = 0
        predict = handler.predict_fn

        def counting(data: Any, model: Any) -> Any:
            self.calls += 1
            return predict(data, model)

        object.__setattr__(handler, "predict_fn", counting)  # the handler is a frozen dataclass

    async def _one(self, body: bytes, content_type: str, accept: str) -> Response:
        scope = {
            "type": "http",
            "path": "/invocations",
            "method": "POST",
            "headers": [
                (b"content-type", content_type.encode()),
                (b"accept", accept.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        headers = {k.decode().lower(): v.decode() for k, v in sent[0]["headers"]}
        return sent[0]["status"], headers, sent[1]["body"]

    def concurrent(self, bodies: list[bytes], content_type: str = CSV, accept: str = CSV) -> list[Response]:
        async def main() -> list[Response]:
            return await asyncio.gather(*(self._one(b, content_type, accept) for b in bodies))

        return asyncio.run(main())

    def one_by_one(self, bodies: list[bytes], content_type: str = CSV, accept: str = CSV) -> list[Response]:
        return [self.concurrent([b], content_type, accept)[0] for b in bodies]


def _records(n: int, seed: int) -> list[bytes]:
    raw, _, _ = synthetic_rows(n, seed=seed)
    return [csv_line(r).encode() for r in raw]


def _bodies_and_statuses(responses: list[Response]) -> list[tuple[int, bytes]]:
    return [(status, body) for status, _, body in responses]


def test_concurrent_records_share_one_predict_and_get_their_own_answers(model_dir: Path) -> None:
    bodies = _records(20, seed=31)
    counted = _Counted(model_dir)
    alone = counted.one_by_one(bodies)
    assert counted.calls == 20
    counted.calls = 0
    together = counted.concurrent(bodies)
    assert counted.calls == 1
    assert _bodies_and_statuses(together) == _bodies_and_statuses(alone)
    assert all(status == 200 and body.count(b"\n") == 1 for status, body in _bodies_and_statuses(together))
    assert len({body for _, _, body in together}) > 1  # the records really differ
    assert all(h["content-type"] == CSV for _, h, _ in together)
    stats = counted.app.metrics.variants["AllTraffic"]
    assert stats.invocations == 40 and sum(stats.predict.counts) == 40


def test_batches_are_capped(model_dir: Path) -> None:
    bodies = _records(MAX_RECORDS + 6, seed=32)
    counted = _Counted(model_dir)
    alone = counted.one_by_one(bodies)
    counted.calls = 0
    assert _bodies_and_statuses(counted.concurrent(bodies)) == _bodies_and_statuses(alone)
    assert counted.calls == 2


@pytest.mark.parametrize(
    "bad",
    [
        b"298.1,hot,1551.0,42.8,0.0,M",  # non-numeric value
        b"298.1,308.6,1551.0,42.8,0.0,X",  # unknown category
        b"298.1,308.6,\xff\xfe,42.8,0.0,M",  # invalid UTF-8
        # a header line
        b"air_temperature_k,process_temperature_k,rotational_speed_rpm,torque_nm,tool_wear_min,type",
    ],
)
@pytest.mark.parametrize("where", [0, 4, 10])
def test_a_bad_record_gets_its_own_error_and_the_others_succeed(
    model_dir: Path, bad: bytes, where: int
) -> None:
    bodies = _records(10, seed=33)
    bodies.insert(where, bad)
    counted = _Counted(model_dir)
    alone = counted.one_by_one(bodies)
    together = counted.concurrent(bodies)
    assert _bodies_and_statuses(together) == _bodies_and_statuses(alone)
    assert 400 <= together[where][0] < 500 and json.loads(together[where][2])["message"]
    assert [status for status, _, _ in together].count(200) == 10
    stats = counted.app.metrics.variants["AllTraffic"]
    assert stats.errors_4xx == 2 and stats.invocations == 22


def test_json_and_multi_record_requests_are_not_batched(model_dir: Path) -> None:
    raw, _, _ = synthetic_rows(12, seed=34)
    counted = _Counted(model_dir)
    json_bodies = [json.dumps([r]).encode() for r in raw]
    alone = counted.one_by_one(json_bodies, JSON, JSON)
    counted.calls = 0
    assert _bodies_and_statuses(counted.concurrent(json_bodies, JSON, JSON)) == _bodies_and_statuses(alone)
    assert counted.calls == 12
    csv_to_json = _records(6, seed=35)
    alone = counted.one_by_one(csv_to_json, CSV, JSON)
    counted.calls = 0
    assert _bodies_and_statuses(counted.concurrent(csv_to_json, CSV, JSON)) == _bodies_and_statuses(alone)
    assert counted.calls == 6
    multi = [b"\n".join(_records(3, seed=36 + i)) for i in range(6)]
    alone = counted.one_by_one(multi)
    counted.calls = 0
    together = counted.concurrent(multi)
    assert _bodies_and_statuses(together) == _bodies_and_statuses(alone)
    assert counted.calls == 6 and all(body.count(b"\n") == 3 for _, _, body in together)


def test_batching_off_gives_the_same_answers_one_call_each(model_dir: Path) -> None:
    bodies = _records(15, seed=37)
    on = _Counted(model_dir).concurrent(bodies)
    off = _Counted(model_dir, batching=False)
    assert _bodies_and_statuses(off.concurrent(bodies)) == _bodies_and_statuses(on)
    assert off.calls == 15


def test_which_requests_qualify() -> None:
    record = b"298.1,308.6,1551.0,42.8,0.0,M"
    assert qualifies(record, CSV, CSV) and qualifies(record + b"\r\n", CSV, CSV)
    assert not qualifies(record, JSON, CSV) and not qualifies(record, CSV, JSON)
    assert not qualifies(record + b"\n" + record, CSV, CSV)
    assert not qualifies(b'"298.1",308.6,1551.0,42.8,0.0,M', CSV, CSV)
    assert not qualifies(b" \n", CSV, CSV)
    assert not qualifies(b"1," * 1000, CSV, CSV)


def test_batching_switch(tmp_path: Path) -> None:
    raw = {"endpoint_name": "ep", "variants": [{"name": "A", "model_dir": str(tmp_path)}]}
    assert parse_config(raw).batching is True
    assert parse_config({**raw, "batching": False}).batching is False
    with pytest.raises(ConfigError, match="batching"):
        parse_config({**raw, "batching": "no"})
    config = parse_config(raw)
    assert _override(config, _parse_args(["--config", "x.json", "--no-batching"])).batching is False
    assert _override(config, _parse_args(["--config", "x.json"])).batching is True
    assert dataclasses.replace(config, batching=False) != config


def test_concurrent_clients_get_their_own_predictions_over_http(server: ServerProcess) -> None:
    """The real server under 20 concurrent connections: each answer is the one that record gets alone."""
    bodies = _records(20, seed=38)
    headers = {"content-type": CSV, "accept": CSV, "x-amzn-sagemaker-target-variant": "A"}

    def post(client: httpx.Client, body: bytes) -> tuple[int, bytes]:
        response = client.post("/invocations", content=body, headers=headers)
        return response.status_code, response.content

    with httpx.Client(base_url=server.url, timeout=30) as client:
        alone = [post(client, b) for b in bodies]
    assert all(status == 200 for status, _ in alone)
    clients = [httpx.Client(base_url=server.url, timeout=30) for _ in bodies]
    try:
        for _ in range(3):
            with ThreadPoolExecutor(len(bodies)) as pool:
                together = list(pool.map(post, clients, bodies))
            assert together == alone
    finally:
        for client in clients:
            client.close()
