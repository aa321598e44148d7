"""The redactor on its own (sans-IO): whole secrets, fragments of 8+ characters in any ASCII
case, public prefixes, short placeholder keys, summaries, streams dealt out in pieces, and log
records. ``tests/api/test_secrets.py`` runs the same promises end to end over sockets."""

from __future__ import annotations

import doctest
import logging
import string
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from engine.core import redact
from engine.core.redact import MARKER, RedactingFilter, Redactor, without_userinfo
from engine.messages import (
    ChatResult,
    Finish,
    TextDelta,
    TextPart,
    ThinkingPart,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
)

KEY = "sk-ant-api03-Zq8PxY2vLm4TcW9nRb7KdF3hJs6GtE1u"
LOCAL = "relay.7Hq3xV9p.Lw2Zt8Kc"
REDACTOR = Redactor([KEY, LOCAL, "ollama", None])


def fragments(secret: str, public: int = 0) -> list[str]:
    low = secret.lower()
    return [low[i : i + 8] for i in range(len(low) - 7) if i + 8 > public]


def shows_secret(text: str) -> bool:
    low = text.lower()
    return any(f in low for f in fragments(KEY, 13) + fragments(LOCAL))


def test_doctests() -> None:
    assert doctest.testmod(redact).failed == 0


def test_whole_upper_cased_split_and_cut_keys_are_hidden() -> None:
    for text in (f"key={KEY}", KEY.upper(), f"{KEY[:20]} and {KEY[20:]}", KEY[:21],
                 f"x{LOCAL}y", LOCAL.swapcase(), LOCAL[3:12]):
        hidden = REDACTOR.redact(text)
        assert MARKER in hidden and not shows_secret(hidden), (text, hidden)


def test_text_without_secrets_is_returned_unchanged() -> None:
    text = "The quick brown fox; sk-ant-api03- is a public prefix; use ollama locally. " * 20
    assert REDACTOR.redact(text) is text
    assert not REDACTOR.leaks(text)


def test_fewer_than_8_characters_are_not_a_fragment() -> None:
    assert REDACTOR.redact(f"{KEY[13:20]} {LOCAL[:7]}") == f"{KEY[13:20]} {LOCAL[:7]}"


def test_a_redactor_without_secrets_changes_nothing() -> None:
    empty = Redactor([])
    assert empty.redact(KEY) == KEY
    result = ChatResult(content=(TextPart(KEY),))
    assert empty.redact_result(result) is result


def test_scrub_also_hides_unconfigured_key_shapes() -> None:
    scrub = REDACTOR.scrub
    assert scrub("bad key sk-proj-abcdef123456") == f"bad key {MARKER}"
    assert scrub("Incorrect API key provided: sk-abc1***wxyz.") == (
        f"Incorrect API key provided: {MARKER}."
    )
    assert scrub("authorization: Bearer abc.def-123456") == f"authorization: Bearer {MARKER}"
    assert scrub("password=hunter2000") == f"password={MARKER}"
    assert scrub("token " + "a1b2" * 10) == f"token {MARKER}"
    # Not keys: words, numbers, identifiers without digits, the provider's error types.
    for text in ("api_error: Internal server error", "invalid_request_error: bad tools",
                 "missing key: messages", "a" * 40, "1" * 40,
                 "test_provider_keys_never_appear_in_responses_or_logs"):
        assert scrub(text) == text


def test_summarize_scrubs_before_it_shortens() -> None:
    summary = REDACTOR.summarize("x" * 290 + KEY, limit=300)
    assert not shows_secret(summary)
    summary = REDACTOR.summarize("overloaded:\n" + "y" * 186 + " " + KEY, limit=200)
    assert summary.startswith("overloaded: yyy") and len(summary) <= 200
    assert not shows_secret(summary) and not summary.endswith("[redacte...")
    assert "\n" not in REDACTOR.summarize("a\nb\r\n\tc\x1b[0m")


def test_redact_result_covers_every_text() -> None:
    result = ChatResult(
        content=(TextPart(f"text {KEY}"), ToolCall(id=LOCAL, name=KEY, arguments=f'"{KEY}"')),
        stop_sequence=LOCAL, upstream_model=f"m-{KEY}",
        extra_choices=(ChatResult(content=(TextPart(f"second {KEY}"),), stop_sequence=LOCAL),),
    )
    clean = REDACTOR.redact_result(result)
    assert clean.content == (TextPart(f"text {MARKER}"),
                             ToolCall(id=MARKER, name=MARKER, arguments=f'"{MARKER}"'))
    assert clean.stop_sequence == MARKER and clean.upstream_model == f"m-{MARKER}"
    # every choice of an answer with n > 1, not only the first
    [second] = clean.extra_choices
    assert second.content == (TextPart(f"second {MARKER}"),)
    assert second.stop_sequence == MARKER


answer_texts = st.lists(st.sampled_from(["ok ", KEY[10:22], LOCAL[4:9], LOCAL[9:], "\n",
                                          "é", KEY.upper()[15:30]]), max_size=5).map("".join)
answer_parts = st.one_of(
    st.builds(TextPart, answer_texts),
    st.builds(ToolCall, answer_texts, answer_texts, answer_texts),
    st.builds(ThinkingPart, answer_texts, answer_texts),
)


@given(st.lists(answer_parts, max_size=4), st.none() | answer_texts, st.none() | answer_texts)
def test_redact_result_is_the_part_by_part_answer(
    parts: list[Any], model: str | None, stop: str | None
) -> None:
    """The answer as it was when it holds no fragment (scanned in one pass), and the part
    by part redaction when it does: always what the part by part way gives."""
    result = ChatResult(content=tuple(parts), upstream_model=model, stop_sequence=stop)
    assert REDACTOR.redact_result(result) == REDACTOR._redacted(result)


def test_a_stream_hides_a_key_dealt_out_in_small_pieces() -> None:
    stream = REDACTOR.stream()
    text = f"here: {KEY} end"
    out: list[str] = []
    for i in range(0, len(text), 3):
        batch = stream.events([TextDelta(text[i : i + 3])])
        out.extend(e.text for e in batch if isinstance(e, TextDelta))
    joined = "".join(out)
    assert not shows_secret(joined)
    assert joined.count(MARKER) == 1 and joined.endswith(" end"), joined


def test_a_stream_batch_without_secrets_is_passed_through() -> None:
    batch = [TextDelta("hello "), ToolCallDelta(0, '{"a": 1}')]
    assert REDACTOR.stream().events(batch) is batch  # type: ignore[arg-type]


def test_a_stream_finish_and_tool_names_are_redacted() -> None:
    [finish] = REDACTOR.stream().events([Finish(upstream_model=KEY)])
    assert isinstance(finish, Finish) and finish.upstream_model == MARKER


SECRET_ALPHABET = string.ascii_letters + string.digits + "-_."
PLAIN_TEXT = st.text(alphabet="éü !,\n" + "xyz", max_size=60)


@given(
    secret=st.text(alphabet=SECRET_ALPHABET, min_size=8, max_size=80),
    before=PLAIN_TEXT, after=PLAIN_TEXT,
    start=st.integers(0, 80), length=st.integers(8, 80), upper=st.booleans(),
)
def test_any_fragment_of_8_or_more_is_hidden(
    secret: str, before: str, after: str, start: int, length: int, upper: bool
) -> None:
    redactor = Redactor([secret])
    start = min(start, len(secret) - 8)
    piece = secret[start : start + length]
    hidden = redactor.redact(before + (piece.upper() if upper else piece) + after)
    assert MARKER in hidden
    low = hidden.lower()
    assert not any(f in low for f in fragments(secret))


@given(
    secret=st.text(alphabet=SECRET_ALPHABET, min_size=8, max_size=60),
    before=PLAIN_TEXT, after=PLAIN_TEXT,
    cuts=st.lists(st.integers(1, 12), min_size=1, max_size=40),
)
def test_any_fragment_streamed_in_any_pieces_is_hidden(
    secret: str, before: str, after: str, cuts: list[int]
) -> None:
    redactor = Redactor([secret])
    stream = redactor.stream()
    text = before + secret + after
    out, at = [], 0
    for size in [*cuts, len(text)]:
        if at >= len(text):
            break
        batch = stream.events([TextDelta(text[at : at + size])])
        out.extend(e.text for e in batch if isinstance(e, TextDelta))
        at += size
    low = "".join(out).lower()
    assert not any(f in low for f in fragments(secret)), low


EVENT = st.one_of(
    st.builds(TextDelta, st.text(alphabet=SECRET_ALPHABET + " é", min_size=1, max_size=12)),
    st.builds(ToolCallDelta, st.integers(0, 2),
              st.text(alphabet=SECRET_ALPHABET, min_size=1, max_size=12)),
    st.builds(ToolCallStart, st.integers(0, 2), st.text(alphabet=SECRET_ALPHABET, max_size=12),
              st.text(alphabet=SECRET_ALPHABET, max_size=12)),
    st.builds(Finish, upstream_model=st.text(alphabet=SECRET_ALPHABET, max_size=20)),
)


@given(secret=st.text(alphabet=SECRET_ALPHABET, min_size=8, max_size=30),
       batches=st.lists(st.lists(EVENT, min_size=1, max_size=8), max_size=8),
       plant=st.integers(0, 100))
def test_a_batch_is_redacted_as_its_events_one_at_a_time(
    secret: str, batches: list[list[Any]], plant: int
) -> None:
    if batches and batches[0]:  # now and then, some of the secret in a delta
        first = batches[0][plant % len(batches[0])]
        if type(first) is TextDelta:
            batches[0][plant % len(batches[0])] = TextDelta(secret[plant % 5:] + first.text)
    redactor = Redactor([secret])
    together, alone = redactor.stream(), redactor.stream()
    for batch in batches:
        assert together.events(list(batch)) == [e for event in batch
                                                for e in alone.events([event])]


def test_secrets_of_a_config_include_client_keys_and_url_passwords() -> None:
    from router_harness import make_config

    config = make_config({
        "models": [{"name": "m", "provider": "openai", "model": "x", "tier": 1,
                    "base_url": "https://user:pa55word-LongOne@llm.example/v1",
                    "api_key": LOCAL}],
        "server": {"api_keys": ["client-Tk5Wd8Ym3Qa7"]},
        "learned": {"sidecar_url": "http://svc:s1decar-Secret9@127.0.0.1:9/score"},
        "state": {"redis_url": "redis://:r3dis-Passw0rd@127.0.0.1:6379/0"},
    })
    redactor = Redactor.for_config(config)
    text = f"{LOCAL} client-Tk5Wd8Ym3Qa7 pa55word-LongOne s1decar-Secret9 r3dis-Passw0rd"
    assert redactor.redact(text) == " ".join([MARKER] * 5)
    assert without_userinfo("http://svc:s1decar-Secret9@127.0.0.1:9/score") == (
        "http://127.0.0.1:9/score"
    )


def test_the_log_filter_scrubs_messages_arguments_and_tracebacks() -> None:
    logger = logging.getLogger("test_redact.filter")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler, log_filter = Keep(), RedactingFilter(REDACTOR)
    logger.addHandler(handler)
    logger.addFilter(log_filter)
    try:
        logger.warning("upstream said %s", KEY)
        try:
            raise ValueError(f"bad {LOCAL}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logger.removeFilter(log_filter)
    text = "\n".join(logging.Formatter().format(r) for r in records)
    assert "upstream said [redacted]" in text and "ValueError: bad [redacted]" in text
    assert not shows_secret(text)
