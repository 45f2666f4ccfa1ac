"""Logging set-up: `configure_logging(settings)`.

Every record goes to stderr and to LOG_FILE (default `logs/trading_platform.log`, its directory
created), rotated at LOG_MAX_BYTES with LOG_BACKUPS old files kept. LOG_FORMAT=text writes
`time LEVEL logger message`, so the runbook's `grep "ERROR"` and `grep "RISK_BLOCK"` work;
LOG_FORMAT=json writes one JSON object a line. uvicorn's own loggers (server errors, access log)
also write to the file, so one file holds everything an operator greps for.

Every handler (ours, and uvicorn's own when uvicorn configured its logging) has a
`RedactingFilter`: the values of ALPACA_API_KEY and ALPACA_SECRET_KEY, the password of
DATABASE_URL, bearer tokens, tradeengine API tokens, Authorization headers and `key=value`
credentials are replaced by `***` in the message, its arguments and the traceback before any
line is written.
"""

from __future__ import annotations

import datetime as dt
import logging
import logging.handlers
import re
import sys
import urllib.parse
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from tradeengine.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# uvicorn's loggers, once uvicorn configured them (`uvicorn tradeengine.main:app`), do not
# propagate to the root logger: then the file handler is added to them too.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.access")
_MARK = "_tradeengine_handler"
REDACTED = "***"
MIN_SECRET_LENGTH = 4
"""Configured secrets shorter than this are not searched for (they would blank out common
words); the patterns below still catch them where they appear as a header or `key=value`."""

# (words that must be in the line, pattern): a pattern runs only on a line that holds one of
# its words (in any case), so most lines cost a lower-casing and a few substring tests. Each
# pattern keeps its group (what names the secret) and replaces the rest of the match.
_PATTERNS: tuple[tuple[tuple[str, ...], str], ...] = (
    # Authorization headers, as text, in dict reprs and in ASGI header tuples (bytes); the
    # scheme word stays, a placeholder such as `Bearer <token>` is left alone.
    (
        ("authorization",),
        r"(\bauthorization['\"]?\s*[:=,]\s*(?:b?['\"])?(?:(?:bearer|basic|token)\s+)?+)"
        r"[^\s'\"<>,}]+",
    ),
    (("bearer",), r"(\bbearer\s+)[A-Za-z0-9._~+/=-]+"),
    # tradeengine's own API tokens (`te_` + 43 URL-safe characters).
    (("te_",), r"(\bte_)[A-Za-z0-9_-]{20,}"),
    # Credentials in URLs: scheme://user:password@host.
    (("://",), r"(://[^/\s:@]*:)[^@\s/]+(?=@)"),
    # key=value and "key": "value" forms of secrets, Alpaca's headers included.
    (
        ("key", "secret", "pass", "token"),
        r"((?:api[_-]?key(?:[_-]?id)?|secret(?:[_-]?key)?|password|passwd|access[_-]?token|"
        r"token)['\"]?\s*[:=]\s*(?:b?['\"])?)[^\s'\"&,;}]+",
    ),
)


class _Redacted:
    """A log argument that contained a secret, standing in with its redacted texts."""

    __slots__ = ("_repr", "_str")

    def __init__(self, text: str, representation: str) -> None:
        self._str = text
        self._repr = representation

    def __str__(self) -> str:
        return self._str

    def __repr__(self) -> str:
        return self._repr


class RedactingFilter(logging.Filter):
    """Replaces secrets by `***` in a record before a handler formats it: the configured
    values (`secrets`) wherever they appear, and whatever `_PATTERNS` recognise (bearer
    tokens, Authorization headers, passwords in URLs, `api_key=...`). It rewrites the record
    in place (message, each argument that held a secret, the traceback text), so every
    formatter, uvicorn's access formatter included, sees only redacted text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first: a secret that contains another is replaced whole.
        self._secrets = sorted(
            {s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True
        )
        self._patterns = [
            (words, re.compile(pattern, re.IGNORECASE)) for words, pattern in _PATTERNS
        ]

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        lowered = text.lower()
        for words, pattern in self._patterns:
            for word in words:
                if word in lowered:
                    text = pattern.sub(_keep_name, text)
                    break
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        # The usual line holds no secret: one pass over the whole message decides that, and
        # leaves the record untouched.
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: logging reports it, with redacted arguments
            self._rewrite(record)
        else:
            if self.redact(message) != message:
                self._rewrite(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True

    def _rewrite(self, record: logging.LogRecord) -> None:
        """Redacts the message and each argument apart, keeping the arguments' shape
        (uvicorn's access formatter unpacks them)."""
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        else:
            record.msg = self.redact(str(record.msg))
        if isinstance(record.args, Mapping):
            record.args = {key: self._arg(value) for key, value in record.args.items()}
        elif record.args:
            record.args = tuple(self._arg(value) for value in record.args)

    def _arg(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if value is None or isinstance(value, int | float | bool):
            return value
        text, representation = str(value), repr(value)
        redacted_text, redacted_repr = self.redact(text), self.redact(representation)
        if redacted_text == text and redacted_repr == representation:
            return value
        return _Redacted(redacted_text, redacted_repr)


def _keep_name(match: re.Match[str]) -> str:
    return match.group(1) + REDACTED


_TRACEBACKS = logging.Formatter()


def configured_secrets(settings: Settings) -> list[str]:
    """The secret values of the settings: Alpaca's keys and DATABASE_URL's password (as
    written and decoded)."""
    password = urllib.parse.urlsplit(settings.database_url).password or ""
    return [
        value
        for value in (
            settings.alpaca_api_key,
            settings.alpaca_secret_key,
            password,
            urllib.parse.unquote(password),
        )
        if value
    ]


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        exception = record.exc_text
        if not exception and record.exc_info:
            exception = self.formatException(record.exc_info)
        if exception:
            entry["exception"] = exception
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


def _remove_redaction(logger: logging.Logger) -> None:
    for handler in logger.handlers:
        for found in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(found)


def configure_logging(settings: Settings) -> Path:
    """Installs the handlers (replacing those of an earlier call); returns the log file path."""
    path = Path(settings.log_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    formatter = _formatter(settings)
    redaction = RedactingFilter(configured_secrets(settings))
    file_handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=settings.log_max_bytes, backupCount=settings.log_backups, encoding="utf-8"
    )
    file_handler.setFormatter(formatter)
    file_handler.addFilter(redaction)
    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setFormatter(formatter)
    stderr_handler.addFilter(redaction)

    root = logging.getLogger()
    _remove_ours(root)
    root.addHandler(_mark(file_handler))
    root.addHandler(_mark(stderr_handler))
    root.setLevel(settings.log_level)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        _remove_ours(logger)
        _remove_redaction(logger)
        for handler in logger.handlers:  # uvicorn's own, when it configured its logging
            handler.addFilter(redaction)
        if not logger.propagate:
            logger.addHandler(_mark(file_handler))
    return path
