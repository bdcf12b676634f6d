#!/usr/bin/env python3
"""Lint the SAM template offline, including the state machine definitions cfn-lint would skip.

cfn-lint validates a SAM template against SAM schemas but never opens a ``DefinitionUri`` file, so
the Amazon States Language of our state machines is not checked. This script:

1. runs ``cfn-lint`` on the SAM template as written;
2. checks what the template points at on disk: every ``DefinitionUri`` / ``CodeUri`` exists, every
   ``${Name}`` placeholder in a definition has a ``DefinitionSubstitutions`` entry, and every
   function ``Handler`` resolves to a module under ``CodeUri`` that defines it;
3. transforms the template with ``aws-sam-translator`` (offline: only ``AWS_DEFAULT_REGION`` is
   needed, a stub stands in for the IAM managed-policy lookup), with each local state machine
   definition inlined as ``Definition`` and local code locations replaced by placeholder S3 URIs;
4. runs ``cfn-lint`` on the resulting CloudFormation, where ``AWS::StepFunctions::StateMachine``
   definitions (with their substitutions) and the generated IAM roles get validated.

Exit status: 0 when clean, 1 on any error. Failure policy:

* the SAM template itself: errors AND warnings fail (we own every line; silence a deliberate
  warning in the resource's ``Metadata: cfn-lint: config: ignore_checks``, with a comment why);
* the transformed template: errors fail, warnings are printed only (they can come from code that
  SAM generates and we do not control);
* informational findings are not reported.

Usage (from anywhere; paths resolve against the template's directory):
    python scripts/lint_template.py [--template template.yaml] [--keep-transformed PATH]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
PLACEHOLDER_BUCKET = "restarter-lint-placeholder"
SUBSTITUTION_RE = re.compile(r"\$\{([A-Za-z0-9_.:-]+)\}")

StrDict = dict[str, Any]


class LintError(Exception):
    """A problem found before cfn-lint even runs (missing file, bad reference)."""


# --------------------------------------------------------------------------------------------------
# cfn-lint
# --------------------------------------------------------------------------------------------------
def _cfn_lint_executable() -> str:
    beside_python = Path(sys.executable).parent / "cfn-lint"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("cfn-lint")
    if not found:
        raise LintError("cfn-lint is not installed (pip install -e '.[dev]')")
    return found


def run_cfn_lint(path: Path, *, fail_on_warnings: bool, label: str, where: str = "line") -> bool:
    """Run cfn-lint on ``path``; return True when it passes under the given policy.

    ``where`` says how findings are located: ``line`` (file:line, for a file people edit) or
    ``path`` (the JSON path, for a generated file that is thrown away).
    """
    threshold = "warning" if fail_on_warnings else "error"
    cmd = [_cfn_lint_executable(), "--format", "json", "--non-zero-exit-code", threshold, "--", str(path)]
    print(f"--> cfn-lint {label} (fails on {threshold}s and above)", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
        findings = json.loads(proc.stdout) if proc.stdout.strip() else []
    except json.JSONDecodeError:
        findings = None
    if findings is None:
        print(proc.stdout.strip())
    for finding in findings or []:
        location = finding.get("Location", {})
        if where == "line":
            place = f"{path.name}:{location.get('Start', {}).get('LineNumber', '?')}"
        else:
            place = "/".join(str(part) for part in location.get("Path") or [])
        print(f"    {finding['Level']} {finding['Rule']['Id']} {place}: {finding['Message']}")
    if proc.stderr.strip():
        print(proc.stderr.strip())
    # cfn-lint exit codes are a bit mask: 1 fatal, 2 error, 4 warning, 8 informational.
    ok = proc.returncode == 0
    print(f"    {'ok' if ok else f'FAILED (cfn-lint exit {proc.returncode})'}", flush=True)
    return ok


# --------------------------------------------------------------------------------------------------
# Loading and preparing the SAM template
# --------------------------------------------------------------------------------------------------
def load_sam_template(path: Path) -> StrDict:
    """Parse a CloudFormation YAML/JSON template, turning short-form tags (!Ref) into dicts."""
    from samtranslator.yaml_helper import intrinsics_multi_constructor

    class CfnLoader(yaml.SafeLoader):
        pass

    CfnLoader.add_multi_constructor("!", intrinsics_multi_constructor)
    with path.open(encoding="utf-8") as fh:
        template = yaml.load(fh, Loader=CfnLoader)
    if not isinstance(template, dict) or not isinstance(template.get("Resources"), dict):
        raise LintError(f"{path}: not a CloudFormation template (no Resources mapping)")
    return template


def _is_local(uri: Any) -> bool:
    return isinstance(uri, str) and not uri.startswith("s3://")


def _local_path(base: Path, uri: str, what: str) -> Path:
    path = (base / uri).resolve()
    if not path.exists():
        raise LintError(f"{what}: {uri!r} does not exist ({path})")
    return path


def _load_definition(path: Path, literals: dict[str, Any] | None = None) -> Any:
    """Parse a definition after substituting its literal (non-intrinsic) values as text, as
    CloudFormation does before parsing: a numeric one sits unquoted, e.g. `"TimeoutSeconds": ${X}`."""
    text = path.read_text(encoding="utf-8")
    for name, value in (literals or {}).items():
        text = text.replace("${" + name + "}", str(value))
    if path.suffix in {".yaml", ".yml"}:
        return yaml.safe_load(text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LintError(f"{path}: invalid JSON: {exc}") from exc


def _placeholders(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(SUBSTITUTION_RE.findall(value))
    if isinstance(value, dict):
        return set().union(*(_placeholders(k) | _placeholders(v) for k, v in value.items()))
    if isinstance(value, list):
        return set().union(*(_placeholders(v) for v in value))
    return set()


def _check_handler(code_dir: Path, handler: Any, logical_id: str) -> None:
    """``pkg.module.func`` must name a module under ``code_dir`` that binds ``func`` at top level."""
    if not isinstance(handler, str) or "." not in handler:
        raise LintError(f"{logical_id}: Handler {handler!r} is not of the form module.function")
    module, func = handler.rsplit(".", 1)
    rel = Path(*module.split("."))
    candidates = [code_dir / rel.with_suffix(".py"), code_dir / rel / "__init__.py"]
    source = next((c for c in candidates if c.is_file()), None)
    if source is None:
        raise LintError(f"{logical_id}: Handler {handler!r}: no {rel}.py under {code_dir}")
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    bound: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.Assign):
            bound.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            bound.add(node.target.id)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    if func not in bound:
        raise LintError(f"{logical_id}: Handler {handler!r}: {source} defines no top-level {func!r}")


# Stands in for a definition that could not be loaded, so the rest of the template is still linted.
PLACEHOLDER_DEFINITION = {"StartAt": "Placeholder", "States": {"Placeholder": {"Type": "Succeed"}}}


def _placeholder_s3(uri: str) -> str:
    return f"s3://{PLACEHOLDER_BUCKET}/{uri.strip('/')}"


def _inline_state_machine(logical_id: str, props: StrDict, base: Path, errors: list[str]) -> str:
    uri = props.pop("DefinitionUri")
    literals = {k: v for k, v in (props.get("DefinitionSubstitutions") or {}).items() if not isinstance(v, dict)}
    try:
        definition = _load_definition(_local_path(base, uri, f"{logical_id}.DefinitionUri"), literals)
    except LintError as exc:
        errors.append(str(exc))
        props["Definition"] = PLACEHOLDER_DEFINITION
        return f"{logical_id}: {uri} not loaded, a placeholder stands in"
    props["Definition"] = definition
    used = _placeholders(definition) | (set(literals) & _placeholders((base / uri).read_text(encoding="utf-8")))
    substitutions = set(props.get("DefinitionSubstitutions") or {})
    if used - substitutions:
        names = ", ".join("${" + name + "}" for name in sorted(used - substitutions))
        errors.append(f"{logical_id}: {uri} uses {names} with no DefinitionSubstitutions entry")
    if substitutions - used:
        unused = sorted(substitutions - used)
        print(f"    warning: {logical_id}: DefinitionSubstitutions unused by {uri}: {unused}")
    return f"{logical_id}: inlined {uri} ({len(definition.get('States', {}))} top-level states)"


def prepare_for_translation(template: StrDict, base: Path) -> tuple[list[str], list[str]]:
    """Inline local state machine definitions, replace local code locations by placeholder S3 URIs.

    Mutates ``template``. Returns (notes, errors): what was done, and every reference that points
    at nothing. The template stays translatable either way, so the later steps still report.
    """
    notes: list[str] = []
    errors: list[str] = []
    globals_function = (template.get("Globals") or {}).get("Function") or {}
    global_code_uri = globals_function.get("CodeUri")
    if _is_local(global_code_uri):
        globals_function["CodeUri"] = _placeholder_s3(global_code_uri)

    for logical_id, resource in template["Resources"].items():
        if not isinstance(resource, dict):
            continue
        rtype = resource.get("Type")
        props = resource.setdefault("Properties", {})
        try:
            if rtype == "AWS::Serverless::StateMachine" and _is_local(props.get("DefinitionUri")):
                notes.append(_inline_state_machine(logical_id, props, base, errors))
            elif rtype == "AWS::Serverless::Function":
                code_uri = props.get("CodeUri", global_code_uri)
                if not _is_local(code_uri):
                    continue
                if "CodeUri" in props:
                    props["CodeUri"] = _placeholder_s3(code_uri)
                code_dir = _local_path(base, code_uri, f"{logical_id}.CodeUri")
                if props.get("PackageType", "Zip") == "Zip":
                    handler = props.get("Handler", globals_function.get("Handler"))
                    _check_handler(code_dir, handler, logical_id)
                    notes.append(f"{logical_id}: handler {handler} found under {code_uri}")
            elif rtype == "AWS::Serverless::LayerVersion" and _is_local(props.get("ContentUri")):
                uri = props["ContentUri"]
                props["ContentUri"] = _placeholder_s3(uri)
                _local_path(base, uri, f"{logical_id}.ContentUri")
            elif rtype in {"AWS::Serverless::Api", "AWS::Serverless::HttpApi"} and _is_local(
                props.get("DefinitionUri")
            ):
                uri = props["DefinitionUri"]
                props["DefinitionUri"] = _placeholder_s3(uri)
                _local_path(base, uri, f"{logical_id}.DefinitionUri")
        except LintError as exc:
            errors.append(str(exc))
    return notes, errors


def transform(template: StrDict) -> StrDict:
    """Run the SAM transform offline."""
    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
    from samtranslator.translator.transform import transform as sam_transform

    class OfflinePolicyLoader(ManagedPolicyLoader):
        """samtranslator bundles the AWS managed policy map; never call IAM for more."""

        def load(self) -> dict[str, str]:
            return {}

    try:
        return sam_transform(template, {}, OfflinePolicyLoader(iam_client=None))
    except InvalidDocumentException as exc:
        causes = "; ".join(str(cause) for cause in exc.causes)
        raise LintError(f"SAM transform failed: {causes}") from exc


def _sam_definition_to_object(cfn: StrDict, definitions: dict[str, Any]) -> None:
    """Give cfn-lint the definition as an object (``Definition``, with the same substitutions).

    SAM renders ``Definition`` as a ``Fn::Join`` of JSON lines in ``DefinitionString``, which
    cfn-lint does not resolve: left as is, E3601 would validate nothing (checked on cfn-lint 1.58).
    """
    for logical_id, definition in definitions.items():
        resource = cfn["Resources"].get(logical_id)
        if resource and resource.get("Type") == "AWS::StepFunctions::StateMachine":
            props = resource["Properties"]
            props.pop("DefinitionString", None)
            props["Definition"] = definition


# --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", type=Path, default=REPO_ROOT / "template.yaml")
    parser.add_argument("--keep-transformed", type=Path, help="also write the transformed template here")
    args = parser.parse_args(argv)

    template_path: Path = args.template.resolve()
    base = template_path.parent
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    print(f"Linting {template_path} (region {os.environ['AWS_DEFAULT_REGION']}, offline)", flush=True)

    ok = run_cfn_lint(template_path, fail_on_warnings=True, label=f"on {template_path.name} (SAM)")

    print("--> checking local references (DefinitionUri, DefinitionSubstitutions, CodeUri, Handler)")
    try:
        template = load_sam_template(template_path)
    except (LintError, yaml.YAMLError) as exc:
        print(f"    FAILED: {exc}")
        return 1
    notes, errors = prepare_for_translation(template, base)
    for note in notes:
        print(f"    {note}")
    for error in errors:
        print(f"    ERROR {error}")
    ok = ok and not errors
    definitions = {
        logical_id: resource["Properties"]["Definition"]
        for logical_id, resource in template["Resources"].items()
        if isinstance(resource, dict)
        and resource.get("Type") == "AWS::Serverless::StateMachine"
        and isinstance(resource.get("Properties", {}).get("Definition"), dict)
    }

    print("--> SAM transform (aws-sam-translator)", flush=True)
    try:
        cfn = transform(template)
    except LintError as exc:
        print(f"    FAILED: {exc}")
        return 1
    _sam_definition_to_object(cfn, definitions)
    kinds: dict[str, int] = {}
    for resource in cfn["Resources"].values():
        kinds[resource["Type"]] = kinds.get(resource["Type"], 0) + 1
    print("    ok: " + ", ".join(f"{n}x {t}" for t, n in sorted(kinds.items())))

    with tempfile.TemporaryDirectory(prefix="restarter-lint-") as tmp:
        out = Path(tmp) / "transformed.json"
        out.write_text(json.dumps(cfn, indent=2, sort_keys=False), encoding="utf-8")
        if args.keep_transformed:
            shutil.copyfile(out, args.keep_transformed)
            print(f"    transformed template written to {args.keep_transformed}")
        ok = run_cfn_lint(out, fail_on_warnings=False, label="on the transformed CloudFormation", where="path") and ok

    print("lint_template: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
