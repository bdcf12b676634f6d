"""The kinds of fault the simulated fleet takes (fleet files, `restarter fault`, `/local/faults`):
a module of its own, so that the CLI offers them without loading the simulation."""

from __future__ import annotations

from typing import Literal, get_args

FaultKind = Literal[
    "never_healthy",
    "never_comes_back",
    "close_port",
    "fail_command",
    "xid",
    "throttle",
    "agent_offline",
    # GPU faults (restarter_local.moto_ext.gpu_sim), each on one GPU of the instance
    "ecc_dbe",
    "row_remap_pending",
    "row_remap_failure",
    "gpu_missing",
    "nvlink_down",
    "no_driver",
    # removes the instance's GPU faults and Xid lines
    "clear_gpu",
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
