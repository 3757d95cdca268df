"""A workflow's history and meta, read: pages of entries, decoded events."""

from __future__ import annotations

import contextlib
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
        entries: list[Event | UnreadableEntry] = []
        async for page in self._history_pages(workflow_id):
            for entry_id, fields in page:
                try:
                    entries.append(self.decode_event(workflow_id, entry_id, fields))
                except PayloadError as exc:
                    entries.append(UnreadableEntry(text(entry_id), str(exc)))
        return entries

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
