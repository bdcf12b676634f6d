"""The vocabulary every GPU rule answers in: a finding names one fault, the least drastic action that
clears it, the exact lines it was read from and the document the rule comes from, so an operator can
check a decision without re-deriving it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict

Action = Literal["report", "reset_gpu", "reboot", "stop_start", "replace"]
# Severity rises along the tuple: each action also does what the ones before it would have done.
ACTIONS: tuple[Action, ...] = ("report", "reset_gpu", "reboot", "stop_start", "replace")

# A restart is ready only when nothing worse than "report" was found.
READINESS_BLOCKING: Action = "reset_gpu"
# Right after a boot these can be the driver still coming up: worth waiting for before acting.
SETTLING_CODES: frozenset[str] = frozenset({"gpu_missing", "nvlink_down", "no_driver"})


class Finding(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)

    code: str
    action: Action
    summary: str
    evidence: str
    gpu_index: int | None = None
    gpu_uuid: str | None = None
    pci_bus_id: str | None = None
    count: int = 1
    xid: int | None = None
    catalog_bucket: str | None = None
    source: str


def severity(action: Action) -> int:
    return ACTIONS.index(action)


def action_at_least(a: Action, b: Action) -> bool:
    """True when `a` is as drastic as `b` or more."""
    return severity(a) >= severity(b)


def worst_action(findings: Iterable[Finding]) -> Action | None:
    actions = [finding.action for finding in findings]
    if not actions:
        return None
    return max(actions, key=severity)
