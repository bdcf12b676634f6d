"""Fixtures of the moto extension tests: a fresh simulated-agent state, moto's mock and its clients."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from restarter_local.moto_ext import (
    SimulatedAgentState,
    active_state,
    install_extensions,
    set_active_state,
)
from tests.integration.moto_ext.harness import NO_RETRIES, REGION


@pytest.fixture
def state() -> Iterator[SimulatedAgentState]:
    """A fresh state made active for the test; the previously active one is restored after."""
    previous = active_state()
    fleet = SimulatedAgentState()
    install_extensions(fleet)
    try:
        yield fleet
    finally:
        fleet.reset()
        set_active_state(previous)


@pytest.fixture
def aws(state: SimulatedAgentState) -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def ec2(aws: None) -> Any:
    return boto3.client("ec2", region_name=REGION, config=NO_RETRIES)


@pytest.fixture
def ssm(aws: None) -> Any:
    return boto3.client("ssm", region_name=REGION, config=NO_RETRIES)
