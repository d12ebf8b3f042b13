"""Model Registry: package groups and versioned packages (1, 2, 3 per group) with approval and metrics."""

from __future__ import annotations

from typing import Any

from pipelines.local.api_common import filter_sort, now, paginate, pick, shape_members, to_dt
from pipelines.local.api_errors import ConflictError, ValidationError, not_found
from pipelines.local.backend_base import BackendBase
from pipelines.local.records import Resource

GROUP = "model-package-group"
PACKAGE = "model-package"
APPROVAL_STATUSES = ("Approved", "Rejected", "PendingManualApproval")
_UPDATABLE = (
    "ModelApprovalStatus",
    "ApprovalDescription",
    "InferenceSpecification",
    "SourceUri",
    "ModelCard",
    "ModelLifeCycle",
    "ModelPackageRegistrationType",
)


def _group_name(value: str) -> str:
    """Group given by name or ARN (`...:model-package-group/<name>`)."""
    return value.rsplit("/", 1)[-1] if value.startswith("arn:") else value


class RegistryBackend(BackendBase):
    """CreateModelPackageGroup ... UpdateModelPackage; versions are assigned in one SQLite transaction."""

    # --- groups ----------------------------------------------------------------------------------
    def create_model_package_group(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["ModelPackageGroupName"]
        body = {
            "ModelPackageGroupName": name,
            "ModelPackageGroupArn": self.arn(GROUP, name),
            "CreationTime": to_dt(now()),
            "CreatedBy": {},
            "ModelPackageGroupStatus": "Completed",
            **pick(request, "ModelPackageGroupDescription"),
        }
        if not self.records.insert_resource(
            GROUP, name, body["ModelPackageGroupArn"], body, status="Completed"
        ):
            raise ValidationError(f"Model Package Group already exists: {body['ModelPackageGroupArn']}")
        return {"ModelPackageGroupArn": body["ModelPackageGroupArn"]}

    def _group(self, value: str) -> Resource:
        found = self.records.get_resource(GROUP, _group_name(value))
        if found is None:
            raise not_found("Model package group", value)
        return found

    def describe_model_package_group(self, request: dict[str, Any]) -> dict[str, Any]:
        return dict(self._group(request["ModelPackageGroupName"]).body)

    def list_model_package_groups(self, request: dict[str, Any]) -> dict[str, Any]:
        summaries = [
            pick(
                g.body,
                "ModelPackageGroupName",
                "ModelPackageGroupArn",
                "ModelPackageGroupDescription",
                "CreationTime",
                "ModelPackageGroupStatus",
            )
            for g in self.records.list_resources(GROUP)
        ]
        items = filter_sort(summaries, request, name_key="ModelPackageGroupName", default_order="Ascending")
        return paginate("ListModelPackageGroups", request, items)

    def delete_model_package_group(self, request: dict[str, Any]) -> dict[str, Any]:
        group = self._group(request["ModelPackageGroupName"])
        if self.records.list_resources(PACKAGE, group.name):
            raise ConflictError(f"Model Package Group {group.name} has model packages; delete them first.")
        self.records.delete_resource(GROUP, group.name)
        return {}

    # --- packages --------------------------------------------------------------------------------
    def create_model_package(self, request: dict[str, Any]) -> dict[str, Any]:
        status = request.get("ModelApprovalStatus")
        if status is not None and status not in APPROVAL_STATUSES:
            raise ValidationError(f"ModelApprovalStatus must be one of {APPROVAL_STATUSES}, got {status!r}.")
        members = shape_members("DescribeModelPackageOutput")
        echoed = {k: v for k, v in request.items() if k in members and k != "ModelPackageGroupName"}
        stamp = to_dt(now())
        common = {
            "CreationTime": stamp,
            "LastModifiedTime": stamp,
            "ModelPackageStatus": "Completed",
            "ModelPackageStatusDetails": {"ValidationStatuses": []},
            "CreatedBy": {},
        }
        if group_value := request.get("ModelPackageGroupName"):
            group = self._group(group_value)

            def build(version: int) -> tuple[str, str, dict[str, Any], str | None]:
                package_arn = self.arn(PACKAGE, f"{group.name}/{version}")
                body = {
                    **echoed,
                    **common,
                    "ModelPackageName": group.name,
                    "ModelPackageGroupName": group.name,
                    "ModelPackageVersion": version,
                    "ModelPackageArn": package_arn,
                    # SageMaker's default for a versioned package waits for a human.
                    "ModelApprovalStatus": status or "PendingManualApproval",
                }
                return package_arn, package_arn, body, body["ModelApprovalStatus"]

            created = self.records.insert_versioned(PACKAGE, group.name, build)
            return {"ModelPackageArn": created.arn}
        name = request.get("ModelPackageName")
        if not name:
            raise ValidationError("Either ModelPackageGroupName or ModelPackageName must be given.")
        package_arn = self.arn(PACKAGE, name)
        body = {**echoed, **common, "ModelPackageName": name, "ModelPackageArn": package_arn}
        if not self.records.insert_resource(PACKAGE, package_arn, package_arn, body, status=status):
            raise ValidationError(f"Model package {name} already exists: {package_arn}")
        return {"ModelPackageArn": package_arn}

    def _package(self, value: str) -> Resource:
        key = value.lower() if value.startswith("arn:") else self.arn(PACKAGE, value)
        found = self.records.get_resource(PACKAGE, key)
        if found is None:
            raise not_found("Model package", value)
        return found

    def describe_model_package(self, request: dict[str, Any]) -> dict[str, Any]:
        return dict(self._package(request["ModelPackageName"]).body)

    def update_model_package(self, request: dict[str, Any]) -> dict[str, Any]:
        package = self._package(request["ModelPackageArn"])
        status = request.get("ModelApprovalStatus")
        if status is not None and status not in APPROVAL_STATUSES:
            raise ValidationError(f"ModelApprovalStatus must be one of {APPROVAL_STATUSES}, got {status!r}.")
        body = dict(package.body)
        body.update(pick(request, *_UPDATABLE))
        metadata = dict(body.get("CustomerMetadataProperties", {}))
        metadata.update(request.get("CustomerMetadataProperties", {}))
        for key in request.get("CustomerMetadataPropertiesToRemove", []):
            metadata.pop(key, None)
        if metadata or "CustomerMetadataProperties" in body:
            body["CustomerMetadataProperties"] = metadata
        if extra := request.get("AdditionalInferenceSpecificationsToAdd"):
            body["AdditionalInferenceSpecifications"] = [
                *body.get("AdditionalInferenceSpecifications", []),
                *extra,
            ]
        body["LastModifiedTime"] = to_dt(now())
        body["LastModifiedBy"] = {}
        self.records.update_resource(PACKAGE, package.name, body=body, status=body.get("ModelApprovalStatus"))
        return {"ModelPackageArn": package.arn}

    def list_model_packages(self, request: dict[str, Any]) -> dict[str, Any]:
        group = request.get("ModelPackageGroupName")
        # The API's default is unversioned packages only; a group filter asks for its versions.
        kind = (request.get("ModelPackageType") or ("Versioned" if group else "Unversioned")).capitalize()
        packages = (
            self.records.list_resources(PACKAGE, _group_name(group))
            if group
            else self.records.list_resources(PACKAGE)
        )
        summaries = []
        for package in packages:
            versioned = package.version is not None
            if (kind == "Versioned" and not versioned) or (kind == "Unversioned" and versioned):
                continue
            if (wanted := request.get("ModelApprovalStatus")) and package.body.get(
                "ModelApprovalStatus"
            ) != wanted:
                continue
            summaries.append(
                pick(
                    package.body,
                    "ModelPackageName",
                    "ModelPackageGroupName",
                    "ModelPackageVersion",
                    "ModelPackageArn",
                    "ModelPackageDescription",
                    "CreationTime",
                    "ModelPackageStatus",
                    "ModelApprovalStatus",
                    "ModelLifeCycle",
                    "ModelPackageRegistrationType",
                )
            )
        items = filter_sort(
            summaries,
            request,
            name_key="ModelPackageName",
            default_order="Ascending",
            sort_keys={"CreationTime": "ModelPackageVersion"} if group else None,
        )
        return paginate("ListModelPackages", request, items)

    def delete_model_package(self, request: dict[str, Any]) -> dict[str, Any]:
        package = self._package(request["ModelPackageName"])
        self.records.delete_resource(PACKAGE, package.name)
        return {}
