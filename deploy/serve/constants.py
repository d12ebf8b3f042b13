"""Wire constants (MIME types, header and env var names, limits) in one place, so code never spells them."""

from __future__ import annotations

# MIME types the server itself decides on (the user's hooks decide the rest).
CSV = "text/csv"
JSON = "application/json"
JSONLINES = "application/jsonlines"
ANY = "*/*"
# Bodies of these media types are decoded to str before input_fn, as the inference toolkit does.
UTF8_TYPES = frozenset({CSV, JSON, JSONLINES})

# Request headers, lower-case as ASGI delivers them.
H_CONTENT_TYPE = b"content-type"
H_CONTENT_LENGTH = b"content-length"
H_ACCEPT = b"accept"
H_TARGET_VARIANT = b"x-amzn-sagemaker-target-variant"
H_TARGET_MODEL = b"x-amzn-sagemaker-target-model"
H_CUSTOM_ATTRIBUTES = b"x-amzn-sagemaker-custom-attributes"
H_INFERENCE_ID = b"x-amzn-sagemaker-inference-id"

# Response headers (spelled as SageMaker's runtime spells them; botocore matches case-insensitively).
R_CONTENT_TYPE = b"content-type"
R_INVOKED_VARIANT = b"x-Amzn-Invoked-Production-Variant"
R_CUSTOM_ATTRIBUTES = b"X-Amzn-SageMaker-Custom-Attributes"
R_ERROR_TYPE = b"x-amzn-ErrorType"
R_REQUEST_ID = b"x-amzn-RequestId"

# Limits from the runtime API model (botocore sagemaker-runtime 2017-05-13).
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # 6291456: InvokeEndpoint body limit
MAX_HEADER_CHARS = 1024  # ContentType, Accept, CustomAttributes, TargetModel
MAX_VARIANT_CHARS = 63
MAX_INFERENCE_ID_CHARS = 64
MAX_ENDPOINT_NAME_CHARS = 63

# Environment variables read once at the entry point (sagemaker-inference-toolkit parameters.py).
ENV_PROGRAM = "SAGEMAKER_PROGRAM"
ENV_DEFAULT_ACCEPT = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"
ENV_WORKERS = "SAGEMAKER_MODEL_SERVER_WORKERS"
DEFAULT_PROGRAM = "inference.py"
ENV_OMP_THREADS = "OMP_NUM_THREADS"

# Names inside an artefact (docs/contracts.md sec. 6).
CODE_DIR = "code"

# Account and region put into ARNs and messages: the local endpoint has neither.
LOCAL_ACCOUNT = "000000000000"
LOCAL_REGION = "us-east-1"
