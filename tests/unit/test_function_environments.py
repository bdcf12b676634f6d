"""Each function's environment in template.yaml (Globals + its own) is what the settings module
says it is. The embedded AWS merges every function's variables into one process, so a variable a
function lacks in AWS would go unnoticed locally: this test is where it shows (RECOVERY_TABLE was
missing from two functions that read the recovery table)."""

from __future__ import annotations

import re

from restarter import settings
from restarter_local.template import load_template

SHORT = re.compile(r"Function$")


def documented() -> dict[str, set[str]]:
    """variable -> the functions the settings docstring names for it ("all" expanded)."""
    doc = settings.__doc__ or ""
    table: dict[str, set[str]] = {}
    for line in doc.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0] or cells[0].startswith(("variable", "---")):
            continue
        names, where = cells
        if "set by Lambda" in where:
            continue
        for name in re.findall(r"[A-Z][A-Z0-9_]+", names):
            table[name] = {w.strip() for w in where.split(",")}
    return table


def in_template() -> dict[str, set[str]]:
    template = load_template()
    globals_ = set(template["Globals"]["Function"]["Environment"]["Variables"])
    functions = {
        SHORT.sub("", logical_id): set(resource["Properties"].get("Environment", {}).get("Variables", {}))
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    table: dict[str, set[str]] = {}
    for function, own in functions.items():
        for name in own | globals_:
            table.setdefault(name, set()).add(function)
    table = {k: v for k, v in table.items() if not k.startswith("POWERTOOLS_") and k != "LOG_LEVEL"}
    return {k: ({"all (Globals)"} if k in globals_ else v) for k, v in table.items()}


def test_the_settings_table_names_each_variable_with_the_functions_that_get_it() -> None:
    doc, template = documented(), in_template()
    # "all but X and Y" written out
    for name, where in doc.items():
        (only,) = where if len(where) == 1 else (None,)
        if only and only.startswith("all but "):
            excluded = {w.strip() for w in only.removeprefix("all but ").split(" and ")}
            everyone = {f for fs in in_template().values() if fs != {"all (Globals)"} for f in fs}
            doc[name] = everyone - excluded
    assert doc == template


def test_every_variable_the_settings_read_is_set_for_some_function() -> None:
    read = set(settings.Settings.variables()) - {"AWS_REGION", "AWS_DEFAULT_REGION"}
    assert read <= set(in_template()), read - set(in_template())
