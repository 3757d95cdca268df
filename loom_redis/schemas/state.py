"""`loom.schemas.state`: base TypedDicts for workflow input and state."""

from typing import TypedDict


class Input(TypedDict):
    """Base of workflow input types: subclass it with the input's keys."""


class State(TypedDict, total=False):
    """Base of workflow state types: subclass it with the state's keys."""


__all__ = ["Input", "State"]
