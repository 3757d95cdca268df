"""The public API's types, as tests/client/test_typing.py checks them with `mypy --strict`.

Never run, and not a test module. Each `assert_type` pins a type; a line that ends
with `# E: code` must get an error of that code from mypy, and no other line any.
"""

from typing import Any, assert_type

import loom_redis as loom


class Order(loom.Input):
    order_id: str
    amount: float


class Other(loom.Input):
    sku: str


class Paid(loom.State):
    charged: bool


Context = loom.WorkflowContext[Order, Paid]


@loom.activity
async def charge(order_id: str, amount: float) -> bool:
    return amount > 0


@loom.activity(name="receipt", retry_count=2)
def receipt(order_id: str, *, copies: int = 1) -> list[str]:
    return [order_id] * copies


async def call_directly() -> None:
    # Both forms of the decorator keep the function's own type.
    assert_type(await charge("A1", 9.5), bool)
    assert_type(receipt("A1", copies=2), list[str])
    receipt(1)  # E: arg-type


@loom.workflow(name="Pay")
class PayWorkflow(loom.Workflow[Order, Paid]):
    @loom.step
    async def pay(self, ctx: Context) -> None:
        assert_type(ctx.input, Order)
        assert_type(ctx.state, loom.WorkflowState[Paid])
        # ctx.activity(fn, ...) checks the arguments against fn's and returns its result.
        charged = await ctx.activity(charge, ctx.input["order_id"], ctx.input["amount"])
        assert_type(charged, bool)
        await ctx.activity(charge, ctx.input["order_id"], "9.50")  # E: call-overload
        await ctx.activity(charge, ctx.input["order_id"])  # E: call-overload
        await ctx.activity(charge, "A1", 9.5, 1)  # E: call-overload
        # A plain def activity (run in a thread): its result, not a coroutine.
        assert_type(await ctx.activity(receipt, "A1", copies=2), list[str])
        await ctx.activity(receipt, "A1", copies="2")  # E: arg-type
        await ctx.activity(receipt, "A1", 2)  # E: call-overload
        # By registered name: anything goes, the result is Any.
        assert_type(await ctx.activity("receipt", "A1", "any", copies="thing"), Any)
        await ctx.activity(42)  # E: call-overload


async def producer() -> None:
    handle = await PayWorkflow.start({"order_id": "A1", "amount": 9.5}, owner="ada")
    assert_type(handle, loom.WorkflowHandle[Paid])
    assert_type(await handle.result(), Paid)
    with_state = await PayWorkflow.start(Order(order_id="A1", amount=1), {"charged": True})
    assert_type(with_state, loom.WorkflowHandle[Paid])
    await PayWorkflow.start({"order_id": "A1"})  # E: typeddict-item
    await PayWorkflow.start({"order_id": "A1", "amount": "9.50"})  # E: typeddict-item
    await PayWorkflow.start(Other(sku="x"))  # E: arg-type
    await PayWorkflow.start({"order_id": "A1", "amount": 9.5}, {"charged": "yes"})  # E: arg-type
    await PayWorkflow.start({"order_id": "A1", "amount": 9.5}, queue=1)  # E: arg-type
    async with loom.Client.connect() as client:
        started = await client.start(PayWorkflow, Order(order_id="A1", amount=9.5))
        assert_type(started, loom.WorkflowHandle[Paid])
        # A dict literal is taken as it is (python/mypy#19201); start checks its keys.
        literal = await client.start(PayWorkflow, {"order_id": "A1", "amount": 9.5})
        assert_type(literal, loom.WorkflowHandle[Paid])
        await client.start(PayWorkflow, Other(sku="x"))  # E: misc
        await client.start(PayWorkflow, "A1")  # E: misc
        assert_type(client.get_handle("A1"), loom.WorkflowHandle[Any])
    # The handle of an existing workflow cannot know its state type.
    existing = loom.get_handle("A1")
    assert_type(existing, loom.WorkflowHandle[Any])
    assert_type(await existing.result(), Any)
