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

__all__ = ["FORMATS", "JsonFormatter", "configure_logging"]

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
            message = f"{fields.get('method')} {fields.get('path')} {fields.get('status')}"
        else:
            message = record.getMessage()
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        if isinstance(fields, dict):
            out.update((k, v) for k, v in fields.items() if v is not None)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["traceback"] = record.exc_text
        return orjson.dumps(out, default=str).decode()


def configure_logging(level: str, fmt: str = "text") -> None:
    """Log records of ``level`` and above to standard error, as ``fmt`` says."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    for noisy in ("httpx", "httpcore"):  # they log every request at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
