"""Hourly rates of GPU instance types, and the `cost_impact` of a restart that changes hardware.

The rates come from a price catalog kept in the package as data (`restarter/data/gpu_prices.json`,
its source and date in `restarter/data/PRICES.md`): on-demand Linux USD prices per instance-hour, by
region. It is read once, lazily, on the first `load_price_catalog()`. Nothing here calls AWS.

A restart that changes `cpu_cores`, `memory_gb` or `gpu_count` moves the cluster to another instance
type; `cost_impact` compares the cluster's hourly rate before and after and says why it changed, in
the seed's words ("Memory and CPU upgrade").
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from importlib import resources
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field

CATALOG_PACKAGE: Final = "restarter.data"
CATALOG_FILE: Final = "gpu_prices.json"

# The hardware dimensions of `update_configuration` that change the instance type, in the order the
# reason names them (the seed's example reads "Memory and CPU upgrade").
HARDWARE_DIMENSIONS: Final = ("memory_gb", "cpu_cores", "gpu_count")
_LABELS: Final = {"memory_gb": "Memory", "cpu_cores": "CPU", "gpu_count": "GPU count"}

NO_HARDWARE_CHANGE: Final = "No hardware change"

HourlyRate = Annotated[float, Field(gt=0)]


class PriceCatalog(BaseModel):
    """Hourly on-demand prices of instance types by region, with where and when they were taken."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    source_url: str
    retrieved: date
    currency: str
    unit: str
    notes: str = ""
    regions: dict[str, dict[str, HourlyRate]]

    def hourly_rate(self, instance_type: str, region: str) -> float | None:
        """The price of one instance for an hour, or None if the catalog has no price for it there."""
        return self.regions.get(region, {}).get(instance_type)

    def instance_types(self, region: str) -> list[str]:
        """The instance types priced in a region (empty for a region the catalog does not cover)."""
        return list(self.regions.get(region, {}))

    @property
    def source_info(self) -> str:
        """One line naming the source and its date, for logs and API notes."""
        return f"{self.source} ({self.source_url}), retrieved {self.retrieved.isoformat()}"


class CostImpact(BaseModel):
    """The seed's `cost_impact` object: the cluster's hourly rate before and after the restart."""

    model_config = ConfigDict(frozen=True)

    old_hourly_rate: float | None = None
    new_hourly_rate: float | None = None
    rate_change_reason: str | None = None


@lru_cache(maxsize=1)
def load_price_catalog() -> PriceCatalog:
    """The packaged price catalog, read and validated on the first call and cached after."""
    raw = resources.files(CATALOG_PACKAGE).joinpath(CATALOG_FILE).read_bytes()
    return PriceCatalog.model_validate_json(raw)


def cluster_hourly_rate(catalog: PriceCatalog, instance_type: str, instance_count: int, region: str) -> float | None:
    """The hourly rate of `instance_count` instances of a type, in USD rounded to cents; None if unpriced."""
    if instance_count < 0:
        raise ValueError(f"instance_count must not be negative, got {instance_count}")
    rate = catalog.hourly_rate(instance_type, region)
    if rate is None:
        return None
    return _to_cents(rate, instance_count)


def cost_impact(
    catalog: PriceCatalog,
    *,
    region: str,
    instance_count: int,
    old_type: str,
    new_type: str | None,
    changed: Sequence[str],
) -> CostImpact:
    """The change of the cluster's hourly rate when it moves from `old_type` to `new_type`.

    `changed` lists the hardware dimensions the request asked to change ("cpu_cores", "memory_gb",
    "gpu_count"); other keys (storage_gb, region...) are ignored, as they do not change the rate
    here. Whether it is an upgrade or a downgrade is decided by the rates, not by the request.
    """
    if isinstance(changed, str):
        raise TypeError("changed must be a sequence of dimension names, not a string")
    old_rate = cluster_hourly_rate(catalog, old_type, instance_count, region)
    if new_type is None or new_type == old_type:
        reason = NO_HARDWARE_CHANGE
        if old_rate is None:
            reason += f" (price unknown for {_unpriced(catalog, [old_type], region)})"
        return CostImpact(old_hourly_rate=old_rate, new_hourly_rate=old_rate, rate_change_reason=reason)

    new_rate = cluster_hourly_rate(catalog, new_type, instance_count, region)
    old_unit = catalog.hourly_rate(old_type, region)
    new_unit = catalog.hourly_rate(new_type, region)
    if old_unit is None or new_unit is None:
        unknown = [t for t, r in ((old_type, old_unit), (new_type, new_unit)) if r is None]
        reason = f"Price unknown for {_unpriced(catalog, unknown, region)}"
    else:
        reason = _reason(changed, new_unit - old_unit)
    return CostImpact(old_hourly_rate=old_rate, new_hourly_rate=new_rate, rate_change_reason=reason)


def _reason(changed: Sequence[str], delta: float) -> str:
    dimensions = [d for d in HARDWARE_DIMENSIONS if d in set(changed)]
    if dimensions == ["gpu_count"]:
        subject, up, down = "GPU count", "increase", "decrease"
    else:
        labels = [_LABELS[d] for d in dimensions] or ["Instance type"]
        subject = labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"
        up, down = "upgrade", "downgrade"
    if delta > 0:
        return f"{subject} {up}"
    if delta < 0:
        return f"{subject} {down}"
    return f"{subject} change at the same rate"


def _unpriced(catalog: PriceCatalog, instance_types: list[str], region: str) -> str:
    # Name the region only when the catalog does not cover it at all: then the types are not the issue.
    names = " and ".join(instance_types)
    return names if region in catalog.regions else f"{names} in {region}"


def _to_cents(rate: float, count: int) -> float:
    total = Decimal(str(rate)) * count
    return float(total.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
