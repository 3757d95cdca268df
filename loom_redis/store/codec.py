"""msgpack payloads: the only format loom-redis writes and reads (never pickle)."""

from __future__ import annotations

from typing import Any

import msgpack

from ..errors import PayloadError

# Payloads above this many bytes are refused when encoded and when decoded.
MAX_PAYLOAD_BYTES = 2 * 1024 * 1024


def encode(value: Any, *, what: str = "value") -> bytes:
    """Encode `value` as msgpack; `what` names it in the error (e.g. "input of workflow 'x'")."""
    try:
        data: bytes = msgpack.packb(value, use_bin_type=True, datetime=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise PayloadError(
            f"{what} cannot be encoded as msgpack ({exc}); use dicts, lists, str, int, "
            "float, bool, None, bytes or timezone-aware datetimes"
        ) from None
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadError(
            f"{what} is {len(data)} bytes encoded, over the limit of {MAX_PAYLOAD_BYTES} bytes"
        )
    return data


def decode(data: bytes | None, *, what: str = "value") -> Any:
    """Decode msgpack written by `encode`; extension types other than timestamps are refused."""
    if data is None or data == b"":
        return None
    if len(data) > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"{what} is {len(data)} bytes, over the limit of {MAX_PAYLOAD_BYTES}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            timestamp=3,
            strict_map_key=False,
            ext_hook=_refuse_extension,
        )
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise PayloadError(f"{what} is not valid msgpack ({type(exc).__name__}: {exc})") from None


def _refuse_extension(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")
