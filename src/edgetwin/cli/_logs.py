"""Logging for the commands: text for people, or one JSON object a line for log collectors;
either way one line a message, whatever clients put in it."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import orjson

from edgetwin.logs import printable

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """One line a message: what is not printable in it (from clients: topics, ids, names)
    is written as its escape, so no client can start a line of its own."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = printable(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}`` and ``"exception"`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    for noisy in ("amqtt", "transitions", "mqtt"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pymodbus logs every timeout as an error; the mapper reports devices going offline itself.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
