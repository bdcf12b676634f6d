"""What ships in a Lambda artifact: the template's CodeUri holds only Lambda code and its pins."""

from __future__ import annotations

import ast
import subprocess
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CODE_URI = REPO / "functions"
FORBIDDEN_IMPORTS = ("moto", "restarter_local", "restarter_cli", "pytest", "yaml", "requests")


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation short-form tags (!Ref, !Sub, ...) as plain values."""


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _requirement_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_every_function_ships_the_functions_folder_and_nothing_else() -> None:
    # given the template
    template = yaml.load((REPO / "template.yaml").read_text(), Loader=_CfnLoader)
    functions = [r for r in template["Resources"].values() if r["Type"] == "AWS::Serverless::Function"]
    # then every function's code comes from functions/ (the Globals' CodeUri), which holds only the Lambda package
    assert template["Globals"]["Function"]["CodeUri"] == "functions/"
    assert functions and all("CodeUri" not in f["Properties"] for f in functions)
    tracked = subprocess.run(["git", "ls-files", "functions"], cwd=REPO, capture_output=True, text=True, check=True)
    shipped = sorted({Path(line).parts[1] for line in tracked.stdout.splitlines()})
    assert shipped == ["requirements.txt", "restarter"]


def test_the_artifact_pins_are_the_project_runtime_pins() -> None:
    # given the pins sam build installs and the ones the tests run against
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    # then they are the same, so what we test is what we ship
    assert sorted(_requirement_lines(CODE_URI / "requirements.txt")) == sorted(project)


def test_no_lambda_module_imports_the_local_runtime_the_cli_or_test_tools() -> None:
    # given every module of the Lambda package
    offenders = []
    for path in sorted((CODE_URI / "restarter").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in FORBIDDEN_IMPORTS]
    # then none reaches outside what the artifact carries
    assert offenders == []
