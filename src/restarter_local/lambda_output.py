"""What the in-process Lambdas print goes to stderr.

On AWS a function's stdout is its CloudWatch log stream: Powertools Metrics prints its EMF
metric lines there, and a `print()` lands there too. In local mode the functions share the
process with the command that runs them (`restarter invoke`, `demo`, `serve`, the tests), whose
stdout must carry only its own answer. So while an invocation runs, writes to `sys.stdout`
from that thread go to `sys.stderr`; every other thread keeps writing to the real stdout.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

_invocation = threading.local()


def inside_invocation() -> bool:
    return bool(getattr(_invocation, "depth", 0))


class LambdaAwareStdout:
    """`sys.stdout` while the embedded AWS runs: a thread inside an invocation writes to
    stderr, any other thread to the stream this wraps."""

    def __init__(self, wrapped: TextIO) -> None:
        self.wrapped = wrapped

    def _target(self) -> TextIO:
        return sys.stderr if inside_invocation() else self.wrapped

    def write(self, text: str) -> int:
        return self._target().write(text)

    def writelines(self, lines: Any) -> None:
        self._target().writelines(lines)

    def flush(self) -> None:
        self._target().flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


@contextmanager
def lambda_stdout_to_stderr() -> Iterator[None]:
    """Around one in-process invocation. `sys.stdout` is wrapped again whenever something
    (pytest's capture, a caller's redirect) replaced it since the last invocation."""
    if not isinstance(sys.stdout, LambdaAwareStdout):
        sys.stdout = LambdaAwareStdout(sys.stdout)  # type: ignore[assignment]
    depth = getattr(_invocation, "depth", 0)
    _invocation.depth = depth + 1
    try:
        yield
    finally:
        _invocation.depth = depth
