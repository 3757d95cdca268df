"""Redis storage: the keyspace, the Lua transitions and the msgpack codec.

`Store` is the only code that talks to Redis; it never imports user code.
"""

from .codec import decode, encode
from .keys import Keyspace
from .store import Store, Task, TimerMember, connect_redis

__all__ = ["Keyspace", "Store", "Task", "TimerMember", "connect_redis", "decode", "encode"]
