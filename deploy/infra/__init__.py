"""AWS infrastructure as code: CloudFormation templates, parameters per environment, the deploy CLI."""

from pathlib import Path

INFRA_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = INFRA_DIR / "templates"
PARAMS_DIR = INFRA_DIR / "params"
ENVIRONMENTS = ("dev", "staging", "prod")

__all__ = ["ENVIRONMENTS", "INFRA_DIR", "PARAMS_DIR", "TEMPLATES_DIR"]
