"""Deterministic execution of workflow code by replay of its history.

A `WorkflowInstance` IS the asyncio event loop workflow code runs on (the design
of Temporal's Python SDK): it runs only while the worker hands it a workflow
task, sets itself as the running loop for that time and restores the worker's
loop after. Time comes from history; nothing here touches Redis or the clock.

History is a sequence of workflow tasks. Each task is the batch of external
events (activity results, timers fired, signals, cancel requests) that arrived
since the previous task, followed by the commands the code produced in
response, closed by WORKFLOW_TASK_COMPLETED, whose time is the task's "now".
Replay feeds each batch to the code exactly as it was fed the first time and
checks that the code produces the same commands; a difference is a
`NonDeterministicWorkflowError` naming the step, the sequence number, what
history holds and what the code did.

The package imports nothing that speaks Redis (no store, worker or client: the import
contracts in pyproject.toml hold it to that):
- `instance.py`: `WorkflowInstance`, the event loop and its bookkeeping;
- `history.py`: history cut into the workflow tasks that wrote it;
- `mismatch.py`: how a replay that differs from its history is detected and named;
- `records.py`: how failures are written into history.
"""

from .instance import MAX_COMMANDS_PER_TASK, Activation, WorkflowInstance
from .records import clip, failure_record

__all__ = ["MAX_COMMANDS_PER_TASK", "Activation", "WorkflowInstance", "clip", "failure_record"]
