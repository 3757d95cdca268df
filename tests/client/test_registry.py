"""The registry of workflows and activities: a name belongs to one definition (the same
module imported again is not a second one), and tests undo what they register with
loom_redis.testing.isolated_registry."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

import loom_redis as loom
from loom_redis import definitions
from loom_redis.testing import isolated_registry

FLOWS = """
import loom_redis as loom


@loom.activity(name="reg_make_greeting")
async def make_greeting(name: str) -> str:
    return f"Hello, {name}!"


@loom.workflow(name="reg_Greeting")
class GreetingWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def greet(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        pass
"""

OTHER_WORKFLOW = """
import loom_redis as loom


@loom.workflow(name="reg_Greeting")
class Greeting(loom.Workflow[dict, dict]):
    @loom.step()
    async def greet(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        pass
"""

OTHER_ACTIVITY = """
import loom_redis as loom


@loom.activity(name="reg_make_greeting")
def greeting_maker(name: str) -> str:
    return name
"""


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A package `reg_shop` on sys.path, its modules forgotten and its registrations
    undone after the test."""
    (tmp_path / "reg_shop").mkdir()
    (tmp_path / "reg_shop" / "__init__.py").write_text("")
    (tmp_path / "reg_shop" / "flows.py").write_text(FLOWS)
    monkeypatch.syspath_prepend(str(tmp_path))
    with isolated_registry():
        yield tmp_path / "reg_shop"
    for name in [m for m in sys.modules if m == "reg_shop" or m.startswith("reg_shop.")]:
        del sys.modules[name]


def test_a_module_imported_again_replaces_its_own_definitions(shop: Path) -> None:
    flows = importlib.import_module("reg_shop.flows")
    first = definitions.registered_workflow("reg_Greeting")
    assert first is flows.GreetingWorkflow.__loom_workflow__
    reloaded = importlib.reload(flows)
    second = definitions.registered_workflow("reg_Greeting")
    assert second is reloaded.GreetingWorkflow.__loom_workflow__
    assert second is not first
    assert (
        definitions.registered_activity("reg_make_greeting")
        is reloaded.make_greeting.__loom_activity__
    )


@pytest.mark.parametrize(
    ("source", "expected", "holder"),
    [
        (
            OTHER_WORKFLOW,
            "workflow name 'reg_Greeting' is already registered by "
            "reg_shop.flows.GreetingWorkflow; reg_shop.other.Greeting cannot take it",
            lambda flows: (
                definitions.registered_workflow("reg_Greeting")
                is flows.GreetingWorkflow.__loom_workflow__
            ),
        ),
        (
            OTHER_ACTIVITY,
            "activity name 'reg_make_greeting' is already registered by "
            "reg_shop.flows.make_greeting; reg_shop.other.greeting_maker cannot take it",
            lambda flows: (
                definitions.registered_activity("reg_make_greeting")
                is flows.make_greeting.__loom_activity__
            ),
        ),
    ],
    ids=["workflow", "activity"],
)
def test_other_code_under_a_taken_name_is_refused(
    shop: Path, source: str, expected: str, holder: Callable[[ModuleType], bool]
) -> None:
    flows = importlib.import_module("reg_shop.flows")
    (shop / "other.py").write_text(source)
    with pytest.raises(loom.WorkflowDefinitionError) as caught:
        importlib.import_module("reg_shop.other")
    assert str(caught.value) == f"{expected}: give one of them another name"
    # The first definition keeps the name.
    assert holder(flows)


def test_a_function_that_defines_a_workflow_may_run_twice() -> None:
    def define() -> type:
        @loom.workflow(name="reg_Local")
        class Local(loom.Workflow[dict, dict]):
            @loom.step()
            async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
                pass

        return Local

    with isolated_registry():
        define()
        second = define()
        assert definitions.registered_workflow("reg_Local") is second.__loom_workflow__  # type: ignore[attr-defined]


def test_isolated_registry_undoes_what_the_block_registers() -> None:
    before = definitions.registered_workflows()
    with isolated_registry():

        @loom.workflow(name="reg_Temporary")
        class Temporary(loom.Workflow[dict, dict]):
            @loom.step()
            async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
                pass

        assert definitions.registered_workflow("reg_Temporary") is not None
    assert definitions.registered_workflow("reg_Temporary") is None
    assert definitions.registered_workflows() == before


def test_isolated_registry_without_frees_a_name_for_the_block(shop: Path) -> None:
    flows = importlib.import_module("reg_shop.flows")
    original = flows.GreetingWorkflow.__loom_workflow__
    (shop / "other.py").write_text(OTHER_WORKFLOW)
    with isolated_registry(without=["reg_Greeting"]):
        other = importlib.import_module("reg_shop.other")
        assert definitions.registered_workflow("reg_Greeting") is other.Greeting.__loom_workflow__
    assert definitions.registered_workflow("reg_Greeting") is original

    with (
        pytest.raises(loom.ConfigurationError, match="no workflow or activity is registered as"),
        isolated_registry(without=["reg_nothing_by_this_name"]),
    ):
        pass
