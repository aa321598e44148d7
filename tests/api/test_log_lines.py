"""A line written without a ``logging.LogRecord`` (api.cli.logs.LineHandler, the access log's
way to standard error) has the bytes the record would have given, in text and in JSON; and
a line goes through ``logging`` whenever something on its way needs the record."""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest

from api.cli.logs import JsonFormatter, LineHandler, TextFormatter

FIELDS: dict[str, Any] = {
    "method": "POST", "path": "/v1/chat/completions", "status": 200, "request_id": "r1",
    "ms": 1.2, "key": None, "served": "m", "score": 0.25, "prompt": 'say "hi"\n'}
ARGS = ("POST", "/v1/chat/completions", 200, "request_id=r1 ms=1.2 served=m")
TIMES = [0.0, 1.0005, 1_733_443_200.999, 1_733_443_201.0, 1_765_000_000.123456]


def record_at(created: float) -> logging.LogRecord:
    record = logging.LogRecord("llm_router.access", logging.INFO, __file__, 1,
                               "%s %s %d %s", ARGS, None)
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0  # as LogRecord makes them
    record.fields = FIELDS
    return record


@pytest.mark.parametrize("created", TIMES)
def test_a_text_line_is_what_the_record_gives(created: float) -> None:
    formatter = TextFormatter()
    for _ in range(2):  # the second time from its cached seconds
        assert formatter.plain_line(created, "INFO", "llm_router.access",
                                    record_at(created).getMessage()
                                    ) == formatter.format(record_at(created))


@pytest.mark.parametrize("created", TIMES)
def test_a_json_line_is_what_the_record_gives(created: float) -> None:
    formatter = JsonFormatter()
    assert (formatter.fields_line(created, "INFO", "llm_router.access", FIELDS)
            == formatter.format(record_at(created)))


def written(handler: LineHandler, level: int = logging.INFO) -> tuple[bool, str]:
    stream = io.StringIO()
    handler.setStream(stream)
    done = handler.line("llm_router.access", level, "%s %s %d %s", ARGS, FIELDS)
    return done, stream.getvalue()


def test_the_handler_writes_one_line_or_declines() -> None:
    handler = LineHandler()
    handler.setFormatter(TextFormatter())
    done, text = written(handler)
    assert done and text.endswith(" INFO llm_router.access: POST /v1/chat/completions 200 "
                                  "request_id=r1 ms=1.2 served=m\n") and text.count("\n") == 1
    handler.setLevel(logging.WARNING)
    assert written(handler) == (True, "")  # under its level: dropped, as logging drops it
    handler.setLevel(logging.NOTSET)
    handler.addFilter(logging.Filter("other"))
    assert written(handler) == (False, "")  # a filter needs the record
    plain = LineHandler()
    plain.setFormatter(logging.Formatter("%(message)s"))
    assert written(plain) == (False, "")  # so does a formatter it does not know
