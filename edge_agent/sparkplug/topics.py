"""Sparkplug B topics: spBv1.0/<group_id>/<message_type>/<edge_node_id>[/<device_id>].

Device ids are the configured device names; STATE is spBv1.0/STATE/<host_id> (3.0 form).
"""

from __future__ import annotations

from dataclasses import dataclass

NAMESPACE = "spBv1.0"


@dataclass(frozen=True, slots=True)
class NodeTopics:
    """Every topic of one edge node."""

    group_id: str
    edge_node_id: str

    def node(self, message_type: str) -> str:
        """NBIRTH, NDEATH, NDATA, NCMD: no device id (tck-id-topic-structure)."""
        return f"{NAMESPACE}/{self.group_id}/{message_type}/{self.edge_node_id}"

    def device(self, message_type: str, device: str) -> str:
        """DBIRTH, DDEATH, DDATA, DCMD of one device."""
        return f"{NAMESPACE}/{self.group_id}/{message_type}/{self.edge_node_id}/{device}"

    @property
    def dcmd_filter(self) -> str:
        """Commands to any device of this node."""
        return f"{NAMESPACE}/{self.group_id}/DCMD/{self.edge_node_id}/+"


def state_topic(host_id: str) -> str:
    """Where a Sparkplug host application publishes its retained online/offline state."""
    return f"{NAMESPACE}/STATE/{host_id}"


def message_type(topic: str) -> str:
    """The message type of a Sparkplug topic ('' for anything else)."""
    parts = topic.split("/")
    return parts[2] if len(parts) >= 4 and parts[0] == NAMESPACE else ""
