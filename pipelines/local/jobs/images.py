"""Which container images the local engine can stand in for, and how (local Python or emulation)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pipelines.local.errors import UnsupportedError

# <account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>[:tag|@digest] — any account/region/tag.
_ECR_RE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?/"
    r"(?P<repo>[a-z0-9._/-]+?)(?P<ref>[:@].+)?$"
)
# Repository name -> framework. Script-mode framework images run the job's code on the local Python.
FRAMEWORK_REPOS: Mapping[str, str] = {
    "sagemaker-scikit-learn": "sklearn",
    "sagemaker-xgboost": "xgboost",
    "pytorch-training": "pytorch",
    "pytorch-inference": "pytorch",
    "sagemaker-pytorch": "pytorch",
    "tensorflow-training": "tensorflow",
    "tensorflow-inference": "tensorflow",
    "sagemaker-tensorflow-scriptmode": "tensorflow",
}
# The first-generation built-in XGBoost image (repository `xgboost`) only runs the algorithm.
ALGORITHM_ONLY_REPOS: Mapping[str, str] = {"xgboost": "xgboost"}

Mode = Literal["command", "script", "algorithm"]


@dataclass(frozen=True)
class Image:
    """A recognised image: its URI, repository and framework."""

    uri: str
    repository: str
    framework: str
    algorithm_only: bool = False


def supported_summary() -> str:
    """One line listing what the local engine runs, for error messages."""
    repos = ", ".join(sorted({*FRAMEWORK_REPOS, *ALGORITHM_ONLY_REPOS}))
    return (
        f"supported: AWS framework images <account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag> "
        f"with repository one of [{repos}] (run on the local Python), and the built-in XGBoost "
        f"algorithm (an xgboost image with no entry point; emulated)"
    )


def resolve_image(uri: str) -> Image:
    """Recognise an image URI.

    Raises:
        UnsupportedError: an image the local engine cannot run; the message names it and lists
            what is supported.
    """
    match = _ECR_RE.match(uri or "")
    repo = match.group("repo") if match else ""
    if repo in FRAMEWORK_REPOS:
        return Image(uri, repo, FRAMEWORK_REPOS[repo])
    if repo in ALGORITHM_ONLY_REPOS:
        return Image(uri, repo, ALGORITHM_ONLY_REPOS[repo], algorithm_only=True)
    raise UnsupportedError(f"image {uri!r} cannot run locally (no Docker); {supported_summary()}")


def training_mode(image: Image, *, entrypoint: list[str] | None, program: str | None) -> Mode:
    """How a training job runs locally.

    - "command": the request gives ContainerEntrypoint (e.g. SDK v3 ModelTrainer's `sm_train.sh`);
    - "script": script mode, a `sagemaker_program` hyperparameter / SAGEMAKER_PROGRAM variable;
    - "algorithm": an xgboost image with neither, i.e. SageMaker's built-in XGBoost algorithm.

    Raises:
        UnsupportedError: a framework image with no entry point, or script mode on the
            algorithm-only image.
    """
    if image.algorithm_only:
        if entrypoint or program:
            raise UnsupportedError(f"image {image.uri!r} runs only the built-in XGBoost algorithm")
        return "algorithm"
    if entrypoint:
        return "command"
    if program:
        return "script"
    if image.framework == "xgboost":
        return "algorithm"
    raise UnsupportedError(
        f"image {image.uri!r} ({image.framework}) needs an entry point locally: set the "
        "`sagemaker_program` hyperparameter (script mode) or AlgorithmSpecification.ContainerEntrypoint"
    )
