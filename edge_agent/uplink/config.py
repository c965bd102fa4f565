"""The `uplink:` block of a site config: the 能耗在线监测 platform endpoints and local history.

uplink:
  path: var/uplink.sqlite          # history + one queue per endpoint, beside the outbox
  history_days: 200                # >= 183 (six months, energy.md §1.3)
  endpoints:
    - name: province
      url: https://platform.example.gov.cn/api/energy/upload
      template: uplink/province.yaml   # relative to the site file
      token: ${PLATFORM_TOKEN}         # sent as "Authorization: Bearer ..."
      ca_file: certs/platform-ca.pem   # default: the system's CAs
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from drivers.config_numbers import BackoffCap, Timeout, Whole

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class UplinkEndpoint(BaseModel):
    """One platform (data centre): its URL, payload template, credentials and pacing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=64)]
    url: str
    template: Path
    token: SecretStr | None = None
    ca_file: Path | None = None
    timeout_s: Annotated[Timeout, Field(le=300.0)] = 10.0
    batch: Annotated[Whole, Field(ge=1, le=1000)] = 50  # records per request, oldest first
    backoff_max_s: BackoffCap = 60.0
    # The answer that acknowledges: HTTP 2xx and, when set, these keys in its JSON body.
    ack_json: dict[str, Any] | None = None
    # What is sent: 15-minute (实时) intervals, and the daily / monthly totals (每日/每月上传).
    spans: tuple[Literal["interval", "day", "month"], ...] = ("interval",)
    # Energy kind -> the province's code (GB/T 29870 / NHJC-07), the template's `$code`.
    codes: dict[str, str] = Field(default_factory=dict)

    @field_validator("spans")
    @classmethod
    def _spans(cls, spans: tuple[str, ...]) -> tuple[str, ...]:
        if not spans or len(set(spans)) != len(spans):
            raise ValueError("spans: one or more of interval, day, month, each once")
        return spans

    @field_validator("url")
    @classmethod
    def _https(cls, url: str) -> str:
        # The platforms require HTTPS (energy.md §1.3); http is only for a loopback test.
        if not (url.startswith("https://") or url.startswith("http://127.0.0.1")):
            raise ValueError("must be an https:// URL")
        return url


class UplinkConfig(BaseModel):
    """Where the interval history lives and which endpoints receive it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path = Path("var/uplink.sqlite")  # relative to the site file
    history_days: Annotated[Whole, Field(ge=183)] = 200
    endpoints: Annotated[tuple[UplinkEndpoint, ...], Field(min_length=1)]

    @field_validator("endpoints")
    @classmethod
    def _distinct(cls, endpoints: tuple[UplinkEndpoint, ...]) -> tuple[UplinkEndpoint, ...]:
        names = [e.name for e in endpoints]
        if len(set(names)) != len(names):
            raise ValueError("endpoint names must be distinct (each has its own queue)")
        return endpoints
