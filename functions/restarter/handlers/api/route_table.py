"""The routes this API declares, as the API itself keeps them.

Powertools matches a request to a route but offers no public way to list its routes, and two
answers need that list: 405 (`details.allowed`, the methods the path has) and the body guard (a
route that takes a JSON body refuses another content type even with an empty body).
`DeclaredRouter` is a Powertools `Router` that writes every route it registers into its
`RouteTable` too, so the table cannot drift from what Powertools serves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, get_args, get_origin, get_type_hints

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body

RouteFunction = TypeVar("RouteFunction", bound=Callable[..., Any])

# Powertools' rule for a `<name>` path parameter (one segment of RFC 3986 characters), and the
# REST resolver's tolerance of trailing slashes: the table matches a path exactly as Powertools does.
_SAFE_URI = "-._~()'!*:@,;=+&$"
_UNSAFE_URI = r"%<> \[\]{}|^"
_PARAMETER = re.compile(r"(<\w+>)")
_SEGMENT = rf"(?P\1[{_SAFE_URI}{_UNSAFE_URI}\\w]+)"


def compile_rule(rule: str) -> re.Pattern[str]:
    """The regular expression a REST resolver matches `rule` (`/v1/clusters/<cluster_id>`) with."""
    return re.compile("^{}/*$".format(_PARAMETER.sub(_SEGMENT, rule.rstrip("/"))))


def takes_json_body(func: Callable[..., Any]) -> bool:
    """Whether a route function declares a `Body()` parameter (every body of this API does)."""
    for hint in get_type_hints(func, include_extras=True).values():
        if get_origin(hint) is Annotated and any(isinstance(meta, Body) for meta in get_args(hint)[1:]):
            return True
    return False


@dataclass(frozen=True)
class DeclaredRoute:
    method: str
    rule: str
    reads_body: bool
    pattern: re.Pattern[str]


class RouteTable:
    def __init__(self, routes: Iterable[DeclaredRoute] = ()) -> None:
        self._entries: list[DeclaredRoute] = list(routes)

    def __iter__(self) -> Iterator[DeclaredRoute]:
        return iter(self._entries)

    def declare(self, method: str, rule: str, *, reads_body: bool = False) -> None:
        self._entries.append(DeclaredRoute(method.upper(), rule, reads_body, compile_rule(rule)))

    def extend(self, routes: Iterable[DeclaredRoute]) -> None:
        self._entries.extend(routes)

    def allowed_methods(self, path: str) -> list[str]:
        """The methods some route serves on `path` (empty: no route has the path)."""
        return sorted({route.method for route in self._entries if route.pattern.match(path)})

    def reads_body(self, method: str, path: str) -> bool:
        """Whether the route a request goes to takes a JSON body."""
        return any(
            route.method == method.upper() and route.reads_body and route.pattern.match(path) for route in self._entries
        )


class DeclaredRouter(Router):
    """A Powertools `Router` that also declares each of its routes in `self.table`."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Powertools leaves Router.__init__ unannotated
        self.table = RouteTable()

    def route(  # type: ignore[override]
        self, rule: str, method: str | list[str] | tuple[str], *args: Any, **kwargs: Any
    ) -> Callable[[RouteFunction], RouteFunction]:
        register = super().route(rule, method, *args, **kwargs)
        methods = [method] if isinstance(method, str) else list(method)

        def declare(func: RouteFunction) -> RouteFunction:
            for name in methods:
                self.table.declare(name, rule, reads_body=takes_json_body(func))
            return register(func)

        return declare
