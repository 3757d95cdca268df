"""Records read from Redis that cannot be read (written by hand, or over this reader's
payload limit): how listings show them and warn of them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("loom_redis.store")


@dataclass(frozen=True)
class UnreadableEntry:
    """A history entry that does not decode (written by hand, or over this reader's
    payload limit), as a listing shows it."""

    id: str
    problem: str

    def to_dict(self) -> dict[str, Any]:
        """As Event.to_dict, with type UNREADABLE and the problem."""
        return {
            "id": self.id,
            "type": "UNREADABLE",
            "seq": 0,
            "time_ms": 0,
            "data": None,
            "problem": self.problem,
        }


# How many unreadable records a process remembers having warned of.
_WARNED_LIMIT = 1000


_warned: set[str] = set()


def warn_unreadable(problem: str, done: str) -> None:
    """Log a warning that a record read from Redis is unreadable (what `done` with it),
    once per process for each problem: listings read the same records again and again."""
    if problem in _warned:
        return
    if len(_warned) >= _WARNED_LIMIT:
        _warned.clear()
    _warned.add(problem)
    logger.warning("%s: %s", problem, done)
