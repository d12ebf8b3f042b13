"""Compiled definitions shared by the definition tests (compiling takes about a second each)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipelines.config import load_config
from pipelines.pipeline import CompiledPipeline, compile_pipeline


def compile_with(*overrides: str) -> CompiledPipeline:
    return compile_pipeline(load_config(overrides=list(overrides), environ={}))


def all_steps(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every step by name, including those nested in condition branches."""
    found: dict[str, dict[str, Any]] = {}

    def walk(steps: list[dict[str, Any]]) -> None:
        for step in steps:
            found[step["Name"]] = step
            if step["Type"] == "Condition":
                walk(step["Arguments"]["IfSteps"])
                walk(step["Arguments"]["ElseSteps"])

    walk(definition["Steps"])
    return found


@pytest.fixture(scope="session")
def default_compiled() -> CompiledPipeline:
    return compile_with()


@pytest.fixture(scope="session")
def definition(default_compiled: CompiledPipeline) -> dict[str, Any]:
    return json.loads(default_compiled.definition)


@pytest.fixture(scope="session")
def steps(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return all_steps(definition)
