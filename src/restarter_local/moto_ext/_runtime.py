"""Process-wide registry: which SimulatedAgentState the patched moto consults, and the patches."""

from __future__ import annotations

import threading
from typing import Any

from .state import SimulatedAgentState

_MISSING = object()
LOCK = threading.RLock()
_patches: list[tuple[Any, str, Any]] = []


_active: list[SimulatedAgentState | None] = [None]


def active_state() -> SimulatedAgentState | None:
    """The state the extensions consult (None: moto behaves as shipped where we patched it)."""
    return _active[0]


def set_active_state(state: SimulatedAgentState | None) -> None:
    """Make ``state`` the one the patched moto consults (None: patched paths behave as shipped)."""
    _active[0] = state


def patch(owner: Any, name: str, value: Any) -> None:
    """Set ``owner.name = value`` and remember the previous class attribute for ``unpatch_all``."""
    _patches.append((owner, name, owner.__dict__.get(name, _MISSING)))
    setattr(owner, name, value)


def is_patched() -> bool:
    return bool(_patches)


def unpatch_all() -> None:
    while _patches:
        owner, name, original = _patches.pop()
        if original is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, original)
