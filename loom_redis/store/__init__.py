"""Redis storage: the keyspace, the connection and the Lua transitions.

`Store` is the only code that talks to Redis; it never imports user code.
"""

from .connection import connect_redis
from .keys import Keyspace
from .store import Store, Task, TaskPlan, TimerMember

__all__ = [
    "Keyspace",
    "Store",
    "Task",
    "TaskPlan",
    "TimerMember",
    "connect_redis",
]
