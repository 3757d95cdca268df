"""Counting the Store calls workers make, for tests that prove how many round trips a
path costs."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import loom_redis as loom
from loom_redis.store import Store


def count_worker_calls(
    monkeypatch: pytest.MonkeyPatch, client: loom.Client, *names: str
) -> Counter[str]:
    """Count the calls of Store methods `names` made by workers (any store but the
    client's) that returned something."""
    calls: Counter[str] = Counter()
    for name in names:
        method = getattr(Store, name)

        async def counting(self: Store, *args: Any, _method: Any = method, **kwargs: Any) -> Any:
            result = await _method(self, *args, **kwargs)
            if result and self is not client.store:
                calls[_method.__name__] += 1
            return result

        monkeypatch.setattr(Store, name, counting)
    return calls
