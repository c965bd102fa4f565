"""How the command's log lines look: one line per event, for people or for machines.

    human (default)  2026-05-01 12:00:00,123 WARNING edge_agent.runtime.poller: meter-1: ...
    --log-json       {"ts":"2026-05-01T12:00:00.123Z","level":"WARNING",
                      "logger":"edge_agent.runtime.poller","msg":"meter-1: no answer ...",
                      "priority":4}

A message that spans lines (a reload's list of config errors) is joined with " | " in the
human form and kept whole in the JSON form; a traceback stays below its line in the human
form (it is for a developer) and goes into "exc" in the JSON form. With --log-json an
exception nothing caught (a crash) is logged the same way, as one object, not as a bare
traceback on stderr.

The JSON form carries the syslog `priority` (3 error, 4 warning, 6 info, 7 debug). When
stderr is the journal (systemd sets JOURNAL_STREAM to its device and inode), every line
starts with `<priority>`, which journald strips and keeps as the entry's PRIORITY, so
`journalctl -u edge-agent -p err` lists the errors.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import IO

import orjson

HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def syslog_priority(levelno: int) -> int:
    """The syslog severity of a logging level: CRITICAL 2, ERROR 3, WARNING 4, INFO 6, DEBUG 7."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def writes_to_journal(stream: IO[str], environ: Mapping[str, str] = os.environ) -> bool:
    """True when `stream` is the journal stream systemd named in JOURNAL_STREAM."""
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):
        return False


class _JournalPrefix(logging.Formatter):
    """`<priority>` before another formatter's line, for journald to strip and keep."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        """The inner line with its priority in front."""
        return f"<{syslog_priority(record.levelno)}>{self.inner.format(record)}"


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
    """One JSON object per line: ts (UTC, ms), level, logger, msg, priority, exc when any."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as one line of JSON."""
        stamp = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        doc: dict[str, object] = {
            "ts": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "priority": syslog_priority(record.levelno),
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
    formatter: logging.Formatter = JsonFormatter() if json_lines else HumanFormatter()
    if writes_to_journal(handler.stream):
        formatter = _JournalPrefix(formatter)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level)
    if json_lines:
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("edge_agent").critical(
        "stopped by an unexpected error: %s", exc, exc_info=(kind, exc, tb)
    )


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    thread = args.thread.name if args.thread else "?"
    logging.getLogger("edge_agent").error(
        "thread %s stopped by an unexpected error: %s",
        thread,
        args.exc_value,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
