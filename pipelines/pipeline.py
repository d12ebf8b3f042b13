"""The only assembly point: config -> step builders -> one SageMaker Pipeline (the definition is truth)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import steps as steps_package
from pipelines.config import PipelineConfig
from pipelines.sdk import SourceBundle, make_session, prepare_environment, quiet_sdk
from steps import deploy, evaluate, fail, preprocess, register, train, transform, tune
from steps.context import BuildContext, pack_sources
from steps.parameters import NO_CHAMPION_KEY, build_parameters

GATE_STEP = "Gate"
DEPLOY_GATE_STEP = "DeployGate"


def gate_conditions(ctx: BuildContext, evaluate_step: Any, evaluation: Any) -> list[Any]:
    """Candidate metric meets the threshold AND is not worse than the champion beyond the tolerance."""
    from sagemaker.core.workflow.conditions import (
        ConditionGreaterThanOrEqualTo,
        ConditionLessThanOrEqualTo,
    )
    from sagemaker.core.workflow.functions import JsonGet

    cfg = ctx.config

    def value(path: str) -> Any:
        return JsonGet(step_name=evaluate_step.name, property_file=evaluation, json_path=path)

    metric = value(cfg.metric_json_path)
    threshold = ctx.params["GateThreshold"]
    meets = (
        ConditionGreaterThanOrEqualTo(left=metric, right=threshold)
        if cfg.metric_direction == "maximize"
        else ConditionLessThanOrEqualTo(left=metric, right=threshold)
    )
    not_worse = ConditionLessThanOrEqualTo(
        left=value("gate.shortfall"), right=ctx.params["ChampionTolerance"]
    )
    return [meets, not_worse]


def deploy_gate(ctx: BuildContext, register_step: Any, model_uri: Any) -> Any:
    """Deploy only when the run asks for it and the new version is Approved (SageMaker refuses otherwise)."""
    from sagemaker.core.workflow.conditions import ConditionEquals
    from sagemaker.mlops.workflow.condition_step import ConditionStep

    deploy_steps = deploy.build(ctx, model_uri)
    if ctx.config.batch.enabled:
        # Batch scoring uses the model the deployment creates, so it runs only when that model exists.
        batch = ctx.config.batch
        settings = transform.TransformSettings(
            strategy=batch.strategy,
            max_payload_mb=batch.max_payload_mb,
            input_filter=batch.input_filter,
            output_filter=batch.output_filter,
        )
        deploy_steps.append(transform.build(ctx, deploy_steps[0], ctx.params["BatchInputUri"], settings))
    return ConditionStep(
        name=DEPLOY_GATE_STEP,
        depends_on=[register_step],
        conditions=[
            ConditionEquals(left=ctx.params["DeployModel"], right=True),
            ConditionEquals(left=ctx.params["ModelApprovalStatus"], right="Approved"),
        ],
        if_steps=deploy_steps,
        else_steps=[],
    )


@dataclass(frozen=True)
class CompiledPipeline:
    """A definition plus the uploads it refers to (code, markers), ready for either target."""

    name: str
    definition: str
    uploads: dict[str, bytes]

    @property
    def parameters(self) -> dict[str, Any]:
        return {p["Name"]: p.get("DefaultValue") for p in json.loads(self.definition)["Parameters"]}


def _build_fingerprint(config: PipelineConfig, sources: dict[str, SourceBundle]) -> str:
    """What a definition depends on: settings, code bundles, this package's builders, the SDK version."""
    from importlib.metadata import version

    builders = sorted(Path(__file__).parent.glob("*.py")) + sorted(
        Path(steps_package.__file__).parent.glob("*.py")
    )
    digest = hashlib.sha256()
    digest.update(config.model_dump_json(by_alias=True).encode())
    digest.update(json.dumps({k: b.sha256 for k, b in sources.items()}, sort_keys=True).encode())
    digest.update(version("sagemaker").encode())
    for path in builders:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def compile_pipeline(config: PipelineConfig, cache_dir: Path | None = None) -> CompiledPipeline:
    """Build and serialise the pipeline quietly and offline.

    With `cache_dir`, an unchanged build (same settings, code, builders and SDK) is read back instead of
    re-importing the SDK (about 3 s): compiling is deterministic, which the definition tests assert.
    """
    sources = pack_sources()
    cached = None
    if cache_dir is not None:
        cached = cache_dir / f"{_build_fingerprint(config, sources)}.json"
        if cached.is_file():
            try:
                data = json.loads(cached.read_text())
                return CompiledPipeline(
                    name=data["name"],
                    definition=data["definition"],
                    uploads={uri: base64.b64decode(blob) for uri, blob in data["uploads"].items()},
                )
            except (ValueError, KeyError):
                pass  # an unreadable entry is a miss; it is rewritten below
    with quiet_sdk():
        pipeline = build_pipeline(config, sources=sources)
        definition = pipeline.definition()
    compiled = CompiledPipeline(
        name=config.pipeline_name,
        definition=definition,
        uploads=dict(pipeline.sagemaker_session.pending_uploads),
    )
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "name": compiled.name,
            "definition": compiled.definition,
            "uploads": {uri: base64.b64encode(blob).decode() for uri, blob in compiled.uploads.items()},
        }
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, cached)
    return compiled


def build_pipeline(
    config: PipelineConfig, session: Any = None, sources: dict[str, SourceBundle] | None = None
) -> Any:
    """Compile the pipeline; code uploads are left in `session.pending_uploads` for the target to publish."""
    prepare_environment(config.region)
    from sagemaker.core.workflow.pipeline_definition_config import PipelineDefinitionConfig
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.pipeline import Pipeline

    session = session or make_session(config.region, config.bucket)
    sources = sources or pack_sources()
    ctx = BuildContext(config=config, session=session, params=build_parameters(config), sources=sources)
    for entry, bundle in sources.items():
        session.pending_uploads[ctx.code_uri(entry)] = bundle.data
    session.pending_uploads[f"{config.s3_root}/{NO_CHAMPION_KEY}"] = (
        b"No approved champion model existed when this execution started.\n"
    )

    pre = preprocess.build(ctx)
    training = train.build(ctx, pre)
    steps: list[Any] = [pre, training]
    if config.tuning.enabled:
        tuning = tune.build(ctx, pre)
        steps.append(tuning)
        candidate = tune.best_model_uri(ctx, tuning)
    else:
        candidate = training.properties.ModelArtifacts.S3ModelArtifacts
    evaluation = evaluate.property_file()
    evaluate_step = evaluate.build(ctx, pre, candidate, evaluation)
    register_step = register.build(ctx, candidate, evaluate.evaluation_json_uri(evaluate_step))
    gate = ConditionStep(
        name=GATE_STEP,
        conditions=gate_conditions(ctx, evaluate_step, evaluation),
        if_steps=[register_step, deploy_gate(ctx, register_step, candidate)],
        else_steps=[fail.build(ctx, evaluate_step, evaluation)],
    )
    steps += [evaluate_step, gate]
    return Pipeline(
        name=config.pipeline_name,
        parameters=list(ctx.params.values()),
        steps=steps,
        sagemaker_session=session,
        pipeline_definition_config=PipelineDefinitionConfig(use_custom_job_prefix=False),
    )
