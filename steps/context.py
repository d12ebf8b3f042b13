"""What every step builder shares: config, session, parameters, images and the cross-cutting settings.

Builders stay pure (no I/O, no AWS calls): everything they need arrives here, built once per definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.config import PipelineConfig
from pipelines.sdk import SourceBundle, image_uri, pack_entry

# Entry script -> files it needs beyond its imports: training copies inference.py into the model artefact.
ENTRIES: dict[str, tuple[str, ...]] = {
    "preprocess.py": (),
    "train.py": ("inference.py",),
    "evaluate.py": (),
}


def pack_sources() -> dict[str, SourceBundle]:
    return {entry: pack_entry(entry, extra) for entry, extra in ENTRIES.items()}


# The XGBoost framework image runs every job: processing needs pandas/scikit-learn, evaluation also needs
# xgboost, and one image keeps library versions identical between splitting, training and evaluating.
FRAMEWORK = "xgboost"


@dataclass
class BuildContext:
    """Inputs shared by the step builders for one compiled definition."""

    config: PipelineConfig
    session: Any
    params: dict[str, Any]
    sources: dict[str, SourceBundle]

    def code_uri(self, entry: str) -> str:
        """Content-addressed URI of the bundle that runs `entry` (see `pipelines.sdk.pack_entry`)."""
        return self.sources[entry].uri(self.config.s3_root)

    @property
    def image(self) -> str:
        return image_uri(FRAMEWORK, self.config.training.framework_version, self.config.region)

    def cache_config(self) -> Any:
        from sagemaker.mlops.workflow.steps import CacheConfig

        cache = self.config.cache
        return CacheConfig(enable_caching=cache.enabled, expire_after=cache.expire_after)

    def step_retry(self) -> Any:
        """Retries for service faults and throttling: safe for every step type."""
        from sagemaker.mlops.workflow.retry import StepExceptionTypeEnum, StepRetryPolicy

        retry = self.config.retry
        return StepRetryPolicy(
            exception_types=[StepExceptionTypeEnum.SERVICE_FAULT, StepExceptionTypeEnum.THROTTLING],
            interval_seconds=retry.interval_seconds,
            backoff_rate=retry.backoff_rate,
            max_attempts=retry.max_attempts,
        )

    def job_retries(self) -> list[Any]:
        """Job steps also retry on capacity (Spot!), resource-limit and internal errors."""
        from sagemaker.mlops.workflow.retry import SageMakerJobExceptionTypeEnum, SageMakerJobStepRetryPolicy

        retry = self.config.retry
        job = SageMakerJobStepRetryPolicy(
            exception_types=[
                SageMakerJobExceptionTypeEnum.CAPACITY_ERROR,
                SageMakerJobExceptionTypeEnum.RESOURCE_LIMIT,
                SageMakerJobExceptionTypeEnum.INTERNAL_ERROR,
            ],
            interval_seconds=retry.interval_seconds,
            backoff_rate=retry.backoff_rate,
            max_attempts=retry.max_attempts,
        )
        return [self.step_retry(), job]

    def network_config(self) -> Any | None:
        """Processing NetworkConfig when any network setting is configured."""
        sec = self.config.security
        if not (sec.subnets or sec.enable_network_isolation or sec.encrypt_inter_container_traffic):
            return None
        from sagemaker.core.network import NetworkConfig

        return NetworkConfig(
            enable_network_isolation=sec.enable_network_isolation,
            security_group_ids=sec.security_group_ids or None,
            subnets=sec.subnets or None,
            encrypt_inter_container_traffic=sec.encrypt_inter_container_traffic,
        )

    def schema_arguments(self) -> list[str]:
        """The schema as ContainerArguments (docs/contracts.md sec. 3): short items, no JSON blobs."""
        schema = self.config.schema_
        args = [
            "--target-column",
            schema.target_column,
            "--problem-type",
            schema.problem_type,
            "--numeric-columns",
            ",".join(schema.numeric_columns),
            "--categorical-columns",
            ",".join(schema.categorical_columns),
        ]
        for col, values in schema.categorical_columns.items():
            args += ["--categories", f"{col}={'|'.join(values)}"]
        args += ["--drop-columns", ",".join(schema.drop_columns)]
        return args
