"""How replay tells that workflow code no longer matches its history, and says so."""

from __future__ import annotations

from ..codec import decode, encode
from ..errors import NonDeterministicWorkflowError
from ..events import Command, Event, EventType, describe_command
from .records import clip

# What replay compares beyond a command's type and name (or state key): the values that
# workflow code computed, for a value computed differently on replay (a random number, a
# clock read, a global counter) would otherwise carry on silently. A timer's duration
# and an activity's retry options are not compared: code may change them.
COMPARED_VALUES = {
    EventType.STATE_SET: ("value",),
    EventType.STATE_UPDATE: ("state",),
    EventType.ACTIVITY_SCHEDULED: ("args", "kwargs"),
}


VALUE_CAUSE = (
    "the code computed a value differently on replay: use ctx.random(), ctx.uuid4() and "
    "ctx.now() in workflow code, and read anything else (the clock, a file, a global "
    "that changes) in an activity"
)


def value_difference(history: Event, code: Command) -> tuple[str, str] | None:
    """How the values a replayed command computed differ from the recorded ones, as
    (what history has, what the code did), or None if they are the same."""
    fields = COMPARED_VALUES.get(code.type)
    if not fields or not isinstance(history.data, dict):
        return None
    what = describe_command(code.type, code.data)
    for name in fields:
        recorded = history.data.get(name)
        # As it would be written: msgpack makes tuples lists, and NaN equals itself there.
        replayed = decode(encode(code.data.get(name), what=f"{what} {name}"))
        if recorded != replayed and encode(recorded) != encode(replayed):
            return (
                f"{what} with {name} {clip(repr(recorded), 200)}",
                f"{what} with {name} {clip(repr(replayed), 200)}",
            )
    return None


def mismatch_error(
    workflow_id: str,
    workflow_name: str,
    seq: int,
    history_says: str,
    code_did: str,
    step: str | None,
    cause: str = "the workflow code changed in a way its history cannot replay",
) -> NonDeterministicWorkflowError:
    """The error of a replay whose code did something other than what history records."""
    return NonDeterministicWorkflowError(
        f"workflow {workflow_id!r} ({workflow_name}): step {step or '?'!r}, seq {seq}: "
        f"history has {history_says} but the code did {code_did}; {cause}"
    )
