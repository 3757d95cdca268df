"""tests/engine runs the engine alone, with no Redis server: its tests replay the
histories in histories/ (see recorded.py) and hand-made ones.

tests/conftest.py starts a server only for the tests that ask for `redis_url` (or
`client`, which needs it); the guard below fails any test here that does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from loom_redis.definitions import isolated_registry

SERVER_FIXTURES = {"redis_url", "client"}


@pytest.fixture(autouse=True)
def no_server(request: pytest.FixtureRequest) -> None:
    asked = SERVER_FIXTURES & set(request.fixturenames)
    if asked:
        pytest.fail(f"tests/engine runs with no server; this test asks for {sorted(asked)}")


@pytest.fixture(autouse=True)
def registry() -> Iterator[None]:
    """Code registered by a test (a changed workflow under its old name) goes after it."""
    with isolated_registry():
        yield
