"""Logging set-up: `configure_logging(settings)`.

Every record goes to stderr and to LOG_FILE (default `logs/trading_platform.log`, its directory
created), rotated at LOG_MAX_BYTES with LOG_BACKUPS old files kept. LOG_FORMAT=text writes
`time LEVEL logger message`, so the runbook's `grep "ERROR"` and `grep "RISK_BLOCK"` work;
LOG_FORMAT=json writes one JSON object a line. uvicorn's own loggers (server errors, access log)
also write to the file, so one file holds everything an operator greps for.
"""

from __future__ import annotations

import datetime as dt
import logging
import logging.handlers
import sys
from pathlib import Path

import msgspec

from tradeengine.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# uvicorn's loggers, once uvicorn configured them (`uvicorn tradeengine.main:app`), do not
# propagate to the root logger: then the file handler is added to them too.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.access")
_MARK = "_tradeengine_handler"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()


def _formatter(settings: Settings) -> logging.Formatter:
    return JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT)


def _mark(handler: logging.Handler) -> logging.Handler:
    setattr(handler, _MARK, True)
    return handler


def _remove_ours(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        if getattr(handler, _MARK, False):
            logger.removeHandler(handler)
            handler.close()


def configure_logging(settings: Settings) -> Path:
    """Installs the handlers (replacing those of an earlier call); returns the log file path."""
    path = Path(settings.log_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    formatter = _formatter(settings)
    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=settings.log_max_bytes, backupCount=settings.log_backups, encoding="utf-8"
    )
    file_handler.setFormatter(formatter)
    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setFormatter(formatter)

    root = logging.getLogger()
    _remove_ours(root)
    root.addHandler(_mark(file_handler))
    root.addHandler(_mark(stderr_handler))
    root.setLevel(settings.log_level)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        _remove_ours(logger)
        if not logger.propagate:
            logger.addHandler(_mark(file_handler))
    return path
