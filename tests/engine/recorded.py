"""Recorded histories: what tests/engine replays, one JSON file per run in histories/.

A file holds one workflow's history, as a real run on a real server wrote it
(record_histories.py makes them):

    {
     "about": "what the run did, in a sentence",
     "workflow": "engine_Sequential",            the registered name of its code
     "workflow_id": "engine-sequential",
     "events": [                                 one event a line, in history's order
      {"id": "1764000000000-0", "type": "WORKFLOW_STARTED", "seq": 0,
       "time_ms": 1764000000000, "data": {...}},
      ...
     ]
    }

An event is `loom_redis.events.Event.to_dict()`: its stream entry id, type, sequence
number (a command's; 0 for WORKFLOW_STARTED and WORKFLOW_TASK_COMPLETED), time (ms since
the epoch) and data as the store decodes it. The data of every recorded history survives
JSON unchanged (the recorder checks it), so a replay sees what the worker saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom_redis.definitions import WorkflowDefinition, registered_workflow
from loom_redis.events import COMMAND_TYPES, Event, EventType

# The code the histories were recorded with: imported for its registrations.
from .. import seed_workflows  # noqa: F401
from . import workflows  # noqa: F401

DIRECTORY = Path(__file__).parent / "histories"


@dataclass(frozen=True)
class RecordedTask:
    """One workflow task as its history shows it, worked out without the engine."""

    # events[:seen] is the history its worker ran on: up to its first command, but for the
    # external events its WORKFLOW_TASK_COMPLETED skips (they arrived while it ran).
    seen: int
    # The events new to it: those of the history it read that no earlier task was fed,
    # but for the commands and closings of the tasks before it.
    fed: list[Event]
    commands: list[Event]
    closing: Event


@dataclass(frozen=True)
class Recorded:
    """One recorded history and the workflow code it was written by."""

    name: str
    about: str
    workflow: str
    workflow_id: str
    events: list[Event]

    @property
    def definition(self) -> WorkflowDefinition:
        found = registered_workflow(self.workflow)
        if found is None:
            raise LookupError(f"history {self.name!r}: no workflow registered as {self.workflow!r}")
        return found

    def tasks(self) -> list[RecordedTask]:
        """The workflow tasks that wrote the history, in order."""
        tasks: list[RecordedTask] = []
        closed, seen = 0, 0
        for index, event in enumerate(self.events):
            if event.type == EventType.WORKFLOW_TASK_COMPLETED:
                commands = [e for e in self.events[closed:index] if e.type in COMMAND_TYPES]
                skip = event.data.get("skip", 0) if isinstance(event.data, dict) else 0
                fed = [
                    e
                    for e in self.events[seen : index - len(commands) - skip]
                    if e.type not in COMMAND_TYPES and e.type != EventType.WORKFLOW_TASK_COMPLETED
                ]
                seen = index - len(commands) - skip
                tasks.append(RecordedTask(seen, fed, commands, event))
                closed = index + 1
        return tasks

    def to_json(self) -> str:
        lines = ",\n".join(f"  {json.dumps(event.to_dict())}" for event in self.events)
        header = json.dumps(
            {"about": self.about, "workflow": self.workflow, "workflow_id": self.workflow_id},
            indent=1,
        )
        return f'{header[:-2]},\n "events": [\n{lines}\n ]\n}}\n'

    @classmethod
    def from_json(cls, name: str, text: str) -> Recorded:
        raw: dict[str, Any] = json.loads(text)
        events = [
            Event(e["id"], EventType(e["type"]), e["seq"], e["time_ms"], e["data"])
            for e in raw["events"]
        ]
        return cls(name, raw["about"], raw["workflow"], raw["workflow_id"], events)


def names() -> list[str]:
    return sorted(path.stem for path in DIRECTORY.glob("*.json"))


def load(name: str) -> Recorded:
    return Recorded.from_json(name, (DIRECTORY / f"{name}.json").read_text())
