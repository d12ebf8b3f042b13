"""Property-based fuzzing of the request space: whatever is sent, no 5xx, and /ping still works."""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serve.serve_helpers import ENDPOINT, RAW_COLUMNS, RECORD, ServerProcess

# Header values httpx can send (printable ASCII, no edge whitespace); lengths around the runtime API's limits.
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=1100).map(str.strip)
# Mostly the content types and headers a client sends, so most cases reach the model's hooks.
content_types = st.one_of(
    st.sampled_from(
        ["text/csv"] * 4 + ["application/json"] * 3 + ["text/csv; charset=utf-8", "text/plain", ""]
    ),
    header_text,
)
accepts = st.one_of(
    st.sampled_from(["text/csv", "application/json", "*/*", "text/csv, application/json"]), header_text
)
optional_headers = {
    "x-amzn-sagemaker-target-variant": st.one_of(st.sampled_from(["A", "B", "Zero", "Nope"]), header_text),
    "x-amzn-sagemaker-target-model": header_text,
    "x-amzn-sagemaker-custom-attributes": header_text,
    "x-amzn-sagemaker-inference-id": st.one_of(st.uuids().map(str), header_text),
}
json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=25), children, max_size=7)
    ),
    max_leaves=30,
)
field_values = st.one_of(
    st.floats(), st.integers(), st.sampled_from(["L", "M", "H", "", "X", "nan", "inf", '"q"', "1e999", " 1 "])
)


def rarely(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The value one time in five, else None."""
    return st.one_of(st.none(), st.none(), st.none(), st.none(), strategy)


@st.composite
def record(draw: st.DrawFn) -> list[Any]:
    """A valid raw record with a few fields replaced, dropped or added."""
    fields: list[Any] = list(RECORD)
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        if action == "replace" and fields:
            fields[draw(st.integers(0, len(fields) - 1))] = draw(field_values)
        elif action == "drop" and fields:
            fields.pop(draw(st.integers(0, len(fields) - 1)))
        else:
            fields.append(draw(field_values))
    return fields


@st.composite
def bodies(draw: st.DrawFn, content_type: str) -> bytes:
    kind = draw(st.sampled_from(["bytes", "text", "records", "records", "records", "json"]))
    if kind == "bytes":
        return draw(st.binary(max_size=400))
    if kind == "text":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    rows = draw(st.lists(record(), min_size=1, max_size=4))
    if content_type.startswith("application/json"):
        shape = draw(st.sampled_from(["instances", "list", "objects"]))
        if shape == "objects":
            keys = [*RAW_COLUMNS, "extra"]
            return json.dumps([dict(zip(keys, r, strict=False)) for r in rows]).encode()
        return json.dumps({"instances": rows} if shape == "instances" else rows).encode()
    return "\n".join(",".join(map(str, r)) for r in rows).encode()


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """Anything in the envelope: method, path, content type, Accept and every runtime header."""
    content_type = draw(content_types)
    headers = {"content-type": content_type}
    if draw(st.booleans()):
        headers["accept"] = draw(accepts)
    for name, strategy in optional_headers.items():
        value = draw(rarely(strategy))
        if value is not None:
            headers[name] = value
    path = draw(
        st.sampled_from(["/invocations", f"/endpoints/{ENDPOINT}/invocations", "/endpoints/x/invocations"])
    )
    method = draw(st.sampled_from(["POST", "POST", "GET", "PUT"]))
    return {"method": method, "url": path, "headers": headers, "content": draw(bodies(content_type))}


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed POST whose body and content type vary: these all reach the model's hooks."""
    content_type = draw(st.sampled_from(["text/csv", "application/json", "text/csv; charset=utf-8"]))
    headers = {"content-type": content_type, "accept": draw(accepts)}
    if draw(st.booleans()):
        headers["x-amzn-sagemaker-target-variant"] = draw(st.sampled_from(["A", "B", "Zero"]))
    path = draw(st.sampled_from(["/invocations", f"/endpoints/{ENDPOINT}/invocations"]))
    return {"method": "POST", "url": path, "headers": headers, "content": draw(bodies(content_type))}


def check(client: httpx.Client, request: dict[str, Any]) -> None:
    response = client.request(**request)
    assert response.status_code < 500, (request, response.status_code, response.text)
    if response.status_code >= 400:
        assert response.json()["message"]
        assert response.headers["x-amzn-errortype"]


# derandomize: the same cases on every run (tests stay deterministic); no example database on disk.
FUZZ = settings(
    max_examples=75,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(request=payloads())
def test_no_payload_gets_a_5xx(client: httpx.Client, request: dict[str, Any]) -> None:
    check(client, request)


@FUZZ
@given(request=envelopes())
def test_no_envelope_gets_a_5xx(client: httpx.Client, request: dict[str, Any]) -> None:
    check(client, request)


def test_server_still_answers_after_fuzzing(server: ServerProcess) -> None:
    # Runs after the fuzz test (file order): the process survived every request.
    assert server.proc.poll() is None
    assert httpx.get(f"{server.url}/ping").status_code == 200
