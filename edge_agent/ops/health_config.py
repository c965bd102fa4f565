"""The site config's top-level `health:` block: when `/healthz` reports the gateway unwell."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from drivers.config_numbers import Number, Seconds


class HealthConfig(BaseModel):
    """Thresholds of the health check served on `/healthz`.

    The check fails when the MQTT uplink has been down longer than `uplink_down_s`, or when
    more than `max_devices_down_share` of the enabled devices have each been down longer
    than `device_down_s`. Short outages are normal on a plant network, so both wait.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    uplink_down_s: Annotated[Seconds, Field(gt=0.0)] = 300.0
    device_down_s: Annotated[Seconds, Field(gt=0.0)] = 300.0
    max_devices_down_share: Annotated[Number, Field(ge=0.0, le=1.0)] = 0.5
