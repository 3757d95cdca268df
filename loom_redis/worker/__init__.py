"""The worker: reads tasks from Redis Streams, runs workflow tasks and activities."""

from ._worker import Worker

__all__ = ["Worker"]
