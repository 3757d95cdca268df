"""The Lua scripts and loom_redis.store.wire agree on every name: a field, a task kind,
a timer kind or a reply that a script spells and wire.py does not define (or a reply
wire.py defines that no script returns) fails here, before it fails in production."""

from __future__ import annotations

import re
from importlib import resources

from loom_redis.events import EventType
from loom_redis.store import wire

# Names a script spells that are Redis's or Lua's, not loom-redis's wire format.
NOT_WIRE = {"hash", "stream", "zset", "list", "table"}
WIRE_ENUMS = (
    wire.TaskField,
    wire.TaskKind,
    wire.DeadLetterField,
    wire.HistoryField,
    wire.MetaField,
    wire.TimerKind,
    wire.Reply,
    wire.DeleteWhen,
)
WIRE_NAMES = {str(m) for enum in WIRE_ENUMS for m in enum} | {
    wire.ACTIVITY_PREFIX,
    wire.TIMER_PREFIX,
}
STRING = re.compile(r"'([^'\\]*)'")
LOWER_NAME = re.compile(r"^[a-z][a-z_:-]*$")
UPPER_NAME = re.compile(r"^[A-Z]+_[A-Z_]+$")  # an event type, not a Redis command


def scripts() -> dict[str, str]:
    folder = resources.files("loom_redis.store").joinpath("scripts")
    return {
        name: folder.joinpath(f"{name}.lua").read_text() for name in ("lib", *wire.SCRIPT_NAMES)
    }


def literals(source: str) -> list[str]:
    """The string literals of a Lua source, comments left out."""
    code = "\n".join(line.split("--", 1)[0] for line in source.splitlines())
    return STRING.findall(code)


def disagreements(sources: dict[str, str]) -> list[str]:
    found: list[str] = []
    spelled: set[str] = set()
    for name, source in sources.items():
        for literal in literals(source):
            spelled.add(literal)
            if LOWER_NAME.match(literal) and literal not in WIRE_NAMES | NOT_WIRE:
                found.append(f"{name}.lua spells {literal!r}, which wire.py does not define")
            if UPPER_NAME.match(literal) and literal not in {str(t) for t in EventType}:
                found.append(f"{name}.lua spells {literal!r}, which is no EventType")
    for reply in wire.Reply:
        if reply not in spelled:
            found.append(f"wire.Reply.{reply.name} ({reply!r}) is returned by no script")
    return found


def test_every_name_a_script_spells_is_defined_in_wire_and_every_reply_is_returned() -> None:
    assert disagreements(scripts()) == []


def test_a_script_that_spells_a_name_wire_does_not_know_is_caught() -> None:
    sources = scripts()
    sources["activity_retry"] = sources["activity_retry"].replace("'duplicate'", "'dupe'")
    assert disagreements(sources) == [
        "activity_retry.lua spells 'dupe', which wire.py does not define"
    ]


def test_a_reply_no_script_returns_any_more_is_caught() -> None:
    sources = {
        name: source.replace("'already-queued'", "'ok'") for name, source in scripts().items()
    }
    assert disagreements(sources) == [
        "wire.Reply.ALREADY_QUEUED ('already-queued') is returned by no script"
    ]


def test_a_task_field_renamed_in_a_script_is_caught() -> None:
    sources = scripts()
    sources["lib"] = sources["lib"].replace("'k', 'w', 'wf'", "'kind', 'w', 'wf'")
    assert disagreements(sources) == ["lib.lua spells 'kind', which wire.py does not define"]
