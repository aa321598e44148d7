"""Where log lines go and how they look: ``--log-level`` and ``--log-format``.

Text (the default) is one human-readable line per record. JSON (``--log-format json``) is
one object per line for a log shipper: ``time``, ``level``, ``logger``, ``message``, and for
an access line (``api.http.access``) each of its fields by name. Secrets are scrubbed before
a record gets here (the app's filters on its loggers, ``api.http.app``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

__all__ = ["FORMATS", "JsonFormatter", "LineHandler", "TextFormatter", "configure_logging"]

FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record.

    >>> record = logging.LogRecord("llm_router", logging.WARNING, "", 0, "backend %s is %s",
    ...                            ("a", "down"), None)
    >>> record.created, record.msecs = 0.0, 0.0
    >>> line = orjson.loads(JsonFormatter().format(record))
    >>> line["time"], line["level"], line["logger"], line["message"]
    ('1970-01-01T00:00:00.000Z', 'WARNING', 'llm_router', 'backend a is down')
    """

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):  # an access line: its fields say it all
            return self.fields_line(record.created, record.levelname, record.name, fields,
                                    record)
        out = self._head(record.created, record.levelname, record.name, record.getMessage())
        return self._end(out, record)

    def fields_line(self, created: float, level: str, name: str, fields: dict[str, Any],
                    record: logging.LogRecord | None = None) -> str:
        """The line of a record that carries ``fields`` (an access line), made with or
        without the record (a record adds its traceback, if any)."""
        message = f"{fields.get('method')} {fields.get('path')} {fields.get('status')}"
        out = self._head(created, level, name, message)
        out.update((k, v) for k, v in fields.items() if v is not None)
        return self._end(out, record)

    @staticmethod
    def _head(created: float, level: str, name: str, message: str) -> dict[str, Any]:
        msecs = int((created - int(created)) * 1000)  # as logging.LogRecord's msecs
        return {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
            + f".{msecs:03d}Z",
            "level": level,
            "logger": name,
            "message": message,
        }

    def _end(self, out: dict[str, Any], record: logging.LogRecord | None) -> str:
        if record is None:
            return orjson.dumps(out, default=str).decode()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["traceback"] = record.exc_text
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """``logging.Formatter(_TEXT)``, which can also make a line without a record."""

    def __init__(self) -> None:
        super().__init__(_TEXT)
        self._stamp: tuple[int, str] = (-1, "")  # a second, and its asctime

    def plain_line(self, created: float, level: str, name: str, message: str) -> str:
        """The bytes ``format`` gives a record made at ``created`` with no traceback."""
        second = int(created)
        stamp = self._stamp
        if stamp[0] != second:  # the asctime's seconds, as formatTime makes them
            stamp = self._stamp = (second, time.strftime(self.default_time_format,
                                                         self.converter(created)))
        msecs = int((created - second) * 1000)  # as logging.LogRecord's msecs
        return f"{stamp[1]},{msecs:03d} {level} {name}: {message}"


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The standard error handler of ``configure_logging``, which can also write a line
    without making a ``logging.LogRecord`` (no caller lookup, no record of 20 attributes, no
    filters to run): ``line`` writes the bytes the record would have given, or returns False
    when its formatter or filters need a record. The access log takes it when it is the only
    handler its lines reach (api.http.access); an ordinary record goes the ordinary way."""

    def line(self, name: str, levelno: int, msg: str, args: tuple[Any, ...],
             fields: dict[str, Any]) -> bool:
        """Write ``msg % args`` (a JSON line: ``fields``) as a record of ``name`` at
        ``levelno`` would be written; False if it cannot be done without the record."""
        if self.filters:
            return False
        if levelno < self.level:
            return True  # dropped, as logging drops it
        formatter = self.formatter
        created = time.time()
        level = logging.getLevelName(levelno)
        if type(formatter) is TextFormatter:
            text = formatter.plain_line(created, level, name, msg % args)
        elif type(formatter) is JsonFormatter:
            text = formatter.fields_line(created, level, name, fields)
        else:
            return False
        with self.lock:  # type: ignore[union-attr]  # as Handler.handle holds it
            try:
                self.stream.write(text + self.terminator)
                self.flush()
            except RecursionError:
                raise
            except Exception:  # as emit does: reported, never raised into the request
                self.handleError(logging.makeLogRecord({"name": name, "levelno": levelno,
                                                        "msg": msg, "args": args}))
        return True


def configure_logging(level: str, fmt: str = "text") -> None:
    """Log records of ``level`` and above to standard error, as ``fmt`` says."""
    handler = LineHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
    for noisy in ("httpx", "httpcore"):  # they log every request at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
