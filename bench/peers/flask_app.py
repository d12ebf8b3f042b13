"""Flask peer built like SageMaker's XGBoost/scikit-learn serving containers (sagemaker-containers' worker).

Those containers run `gunicorn -k gevent -w <workers> sagemaker_containers._wsgi:app` behind nginx, and the
Flask app answers GET /ping and POST /invocations by calling the user module's hooks. gevent is not installed
here (the project does not depend on it), so gunicorn's default sync worker serves: one request at a time
per worker, like gevent for CPU-bound hooks, and a new connection per request, like nginx's default upstream.
Run: `gunicorn -w 1 -b 127.0.0.1:PORT bench.peers.flask_app:app` with BENCH_MODEL_DIR set.
"""

from __future__ import annotations

from flask import Flask, Response, request

from bench.peers.hooks import from_environment

DEFAULT_ACCEPT = "application/json"  # SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT's default in the toolkit

app = Flask(__name__)
hooks = from_environment()  # model_fn at import: gunicorn imports the app once per worker


@app.route("/ping", methods=["GET"])
def ping() -> Response:
    return Response(status=200)


@app.route("/invocations", methods=["POST"])
def invocations() -> Response:
    # sagemaker-containers reads the `ContentType` header first, then Content-Type; JSON when neither.
    content_type = request.headers.get("ContentType") or request.content_type or "application/json"
    accept = request.headers.get("Accept") or DEFAULT_ACCEPT
    if accept == "*/*":
        accept = DEFAULT_ACCEPT
    try:
        body, out_type = hooks.run(request.get_data(), content_type, accept)
    except hooks.input_error as exc:
        return Response(response=str(exc), status=400, mimetype="text/plain")
    except Exception as exc:
        return Response(response=f"{type(exc).__name__}: {exc}", status=500, mimetype="text/plain")
    return Response(response=body, status=200, mimetype=out_type)
