"""The `sparkplug:` block of a site file: the gateway as a Sparkplug B edge node.

    sparkplug:
      url: "mqtt://127.0.0.1:1883"   # optional: another broker than mqtt.url
      group_id: plant-a
      edge_node_id: gw-01
      primary_host_id: scada-1       # optional: wait for spBv1.0/STATE/scada-1 online
      json: true                     # keep publishing the JSON data messages beside it

Credentials, TLS, keepalive and backoff are the `mqtt:` block's, on whichever broker.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge_agent.mqtt.config import broker_address

# Sparkplug ids are UTF-8 strings without + / # (tck-id-topic-structure-namespace-valid-*).
SPARKPLUG_ID = r"^[^+/#\s][^+/#]*$"


class SparkplugConfig(BaseModel):
    """Group and edge node ids, the broker, the primary host, and whether JSON stays on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None  # None: the broker of `mqtt.url`
    group_id: Annotated[str, Field(pattern=SPARKPLUG_ID, max_length=128)]
    edge_node_id: Annotated[str, Field(pattern=SPARKPLUG_ID, max_length=128)]
    primary_host_id: Annotated[str, Field(pattern=SPARKPLUG_ID, max_length=128)] | None = None
    # Written `json:` (a pydantic model cannot have a field named json).
    json_data: bool = Field(True, alias="json")

    @field_validator("url")
    @classmethod
    def _valid_url(cls, url: str | None) -> str | None:
        if url is not None:
            broker_address(url)
        return url
