"""Parse each state machine definition, and each JSONPath, once per process.

moto's Step Functions parses the ASL with ANTLR in ``CreateStateMachine`` and again at the start
of every execution: ~0.25 s of CPU for ``restart.asl.json``, more than most of a test's own work.
The ANTLR parse tree only depends on the definition's text and nothing writes to it, so it is
kept per definition; the preprocessor still builds fresh evaluation components from it for
every call (they hold an execution's state), exactly as moto's own ``parse`` does.

``CreateStateMachine`` only validates (it throws the components away): a definition that was
valid once is valid again, so each engine's provisioning validates it once per process. And
every ``InputPath``, ``ResultSelector`` or ``Parameters`` path evaluated builds a new JSONPath
parser (a PLY grammar) for its path string; parsed paths are immutable, so each is kept.
"""

from __future__ import annotations

import functools
from typing import Any

from antlr4 import CommonTokenStream, InputStream
from jsonpath_ng.ext.parser import parse as parse_json_path
from moto.stepfunctions.parser.asl.antlr.runtime.ASLLexer import ASLLexer
from moto.stepfunctions.parser.asl.antlr.runtime.ASLParser import ASLParser
from moto.stepfunctions.parser.asl.parse.asl_parser import ASLParserException, SyntaxErrorListener
from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor

from .registry import replaces, wraps

# Definitions a process keeps parsed: the two state machines plus what tests provision.
PARSED_DEFINITIONS = 64
# JSONPaths a process keeps parsed: the ASL files hold about a hundred.
PARSED_JSON_PATHS = 1024


@functools.lru_cache(maxsize=PARSED_DEFINITIONS)
def _parse_tree(definition: str) -> Any:
    """moto's ``AmazonStateLanguageParser.parse`` up to the syntax check (errors are not kept)."""
    listener = SyntaxErrorListener()
    parser = ASLParser(CommonTokenStream(ASLLexer(InputStream(definition))))
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    tree = parser.state_machine()
    if listener.errors:
        raise ASLParserException(errors=listener.errors)
    return tree


def parse(definition: str) -> tuple[Any, Any]:
    """(program, parse tree) like moto's: a new program over the definition's kept tree."""
    tree = _parse_tree(definition)
    return Preprocessor().visit(tree), tree


@functools.lru_cache(maxsize=PARSED_JSON_PATHS)
def json_path(path: str) -> Any:
    """``jsonpath_ng.ext.parse`` once per path string (``find`` does not change what it returns)."""
    return parse_json_path(path)


def _validate_once(original: Any) -> Any:
    # exceptions (an invalid definition) are not kept: each attempt is refused again
    return staticmethod(functools.lru_cache(maxsize=PARSED_DEFINITIONS)(original))


PATCHES = (
    replaces(
        "stepfunctions.asl_parse_cache",
        "moto.stepfunctions.parser.asl.parse.asl_parser",
        "AmazonStateLanguageParser",
        "parse",
        "parse each definition once per process: moto parses it again for every execution",
        staticmethod(parse),
    ),
    wraps(
        "stepfunctions.validate_definition_once",
        "moto.stepfunctions.parser.models",
        "StepFunctionsParserBackend",
        "_validate_definition",
        "validate a definition once per process: every engine's provisioning creates the same machines",
        _validate_once,
        after=("stepfunctions.asl_parse_cache",),
    ),
    replaces(
        "stepfunctions.json_path_cache",
        "moto.stepfunctions.parser.asl.utils.json_path",
        "",
        "parse",
        "parse each JSONPath once per process: moto builds a new PLY parser for every evaluation",
        json_path,
    ),
)
