"""The node recovery ladder: what a GPU node's findings call for, one rung at a time.

reset the GPU → reboot → stop/start (a new host) → replace. The first rung is the one the
worst finding of the cluster's last health report calls for; a recovery that failed, or an
alarm that fires again within the cooldown, climbs one rung above the previous recovery's.
Each rung is tried once before the next. Replacing a node is not restarter's to do: it is
announced (`Node Needs Replacement`) and the cluster marked `error` with the reason.

Stop/start moves an EBS-backed instance to a new host, which is what a GPU that stays off the
bus after a reboot needs; but it erases instance-store volumes (the NVMe disks of p4d/p5). A
cluster labelled `restarter:local-state=true` keeps data there, so stop/start is refused for
it and the operator is asked to act instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from restarter.domain.gpu.findings import ACTIONS, Action
from restarter.domain.models import NodeAction

Rung = Literal["reset_gpu", "reboot", "stop_start", "replace"]
RUNGS: tuple[Rung, ...] = ("reset_gpu", "reboot", "stop_start", "replace")
LOCAL_STATE_LABEL = "restarter:local-state"
NEEDS_REPLACEMENT_EVENT = "Node Needs Replacement"


def rung_for(action: Action | None) -> Rung | None:
    """The rung a finding's action calls for (None: nothing on the node to fix)."""
    if action is None or action == "report":
        return None
    return RUNGS[ACTIONS.index(action) - 1]


def climb(rung: Rung) -> Rung:
    return RUNGS[min(RUNGS.index(rung) + 1, len(RUNGS) - 1)]


def holds_local_state(labels: Mapping[str, str]) -> bool:
    return labels.get(LOCAL_STATE_LABEL, "").strip().lower() in {"true", "yes", "1"}


@dataclass(frozen=True)
class RungDecision:
    rung: Rung
    reasons: tuple[str, ...]
    # stop/start was called for and refused (the cluster holds local state): the operator acts
    refused: str | None = None


def choose_rung(
    worst: Action | None,
    previous: Rung | None,
    *,
    climb_from_previous: bool,
    local_state: bool,
) -> RungDecision | None:
    """The rung for this recovery; None when neither the findings nor the history call for one."""
    reasons: list[str] = []
    rung = rung_for(worst)
    if rung is not None:
        reasons.append(f"the worst health finding calls for {rung}")
    if previous is not None and climb_from_previous:
        above = climb(previous)
        if rung is None or RUNGS.index(above) > RUNGS.index(rung):
            reasons.append(f"the previous recovery ({previous}) did not fix the node: {above} is next")
            rung = above
    if rung is None:
        return None
    if rung == "stop_start" and local_state:
        refused = (
            f"stop/start would move the instances to new hosts and erase their instance-store volumes; "
            f"the cluster is labelled {LOCAL_STATE_LABEL}=true"
        )
        return RungDecision("replace", (*reasons, refused), refused=refused)
    return RungDecision(rung, tuple(reasons))


def node_action_of(rung: Rung) -> NodeAction | None:
    """What a restart does for the rung (None for `replace`, which restarter does not perform)."""
    return None if rung == "replace" else rung


RUNG_WORDS: dict[NodeAction, str] = {
    "reset_gpu": "GPU reset",
    "reboot": "reboot",
    "stop_start": "stop/start on a new host",
}


def rung_request(rung: NodeAction, alarm_name: str, reasons: tuple[str, ...] = ()) -> dict[str, Any]:
    """The restart body for a rung. A GPU reset and a reboot stop the workload first (a process
    holding a GPU blocks its reset); stop/start is the seed's forced restart. No system updates:
    a driver update may be what broke the node."""
    why = f": {reasons[0]}" if reasons else ""
    body: dict[str, Any] = {
        "force": rung == "stop_start",
        "wait_for_ready": True,
        "restart_reason": f"Error recovery - {RUNG_WORDS[rung]}{why} (alarm {alarm_name[:200]})"[:500],
    }
    if rung != "stop_start":
        body["grace_period_minutes"] = 1
    return body
