"""msgpack payloads: the only format loom-redis writes and reads (never pickle)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import msgpack

from .errors import ConfigurationError, PayloadError

# Payloads above this many bytes are refused when encoded and when decoded, unless the
# environment variable LOOM_MAX_PAYLOAD_BYTES sets another limit.
MAX_PAYLOAD_BYTES = 2 * 1024 * 1024
PAYLOAD_LIMIT_VARIABLE = "LOOM_MAX_PAYLOAD_BYTES"
# No limit may be set below this, so that payloads up to this size (nearly all of them)
# skip reading the environment: a lookup per event was a measurable share of a worker.
MIN_PAYLOAD_LIMIT = 1024


def max_payload_bytes() -> int:
    """The payload size limit: LOOM_MAX_PAYLOAD_BYTES when set, else MAX_PAYLOAD_BYTES."""
    raw = os.environ.get(PAYLOAD_LIMIT_VARIABLE, "").strip()
    if not raw:
        return MAX_PAYLOAD_BYTES
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if limit < MIN_PAYLOAD_LIMIT:
        raise ConfigurationError(
            f"{PAYLOAD_LIMIT_VARIABLE}={raw!r} is invalid: set it to a whole number of bytes "
            f">= {MIN_PAYLOAD_LIMIT} (default {MAX_PAYLOAD_BYTES})"
        )
    return limit


# What a payload is, for its errors: a string, or a function that makes it (for a name
# costly to make for every payload, since it is needed only on an error).
Name = str | Callable[[], str]


def _named(what: Name) -> str:
    return what if isinstance(what, str) else what()


# What a record (an event's data) may add to the user values it carries: names,
# versions, an owner, counters. A record carries at most two values (an input and an
# initial state, an activity's args and kwargs), so it is at most twice the limit and this.
RECORD_ALLOWANCE = 64 * 1024


def record_limit(limit: int) -> int:
    """The largest record `encode` writes (and `decode` reads) under payload limit `limit`."""
    return 2 * limit + RECORD_ALLOWANCE


def _pack(value: Any, what: Name) -> bytes:
    try:
        data: bytes = msgpack.packb(value, use_bin_type=True, datetime=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise PayloadError(
            f"{_named(what)} cannot be encoded as msgpack ({exc}); use dicts, lists, str, int, "
            "float, bool, None, bytes or timezone-aware datetimes"
        ) from None
    return data


def _over_limit(what: Name, size: int, limit: int) -> PayloadError:
    return PayloadError(
        f"{_named(what)} is {size} bytes encoded, over the limit of {limit} bytes "
        f"(set by {PAYLOAD_LIMIT_VARIABLE}, default {MAX_PAYLOAD_BYTES})"
    )


def encode(value: Any, *, what: Name = "value", carries: tuple[str, ...] | None = None) -> bytes:
    """Encode `value` as msgpack; `what` names it in the error (e.g. "input of workflow 'x'"),
    or makes that name when called (for a name costly to make for every payload).

    The payload limit applies to `value`, or, with `carries`, to each of the values under
    those keys of `value` (a record, such as an event's data, that carries users' values:
    the record's own fields do not count against the user). The error reports the size
    of the value that is over the limit.
    """
    data = _pack(value, what)
    if len(data) <= MIN_PAYLOAD_LIMIT or len(data) <= (limit := max_payload_bytes()):
        return data
    if carries is None:
        raise _over_limit(what, len(data), limit)
    # Rare: a record over the limit. Measure what it carries (once more, only here).
    for key in carries:
        size = len(_pack(value.get(key), what))
        if size > limit:
            raise _over_limit(what, size, limit)
    if len(data) > record_limit(limit):
        raise _over_limit(what, len(data), record_limit(limit))
    return data


def decode(data: bytes | None, *, what: Name = "value") -> Any:
    """Decode msgpack written by `encode`; extension types other than timestamps are refused."""
    if data is None or data == b"":
        return None
    if len(data) > MIN_PAYLOAD_LIMIT and len(data) > (limit := max_payload_bytes()):
        bound = record_limit(limit)
        if len(data) > bound:
            raise PayloadError(
                f"{_named(what)} is {len(data)} bytes, over the limit of {bound} bytes "
                f"for a record (twice {PAYLOAD_LIMIT_VARIABLE}={limit}, plus "
                f"{RECORD_ALLOWANCE} for its own fields)"
            )
    try:
        # msgpack bounds every declared length by the size of `data` itself, so a few
        # bytes cannot make it allocate a huge container.
        return msgpack.unpackb(
            data,
            raw=False,
            timestamp=3,
            strict_map_key=False,
            ext_hook=_refuse_extension,
        )
    except _ExtensionRefused as exc:
        raise PayloadError(
            f"{_named(what)} holds msgpack extension type {exc.code}: "
            "only timestamps (type -1) are allowed"
        ) from None
    except msgpack.StackError:
        raise PayloadError(f"{_named(what)} nests deeper than the msgpack decoder allows") from None
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        detail = str(exc) or "malformed data"
        raise PayloadError(
            f"{_named(what)} is not valid msgpack ({type(exc).__name__}: {detail})"
        ) from None


class _ExtensionRefused(ValueError):
    def __init__(self, code: int) -> None:
        super().__init__(f"msgpack extension type {code} is not allowed")
        self.code = code


def _refuse_extension(code: int, data: bytes) -> Any:
    raise _ExtensionRefused(code)
