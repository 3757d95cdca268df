"""Redis storage: the keyspace, the wire format, the connection and the Lua transitions.

`Store` is the only code that talks to Redis; it never imports user code. It is a facade
over parts, each a module named for what it does (its base classes):
- `workflows.py`: the transitions of a workflow (start, commit, activity outcomes,
  signals and cancel requests, the wait for its close), each one Lua script;
- `history.py`: a workflow's history and meta, read;
- `tasks.py`: the task streams (read, claim, renew, hand back, take over from
  dead workers);
- `timers.py`: the timer zsets (durable timers, retries, leases), found due and fired;
- `dead_letters.py`: tasks that cannot run, listed and put back;
- `registry.py`: workers' heartbeats and the workflow definitions they publish;
- `queries.py`: what the client, the CLI and dashboards read (lists, counts, progress);
- `listing.py`: a dashboard's filtered listings a page at a time, counts, the ids of a
  bulk action, the closes per minute;
- `backlog.py`: the work waiting in the queues, timers and dead letters (for gauges),
  and each queue's streams and consumers in detail;
- `retention.py`: closed workflows deleted after their retention (the sweep, prune);
- `plans.py`: how a workflow task's plan becomes what commit.lua writes;
- `keys.py` (every key name), `wire.py` (every field name and script reply),
  `connection.py` (connecting, errors, the direct lane), `scripts/*.lua`.
"""

from .backlog import ConsumerDetail, NamespaceBacklog, QueueBacklog, QueueDetail, StreamDetail
from .connection import connect_redis
from .dead_letters import DeadLetter
from .keys import Keyspace
from .listing import WorkflowFilter, WorkflowPage
from .plans import TaskPlan
from .queries import HistoryEntry, describe_meta
from .registry import DEAD_AFTER_MS, HEARTBEAT_MS, registering, registrations
from .store import Store
from .tasks import ConsumerGroupMissing, Task
from .timers import TimerMember, lease_reference
from .unreadable import UnreadableEntry, warn_unreadable
from .wire import CLOSE_NOTICE_MS
from .workflows import ActivityRecorded, CloseWait, CommitResult

__all__ = [
    "CLOSE_NOTICE_MS",
    "DEAD_AFTER_MS",
    "HEARTBEAT_MS",
    "ActivityRecorded",
    "CloseWait",
    "CommitResult",
    "ConsumerDetail",
    "ConsumerGroupMissing",
    "DeadLetter",
    "HistoryEntry",
    "Keyspace",
    "NamespaceBacklog",
    "QueueBacklog",
    "QueueDetail",
    "Store",
    "StreamDetail",
    "Task",
    "TaskPlan",
    "TimerMember",
    "UnreadableEntry",
    "WorkflowFilter",
    "WorkflowPage",
    "connect_redis",
    "describe_meta",
    "lease_reference",
    "registering",
    "registrations",
    "warn_unreadable",
]
