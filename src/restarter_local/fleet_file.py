"""Fleet files: the simulated GPU fleet (and its faults) that `restarter serve` starts with.

A fleet file is YAML (`.yaml`/`.yml`) or JSON (`.json`)::

    clusters: [ClusterSpec, ...]   # the clusters to create, fields as in restarter_local.fleet
    faults: [Fault, ...]           # optional: failures injected into the simulated fleet
    timings: {...}                 # optional: simulated instance timings, kept as given

`load_fleet` validates the whole file before anything starts (unknown fields, duplicate
cluster ids, faults naming a missing cluster or instance are errors) and raises
`FleetFileError` with a one-line message naming the file and the field. `seed_fleet` creates
the clusters on a running `LocalAws`, then applies the faults.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StringConstraints, ValidationError, model_validator

from restarter.domain.errors import RestarterError
from restarter.domain.models import SNAPSHOT_ID_PATTERN, Cluster, PortMapping
from restarter_local.engine import LocalAws
from restarter_local.fault_kinds import FaultKind
from restarter_local.fleet import ClusterSpec, seed_cluster
from restarter_local.moto_ext import InstanceTimings
from restarter_local.moto_ext.gpu_sim import GPU_FAULT_KINDS, GpuFault, GpuFaultKind

# The API's path rule for cluster ids (restarter.handlers.api.parameters.CLUSTER_ID): a cluster the API
# cannot name would be unreachable.
CLUSTER_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"


class FleetFileError(ValueError):
    """A fleet file that cannot be read or used; the message is one line naming file and field."""


class FleetPort(PortMapping):
    model_config = ConfigDict(extra="forbid")


class FleetCluster(ClusterSpec):
    """A `ClusterSpec` that refuses unknown fields (a typo in a fleet file is an error)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=CLUSTER_ID_PATTERN)
    name: str = Field(min_length=1, max_length=255)
    # FleetPort is a PortMapping; mypy sees list invariance, pydantic validates the stricter type
    ports: list[FleetPort] = Field(default_factory=list)  # type: ignore[assignment]
    # the API names checkpoints in `restore_from_snapshot`: they must match its pattern
    checkpoints: list[Annotated[str, StringConstraints(pattern=SNAPSHOT_ID_PATTERN)]] = Field(default_factory=list)


class Fault(BaseModel):
    """One failure injected into the simulated fleet (see `SimulatedAgentState`)."""

    model_config = ConfigDict(extra="forbid")

    kind: FaultKind
    # the cluster whose instance gets the fault; not used by `throttle` (it applies to an API)
    cluster_id: str | None = None
    # index into the cluster's instances
    instance: int = Field(default=0, ge=0)
    # close_port: the container's internal port that health checks find closed
    port: int | None = Field(default=None, ge=1, le=65535)
    # fail_command: the command that fails (stop_services, start_services, health_check, AWS-RunPatchBaseline)
    op: str | None = Field(default=None, min_length=1)
    stderr: str | None = None
    # throttle: the API refused, e.g. service "ec2", action "RebootInstances"
    service: str | None = Field(default=None, min_length=1)
    action: str | None = Field(default=None, min_length=1)
    # fail_command: how many times (default: every time); throttle: how many calls (default 1)
    times: int | None = Field(default=None, ge=1)
    # GPU faults: the GPU's index on the instance (default 0; no_driver hits every GPU)
    gpu: int | None = Field(default=None, ge=0)
    # xid: the Xid number, e.g. 79 (the GPU falls off the bus too); without it, an xid fault only
    # adds a real Xid 79 kernel line, and no rung cures it
    xid: int | None = Field(default=None, ge=1, le=999)
    # gpu_missing: the GPU appears only this many simulated seconds after each boot (never cured)
    late_seconds: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _fields_for_kind(self) -> Fault:
        required: dict[str, tuple[str, ...]] = {
            "close_port": ("cluster_id", "port"),
            "fail_command": ("cluster_id", "op"),
            "throttle": ("service", "action"),
        }
        for name in required.get(self.kind, ("cluster_id",)):
            if getattr(self, name) is None:
                raise ValueError(f"`{name}` is required for a {self.kind} fault")
        only_for = {
            "gpu": (f"a GPU fault ({', '.join(GPU_FAULT_KINDS)})", GPU_FAULT_KINDS),
            "xid": ("an xid fault", ("xid",)),
            "late_seconds": ("a gpu_missing fault", ("gpu_missing",)),
        }
        for name, (label, kinds) in only_for.items():
            if getattr(self, name) is not None and self.kind not in kinds:
                raise ValueError(f"`{name}` is only for {label}, not {self.kind}")
        return self


class FleetFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clusters: list[FleetCluster] = Field(default_factory=list)
    faults: list[Fault] = Field(default_factory=list)
    # simulated instance timings: carried as given, for the simulated fleet to read
    timings: dict[str, Any] | None = None
    _source: str = PrivateAttr(default="<memory>")

    @property
    def source(self) -> str:
        """Where the fleet was read from (for messages)."""
        return self._source

    @model_validator(mode="after")
    def _references(self) -> FleetFile:
        seen: set[str] = set()
        for index, cluster in enumerate(self.clusters):
            if cluster.id in seen:
                raise ValueError(f"clusters[{index}].id: duplicate cluster id {cluster.id!r}")
            seen.add(cluster.id)
        counts = {c.id: c.instance_count for c in self.clusters}
        for index, fault in enumerate(self.faults):
            if fault.kind == "throttle":
                continue
            assert fault.cluster_id is not None  # required for every other kind
            if fault.cluster_id not in counts:
                raise ValueError(f"faults[{index}].cluster_id: no cluster {fault.cluster_id!r} in this fleet")
            if fault.instance >= counts[fault.cluster_id]:
                raise ValueError(
                    f"faults[{index}].instance: {fault.cluster_id} has {counts[fault.cluster_id]} instance(s), "
                    f"index {fault.instance} is out of range"
                )
        return self


def default_fleet_path() -> Path:
    """The fleet shipped with restarter: the seed's `cluster_abc123` and two more."""
    return Path(str(files("restarter_local.fleets").joinpath("default.yaml")))


def load_fleet(path: Path | str | None = None) -> FleetFile:
    """Read and validate a fleet file (`None`: the default fleet)."""
    path = Path(path) if path is not None else default_fleet_path()
    where = f"fleet file {path}"
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise FleetFileError(f"{where}: unsupported file type {path.suffix or '(none)'!r}; use .yaml, .yml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise FleetFileError(f"{where}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetFileError(f"{where}: cannot read it: {_one_line(str(exc))}") from exc
    try:
        data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise FleetFileError(f"{where}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise FleetFileError(f"{where}: invalid YAML{at}: {_one_line(str(problem))}") from exc
    if data is None:
        raise FleetFileError(f"{where}: the file is empty; expected a mapping with a `clusters` list")
    if not isinstance(data, dict):
        raise FleetFileError(f"{where}: expected a mapping with a `clusters` list, got {type(data).__name__}")
    try:
        fleet = FleetFile.model_validate(data)
    except ValidationError as exc:
        raise FleetFileError(f"{where}: {_describe(exc)}") from exc
    fleet._source = str(path)
    return fleet


def seed_fleet(engine: LocalAws, fleet: FleetFile) -> list[Cluster]:
    """Create every cluster of the fleet on a running engine, then apply the faults."""
    clusters: list[Cluster] = []
    for index, spec in enumerate(fleet.clusters):
        try:
            clusters.append(seed_cluster(engine, spec))
        except RestarterError as exc:
            raise FleetFileError(
                f"fleet file {fleet.source}: clusters[{index}] ({spec.id}): {_one_line(exc.message)}"
            ) from exc
    apply_faults(engine, fleet, clusters)
    return clusters


def apply_faults(engine: LocalAws, fleet: FleetFile, clusters: list[Cluster]) -> None:
    """Inject the fleet's faults into the simulated fleet (`engine.agent`)."""
    by_id = {c.id: c for c in clusters}
    for index, fault in enumerate(fleet.faults):
        try:
            apply_fault(engine, fault, by_id)
        except ValueError as exc:
            raise FleetFileError(f"fleet file {fleet.source}: faults[{index}]: {exc}") from exc


def apply_fault(engine: LocalAws, fault: Fault, clusters: dict[str, Cluster]) -> None:
    """Inject one fault; a fault naming no known instance is a `ValueError`."""
    agent = engine.agent
    if fault.kind == "throttle":
        assert fault.service is not None and fault.action is not None
        agent.throttle(fault.service, fault.action, fault.times or 1)
        return
    cluster = clusters.get(fault.cluster_id or "")
    if cluster is None or fault.instance >= len(cluster.instance_ids):
        raise ValueError(f"no instance {fault.instance} in cluster {fault.cluster_id!r}")
    instance_id = cluster.instance_ids[fault.instance]
    if fault.kind == "never_healthy":
        agent.set_never_healthy(instance_id)
    elif fault.kind == "never_comes_back":
        agent.never_comes_back(instance_id)
    elif fault.kind == "close_port":
        assert fault.port is not None
        agent.close_port(instance_id, fault.port)
    elif fault.kind == "fail_command":
        assert fault.op is not None
        agent.fail_command(instance_id, fault.op, fault.stderr or "simulated failure", fault.times)
    elif fault.kind == "xid" and fault.xid is None:
        agent.inject_xid(instance_id)
    elif fault.kind in GPU_FAULT_KINDS:
        gpu = fault.gpu or 0
        gpu_count = getattr(cluster, "gpu_count", None)
        if gpu_count and gpu >= gpu_count:
            raise ValueError(f"gpu {gpu} is out of range: {cluster.id}'s instances have {gpu_count} GPU(s)")
        kind = cast(GpuFaultKind, fault.kind)
        agent.inject_gpu_fault(instance_id, GpuFault(kind, gpu=gpu, xid=fault.xid, late_seconds=fault.late_seconds))
    elif fault.kind == "clear_gpu":
        agent.clear_gpu_faults(instance_id)
        agent.clear_xid(instance_id)
    elif fault.kind == "agent_offline":
        agent.set_agent_offline(instance_id)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe(exc: ValidationError) -> str:
    """Pydantic's errors as `field.path: message; ...` on one line."""
    parts = []
    for error in exc.errors(include_url=False):
        loc = _path(error.get("loc", ()))
        message = str(error.get("msg", "invalid"))
        message = message.removeprefix("Value error, ")
        if error.get("type") == "extra_forbidden":
            message = "unknown field"
        elif error.get("type") == "missing":
            message = "required field is missing"
        parts.append(f"{loc}: {message}" if loc and not message.startswith(f"{loc}:") else message)
    return _one_line("; ".join(parts))


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.startswith("function-") or part in ("dict[str,str]", "list[PortMapping]"):
            continue
        else:
            text += f".{part}" if text else part
    return text


def instance_timings(fleet: FleetFile, time_scale: float) -> InstanceTimings:
    """The fleet's instance timings (the simulator's defaults for what it leaves out)."""
    given = dict(fleet.timings or {})
    try:
        ranges = {k: tuple(float(x) for x in v) for k, v in given.items() if k != "jitter"}
        return InstanceTimings(**ranges, jitter=int(given.get("jitter", 0)), time_scale=time_scale)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise FleetFileError(f"fleet file {fleet.source}: timings: {exc}") from exc
