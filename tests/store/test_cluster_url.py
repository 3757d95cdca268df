"""A cluster's URL taken apart, and bad ones refused with what is wrong."""

from __future__ import annotations

import pytest

import loom_redis as loom
from loom_redis.store.cluster import (
    ClusterUrl,
    command_keys,
    command_slot,
    is_cluster_url,
    parse_cluster_url,
)


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        (
            "redis+cluster://10.0.0.1:7000,10.0.0.2:7001",
            ClusterUrl("redis://10.0.0.1:7000", (("10.0.0.1", 7000), ("10.0.0.2", 7001))),
        ),
        (
            "rediss+cluster://loom-worker:pw@a:6380,b/0?ssl_ca_certs=/ca.pem",
            ClusterUrl(
                "rediss://loom-worker:pw@a:6380/0?ssl_ca_certs=/ca.pem",
                (("a", 6380), ("b", 6379)),
            ),
        ),
        ("REDIS+CLUSTER://h:1?x=1", ClusterUrl("redis://h:1?x=1", (("h", 1),))),
        ("redis+cluster://[::1]:7000", ClusterUrl("redis://[::1]:7000", (("::1", 7000),))),
    ],
)
def test_a_cluster_url_names_its_nodes(url: str, parsed: ClusterUrl) -> None:
    assert is_cluster_url(url)
    assert parse_cluster_url(url, "shown") == parsed


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://", "it names no cluster node"),
        ("redis+cluster://h:7000/1", "a cluster has database 0 only, not '1'"),
        ("redis+cluster://h:port", "'h:port' is not a node's host:port"),
        ("redis+cluster://h:70000", "'h:70000' is not a node's host:port"),
    ],
)
def test_a_bad_cluster_url_says_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(loom.ConfigurationError, match="invalid Redis URL 'shown'") as refused:
        parse_cluster_url(url, "shown")
    assert says in str(refused.value)


def test_a_command_s_slot_is_that_of_its_keys() -> None:
    evalsha = ("EVALSHA", "0" * 40, 2, "loom:{ns:1}:wf:a:m", "loom:{ns:1}:wf:a:h", "arg")
    assert command_keys(evalsha) == ["loom:{ns:1}:wf:a:m", "loom:{ns:1}:wf:a:h"]
    read = (
        "XREADGROUP",
        "GROUP",
        "g",
        "c",
        "STREAMS",
        "loom:{ns:1}:q:x",
        "loom:{ns:1}:qa:x",
        ">",
        ">",
    )
    assert command_slot(read) == command_slot(evalsha)
    assert command_slot(("SCRIPT", "LOAD", "return 1")) is None
    assert command_slot(("PING",)) is None
    with pytest.raises(ValueError, match="names keys of 2 hash slots"):
        command_slot(("XREAD", "STREAMS", "loom:{ns:1}:q", "loom:{ns:2}:q", "0", "0"))
