"""An order that waits for a manager's approval between payment and confirmation.

Loom's `OrderWorkflow` example, with an approval step: after the payment the
workflow waits durably for the signal "approve" (for hours if need be: no
worker holds anything while it waits). Run a worker for it and approve an order:

    loom worker examples.order
    loom signal <workflow-id> approve '{"approved": true, "by": "bob"}'

A payload of `{"approved": false, ...}` rejects the order (the payment is
refunded); no decision within `approval_timeout_seconds` rejects it too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NotRequired

import loom_redis as loom

log = logging.getLogger(__name__)

DEFAULT_APPROVAL_TIMEOUT_SECONDS = 3600.0


class OrderInput(loom.Input):
    order_id: str
    customer_email: str
    amount: float
    approval_timeout_seconds: NotRequired[float]


class OrderState(loom.State):
    payment_confirmed: bool
    approved: bool
    approved_by: str | None
    approved_at: str | None
    refunded: bool
    email_sent: bool


OrderContext = loom.WorkflowContext[OrderInput, OrderState]


# Activities: the side effects. They run on workers, at least once, and may retry.


@loom.activity(name="process_payment", retry_count=3, timeout_seconds=30)
async def process_payment(order_id: str, amount: float) -> bool:
    await asyncio.sleep(0.6)  # the payment provider's round trip
    log.info("charged %.2f for order %s", amount, order_id)
    return True


@loom.activity(name="refund_payment", retry_count=3, timeout_seconds=30)
async def refund_payment(order_id: str, amount: float) -> None:
    await asyncio.sleep(0.4)
    log.info("refunded %.2f for order %s", amount, order_id)


@loom.activity(name="send_email", retry_count=2)
async def send_confirmation_email(email: str, order_id: str) -> None:
    await asyncio.sleep(0.3)
    log.info("sent the confirmation of order %s to %s", order_id, email)


def approval_of(payload: Any) -> tuple[bool, str | None]:
    """Read an "approve" signal's payload: no payload, or no "approved" key, approves."""
    if isinstance(payload, dict):
        by = payload.get("by")
        return bool(payload.get("approved", True)), str(by) if by is not None else None
    return True, None


@loom.workflow(
    name="OrderProcessing",
    version="1.1.0",
    description="Charge, wait for a manager's approval, confirm (or refund).",
    agent="Ada",
)
class OrderWorkflow(loom.Workflow[OrderInput, OrderState]):
    @loom.step(name="process_payment", description="charging your card")
    async def payment_step(self, ctx: OrderContext) -> None:
        success = await ctx.activity(process_payment, ctx.input["order_id"], ctx.input["amount"])
        await ctx.state.set("payment_confirmed", success)
        ctx.logger.info("Payment processed: %s", success)

    @loom.step(name="await_approval", description="waiting for a manager to approve your order")
    async def approval_step(self, ctx: OrderContext) -> None:
        if not ctx.state["payment_confirmed"]:
            await ctx.state.set("approved", False)
            return
        timeout = ctx.input.get("approval_timeout_seconds", DEFAULT_APPROVAL_TIMEOUT_SECONDS)
        try:
            approved, by = approval_of(await ctx.wait_for_signal("approve", timeout=timeout))
        except loom.SignalTimeoutError:
            ctx.logger.warning("No approval within %gs: the order is rejected", timeout)
            approved, by = False, None
        # One STATE_UPDATE event for the three keys.
        async with ctx.state.batch():
            await ctx.state.set("approved", approved)
            await ctx.state.set("approved_by", by)
            await ctx.state.set("approved_at", ctx.now().isoformat())

    @loom.step(name="send_confirmation", description="confirming your order")
    async def notification_step(self, ctx: OrderContext) -> None:
        order_id = ctx.input["order_id"]
        if ctx.state["approved"]:
            await ctx.activity(send_confirmation_email, ctx.input["customer_email"], order_id)
            await ctx.state.set("email_sent", True)
            ctx.logger.info("Confirmation email sent")
        elif ctx.state["payment_confirmed"]:
            await ctx.activity(refund_payment, order_id, ctx.input["amount"])
            await ctx.state.set("refunded", True)
            ctx.logger.info("Order rejected: payment refunded")
