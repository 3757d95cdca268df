"""Bad input: each error names the problem and leaves no keys behind."""

from __future__ import annotations

from typing import Any, TypeVar

import anyio
import pytest

import loom_redis as loom
from loom_redis.testing import isolated_registry, running_worker

pytestmark = pytest.mark.anyio


@loom.activity(name="badin_echo")
async def echo(value: str) -> str:
    return value


@loom.workflow(name="badin_GoodWorkflow")
class GoodWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("echo", await ctx.activity(echo, ctx.input["text"]))


@loom.workflow(name="badin_VanishingWorkflow")
class VanishingWorkflow(loom.Workflow[dict, dict]):
    """Registered when started, unknown to the worker that receives its task."""

    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("ran", True)


class UndecoratedWorkflow(loom.Workflow[dict, dict]):
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        pass


class SubclassOfDecorated(GoodWorkflow):
    """Inherits the decorator's marker, but is not itself a registered workflow."""


class Opaque:
    pass


T = TypeVar("T")


def declaring(input_type: Any, name: str) -> type[loom.Workflow[Any, dict]]:
    """A workflow class named `name` that declares `input_type` as its input."""

    class Declared(loom.Workflow[input_type, dict]):  # type: ignore[valid-type]
        @loom.step()
        async def run(self, ctx: loom.WorkflowContext[Any, dict]) -> None:
            pass

    Declared.__qualname__ = Declared.__name__ = name
    return loom.workflow(name=f"badin_{name}")(Declared)


class Undeclared(loom.Workflow):  # type: ignore[type-arg]
    @loom.step()
    async def run(self, ctx: loom.WorkflowContext[Any, Any]) -> None:
        pass


DictInput = declaring(dict[str, Any], "DictInput")
ListInput = declaring(list[int], "ListInput")
StrInput = declaring(str, "StrInput")
FloatInput = declaring(float, "FloatInput")
OptionalDictInput = declaring(dict | None, "OptionalDictInput")
AnyInput = declaring(Any, "AnyInput")
TypeVarInput = declaring(T, "TypeVarInput")
UndeclaredInput = loom.workflow(name="badin_Undeclared")(Undeclared)


async def workflow_keys(client: loom.Client) -> list[str]:
    """Every per-shard key of the test's namespace (the namespace config is not one)."""
    match = f"loom:{{{client.namespace}:*"
    return sorted([k.decode() async for k in client.store.redis.scan_iter(match=match)])


@pytest.mark.parametrize(
    ("bad_input", "detail"),
    [
        ({"tags": {"a", "b"}}, "set"),
        ({"thing": Opaque()}, "Opaque"),
        ({"nested": [1, Opaque()]}, "Opaque"),
    ],
)
async def test_input_msgpack_cannot_encode(
    client: loom.Client, bad_input: object, detail: str
) -> None:
    with pytest.raises(loom.PayloadError) as caught:
        await GoodWorkflow.start(bad_input, workflow_id="badin-payload")
    message = str(caught.value)
    assert "badin_GoodWorkflow" in message
    assert "'badin-payload'" in message
    assert "cannot be encoded as msgpack" in message
    assert detail in message
    assert isinstance(caught.value, TypeError)
    assert await workflow_keys(client) == []
    with pytest.raises(loom.WorkflowNotFoundError):
        await client.get_handle("badin-payload").status()


@pytest.mark.parametrize(
    ("workflow", "bad_input", "expected"),
    [
        (DictInput, ["a"], "must be dict[str, Any], the input type its class DictInput declares"),
        (ListInput, {"a": 1}, "must be list[int], the input type its class ListInput declares"),
        (StrInput, 5, "must be str, the input type its class StrInput declares"),
        (FloatInput, "1.5", "must be float, the input type its class FloatInput declares"),
        (OptionalDictInput, [1], "must be dict | None, the input type its class"),
    ],
)
async def test_input_of_another_top_level_type_is_refused_at_start(
    client: loom.Client, workflow: type[loom.Workflow[Any, dict]], bad_input: Any, expected: str
) -> None:
    with pytest.raises(loom.WorkflowInputError) as caught:
        await workflow.start(bad_input, workflow_id="badin-top-level")
    message = str(caught.value)
    name = workflow.__loom_workflow__.name  # type: ignore[attr-defined]
    assert message.startswith(f"input of workflow {name!r} {expected}")
    assert message.endswith(f"; got {type(bad_input).__name__} {bad_input!r}")
    assert await workflow_keys(client) == []


@pytest.mark.parametrize(
    ("workflow", "good_input", "stored"),
    [
        (ListInput, ["not an int"], ["not an int"]),  # element types are not checked
        (ListInput, (1, 2), [1, 2]),  # msgpack sends a tuple as a list
        (FloatInput, 3, 3),
        (OptionalDictInput, None, None),
        (AnyInput, [1], [1]),
        (TypeVarInput, "x", "x"),
        (UndeclaredInput, 7, 7),
    ],
)
async def test_input_of_the_declared_top_level_type_is_accepted(
    client: loom.Client, workflow: type[loom.Workflow[Any, dict]], good_input: Any, stored: Any
) -> None:
    handle = await workflow.start(good_input)
    assert (await handle.describe())["input"] == stored


async def test_starting_a_class_that_is_not_a_workflow(client: loom.Client) -> None:
    with pytest.raises(loom.WorkflowDefinitionError, match=r"UndecoratedWorkflow.*@loom\.workflow"):
        await UndecoratedWorkflow.start({})
    with pytest.raises(loom.WorkflowDefinitionError, match="SubclassOfDecorated"):
        await client.start(SubclassOfDecorated, {})
    with pytest.raises(loom.WorkflowDefinitionError, match="Opaque"):
        await client.start(Opaque, {})
    assert await workflow_keys(client) == []


@pytest.mark.parametrize(
    ("workflow_id", "detail"),
    [("", "non-empty"), ("x" * 257, "257 bytes"), ("é" * 129, "258 bytes")],
)
async def test_invalid_workflow_ids(client: loom.Client, workflow_id: str, detail: str) -> None:
    with pytest.raises(loom.InvalidWorkflowIdError, match=detail):
        await GoodWorkflow.start({"text": "x"}, workflow_id=workflow_id)
    with pytest.raises(loom.InvalidWorkflowIdError, match=detail):
        await client.start(GoodWorkflow, {"text": "x"}, workflow_id=workflow_id)
    with pytest.raises(loom.InvalidWorkflowIdError, match=detail):
        client.get_handle(workflow_id)
    with pytest.raises(loom.InvalidWorkflowIdError, match=detail):
        loom.get_handle(workflow_id)
    assert await workflow_keys(client) == []


async def test_workflow_id_of_exactly_256_bytes_is_accepted(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    workflow_id = "y" * 256
    async with running_worker(redis_url, namespace):
        handle = await GoodWorkflow.start({"text": "long id"}, workflow_id=workflow_id)
        assert await handle.result(timeout=10) == {"echo": "long id"}


async def test_unknown_workflow_name_goes_to_the_dead_letter_stream(
    client: loom.Client, redis_url: str, namespace: str
) -> None:
    handle = await VanishingWorkflow.start({}, workflow_id="badin-vanishing")
    with isolated_registry(without=["badin_VanishingWorkflow"]):
        async with running_worker(redis_url, namespace, unregistered_grace_seconds=0):
            keys = client.store.keys
            dead = keys.dead(keys.shard_of("badin-vanishing"))
            with anyio.fail_after(5):
                while not await client.store.redis.xlen(dead):
                    await anyio.sleep(0.02)
            # The worker keeps running and completes another workflow afterwards.
            good = await GoodWorkflow.start({"text": "still alive"})
            assert await good.result(timeout=10) == {"echo": "still alive"}

    entries = await client.store.redis.xrange(dead)
    assert len(entries) == 1
    fields = {k.decode(): v for k, v in entries[0][1].items()}
    reason = fields["reason"].decode()
    assert "has registered workflow 'badin_VanishingWorkflow'" in reason
    assert "badin_GoodWorkflow" in reason  # what this worker does know
    assert fields["wf"] == b"badin-vanishing"
    assert fields["k"] == b"w"
    # The task left its queue (acknowledged, nothing pending); the workflow itself is
    # untouched and still pending, waiting for a worker that knows its code.
    queue = keys.queue(keys.shard_of("badin-vanishing"), "default")
    remaining = await client.store.redis.xrange(queue)
    assert all(fields.get(b"wf") != b"badin-vanishing" for _, fields in remaining)
    assert (await client.store.redis.xpending(queue, "workers"))["pending"] == 0
    assert await handle.status() == "PENDING"
    assert [str(e.type) for e in await handle.history()] == ["WORKFLOW_STARTED"]


async def test_redis_unreachable_masks_the_password() -> None:
    url = "redis://user:secret@127.0.0.1:1/0"
    with pytest.raises(loom.RedisUnavailableError) as caught:
        async with loom.Client.connect(url, namespace="badin"):
            pass
    message = str(caught.value)
    assert "secret" not in message
    assert "redis://user:***@127.0.0.1:1/0" in message
    assert "cannot reach Redis" in message
    # One hint, in the API's words, after redis-py's reason without its full stop.
    assert message.endswith("; pass url= or set LOOM_REDIS_URL")
    assert ".;" not in message
    assert isinstance(caught.value, ConnectionError)
    # The same through the default client that Workflow.start uses.
    loom.configure(url=url, namespace="badin")
    try:
        with pytest.raises(loom.RedisUnavailableError) as caught:
            await GoodWorkflow.start({"text": "x"})
        assert "secret" not in str(caught.value)
        assert "***" in str(caught.value)
    finally:
        loom.configure()
