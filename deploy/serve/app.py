"""The raw ASGI app: SageMaker's container contract and the runtime InvokeEndpoint front on one linear path.

Per request: match the route, read the headers once, read the body (6 MB limit), pick the variant, run the
hooks, send. No per-request logging, no middleware, no allocation beyond the response; models, hooks and the
route table are set up once in `build_app`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any

from deploy.serve import constants as c
from deploy.serve.batching import MicroBatcher, qualifies
from deploy.serve.capture import CaptureWriter
from deploy.serve.config import ServeConfig
from deploy.serve.errors import ModelFailure, ServeError, for_container, for_runtime, payload_too_large
from deploy.serve.errors import validation_error as invalid
from deploy.serve.handler import ModelHandler
from deploy.serve.metrics import Metrics
from deploy.serve.models import MultiModelCache, Variant, Variants, load_variants

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Bodies up to this size are predicted inline on the event loop (a thread hop costs more than a single-record
# predict); bigger ones go to the thread pool so /ping and small requests keep flowing meanwhile.
INLINE_MAX_BYTES = 64 * 1024
_RUNTIME_PREFIX = "/endpoints/"
_TEXT = b"text/plain; charset=utf-8"
_PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"


class _Disconnected(Exception):
    """The client went away before sending the whole body; nothing to answer."""


class InferenceApp:
    """ASGI application serving one endpoint (all its variants) in this process."""

    def __init__(
        self,
        config: ServeConfig,
        variants: Variants,
        metrics: Metrics,
        capture: CaptureWriter | None,
        cache: MultiModelCache | None,
    ) -> None:
        self.config = config
        self.variants = variants
        self.metrics = metrics
        self.capture = capture
        self.cache = cache
        # Concurrent one-record CSV requests share one run of the hooks (see deploy/serve/batching.py).
        self._batcher = MicroBatcher() if config.batching else None
        self._name = config.endpoint_name
        self._limit = config.max_payload_bytes
        self._default_accept = config.default_accept
        self._request_ids = (f"{os.getpid():x}-{n:x}".encode() for n in itertools.count())
        self._execution_parameters = json.dumps(
            {
                "MaxConcurrentTransforms": os.cpu_count() or 1,
                "BatchStrategy": "MULTI_RECORD",
                "MaxPayloadInMB": self._limit // (1024 * 1024),
            }
        ).encode()
        self._get_routes: dict[str, Callable[[], tuple[bytes, bytes]]] = {
            "/ping": lambda: (b"", _TEXT),
            "/execution-parameters": lambda: (self._execution_parameters, c.JSON.encode()),
            "/metrics": lambda: (self.metrics.render().encode(), _PROMETHEUS),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route one request; lifespan and websocket scopes are not served."""
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/invocations":
            if method == "POST":
                return await self._invoke(scope, receive, send, None)
        elif path.startswith(_RUNTIME_PREFIX):
            name, _, rest = path[len(_RUNTIME_PREFIX) :].partition("/")
            if rest != "invocations":
                return await self._send_error(send, _unknown_operation(method, path))
            if method == "POST":
                return await self._invoke(scope, receive, send, name)
        else:
            route = self._get_routes.get(path)
            if route is None:
                return await self._send_error(send, _unknown_operation(method, path))
            if method in ("GET", "HEAD"):
                body, content_type = route()
                return await _send(send, 200, body, [(c.R_CONTENT_TYPE, content_type)])
        await self._send_error(
            send, ServeError(405, "MethodNotAllowed", f"{method} is not allowed on {path}.")
        )

    async def _invoke(self, scope: Scope, receive: Receive, send: Send, endpoint: str | None) -> None:
        """POST /invocations (endpoint None: container contract) or /endpoints/{endpoint}/invocations."""
        start = perf_counter()
        variant: Variant | None = None
        try:
            content_type = accept = target_variant = target_model = attributes = inference_id = None
            declared = -1
            for key, value in scope["headers"]:
                if key == c.H_CONTENT_TYPE:
                    content_type = value
                elif key == c.H_ACCEPT:
                    accept = value
                elif key == c.H_CONTENT_LENGTH:
                    declared = int(value) if value.isdigit() else -1
                elif key[:17] == b"x-amzn-sagemaker-":
                    if key == c.H_TARGET_VARIANT:
                        target_variant = value
                    elif key == c.H_TARGET_MODEL:
                        target_model = value
                    elif key == c.H_CUSTOM_ATTRIBUTES:
                        attributes = value
                    elif key == c.H_INFERENCE_ID:
                        inference_id = value
            if endpoint is not None and endpoint != self._name:
                raise invalid(f"Endpoint {endpoint} of account {c.LOCAL_ACCOUNT} not found.")
            ctype = _header_text(content_type, "ContentType", c.MAX_HEADER_CHARS) or c.JSON
            accept_text = _header_text(accept, "Accept", c.MAX_HEADER_CHARS)
            if not accept_text or accept_text == c.ANY:
                accept_text = self._default_accept
            if attributes is not None:
                _header_text(attributes, "CustomAttributes", c.MAX_HEADER_CHARS)
            if inference_id is not None:
                _header_text(inference_id, "InferenceId", c.MAX_INFERENCE_ID_CHARS, min_chars=1)
            body = await self._read_body(receive, declared)
            if not body:
                raise invalid("Request body is empty; InvokeEndpoint needs a payload.")
            if target_variant is None:
                variant = self.variants.pick()
            else:
                name = _header_text(target_variant, "TargetVariant", c.MAX_VARIANT_CHARS)
                variant = self.variants.by_name.get(name or "")
                if variant is None:
                    raise invalid(f"Variant {name} is not found for endpoint {self._name}.")
            handler = await self._handler(variant, target_model)
            if self._batcher is not None and qualifies(body, ctype, accept_text):
                out, out_type, t_parse, t_predict, t_serialise = await self._batcher.submit(handler, body)
            elif len(body) <= INLINE_MAX_BYTES:
                out, out_type, t_parse, t_predict, t_serialise = handler.run(body, ctype, accept_text)
            else:
                loop = asyncio.get_running_loop()
                out, out_type, t_parse, t_predict, t_serialise = await loop.run_in_executor(
                    None, handler.run, body, ctype, accept_text
                )
        except _Disconnected:
            return
        except ServeError as exc:
            self.metrics.reject(exc.code)
            return await self._send_error(send, exc)
        except ModelFailure as failure:
            if variant is not None:
                self.metrics.variants[variant.name].failed(failure.status)
            error = for_container(failure) if endpoint is None else for_runtime(failure, self._name)
            return await self._send_error(send, error)
        except Exception as exc:  # a bug of ours must not kill the connection without an answer
            return await self._send_error(
                send, ServeError(500, "InternalFailure", f"{type(exc).__name__}: {exc}")
            )
        headers = [
            (c.R_CONTENT_TYPE, out_type.encode("latin-1", "replace")),
            (c.R_INVOKED_VARIANT, variant.header),
            (c.R_REQUEST_ID, next(self._request_ids)),
        ]
        if attributes is not None:
            headers.append((c.R_CUSTOM_ATTRIBUTES, attributes))
        await _send(send, 200, out, headers)
        self.metrics.variants[variant.name].succeeded(t_parse, t_predict, t_serialise, perf_counter() - start)
        if self.capture is not None:
            self.capture.submit(
                variant.name,
                body,
                ctype,
                out,
                out_type,
                inference_id.decode("latin-1") if inference_id else None,
            )

    async def _handler(self, variant: Variant, target_model: bytes | None) -> ModelHandler:
        """The handler for this request: the variant's own, or the multi-model cache's for TargetModel."""
        if self.cache is None:
            if target_model is not None:
                raise invalid(f"Endpoint {self._name} is not a multi-model endpoint; remove TargetModel.")
            assert variant.handler is not None  # load_variants loads every variant of a single-model endpoint
            return variant.handler
        target = _header_text(target_model, "TargetModel", c.MAX_HEADER_CHARS, min_chars=1)
        if not target:
            raise invalid(f"Endpoint {self._name} is a multi-model endpoint; TargetModel is required.")
        return await self.cache.get(target)

    async def _read_body(self, receive: Receive, declared: int) -> bytes:
        """The whole body, refusing more than the payload limit without reading it all."""
        if declared > self._limit:
            # Answer at once: uvicorn discards the rest of the body and keeps the connection usable.
            raise payload_too_large(self._limit)
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > self._limit:
                raise payload_too_large(self._limit)
            return body
        parts, size = [body], len(body)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._limit:
                raise payload_too_large(self._limit)
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts)

    async def _send_error(self, send: Send, error: ServeError) -> None:
        headers = [
            (c.R_CONTENT_TYPE, c.JSON.encode()),
            (c.R_ERROR_TYPE, error.code.encode()),
            (c.R_REQUEST_ID, next(self._request_ids)),
        ]
        await _send(send, error.status, error.body(), headers)

    def close(self) -> None:
        """Flush data capture, remove this process's temporary model folders, unmap the metrics file."""
        if self.capture is not None:
            self.capture.close()
        if self.cache is not None:
            self.cache.close()
        self.metrics.close()


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header_text(value: bytes | None, member: str, max_chars: int, min_chars: int = 0) -> str | None:
    """Decode a header and check the runtime API's length and ASCII constraints for its member."""
    if value is None:
        return None
    text = value.decode("latin-1")
    if not text.isascii() or not min_chars <= len(text) <= max_chars:
        raise invalid(
            f"1 validation error detected: Value at '{member}' failed to satisfy constraint: "
            f"Member must have length between {min_chars} and {max_chars} and contain only ASCII characters."
        )
    return text


def _unknown_operation(method: str, path: str) -> ServeError:
    return ServeError(404, "UnknownOperationException", f"No operation for {method} {path} on this endpoint.")


def build_app(config: ServeConfig) -> InferenceApp:
    """Load the models and set up metrics, capture and routing once, before the server listens."""
    rng = random.Random(config.random_seed)
    metrics = Metrics(config.endpoint_name, [v.name for v in config.variants], config.metrics_dir)
    variants = load_variants(config, rng)
    cache = MultiModelCache(config.multi_model, config.program, metrics) if config.multi_model else None
    capture = CaptureWriter(config.data_capture, config.endpoint_name, rng) if config.data_capture else None
    return InferenceApp(config, variants, metrics, capture, cache)
