"""The engine imports nothing that speaks Redis: neither the redis client library nor
the store, the worker or the client, directly or through the modules it imports.

`import loom_redis.engine` runs `loom_redis/__init__.py` first, which imports the
client (the public face: `import loom_redis as loom`); these tests leave that one module
out, and check the engine and everything it imports from there on."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import loom_redis

PACKAGE = Path(loom_redis.__file__).parent
FORBIDDEN = ("redis", "loom_redis.store", "loom_redis.worker", "loom_redis.client")


def speaks_redis(module: str) -> bool:
    return any(module == name or module.startswith(f"{name}.") for name in FORBIDDEN)


def source_of(module: str) -> Path | None:
    """The file of a loom_redis module (None for any other)."""
    if module != "loom_redis" and not module.startswith("loom_redis."):
        return None
    path = PACKAGE.parent / module.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imports_of(module: str, path: Path) -> set[str]:
    """What a module's import statements name, anywhere in it (also inside functions)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            origin = f"{base}.{node.module}" if node.level and node.module else node.module
            origin = origin or base
            found.add(origin)
            # `from . import x` may import the module x.
            found.update(f"{origin}.{alias.name}" for alias in node.names)
    return found


def imported_by_the_engine() -> dict[str, str]:
    """Every module the engine's modules import, directly or through other loom_redis
    modules (but loom_redis/__init__.py), each with the module that imports it."""
    by: dict[str, str] = {}
    todo = ["loom_redis.engine"]
    while todo:
        module = todo.pop()
        path = source_of(module)
        if path is None or not path.exists():
            continue
        for name in sorted(imports_of(module, path) - by.keys()):
            by[name] = module
            if name != "loom_redis":
                todo.append(name)
    return by


def test_the_engine_imports_no_module_that_speaks_redis() -> None:
    imported = imported_by_the_engine()
    assert {"loom_redis.engine.instance", "loom_redis.codec", "msgpack"} <= imported.keys()
    offending = {name: by for name, by in imported.items() if speaks_redis(name)}
    assert offending == {}


def test_the_engine_loads_and_replays_with_redis_blocked() -> None:
    """In a fresh interpreter that cannot import redis, and where loom_redis/__init__.py is
    left out, the engine imports and replays a recorded history."""
    script = f"""
import importlib.abc, sys, types
from pathlib import Path

class NoRedis(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in {FORBIDDEN!r} or name.startswith("redis."):
            raise ImportError(f"the engine imported {{name}}")
        return None

sys.meta_path.insert(0, NoRedis())
package = types.ModuleType("loom_redis")
package.__path__ = [{str(PACKAGE)!r}]
sys.modules["loom_redis"] = package

from loom_redis.engine import WorkflowInstance
from loom_redis.definitions import ActivityDefinition, StepDefinition, WorkflowDefinition
from loom_redis.events import Event, EventType

class Greeting:
    async def greet(self, ctx):
        await ctx.state.set("greeted", True)

definition = WorkflowDefinition(
    "Greeting", "1", None, None, Greeting, (StepDefinition("greet", None, "greet", 1),)
)
started = Event("1-0", EventType.WORKFLOW_STARTED, 0, 1000, {{"input": {{}}}})
activation = WorkflowInstance(definition, "w").apply([started], 1000)
print([str(c.type) for c in activation.commands])
print(sorted(m for m in sys.modules if m.startswith("loom_redis")))
"""
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    commands, modules = run.stdout.splitlines()
    assert commands == "['STEP_STARTED', 'STATE_SET', 'WORKFLOW_COMPLETED']"
    assert "loom_redis.engine.instance" in modules
    assert not any(speaks_redis(name) for name in ast.literal_eval(modules))
