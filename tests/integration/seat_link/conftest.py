"""Tests of the seat's own network: the agent and the seat run in a network namespace of the test's own
(faults.NetNS), where packet filters make the link fail; the broker stays outside, reached over a unix socket,
which no packet filter touches."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cloudseat.client import BrokerClient

from broker.config import BrokerConfig
from tests.integration import faults


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "broker.sock"


@pytest.fixture
def broker_config(db_url: str, socket_path: Path) -> BrokerConfig:
    from tests.integration.conftest import FAST

    return dataclasses.replace(FAST, database_url=db_url, listen=f"unix:{socket_path}")


@pytest.fixture
async def client(broker: object, socket_path: Path) -> AsyncIterator[BrokerClient]:
    async with BrokerClient(f"unix:{socket_path}") as c:
        yield c


@pytest.fixture
def ns() -> Iterator[faults.NetNS]:
    """The seat's network: the agent and the seat run in it, the broker outside."""
    netns = faults.NetNS().open()
    yield netns
    netns.close()
