"""`report:` on a point (or as a device/profile default): report-by-exception settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ReportOptions(BaseModel):
    """When a point's value is worth sending up again."""

    model_config = ConfigDict(extra="forbid", frozen=True)
