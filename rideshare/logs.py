"""Structured logs: one JSON object per line, with the record's extra fields."""

import json
import logging
import os
from typing import Any

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    """Formats a record as JSON: time, level, logger, event, then the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info and record.levelno >= logging.ERROR:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging() -> None:
    """Send rideshare's logs to stderr as JSON lines, once per process."""
    for name in ("rideshare", "jobqueue"):  # the app and its job engine
        logger = logging.getLogger(name)
        if any(isinstance(h.formatter, JSONFormatter) for h in logger.handlers):
            continue
        handler = logging.StreamHandler()
        handler.setFormatter(JSONFormatter())
        handler.formatter.converter = __import__("time").gmtime  # type: ignore[union-attr]
        logger.addHandler(handler)
        logger.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
        logger.propagate = False
