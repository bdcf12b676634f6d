"""Parse each state machine definition once per process, not once per execution.

moto's Step Functions parses the ASL with ANTLR in ``CreateStateMachine`` and again at the start
of every execution: ~0.25 s of CPU for ``restart.asl.json``, more than most of a test's own work.
The ANTLR parse tree only depends on the definition's text and nothing writes to it, so it is
kept per definition; the preprocessor still builds fresh evaluation components from it for
every call (they hold an execution's state), exactly as moto's own ``parse`` does.
"""

from __future__ import annotations

import functools
from typing import Any

from antlr4 import CommonTokenStream, InputStream
from moto.stepfunctions.parser.asl.antlr.runtime.ASLLexer import ASLLexer
from moto.stepfunctions.parser.asl.antlr.runtime.ASLParser import ASLParser
from moto.stepfunctions.parser.asl.parse.asl_parser import ASLParserException, SyntaxErrorListener
from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor

from .registry import replaces

# Definitions a process keeps parsed: the two state machines plus what tests provision.
PARSED_DEFINITIONS = 64


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


PATCHES = (
    replaces(
        "stepfunctions.asl_parse_cache",
        "moto.stepfunctions.parser.asl.parse.asl_parser",
        "AmazonStateLanguageParser",
        "parse",
        "parse each definition once per process: moto parses it again for every execution",
        staticmethod(parse),
    ),
)
