"""FastAPI peer: the usual FastAPI + uvicorn model server, calling the same inference.py hooks.

`async def` routes run on the event loop (a `def` route would add a thread-pool hop per request); uvicorn uses
uvloop and httptools when installed, as our server does. Run: `uvicorn bench.peers.fastapi_app:app --port P`
with BENCH_MODEL_DIR set.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response

from bench.peers.hooks import from_environment

DEFAULT_ACCEPT = "application/json"

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
hooks = from_environment()


@app.get("/ping")
async def ping() -> Response:
    return Response(status_code=200)


@app.post("/invocations")
async def invocations(request: Request) -> Response:
    content_type = request.headers.get("content-type") or "application/json"
    accept = request.headers.get("accept") or DEFAULT_ACCEPT
    if accept == "*/*":
        accept = DEFAULT_ACCEPT
    body = await request.body()
    try:
        out, out_type = hooks.run(body, content_type, accept)
    except hooks.input_error as exc:
        return Response(content=str(exc), status_code=400, media_type="text/plain")
    except Exception as exc:
        return Response(content=f"{type(exc).__name__}: {exc}", status_code=500, media_type="text/plain")
    return Response(content=out, media_type=out_type)
