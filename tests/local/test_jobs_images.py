"""Image recognition: framework images run on local Python, built-in XGBoost is emulated, others refused."""

from __future__ import annotations

import pytest

from pipelines.local.errors import UnsupportedError
from pipelines.local.jobs.images import resolve_image, training_mode


@pytest.mark.parametrize(
    ("uri", "framework"),
    [
        ("683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3", "sklearn"),
        ("720646828776.dkr.ecr.ap-south-1.amazonaws.com/sagemaker-scikit-learn:0.23-1", "sklearn"),
        ("246618743249.dkr.ecr.us-west-2.amazonaws.com/sagemaker-xgboost:1.7-1", "xgboost"),
        ("451049120500.dkr.ecr.cn-north-1.amazonaws.com.cn/sagemaker-xgboost:1.5-1", "xgboost"),
        ("763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.1-cpu-py310", "pytorch"),
        ("763104351884.dkr.ecr.eu-west-1.amazonaws.com/tensorflow-training:2.14-cpu", "tensorflow"),
        ("246618743249.dkr.ecr.us-west-2.amazonaws.com/sagemaker-xgboost@sha256:abc123", "xgboost"),
    ],
)
def test_framework_images_of_any_region_account_and_tag(uri: str, framework: str) -> None:
    image = resolve_image(uri)
    assert image.framework == framework and image.uri == uri and not image.algorithm_only


@pytest.mark.parametrize(
    "uri",
    [
        "python:3.11",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-custom-image:latest",
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn-extra:1",
        "",
    ],
)
def test_unknown_image_error_names_it_and_lists_what_is_supported(uri: str) -> None:
    with pytest.raises(UnsupportedError) as err:
        resolve_image(uri)
    message = str(err.value)
    assert repr(uri) in message
    assert (
        "sagemaker-scikit-learn" in message
        and "sagemaker-xgboost" in message
        and "built-in XGBoost" in message
    )


def test_training_mode_decisions() -> None:
    xgb = resolve_image("246618743249.dkr.ecr.us-west-2.amazonaws.com/sagemaker-xgboost:1.7-1")
    sklearn = resolve_image("683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1")
    legacy = resolve_image("811284229777.dkr.ecr.us-east-1.amazonaws.com/xgboost:1")
    assert training_mode(xgb, entrypoint=None, program=None) == "algorithm"
    assert training_mode(xgb, entrypoint=None, program="train.py") == "script"
    assert training_mode(sklearn, entrypoint=["/bin/bash", "-c", "x"], program=None) == "command"
    assert training_mode(legacy, entrypoint=None, program=None) == "algorithm"
    with pytest.raises(UnsupportedError, match="sagemaker_program"):
        training_mode(sklearn, entrypoint=None, program=None)
    with pytest.raises(UnsupportedError, match="only the built-in XGBoost"):
        training_mode(legacy, entrypoint=None, program="train.py")
