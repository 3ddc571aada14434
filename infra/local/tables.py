"""Create the local tables from template.yaml, so the local stack cannot drift from it.

CloudFormation's ``AWS::DynamoDB::Table`` properties and boto3's ``create_table``
arguments are close but not equal: the stream is ``StreamEnabled`` + view type
in the API, TTL is a separate call, several properties do not exist in the API
at all, and anything computed by an intrinsic (``!Ref``, ``!Sub``, ``!If``…)
has no value outside a deployed stack.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

# create_table accepts these as they are written in the template.
_PASSTHROUGH = (
    "AttributeDefinitions",
    "KeySchema",
    "BillingMode",
    "ProvisionedThroughput",
    "TableClass",
    "DeletionProtectionEnabled",
    "OnDemandThroughput",
)
_REQUIRED = ("AttributeDefinitions", "KeySchema")
_INDEX_KEYS = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput", "OnDemandThroughput")


def is_intrinsic(value: Any) -> bool:
    """True when ``value`` (or anything inside it) is a CloudFormation intrinsic function."""
    if isinstance(value, Mapping):
        if len(value) == 1:
            (key,) = value.keys()
            if key == "Ref" or key == "Condition" or str(key).startswith("Fn::"):
                return True
        return any(is_intrinsic(v) for v in value.values())
    if isinstance(value, list):
        return any(is_intrinsic(v) for v in value)
    return False


def _index(index: Mapping[str, Any], billing_mode: str | None) -> dict[str, Any]:
    kwargs = {k: index[k] for k in _INDEX_KEYS if k in index and not is_intrinsic(index[k])}
    if billing_mode == "PAY_PER_REQUEST":
        kwargs.pop("ProvisionedThroughput", None)
    return kwargs


def create_table_kwargs(properties: Mapping[str, Any], table_name: str) -> dict[str, Any]:
    """Translate a table's template Properties into ``create_table`` keyword arguments."""
    for key in _REQUIRED:
        if key not in properties or is_intrinsic(properties[key]):
            raise ValueError(f"table property {key} must be written literally in the template")
    kwargs: dict[str, Any] = {"TableName": table_name}
    for key in _PASSTHROUGH:
        if key in properties and not is_intrinsic(properties[key]):
            kwargs[key] = properties[key]
    billing_mode = kwargs.get("BillingMode")
    if billing_mode is None and "ProvisionedThroughput" not in kwargs:
        # CloudFormation requires one of the two; locally, on-demand is the harmless guess.
        kwargs["BillingMode"] = billing_mode = "PAY_PER_REQUEST"
    if billing_mode == "PAY_PER_REQUEST":
        kwargs.pop("ProvisionedThroughput", None)
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if properties.get(key):
            kwargs[key] = [_index(index, billing_mode) for index in properties[key]]
    stream = properties.get("StreamSpecification")
    if stream and not is_intrinsic(stream) and stream.get("StreamViewType"):
        kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
    tags = properties.get("Tags")
    if tags and not is_intrinsic(tags):
        kwargs["Tags"] = [{"Key": str(t["Key"]), "Value": str(t["Value"])} for t in tags]
    return kwargs


def time_to_live(properties: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``update_time_to_live`` specification, or None when the template sets none."""
    spec = properties.get("TimeToLiveSpecification")
    if not spec or is_intrinsic(spec) or not spec.get("AttributeName"):
        return None
    return {"AttributeName": spec["AttributeName"], "Enabled": bool(spec.get("Enabled", True))}


def create_table(client: Any, properties: Mapping[str, Any], table_name: str) -> dict[str, Any]:
    """Create one table (and its TTL setting) unless it exists; return describe_table's Table."""
    try:
        client.create_table(**create_table_kwargs(properties, table_name))
        logger.debug("created table %s", table_name)
    except client.exceptions.ResourceInUseException:
        logger.debug("table %s already exists", table_name)
    client.get_waiter("table_exists").wait(TableName=table_name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100})
    ttl = time_to_live(properties)
    if ttl is not None:
        client.update_time_to_live(TableName=table_name, TimeToLiveSpecification=ttl)
    return client.describe_table(TableName=table_name)["Table"]


def template_table_properties(logical_id: str = "LeadsTable") -> dict[str, Any]:
    """The Properties of ``logical_id`` in the project's template.yaml."""
    from leadflow_infra import template as infra_template

    template = infra_template.load_template(infra_template.find_template())
    return infra_template.table_properties(template, logical_id=logical_id)
