"""How the command's log lines look: one line per event, for people or for machines.

    human (default)  2026-05-01 12:00:00,123 WARNING edge_agent.poller: meter-1: no answer ...
    --log-json       {"ts":"2026-05-01T12:00:00.123Z","level":"WARNING",
                      "logger":"edge_agent.poller","msg":"meter-1: no answer ..."}

A message that spans lines (a reload's list of config errors) is joined with " | " in the
human form and kept whole in the JSON form; a traceback stays below its line in the human
form (it is for a developer) and goes into "exc" in the JSON form.
"""

from __future__ import annotations

import datetime
import logging

import orjson

HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class HumanFormatter(logging.Formatter):
    """The classic line, with multi-line messages folded onto it."""

    def __init__(self) -> None:
        super().__init__(HUMAN_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        """Fold the message onto one line before the format is applied."""
        if "\n" in record.message:
            record.message = " | ".join(p for p in record.message.splitlines() if p.strip())
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ms), level, logger, msg, and exc when any."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as one line of JSON."""
        stamp = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        doc: dict[str, object] = {
            "ts": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return orjson.dumps(doc, default=str).decode()


def configure_logging(level: str, *, json_lines: bool) -> None:
    """Send every log line to stderr in the chosen form.

    Like `logging.basicConfig`, it leaves a root logger that already has handlers alone:
    whoever set those up (a test runner, an embedding program) owns the output.
    """
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_lines else HumanFormatter())
    root.addHandler(handler)
    root.setLevel(level)
