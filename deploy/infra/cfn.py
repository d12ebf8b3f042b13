"""CloudFormation template files: YAML with short intrinsic tags -> dict, and the body sent to AWS."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

# CreateChangeSet's TemplateBody limit; larger templates go through S3 (TemplateURL, up to 1 MB).
MAX_TEMPLATE_BODY = 51_200


class TemplateTooLarge(ValueError):
    """The template exceeds TemplateBody's limit even without comments: package it to S3 first."""


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader plus CloudFormation's short tags, so runtime code does not need cfn-lint installed."""


def _intrinsic(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        # !GetAtt Resource.Attribute is the short form of ["Resource", "Attribute"].
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


@lru_cache(maxsize=32)
def load_template(path: Path) -> dict[str, Any]:
    """Parse a template file into plain dicts and lists (intrinsics in their long `Fn::` form)."""
    # A SafeLoader subclass: no arbitrary Python objects, only the CloudFormation tags added above.
    loaded = yaml.load(path.read_text(), Loader=_CfnLoader)
    if not isinstance(loaded, dict) or "Resources" not in loaded:
        raise ValueError(f"{path} is not a CloudFormation template (no Resources section)")
    return loaded


def template_body(path: Path) -> str:
    """The text to send as TemplateBody: the YAML itself, or compact JSON when comments push it over."""
    text = path.read_text()
    if len(text.encode()) <= MAX_TEMPLATE_BODY:
        return text
    compact = json.dumps(load_template(path), separators=(",", ":"), default=str)
    if len(compact.encode()) <= MAX_TEMPLATE_BODY:
        return compact
    raise TemplateTooLarge(
        f"{path.name} is {len(compact.encode()):,} bytes even as compact JSON (limit {MAX_TEMPLATE_BODY:,}):"
        " deploy it with --package"
    )
