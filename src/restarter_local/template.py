"""Reading `template.yaml` as the embedded AWS needs it: plain data, the functions it declares,
and the values CloudFormation would give `!Ref` and `!GetAtt` once the resources exist.

The engine provisions from it and the tests check it; neither needs CloudFormation itself.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from restarter_local.resources import template_path

TEMPLATE = template_path()


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation short-form tags (!Ref, !Sub, ...) as plain values."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {f"Fn::{suffix}" if suffix != "Ref" else "Ref": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The template as plain data, a copy of its own for each caller (the pure-Python YAML
    reader takes ~0.3 s on this template, so each file is read once per process)."""
    return copy.deepcopy(_read_template(path.resolve(), path.stat().st_mtime_ns))


@functools.cache
def _read_template(path: Path, modified_ns: int) -> dict[str, Any]:
    with path.open() as handle:
        return dict(yaml.load(handle, Loader=_CfnLoader))


@dataclass(frozen=True)
class FunctionSpec:
    """A function the template declares: what moto's Lambda dispatches to, by logical id."""

    logical_id: str
    handler: str


def function_specs(template: dict[str, Any]) -> dict[str, FunctionSpec]:
    return {
        logical_id: FunctionSpec(logical_id, resource["Properties"]["Handler"])
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def resolve_intrinsic(value: Any, names: dict[str, str], arns: dict[str, str]) -> str | None:
    """An environment value as CloudFormation would give it: `!Ref` (the name, URL or ARN we
    made), `!GetAtt X.Arn`, or a literal; None for what the local runtime does not make."""
    if isinstance(value, dict) and "Ref" in value:
        return names.get(value["Ref"])
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        logical_id, _, attribute = (target if isinstance(target, str) else ".".join(target)).partition(".")
        return arns.get(logical_id) if attribute == "Arn" else None
    return str(value)
