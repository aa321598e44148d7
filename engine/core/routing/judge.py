"""Grading two answers to one request: the prompt a judge model reads, and its verdict.

A comparison (``learned.compare``) asks a request's other tier for a second answer, then has
a judge model grade both on one scale: 1 when an answer does what was asked, 0 when it does
not. The two grades make a comparison report, the only kind of feedback that can open online
learning's floors (``engine.core.routing.floor``).

Sans-IO: this module builds text and reads text. Which answer comes first is the caller's
choice (``first_is_served``), drawn at random per comparison, so a judge that favours one
position favours neither tier on average.

>>> from engine.messages import ChatRequest, Message, TextPart
>>> request = ChatRequest(messages=(Message("user", (TextPart("What is 2+2?"),)),))
>>> print(judge_prompt(request, "4", "5").splitlines()[-1])
Reply with one line of JSON and nothing else: {"answer_1": 0 or 1, "answer_2": 0 or 1}
>>> read_verdict('{"answer_1": 1, "answer_2": 0}')
(1.0, 0.0)
>>> read_verdict("I think both are fine") is None
True
"""

from __future__ import annotations

import json
import re

from engine.messages import ChatRequest, Message, TextPart

__all__ = ["JUDGE_MAX_TOKENS", "MAX_QUOTED_CHARS", "comparable", "judge_prompt",
           "read_verdict"]

#: Each quoted text (the conversation, each answer) is cut to this many characters, so one
#: comparison's judge call has a bounded price whatever the request.
MAX_QUOTED_CHARS = 6000
#: The judge replies with one short line of JSON.
JUDGE_MAX_TOKENS = 40

_INSTRUCTIONS = """\
You grade answers written by AI assistants. Below is a conversation, then two answers to its
last message, written independently. Grade each answer on its own:
1 if it does what was asked, correctly and completely enough that a careful expert would
accept it; 0 if it does not (wrong, incomplete, off-topic, or refuses without reason).
Both may earn 1, or both 0. Do not prefer the longer answer for its length."""

_VERDICT = re.compile(r"\{[^{}]*\}")


def comparable(request: ChatRequest) -> bool:
    """Whether a request can be graded from its text: text turns only (no tools, images or
    tool results), one answer asked for (``n`` 1)."""
    if request.tools or request.n != 1:
        return False
    return all(isinstance(part, TextPart) for m in request.messages for part in m.parts)


def _clip(text: str) -> str:
    if len(text) <= MAX_QUOTED_CHARS:
        return text
    return text[:MAX_QUOTED_CHARS] + " [...cut]"


def _turn(message: Message) -> str:
    return f"{message.role.upper()}: {message.text}"


def judge_prompt(request: ChatRequest, first: str, second: str) -> str:
    """The judge's prompt: the conversation (system prompt included) and two answers, each
    cut to :data:`MAX_QUOTED_CHARS`."""
    turns = [f"SYSTEM: {request.system}"] if request.system else []
    turns += [_turn(m) for m in request.messages]
    conversation = _clip("\n\n".join(turns))
    return (f"{_INSTRUCTIONS}\n\n<conversation>\n{conversation}\n</conversation>\n\n"
            f"<answer_1>\n{_clip(first)}\n</answer_1>\n\n<answer_2>\n{_clip(second)}\n"
            "</answer_2>\n\nReply with one line of JSON and nothing else: "
            '{"answer_1": 0 or 1, "answer_2": 0 or 1}')


def _grade(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value in (0, 1) else None


def read_verdict(text: str) -> tuple[float, float] | None:
    """The two grades (``answer_1``, ``answer_2``) of a judge's reply, or ``None`` when the
    reply holds no JSON object with both grades, each 0 or 1 (such a comparison is dropped,
    never guessed).

    >>> read_verdict('Sure. {"answer_1": 0, "answer_2": 1}')
    (0.0, 1.0)
    >>> read_verdict('{"answer_1": 0.5, "answer_2": 1}') is None
    True
    """
    for found in _VERDICT.finditer(text):
        try:
            raw = json.loads(found.group(0))
        except ValueError:
            continue
        if not isinstance(raw, dict):
            continue
        first, second = _grade(raw.get("answer_1")), _grade(raw.get("answer_2"))
        if first is not None and second is not None:
            return first, second
    return None
