"""Reads the live pages of every viewer share, so that the load a dashboard puts on
Redis does not grow with the number of people who have it open (an incident is when
everyone does)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import anyio


@dataclass
class _Read:
    done: anyio.Event = field(default_factory=anyio.Event)
    at: float = 0.0
    value: Any = None
    error: Exception | None = None
    # Its viewer left while it ran: those waiting for it read again.
    abandoned: bool = False


class SharedReads:
    """One read per key at a time: a viewer that asks while it runs waits for it, and
    one that asks within `max_age` seconds of its end gets its result (or its error)."""

    def __init__(self) -> None:
        self._reads: dict[Hashable, _Read] = {}

    async def get(self, key: Hashable, read: Callable[[], Awaitable[Any]], max_age: float) -> Any:
        while True:
            self._forget_older_than(max_age)
            shared = self._reads.get(key)
            if shared is None:
                break
            await shared.done.wait()
            if not shared.abandoned:
                return _outcome(shared)
        shared = self._reads[key] = _Read()
        try:
            shared.value = await read()
        except Exception as exc:
            shared.error = exc
        except BaseException:
            shared.abandoned = True
            del self._reads[key]
            raise
        finally:
            shared.at = anyio.current_time()
            shared.done.set()
        return _outcome(shared)

    def _forget_older_than(self, max_age: float) -> None:
        """Drop the reads too old to serve, so that keys asked once (a filter) go."""
        now = anyio.current_time()
        for key in [k for k, r in self._reads.items() if r.done.is_set() and now - r.at >= max_age]:
            del self._reads[key]


def _outcome(read: _Read) -> Any:
    if read.error is not None:
        raise read.error
    return read.value
