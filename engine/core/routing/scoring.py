"""The heuristic complexity score of a request (docs/routing.md). Pure and synchronous.

The score is the sum of these signals, capped at 100:

==========================  ===========  ===================================================
signal                      points       how it is measured here
==========================  ===========  ===================================================
token count                 5-35         estimated tokens of the whole request; 5 up to 64
                                         tokens, then +30/7 per doubling, 35 from 8,192 on
conversation depth          0-15         3 per user turn before the last one, at most 15
system prompt length        0-10         1 per 50 estimated tokens of system prompt, at most 10
JSON mode                   +10          ``response_format`` JSON object or schema
tool / function calling     +15          tools offered (and the tier is at least 2)
code in the prompt          +10          a fenced block, or two or more code-shaped lines
reasoning cues              +15          "step by step", "analyze", "trade-offs", ...
==========================  ===========  ===================================================

Tokens are estimated at four characters each: no offline tokenizer matches every provider,
and the estimate only has to rank requests, not bill them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from engine.frozen import frozen_constructor
from engine.messages import (
    CHARS_PER_TOKEN,
    ChatRequest,
    TextPart,
    ToolCall,
    ToolResult,
    estimate_tokens,
)

__all__ = ["Score", "score_request", "tier_for_score"]

_REASONING = re.compile(
    r"step[- ]by[- ]step|\banaly[sz]\w*|trade[- ]?offs?\b|\bpros and cons\b|\bprove\b|\bproof\b"
    r"|\bderive\b|\bderivation\b|\bexplain why\b|\bjustify\b|\breason(?:ing)? (?:about|through)\b"
    r"|\bthink (?:through|carefully|hard)\b|\bcompare\b|\bcomparison\b|\bevaluate\b|\bcritique\b"
    r"|\bin[- ]depth\b|\brigorous\w*\b|\bimplications?\b|\bchain of thought\b"
    r"|\bwhy does\b|\bwhat would happen if\b|\bdesign an?\b|\barchitect\w*\b"
)
# Every alternative of ``_REASONING`` contains one of these: a text holding none of them cannot
# match, and the regex (tens of microseconds even on a short prompt: each alternative is tried
# at every position) is not run. The common case on every request.
_REASONING_WORDS = (
    "step", "analy", "trade", "pros and cons", "prove", "proof", "deriv", "explain why",
    "justify", "reason", "think ", "compar", "evaluate", "critique", "depth", "rigorous",
    "implication", "chain of thought", "why does", "what would happen if", "design a",
    "architect",
)
_FENCE = re.compile(r"```|~~~")
# Linear time on any input (the scorer runs on every request, in the event loop): whitespace
# at a line's edges is ``[ \t]`` not ``\s``, which would run on across newlines from every line
# start, and a call opening a block is spotted by its ``) {`` alone, since ``\w+\(.*\)`` retries
# from every character of a long line. Both were quadratic: seconds for 20,000 characters.
_CODE_LINE = re.compile(
    r"^[ \t]*(?:def |class |import \w|from [\w.]+ import |#include|function\b|const |let |var "
    r"|public |private |fn |func |package |SELECT\b|INSERT\b|UPDATE\b.*\bSET\b|return\b.*;"
    r"|if\s*\(.*\)\s*\{|for\s*\(.*\)|while\s*\(.*\)\s*\{|}\s*else\b)"
    r"|[;{][ \t\r]*$|^[ \t]*}[ \t\r]*$|=>|->\s*\w+\s*:|\)\s*\{",
    re.MULTILINE,
)
# Every alternative of ``_CODE_LINE`` contains one of these (it is case-sensitive): a text
# holding none of them has no code line, and that regex (each of its alternatives tried at
# every position) is not run. Most prompts hold none; finding one is a scan for literals.
_CODE_PIECES = (
    ";", "{", "}", "(", "=>", "->", "def ", "class ", "import ", "from ", "#include",
    "function", "const ", "let ", "var ", "public ", "private ", "fn ", "func ", "package ",
    "SELECT", "INSERT", "UPDATE",
)
_CODE_PIECE = re.compile("|".join(map(re.escape, _CODE_PIECES)))


@dataclass(frozen=True, slots=True)
class Score:
    """A request's complexity: ``total`` (0-100), its ``signals`` and a tier floor."""

    total: int
    signals: dict[str, int]
    min_tier: int = 1


_new_score = frozen_constructor(Score)


def _token_points(tokens: int) -> int:
    if tokens <= 64:
        return 5
    return min(35, 5 + round(30 * math.log2(tokens / 64) / 7))


def _reasons(low: str) -> bool:
    """Whether lower-cased ``low`` asks for reasoning (``_REASONING``)."""
    return any(word in low for word in _REASONING_WORDS) and _REASONING.search(low) is not None


def _has_code(text: str) -> bool:
    if _FENCE.search(text):
        return True
    if _CODE_PIECE.search(text) is None:
        return False  # no alternative of _CODE_LINE can match: its scan is skipped
    return len(_CODE_LINE.findall(text, 0, 20_000)) >= 2


def score_request(request: ChatRequest) -> Score:
    """Score ``request`` by the documented heuristic.

    >>> from engine.messages import ChatRequest, Message, TextPart
    >>> ask = lambda text: ChatRequest(messages=(Message("user", (TextPart(text),)),))
    >>> score_request(ask("What is the capital of France?")).total
    5
    >>> s = score_request(ask("Analyze the trade-offs, step by step."))
    >>> s.total, s.signals["reasoning"]
    (20, 15)
    """
    user_texts: list[str] = []
    other_chars = 0
    user_turns = 0
    for message in request.messages:
        if message.role == "user":
            user_turns += 1
        for part in message.parts:
            if isinstance(part, TextPart):
                if message.role == "user":
                    user_texts.append(part.text)
                else:
                    other_chars += len(part.text)
            elif isinstance(part, ToolResult):
                other_chars += len(part.content)
            elif isinstance(part, ToolCall):
                other_chars += len(part.name) + len(part.arguments)
    user_text = "\n".join(user_texts)
    system = request.system or ""
    tool_chars = sum(
        len(t.name) + len(t.description) + len(str(t.parameters)) for t in request.tools
    )
    tokens = (
        estimate_tokens(user_text)
        + estimate_tokens(system)
        + -(-(other_chars + tool_chars) // CHARS_PER_TOKEN)
    )

    signals = {
        "tokens": _token_points(tokens),
        "depth": min(15, 3 * max(0, user_turns - 1)),
        "system": min(10, estimate_tokens(system) // 50),
        "json": 10 if request.json_mode else 0,
        "tools": 15 if request.tools else 0,
        "code": 10 if _has_code(user_text) or _has_code(system) else 0,
        "reasoning": 15 if _reasons(user_text.lower()) else 0,
    }
    return _new_score(
        total=min(100, sum(signals.values())),
        signals=signals,
        min_tier=2 if request.tools else 1,
    )


def tier_for_score(score: Score, *, tier1_max: int, tier2_max: int) -> int:
    """The tier the thresholds give ``score``, raised to its floor.

    >>> tier_for_score(Score(31, {}), tier1_max=30, tier2_max=70)
    2
    >>> tier_for_score(Score(5, {}, min_tier=2), tier1_max=30, tier2_max=70)
    2
    """
    if score.total <= tier1_max:
        tier = 1
    elif score.total <= tier2_max:
        tier = 2
    else:
        tier = 3
    return max(tier, score.min_tier)
