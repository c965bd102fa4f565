"""`running(agent)`: an Agent running in a task for the body of an `async with`, stopped after.

The end-to-end tests drive the whole agent this way; stopping is bounded (15 s), and a
stop that does not finish fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from edge_agent.runtime.agent import Agent


@asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[Agent]:
    task = asyncio.create_task(agent.run(), name="agent")
    try:
        yield agent
    finally:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=15)
        assert done == {task}, "the agent did not stop within 15 s"
