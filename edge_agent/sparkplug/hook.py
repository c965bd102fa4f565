"""The agent's one entry point into Sparkplug: build the edge node when the site asks for it.

Imported by the agent on every site; it imports nothing of Sparkplug (nor protobuf) until
a `sparkplug:` block is there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_agent.config.site import LoadedConfig
    from edge_agent.sparkplug.node import EdgeNode


def attach_sparkplug(
    loaded: LoadedConfig, stages: list[Any], units: Sequence[Any]
) -> EdgeNode | None:
    """The site's edge node, appended to `stages` (the agent runs it); None without one.

    `units` are the agent's pollers: their devices' points make the first births.
    """
    config = loaded.site.sparkplug
    if config is None:
        return None
    from edge_agent.sparkplug.node import EdgeNode  # loads protobuf

    node = EdgeNode(loaded, config, points={u.driver.name: u.driver.points for u in units})
    stages.append(node)
    return node
