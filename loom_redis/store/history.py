"""A workflow's history and meta, read: pages of entries, decoded events."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

from ..codec import decode
from ..errors import PayloadError
from ..events import Event, EventType
from ._part import StorePart
from .tasks import Task
from .unreadable import UnreadableEntry
from .wire import (
    HistoryField,
    TaskField,
    text,
)

HISTORY_PAGE = 1000
# A stream entry id (ms-seq).
_ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
# The fields of a history entry as a read returns them.
_TYPE, _SEQ, _TIME, _DATA = (f.encode() for f in HistoryField)


class History(StorePart):
    """Reads of one workflow's history and meta."""

    async def read_meta(self, workflow_id: str) -> dict[str, bytes]:
        raw: Any = await self.redis.hgetall(self.keys.meta(workflow_id))
        return {k.decode(): v for k, v in raw.items()}

    async def _history_pages(
        self, workflow_id: str, after: str | None = None
    ) -> AsyncIterator[list[tuple[bytes, dict[bytes, bytes]]]]:
        """A history's raw entries in pages (after stream id `after`, if given)."""
        key = self.keys.history(workflow_id)
        start = f"({after}" if after else "-"
        while True:
            page: Any = await self.redis.xrange(key, min=start, max="+", count=HISTORY_PAGE)
            yield page
            if len(page) < HISTORY_PAGE:
                return
            start = f"({text(page[-1][0])}"

    async def read_history(self, workflow_id: str, after: str | None = None) -> list[Event]:
        """History events in order (after stream id `after`, if given); raises
        PayloadError at an entry that does not decode."""
        return [
            self.decode_event(workflow_id, entry_id, fields)
            async for page in self._history_pages(workflow_id, after)
            for entry_id, fields in page
        ]

    async def read_history_entries(self, workflow_id: str) -> list[Event | UnreadableEntry]:
        """History events in order, an entry that does not decode standing as an
        UnreadableEntry (to show a history, not to replay it)."""
        return [
            self._shown_entry(workflow_id, entry_id, fields)
            async for page in self._history_pages(workflow_id)
            for entry_id, fields in page
        ]

    async def history_page(
        self, workflow_id: str, *, after: str | None = None, count: int = 100
    ) -> tuple[list[Event | UnreadableEntry], str | None]:
        """Up to `count` history entries after entry id `after` (from the first if None),
        oldest first, shown as read_history_entries shows them; and the id to read the
        next page after (None: none follows)."""
        if after is not None and not (isinstance(after, str) and _ENTRY_ID.fullmatch(after)):
            raise ValueError(
                f"after must be a history entry id such as '1700000000000-0', got {after!r}"
            )
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"count must be a whole number >= 1, got {count!r}")
        key = self.keys.history(workflow_id)
        # One more than asked tells whether a next page follows.
        found: Any = await self.redis.xrange(
            key, min=f"({after}" if after else "-", max="+", count=count + 1
        )
        page = found[:count]
        entries = [self._shown_entry(workflow_id, entry_id, fields) for entry_id, fields in page]
        return entries, text(page[-1][0]) if len(found) > count else None

    @classmethod
    def _shown_entry(
        cls, workflow_id: str, entry_id: bytes, fields: dict[bytes, bytes]
    ) -> Event | UnreadableEntry:
        """An entry as a listing shows it: its event, or an UnreadableEntry if it does
        not decode."""
        try:
            return cls.decode_event(workflow_id, entry_id, fields)
        except PayloadError as exc:
            return UnreadableEntry(text(entry_id), str(exc))

    async def history_summary(self, workflow_id: str) -> tuple[int, int]:
        """(length, highest seq) of a history, read without decoding its entries, so that a
        workflow whose history holds a corrupt entry can still be failed (fenced by length)."""
        length, last_seq = 0, 0
        async for page in self._history_pages(workflow_id):
            length += len(page)
            for _entry_id, fields in page:
                with contextlib.suppress(ValueError, TypeError):
                    last_seq = max(last_seq, int(fields.get(_SEQ, b"0")))
        return length, last_seq

    @staticmethod
    def carried_history(task: Task) -> list[Event] | None:
        """The history a workflow's first task carries (its WORKFLOW_STARTED event), as it
        was when the task was queued; None if the task carries none."""
        entry_id = task.fields.get(TaskField.STARTED_ID)
        if entry_id is None:
            return None
        fields = {
            _TYPE: EventType.WORKFLOW_STARTED.encode(),
            _TIME: task.fields.get(TaskField.STARTED_TIME, b""),
            _DATA: task.fields.get(TaskField.STARTED, b""),
        }
        try:
            return [History.decode_event(task.workflow_id, entry_id, fields)]
        except PayloadError:  # a copy spoilt in the queue: the history itself may be fine
            return None

    @staticmethod
    def decode_event(workflow_id: str, entry_id: bytes | str, fields: dict[bytes, bytes]) -> Event:
        event_id = text(entry_id)

        def what() -> str:
            return f"history entry {event_id} of workflow {workflow_id!r}"

        try:
            event_type = EventType(text(fields[_TYPE]))
            seq = int(fields.get(_SEQ, b"0"))
            time_ms = int(fields[_TIME])
        except (KeyError, ValueError) as exc:
            raise PayloadError(f"{what()} is malformed ({exc!r})") from None
        return Event(event_id, event_type, seq, time_ms, decode(fields.get(_DATA), what=what))
