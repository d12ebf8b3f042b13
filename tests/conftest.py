"""Suite-wide guards: no test reaches AWS or the network, and none reads the developer's AWS config."""

from __future__ import annotations

import os

import pytest

# Set before any test module imports boto3/sagemaker: a region, placeholder credentials and no metadata
# endpoint probing, so nothing can fall back to a real account.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
    os.environ.pop(_name, None)
for _name in [n for n in os.environ if n.startswith("PDM_")]:
    os.environ.pop(_name, None)


@pytest.fixture
def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
