"""The GPU price catalog and the seed's `cost_impact`: rates, cluster rates, and the reason text."""

from __future__ import annotations

import json
from datetime import date
from importlib import resources

import pytest

from restarter.domain.cost import (
    CostImpact,
    PriceCatalog,
    cluster_hourly_rate,
    cost_impact,
    load_price_catalog,
)

REGION = "us-east-1"

# Sizes larger by name but cheaper by price, as AWS prices them: each 12xlarge has 4 GPUs, the next
# 16xlarge only 1, so (smaller, larger) below are the only pairs allowed to go down in price.
KNOWN_ANOMALIES = {
    ("g5.12xlarge", "g5.16xlarge"),
    ("g6.12xlarge", "g6.16xlarge"),
    ("g6e.12xlarge", "g6e.16xlarge"),
}


def _size_rank(instance_type: str) -> int:
    size = instance_type.split(".", 1)[1]
    if size == "metal":
        return 1_000_000
    if size == "xlarge":
        return 1
    return int(size.removesuffix("xlarge"))


@pytest.fixture(scope="module")
def catalog() -> PriceCatalog:
    return load_price_catalog()


def test_given_the_packaged_catalog_when_loaded_then_it_names_its_source_and_date(catalog: PriceCatalog) -> None:
    assert catalog.source and catalog.source_url.startswith("https://")
    assert catalog.retrieved >= date(2025, 6, 1)  # after the June 2025 P4/P5 price reduction it reflects
    assert (catalog.currency, catalog.unit) == ("USD", "per instance-hour")
    assert {"us-east-1", "us-west-2"} <= set(catalog.regions)
    assert catalog.retrieved.isoformat() in catalog.source_info
    assert load_price_catalog() is catalog  # read once, then cached


def test_given_the_json_when_read_as_package_data_then_it_is_the_same_catalog(catalog: PriceCatalog) -> None:
    raw = json.loads(resources.files("restarter.data").joinpath("gpu_prices.json").read_text())
    assert raw["regions"][REGION]["g5.xlarge"] == catalog.hourly_rate("g5.xlarge", REGION)


def test_given_known_types_when_priced_then_the_published_on_demand_rate_comes_back(catalog: PriceCatalog) -> None:
    assert catalog.hourly_rate("g5.xlarge", REGION) == 1.006
    assert catalog.hourly_rate("g4dn.xlarge", REGION) == 0.526
    assert catalog.hourly_rate("p5.48xlarge", REGION) == 55.04
    assert catalog.hourly_rate("p4d.24xlarge", REGION) == pytest.approx(21.96, abs=0.005)


def test_given_an_unknown_type_or_region_when_priced_then_none(catalog: PriceCatalog) -> None:
    assert catalog.hourly_rate("g9.mega", REGION) is None
    assert catalog.hourly_rate("g5.xlarge", "eu-west-1") is None
    assert catalog.instance_types("eu-west-1") == []


def test_given_a_count_when_pricing_a_cluster_then_the_rate_is_multiplied_and_rounded_to_cents(
    catalog: PriceCatalog,
) -> None:
    assert cluster_hourly_rate(catalog, "g4dn.xlarge", 3, REGION) == 1.58  # 3 x 0.526 = 1.578
    assert cluster_hourly_rate(catalog, "p4d.24xlarge", 2, REGION) == 43.92  # 2 x 21.957642
    assert cluster_hourly_rate(catalog, "g5.xlarge", 0, REGION) == 0.0
    assert cluster_hourly_rate(catalog, "g9.mega", 2, REGION) is None
    with pytest.raises(ValueError, match="negative"):
        cluster_hourly_rate(catalog, "g5.xlarge", -1, REGION)


def test_given_more_memory_and_cpu_within_g5_when_costed_then_an_upgrade_naming_both(catalog: PriceCatalog) -> None:
    impact = cost_impact(
        catalog,
        region=REGION,
        instance_count=2,
        old_type="g5.4xlarge",
        new_type="g5.8xlarge",
        changed=["cpu_cores", "memory_gb"],
    )

    assert impact == CostImpact(old_hourly_rate=3.25, new_hourly_rate=4.9, rate_change_reason="Memory and CPU upgrade")
    assert impact.model_dump() == {
        "old_hourly_rate": 3.25,
        "new_hourly_rate": 4.9,
        "rate_change_reason": "Memory and CPU upgrade",
    }


def test_given_more_gpus_when_costed_then_a_gpu_count_increase(catalog: PriceCatalog) -> None:
    impact = cost_impact(
        catalog, region=REGION, instance_count=1, old_type="g5.xlarge", new_type="g5.12xlarge", changed=["gpu_count"]
    )
    assert (impact.old_hourly_rate, impact.new_hourly_rate) == (1.01, 5.67)
    assert impact.rate_change_reason == "GPU count increase"


def test_given_a_cheaper_type_when_costed_then_a_downgrade_decided_by_the_rates(catalog: PriceCatalog) -> None:
    # The request asks for more CPU, but g5.16xlarge (1 GPU) is cheaper than g5.12xlarge (4 GPUs).
    impact = cost_impact(
        catalog, region=REGION, instance_count=1, old_type="g5.12xlarge", new_type="g5.16xlarge", changed=["cpu_cores"]
    )
    assert impact.new_hourly_rate is not None and impact.old_hourly_rate is not None
    assert impact.new_hourly_rate < impact.old_hourly_rate
    assert impact.rate_change_reason == "CPU downgrade"


def test_given_non_hardware_keys_when_costed_then_they_are_not_named(catalog: PriceCatalog) -> None:
    impact = cost_impact(
        catalog,
        region=REGION,
        instance_count=1,
        old_type="g6.xlarge",
        new_type="g6.2xlarge",
        changed=["storage_gb", "memory_gb"],
    )
    assert impact.rate_change_reason == "Memory upgrade"


@pytest.mark.parametrize("new_type", [None, "p4d.24xlarge"])
def test_given_no_new_type_when_costed_then_equal_rates_and_no_hardware_change(
    catalog: PriceCatalog, new_type: str | None
) -> None:
    impact = cost_impact(
        catalog, region=REGION, instance_count=2, old_type="p4d.24xlarge", new_type=new_type, changed=[]
    )
    assert impact == CostImpact(old_hourly_rate=43.92, new_hourly_rate=43.92, rate_change_reason="No hardware change")


def test_given_an_unpriced_type_when_costed_then_none_and_a_reason_naming_it(catalog: PriceCatalog) -> None:
    impact = cost_impact(
        catalog, region=REGION, instance_count=2, old_type="g5.xlarge", new_type="x9gpu.huge", changed=["gpu_count"]
    )
    assert impact.old_hourly_rate == 2.01
    assert impact.new_hourly_rate is None
    assert impact.rate_change_reason == "Price unknown for x9gpu.huge"

    unpriced_cluster = cost_impact(
        catalog, region=REGION, instance_count=2, old_type="x9gpu.huge", new_type=None, changed=[]
    )
    assert unpriced_cluster == CostImpact(rate_change_reason="No hardware change (price unknown for x9gpu.huge)")


def test_given_a_region_outside_the_catalog_when_costed_then_the_reason_names_the_region(
    catalog: PriceCatalog,
) -> None:
    impact = cost_impact(
        catalog,
        region="eu-west-1",
        instance_count=1,
        old_type="g5.xlarge",
        new_type="g5.2xlarge",
        changed=["cpu_cores"],
    )
    assert (impact.old_hourly_rate, impact.new_hourly_rate) == (None, None)
    assert impact.rate_change_reason == "Price unknown for g5.xlarge and g5.2xlarge in eu-west-1"


def test_given_a_string_for_changed_when_costed_then_refused(catalog: PriceCatalog) -> None:
    with pytest.raises(TypeError):
        cost_impact(
            catalog, region=REGION, instance_count=1, old_type="g5.xlarge", new_type="g5.2xlarge", changed="cpu_cores"
        )


def test_given_every_region_when_checked_then_every_price_is_positive_and_families_rise_with_size(
    catalog: PriceCatalog,
) -> None:
    for region, prices in catalog.regions.items():
        assert prices, region
        families: dict[str, list[str]] = {}
        for instance_type, price in prices.items():
            assert price > 0, (region, instance_type)
            families.setdefault(instance_type.split(".", 1)[0], []).append(instance_type)
        for members in families.values():
            ordered = sorted(members, key=_size_rank)
            for i, smaller in enumerate(ordered):
                for larger in ordered[i + 1 :]:
                    if (smaller, larger) in KNOWN_ANOMALIES:
                        assert prices[larger] < prices[smaller], f"{smaller}/{larger} is no longer an anomaly"
                    else:
                        assert prices[larger] >= prices[smaller], (region, smaller, larger)


def test_given_the_seed_families_when_listed_then_the_catalog_covers_them(catalog: PriceCatalog) -> None:
    expected = {
        "p5.48xlarge",
        "p4d.24xlarge",
        "p4de.24xlarge",
        "p3.2xlarge",
        "p3.8xlarge",
        "p3.16xlarge",
        "p3dn.24xlarge",
        *(
            f"g5.{s}"
            for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge")
        ),
        *(
            f"g6.{s}"
            for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge")
        ),
        *(
            f"g6e.{s}"
            for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge")
        ),
        *(f"g4dn.{s}" for s in ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "metal")),
    }
    for region in ("us-east-1", "us-west-2"):
        assert expected <= set(catalog.instance_types(region)), region
