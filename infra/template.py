"""Read ``template.yaml`` so code and tests can use the infrastructure as data.

The local stack and the integration tests create their DynamoDB tables from the
``LeadsTable`` resource, so they cannot drift from what is deployed. PyYAML's
safe loader rejects CloudFormation's short-form tags (``!Ref``, ``!GetAtt`` ...);
the loader here turns them into their long form (``{"Ref": ...}``,
``{"Fn::GetAtt": [...]}``) and leaves everything else as plain data.

Only PyYAML is needed: nothing here touches AWS.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_ENV = "LEADFLOW_TEMPLATE"
TEMPLATE_FILE = "template.yaml"

# Short-form tags whose long form is not "Fn::<tag>".
_NOT_FN = {"Ref": "Ref", "Condition": "Condition"}


class CloudFormationLoader(yaml.SafeLoader):
    """A SafeLoader that understands CloudFormation short-form intrinsic functions."""


def _construct_intrinsic(loader: CloudFormationLoader, tag_suffix: str, node: yaml.Node) -> dict:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)

    if tag_suffix == "GetAtt" and isinstance(value, str):
        # "!GetAtt Resource.Attribute" is ["Resource", "Attribute"] in long form.
        value = value.split(".", 1)
    key = _NOT_FN.get(tag_suffix, f"Fn::{tag_suffix}")
    return {key: value}


CloudFormationLoader.add_multi_constructor("!", _construct_intrinsic)


def load_template(path: str | os.PathLike[str]) -> dict:
    """Parse a CloudFormation/SAM YAML template into plain Python data."""
    with open(path, encoding="utf-8") as handle:
        template = yaml.load(handle, Loader=CloudFormationLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(template, dict):
        raise ValueError(f"{path} is not a CloudFormation template (top level is not a mapping)")
    return template


def find_template() -> Path:
    """Locate ``template.yaml``: ``$LEADFLOW_TEMPLATE`` first, else the nearest one above this file."""
    configured = os.environ.get(TEMPLATE_ENV)
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise FileNotFoundError(f"{TEMPLATE_ENV}={configured} is not a file")
        return path
    here = Path(__file__).resolve().parent
    for directory in (here, *here.parents):
        candidate = directory / TEMPLATE_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {TEMPLATE_FILE} above {here}; set {TEMPLATE_ENV}")


def table_properties(template: dict, logical_id: str = "LeadsTable") -> dict:
    """The ``Properties`` of the DynamoDB table resource ``logical_id``."""
    resource = template.get("Resources", {}).get(logical_id)
    if resource is None:
        raise KeyError(f"template has no resource {logical_id!r}")
    if resource.get("Type") != "AWS::DynamoDB::Table":
        raise ValueError(f"{logical_id} is a {resource.get('Type')}, not an AWS::DynamoDB::Table")
    return resource.get("Properties", {})
