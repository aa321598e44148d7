"""The judge's prompt and the reading of its verdict (``engine.core.routing.judge``)."""

from __future__ import annotations

import pytest

from engine.core.routing.judge import MAX_QUOTED_CHARS, comparable, judge_prompt, read_verdict
from engine.messages import ChatRequest, ImagePart, Message, TextPart, Tool, ToolCall


def _request(*turns: tuple[str, str], system: str | None = None, **extra: object) -> ChatRequest:
    messages = tuple(Message(role, (TextPart(text),)) for role, text in turns)  # type: ignore[arg-type]
    return ChatRequest(messages=messages, system=system, **extra)  # type: ignore[arg-type]


def test_the_prompt_quotes_the_whole_conversation_and_both_answers_in_order() -> None:
    request = _request(("user", "Name a prime."), ("assistant", "7."), ("user", "Another?"),
                       system="Be terse.")
    prompt = judge_prompt(request, "FIRST ANSWER", "SECOND ANSWER")
    conversation = prompt.split("<conversation>")[1].split("</conversation>")[0]
    assert conversation.strip().splitlines() == [
        "SYSTEM: Be terse.", "", "USER: Name a prime.", "", "ASSISTANT: 7.", "",
        "USER: Another?"]
    assert prompt.index("FIRST ANSWER") < prompt.index("<answer_2>") < prompt.index(
        "SECOND ANSWER")


def test_long_texts_are_cut_so_a_grading_has_a_bounded_price() -> None:
    long = "x" * (3 * MAX_QUOTED_CHARS)
    prompt = judge_prompt(_request(("user", long)), long, long)
    assert len(prompt) < 3 * MAX_QUOTED_CHARS + 2000
    assert prompt.count("[...cut]") == 3


@pytest.mark.parametrize(("reply", "grades"), [
    ('{"answer_1": 1, "answer_2": 0}', (1.0, 0.0)),
    ('{"answer_2": 1, "answer_1": 1}', (1.0, 1.0)),
    ('```json\n{"answer_1": 0, "answer_2": 0}\n```', (0.0, 0.0)),
    ('{"answer_1": 1.0, "answer_2": 0.0}', (1.0, 0.0)),
    ('{"note": "x"} then {"answer_1": 0, "answer_2": 1}', (0.0, 1.0)),
    ('{"answer_1": true, "answer_2": false}', None),  # grades are 0 or 1, not booleans
    ('{"answer_1": 2, "answer_2": 0}', None),
    ('{"answer_1": "1", "answer_2": "0"}', None),
    ('{"answer_1": 1}', None),
    ("Answer 1 is better.", None),
    ('{"answer_1": 1, "answer_2": ', None),
    ("", None),
])
def test_a_verdict_is_read_only_when_it_grades_both_answers(
    reply: str, grades: tuple[float, float] | None,
) -> None:
    assert read_verdict(reply) == grades


def test_only_text_conversations_with_one_answer_can_be_graded() -> None:
    assert comparable(_request(("user", "hi")))
    assert not comparable(_request(("user", "hi"), n=2))
    assert not comparable(_request(("user", "hi"), tools=(Tool(name="f"),)))
    pictured = ChatRequest(messages=(Message("user", (ImagePart(url="http://x/y.png"),)),))
    assert not comparable(pictured)
    called = ChatRequest(messages=(Message("assistant", (ToolCall("c1", "f", "{}"),)),))
    assert not comparable(called)
