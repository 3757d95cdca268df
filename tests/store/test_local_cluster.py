"""`LocalCluster`, the real Redis Cluster the cluster tests run on: its nodes serve every
slot, with replicas that follow their masters, from the embedded Valkey or Debian's
redis-server (with redis-cli); and the AOF its nodes, or a server's replica, keep when
asked (the scaling bench compares a cluster with a standalone server on equal terms)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import redis
from redis.cluster import RedisCluster

from loom_redis.testing import EmbeddedServer, LocalCluster, cli_binary

BINARIES = ["embedded", "redis-server"]


def binary_of(name: str) -> str | None:
    if name == "embedded":
        return None
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not on PATH")
    return found


@pytest.mark.parametrize("name", BINARIES)
def test_a_local_cluster_serves_every_slot_with_a_replica_per_master(name: str) -> None:
    with LocalCluster(masters=3, replicas=1, binary=binary_of(name)) as cluster:
        assert cluster.url.startswith("redis+cluster://127.0.0.1:")
        assert len(cluster.url.split(",")) == 6
        roles = [
            subprocess.run(
                [cli_binary(cluster.binary), "-p", str(node.port), "role"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()[0]
            for node in cluster.nodes
        ]
        assert sorted(roles) == ["master"] * 3 + ["slave"] * 3
        client = RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
        try:
            # Keys whose slots the three masters share between them.
            for number in range(30):
                client.set(f"key{number}", number)
            assert [int(client.get(f"key{n}")) for n in range(30)] == list(range(30))
            owners = {client.get_node_from_key(f"key{n}").port for n in range(30)}
            assert len(owners) == 3
        finally:
            client.close()


def _appendonly(port: int) -> str:
    client = redis.Redis(port=port, decode_responses=True)
    try:
        return str(client.config_get("appendonly")["appendonly"])
    finally:
        client.close()


def test_cluster_nodes_and_a_replica_keep_an_aof_when_asked() -> None:
    with LocalCluster(masters=3, appendonly=True) as cluster:
        assert [_appendonly(node.port) for node in cluster.nodes] == ["yes"] * 3
    with EmbeddedServer(appendonly=True) as master, master.replica() as replica:
        assert (_appendonly(master.port), _appendonly(replica.port)) == ("yes", "yes")
    with EmbeddedServer() as master, master.replica() as replica:
        assert _appendonly(replica.port) == "no"
