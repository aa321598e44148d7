"""The complexity scorer (``engine.core.routing.scoring``): the documented signal table exactly,
the cap, the
thresholds, Hypothesis properties over arbitrary requests, and the routing headers end to end.
"""

from __future__ import annotations

import doctest
import math
import time
from typing import Any

import httpx
import numpy as np
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from router_harness import make_config
from support_health import CpuSplit, cpu_split
from support_routing import model_entry, open_router_client

from engine.core.config import Config
from engine.core.routing import scoring
from engine.core.routing.decide import Thresholds, decide_route
from engine.core.routing.learned import Belief
from engine.core.routing.scoring import Score, score_request, tier_for_score
from engine.messages import (
    ChatRequest,
    Message,
    TextPart,
    Tool,
    ToolCall,
    ToolResult,
    estimate_tokens,
)
from engine.runtime.models import Models, load_models
from engine.runtime.policy import RoutingPolicy
from engine.testing.fake_upstream import FakeUpstream

SIGNALS = {"tokens", "depth", "system", "json", "tools", "code", "reasoning"}
PLAIN = "What is the capital of France?"
WEATHER = Tool("get_weather", "Weather for a city", {"type": "object"})


def turn(role: str, text: str) -> Message:
    return Message(role, (TextPart(text),))  # type: ignore[arg-type]


def ask(text: str = PLAIN, **fields: object) -> ChatRequest:
    return ChatRequest(messages=(turn("user", text),), **fields)  # type: ignore[arg-type]


def conversation(user_turns: int) -> ChatRequest:
    messages: list[Message] = []
    for i in range(user_turns):
        if i:
            messages.append(turn("assistant", "ok"))
        messages.append(turn("user", f"message {i}"))
    return ChatRequest(messages=tuple(messages))


def signal(request: ChatRequest, name: str) -> int:
    return score_request(request).signals[name]


# ---- each signal of the documented table -------------------------------------------------------


def test_a_plain_question_scores_only_the_token_floor() -> None:
    score = score_request(ask())
    assert set(score.signals) == SIGNALS
    assert score.signals == {
        "tokens": 5,
        "depth": 0,
        "system": 0,
        "json": 0,
        "tools": 0,
        "code": 0,
        "reasoning": 0,
    }
    assert score.total == 5
    assert score.min_tier == 1


@pytest.mark.parametrize(
    ("chars", "points"),
    [
        (0, 5),
        (4 * 64, 5),  # 64 tokens: still the floor
        (4 * 128, 9),  # one doubling: +30/7, rounded
        (4 * 1024, 22),
        (4 * 8192, 35),  # the ceiling
        (4 * 100_000, 35),
    ],
)
def test_token_count_points(chars: int, points: int) -> None:
    assert signal(ask("a" * chars), "tokens") == points


def test_token_count_covers_system_and_other_turns() -> None:
    long = "a" * (4 * 1024)
    assert signal(ask("hi", system=long), "tokens") == signal(ask(long), "tokens")
    request = ChatRequest(messages=(turn("user", "hi"), turn("assistant", long), turn("user", "x")))
    assert signal(request, "tokens") > 5


@pytest.mark.parametrize(
    ("user_turns", "points"), [(1, 0), (2, 3), (3, 6), (5, 12), (6, 15), (20, 15)]
)
def test_conversation_depth_points(user_turns: int, points: int) -> None:
    assert signal(conversation(user_turns), "depth") == points


@pytest.mark.parametrize(
    ("system_chars", "points"),
    [(0, 0), (4 * 49, 0), (4 * 50, 1), (4 * 250, 5), (4 * 500, 10), (4 * 5000, 10)],
)
def test_system_prompt_length_points(system_chars: int, points: int) -> None:
    request = ask("hi", system="s" * system_chars if system_chars else None)
    assert signal(request, "system") == points


def test_json_mode_adds_10() -> None:
    plain, json = score_request(ask()), score_request(ask(json_mode=True))
    assert json.signals["json"] == 10
    assert json.total == plain.total + 10


def test_tools_add_15_and_raise_the_tier_floor_to_2() -> None:
    plain, tools = score_request(ask()), score_request(ask(tools=(WEATHER,)))
    assert tools.signals["tools"] == 15
    assert tools.min_tier == 2
    assert tools.total - plain.total == 15 + tools.signals["tokens"] - plain.signals["tokens"]
    assert tier_for_score(tools, tier1_max=30, tier2_max=70) == 2
    assert tier_for_score(tools, tier1_max=100, tier2_max=100) == 2


@pytest.mark.parametrize(
    "text",
    [
        "Why does this fail?\n```python\nprint(1)\n```",
        "def f():\nimport os",
        "int x = 1;\nint y = 2;",
        "for (i = 0; i < n; i++) {\n}",
    ],
)
def test_code_in_the_prompt_adds_10(text: str) -> None:
    assert signal(ask(text), "code") == 10


def test_code_in_the_system_prompt_counts() -> None:
    assert signal(ask("hi", system="Follow this:\n```\nx = 1\n```"), "code") == 10


@pytest.mark.parametrize("text", [PLAIN, "I like def and class as words.", "Hello; world"])
def test_prose_is_not_code(text: str) -> None:
    assert signal(ask(text), "code") == 0


_CODE_BITS = ["def ", "class ", "import os", "from a.b import c", "#include", "function",
              "const ", "let ", "var ", "public ", "private ", "fn ", "func ", "package ",
              "SELECT", "INSERT", "UPDATE x SET", "return 1;", "if (a) {", "for (x)",
              "while (y) {", "} else", ";", "{", "}", "=>", "-> int:", ") {", "```", "~~~",
              "\n", " ", "\t", "\r", "(", ")", "if", "for", "return", "-", ">", "=", "x", "é"]


@given(st.lists(st.sampled_from(_CODE_BITS), max_size=12).map("".join))
def test_code_check_skips_only_texts_that_cannot_match(text: str) -> None:
    # _has_code skips the line regex on a text holding none of _CODE_PIECES: the same answer
    whole = bool(scoring._FENCE.search(text)) or len(
        scoring._CODE_LINE.findall(text, 0, 20_000)) >= 2
    assert scoring._has_code(text) == whole


@pytest.mark.parametrize(
    "text",
    [
        "Explain it step by step.",
        "Think step-by-step",
        "Please analyze this contract.",
        "ANALYSE the logs",
        "What are the trade-offs?",
        "What are the tradeoffs of caching?",
        "Compare Rust and Go.",
        "Prove that sqrt(2) is irrational.",
    ],
)
def test_reasoning_cues_add_15(text: str) -> None:
    assert signal(ask(text), "reasoning") == 15


def test_reasoning_cue_in_a_later_user_turn_counts() -> None:
    request = ChatRequest(
        messages=(turn("user", "hi"), turn("assistant", "hello"), turn("user", "now analyze it"))
    )
    assert signal(request, "reasoning") == 15


def test_spec_docstring_example() -> None:
    score = score_request(ask("Analyze the trade-offs, step by step."))
    assert (score.total, score.signals["reasoning"]) == (20, 15)


def test_every_signal_at_its_maximum_is_capped_at_100() -> None:
    messages: list[Message] = []
    for _ in range(6):
        messages += [turn("user", "Analyze it step by step."), turn("assistant", "ok")]
    messages.append(turn("user", "```python\nprint(1)\n```\n" + "a" * (4 * 9000)))
    request = ChatRequest(
        messages=tuple(messages), system="s" * 4000, json_mode=True, tools=(WEATHER,)
    )
    score = score_request(request)

    assert score.signals == {
        "tokens": 35,
        "depth": 15,
        "system": 10,
        "json": 10,
        "tools": 15,
        "code": 10,
        "reasoning": 15,
    }
    assert sum(score.signals.values()) == 110
    assert score.total == 100


def test_tool_traffic_counts_towards_tokens() -> None:
    call = ToolCall("c1", "search", '{"q": "' + "x" * 4000 + '"}')
    request = ChatRequest(
        messages=(
            turn("user", "find it"),
            Message("assistant", (call,)),
            Message("user", (ToolResult("c1", "y" * 4000),)),
        )
    )
    assert signal(request, "tokens") > 5


@pytest.mark.parametrize(
    "text",
    [
        "\n" * 20_000,
        " \n" * 10_000,
        "a" * 20_000,
        "x = f(" + "a" * 20_000,
        "a(" * 10_000,
        "f(a) + " * 3_000,
        ";" + " " * 20_000,
        "}\n" * 10_000,
    ],
)
def test_scoring_is_fast_on_pathological_text(text: str) -> None:
    """The scorer runs in the event loop on every request: a quadratic regex here stalls every
    connection (these inputs took 1-8 s each before the code pattern was made linear, a
    thousand times a plain text of their length). Not a speed test: the CPU time is compared
    with that of prose of the same length, each the least of several runs, so a loaded
    machine slows both alike; linear scoring stays within a few times the prose."""
    prose = ("The quick brown fox jumps over the lazy dog. " * (len(text) // 45 + 1))[:len(text)]
    ratio = _least_cpu(ask(text, system=text)) / _least_cpu(ask(prose, system=prose))
    assert ratio <= 25, ratio


def _least_cpu(request: ChatRequest, runs: int = 5) -> float:
    """The least CPU time, over ``runs`` runs, this process spent scoring ``request``."""
    spent = []
    for _ in range(runs):
        started = time.process_time()
        score_request(request)
        spent.append(time.process_time() - started)
    return max(min(spent), 1e-6)


def test_estimate_tokens() -> None:
    assert [estimate_tokens(t) for t in ("", "a", "abcd", "abcde", "a" * 400)] == [0, 1, 1, 2, 100]


# ---- thresholds --------------------------------------------------------------------------------


@pytest.mark.parametrize(("total", "tier"), [(0, 1), (30, 1), (31, 2), (70, 2), (71, 3), (100, 3)])
def test_default_thresholds(total: int, tier: int) -> None:
    assert tier_for_score(Score(total, {}), tier1_max=30, tier2_max=70) == tier


@pytest.mark.parametrize(("total", "tier"), [(10, 1), (11, 2), (20, 2), (21, 3)])
def test_custom_thresholds(total: int, tier: int) -> None:
    assert tier_for_score(Score(total, {}), tier1_max=10, tier2_max=20) == tier


def test_thresholds_come_from_the_config() -> None:
    config = make_config(
        {
            "models": [
                {"name": n, "provider": "openai", "model": n, "tier": t}
                for n, t in (("s", 1), ("m", 2), ("l", 3))
            ],
            "classifier": {"tier1_max": 4, "tier2_max": 19},
        }
    )
    assert decide_route(ask(), config).tier == 2  # 5 > tier1_max
    assert decide_route(ask("Analyze it step by step."), config).tier == 3  # 20 > tier2_max
    default = make_config({"models": [{"name": "s", "provider": "openai", "model": "s"}]})
    assert decide_route(ask(), default).tier == 1


class FixedOpinion:
    """A trained router whose probability is given: decide_route's blending, by hand."""

    def __init__(self, p: float, boundary_p: float | None = None) -> None:
        self.p = p
        self.boundary_p = boundary_p

    def score(self, request: ChatRequest, *, heuristic: Score | None = None) -> float:
        return self.p

    def assess(self, request: ChatRequest, *, heuristic: Score | None = None) -> Belief:
        return Belief(self.p, math.log(self.p / (1 - self.p)) if 0 < self.p < 1 else 0.0,
                      np.zeros(0))


def test_the_one_rule_blends_opinions_under_the_thresholds_in_force() -> None:
    config = make_config({"models": [{"name": n, "provider": "openai", "model": n, "tier": t}
                                     for n, t in (("s", 1), ("m", 2), ("l", 3))],
                          "learned": {"model_weight": 0.5, "sidecar_weight": 0.5}})
    hard = ask("Analyze it step by step.")  # heuristic 20
    assert decide_route(hard, config).tier == 1
    assert decide_route(hard, config, thresholds=Thresholds(19, 70)).tier == 2
    # p = 0.2 at a boundary_p of 0.2 is the tier-1 boundary (30): (20 + 30) / 2 = 25.
    blended = decide_route(hard, config, learned=FixedOpinion(0.2, boundary_p=0.2))
    assert (blended.score.total, blended.router, blended.tier) == (25, "heuristic+learned", 1)
    # Calibration moves the cut, never the score: at tier1_max 21 the score is still 25 (p =
    # 0.2 sits on the *configured* boundary, 30), and 25 > 21 is tier 2.
    moved = decide_route(hard, config, thresholds=Thresholds(21, 70),
                         learned=FixedOpinion(0.2, boundary_p=0.2))
    assert (moved.score.total, moved.value, moved.tier) == (25, 25.0, 2)
    # The sidecar (threshold 0.5 at the boundary): p = 1 is 100; (25 + 100) / 2 = 62.5 -> 62.
    both = decide_route(hard, config, learned=FixedOpinion(0.2, boundary_p=0.2), sidecar_p=1.0)
    assert (both.score.total, both.router, both.tier) == (62, "heuristic+learned+sidecar", 2)
    # A pin and a workflow op's tier are not blended.
    assert decide_route(hard, config, tier=3, learned=FixedOpinion(0.0)).router == "workflow"


async def test_the_policy_decides_by_the_one_rule_with_its_thresholds() -> None:
    config = make_config({"models": [{"name": "s", "provider": "openai", "model": "s",
                                      "tier": 1}, {"name": "m", "provider": "openai",
                                                   "model": "m", "tier": 2}]})
    policy = RoutingPolicy(config)
    hard = ask("Analyze it step by step.")
    assert policy.decide(hard) == await policy.route(hard) == decide_route(hard, config)
    policy.tier1_max = 19  # as calibration does
    assert policy.decide(hard).tier == (await policy.route(hard)).tier == 2
    assert policy.decide(hard) == decide_route(hard, config, thresholds=Thresholds(19, 70))


def test_decide_examples() -> None:
    import engine.core.routing.decide

    assert doctest.testmod(engine.core.routing.decide).failed == 0


# ---- properties --------------------------------------------------------------------------------

TEXT = st.text(max_size=300) | st.sampled_from(
    ["", PLAIN, "def f():\n  return 1;", "```\ncode\n```", "a" * 5000, "why does it fail?"]
)
TOOLS = st.lists(st.builds(Tool, st.text(min_size=1, max_size=10)), max_size=2).map(tuple)


@st.composite
def requests(draw: st.DrawFn) -> ChatRequest:
    roles = draw(st.lists(st.sampled_from(["user", "assistant"]), min_size=1, max_size=8))
    messages = tuple(turn(role, draw(TEXT)) for role in roles)
    return ChatRequest(
        messages=messages,
        system=draw(st.none() | TEXT),
        json_mode=draw(st.booleans()),
        tools=draw(TOOLS),
    )


@given(requests())
def test_score_is_the_capped_sum_of_bounded_signals(request: ChatRequest) -> None:
    score = score_request(request)
    assert 0 <= score.total <= 100
    assert score.total == min(100, sum(score.signals.values()))
    assert 5 <= score.signals["tokens"] <= 35
    assert 0 <= score.signals["depth"] <= 15
    assert 0 <= score.signals["system"] <= 10
    assert score.signals["json"] in (0, 10)
    assert score.signals["tools"] in (0, 15)
    assert score.signals["code"] in (0, 10)
    assert score.signals["reasoning"] in (0, 15)


@given(
    requests(),
    st.sampled_from(["step by step", "Analyze this.", "What are the trade-offs?"]),
    st.booleans(),
)
def test_adding_a_reasoning_cue_never_lowers_the_score(
    request: ChatRequest, cue: str, new_turn: bool
) -> None:
    if new_turn:
        messages = (*request.messages, turn("user", cue))
    else:
        *rest, last = request.messages
        messages = (*rest, turn(last.role, last.text + "\n" + cue))
    cued = ChatRequest(
        messages=messages, system=request.system, json_mode=request.json_mode, tools=request.tools
    )
    before, after = score_request(request), score_request(cued)
    assert after.total >= before.total
    if new_turn or request.messages[-1].role == "user":
        assert after.signals["reasoning"] == 15


@given(requests(), st.integers(0, 100), st.integers(0, 100))
def test_tools_always_give_tier_2_or_more(request: ChatRequest, a: int, b: int) -> None:
    with_tools = ChatRequest(messages=request.messages, system=request.system, tools=(WEATHER,))
    tier = tier_for_score(score_request(with_tools), tier1_max=min(a, b), tier2_max=max(a, b))
    assert tier >= 2


@given(st.integers(0, 8_000), st.integers(0, 8_000))  # 8,000 words: past the 35-point ceiling
def test_score_is_monotone_in_tokens(a: int, b: int) -> None:
    short, long = sorted((a, b))
    assert score_request(ask("word " * short)).total <= score_request(ask("word " * long)).total


@given(st.integers(0, 100), st.integers(0, 100), st.integers(0, 100))
def test_tier_is_monotone_in_score(x: int, y: int, t: int) -> None:
    low, high = sorted((x, y))
    tiers = [tier_for_score(Score(s, {}), tier1_max=min(t, 70), tier2_max=70) for s in (low, high)]
    assert tiers[0] <= tiers[1]
    assert all(1 <= tier <= 3 for tier in tiers)


# ---- the routing headers, end to end -----------------------------------------------------------


async def test_routing_headers_follow_the_score(fake_upstream: FakeUpstream) -> None:
    models = [
        model_entry(fake_upstream, name, tier=tier)
        for name, tier in (("small", 1), ("medium", 2), ("large", 3))
    ]
    async with open_router_client(models, classifier={"tier1_max": 10, "tier2_max": 20}) as client:
        cases = [
            (PLAIN, {}, 5, 1, "small"),
            ("Analyze it step by step.", {}, 20, 2, "medium"),
            ("Analyze this:\n```\nx = 1\n```", {}, 30, 3, "large"),
            (PLAIN, {"response_format": {"type": "json_object"}}, 15, 2, "medium"),
        ]
        for text, extra, score, tier, model in cases:
            response = await client.chat(text, **extra)
            assert response.status_code == 200, response.text
            assert response.headers["x-llm-router-score"] == str(score), text
            assert response.headers["x-llm-router-tier"] == str(tier), text
            assert response.headers["x-llm-router-model"] == model, text
            assert response.headers["x-llm-router-cache"] == "MISS"

        tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
        response = await client.chat(PLAIN, tools=tools)
        assert response.headers["x-llm-router-tier"] == "2"  # the tools floor, though score < 20
        assert int(response.headers["x-llm-router-score"]) <= 20

        anthropic_style = await client.messages("Analyze it step by step.")
        assert anthropic_style.headers["x-llm-router-score"] == "20"
        assert anthropic_style.headers["x-llm-router-model"] == "medium"


# ---- long prompts do not hold up the router ----------------------------------------------------

NORMAL = "Analyze the trade-offs of tabs and spaces, step by step."


def long_prompt(n: int, size: int = 900_000) -> str:
    """About ``size`` characters of prose and code, different for each ``n``."""
    block = (f"Paragraph {n}: compare the designs and explain why one is better.\n"
             "def handler(event):\n    return process(event) + 1\n")
    return (block * (size // len(block) + 1))[:size]


async def expected_route(config: Config, policy_models: Models, text: str) -> tuple[str, str]:
    """The (score, tier) the routing policy gives ``text``, computed here in the test."""
    policy = RoutingPolicy(config, learned=policy_models.learned)
    route = await policy.route(ChatRequest(messages=(turn("user", text),)))
    assert route.score is not None
    return str(route.score.total), str(route.tier)


async def test_long_prompts_leave_the_loop_free_and_routing_unchanged(
    fake_upstream: FakeUpstream,
) -> None:
    """Five ~900 KB prompts at once: scoring, the trained router's features and the cache's
    lookup (its partition already holds an entry, so a long prompt is compared with it) are
    bounded or done in worker threads, so the event loop's thread spends on routing them
    little more than on carrying the same prompts straight to the fake upstream (CPU time,
    which a loaded machine leaves as it is; seconds of this work on the loop would be many
    times that); and every prompt, normal or long, is routed exactly as the policy routes it."""
    models = [model_entry(fake_upstream, "small", tier=1),
              model_entry(fake_upstream, "large", tier=2)]
    prompts = [long_prompt(n) for n in range(5)]
    async with open_router_client(
        models, cache={"enabled": True}, learned={"model": "builtin", "model_weight": 0.5},
        classifier={"tier1_max": 100, "tier2_max": 100},  # one tier: one cache partition
    ) as client:
        config = client.router.config
        loaded = await trio.to_thread.run_sync(load_models, config)
        normal = await client.chat(NORMAL)  # a cache entry in the partition the long ones use
        replies: dict[int, Any] = {}

        async def send(n: int) -> None:
            replies[n] = await client.chat(prompts[n])

        with cpu_split() as routed:
            async with trio.open_nursery() as nursery:
                for n in range(5):
                    nursery.start_soon(send, n)
        again = await client.chat(NORMAL)

        assert normal.status_code == 200 and again.status_code == 200
        assert again.headers["x-llm-router-cache"] == "HIT"
        expected = await expected_route(config, loaded, NORMAL)
        for reply in (normal, again):
            assert (reply.headers["x-llm-router-score"],
                    reply.headers["x-llm-router-tier"]) == expected
        for n, reply in replies.items():
            assert reply.status_code == 200, reply.text[:200]
            assert reply.headers["x-llm-router-cache"] == "MISS"
            assert (reply.headers["x-llm-router-score"], reply.headers["x-llm-router-tier"]
                    ) == await expected_route(config, loaded, prompts[n])
    carried = await carry_straight(fake_upstream.base_url("small", "openai"), prompts)
    # Routed, the prompts cross the loop twice (client to router, router to fake) where
    # carried straight they cross once: about twice the CPU, with room for a garbage
    # collection. Scoring a long prompt on the loop as it once was took seconds.
    assert routed.loop <= 6 * carried.loop, (routed, carried)


async def carry_straight(base_url: str, prompts: list[str]) -> CpuSplit:
    """The CPU split of sending ``prompts`` at once straight to an OpenAI-style ``base_url``
    (the fake upstream) and reading the answers: what carrying them costs, without a router."""
    async with httpx.AsyncClient(timeout=60) as http:

        async def send(text: str) -> None:
            body = {"model": "up-small", "messages": [{"role": "user", "content": text}]}
            response = await http.post(base_url + "/chat/completions", json=body)
            assert response.status_code == 200, response.text[:200]

        with cpu_split() as carried:
            async with trio.open_nursery() as nursery:
                for text in prompts:
                    nursery.start_soon(send, text)
    return carried


REASONING_PHRASES = [
    "step by step", "step-by-step", "analyse", "analyzing", "tradeoffs", "trade-off",
    "pros and cons", "prove", "proof", "derive", "derivation", "explain why", "justify",
    "reasoning about", "reason through", "think through", "think carefully", "think hard",
    "compare", "comparison", "evaluate", "critique", "in-depth", "in depth", "rigorously",
    "implications", "chain of thought", "why does", "what would happen if", "design an",
    "architecture",
]


@given(st.lists(st.one_of(st.sampled_from(REASONING_PHRASES),
                          st.sampled_from(scoring._REASONING_WORDS),
                          st.text(alphabet="abcdeghinoprstuvy -_.\n", max_size=12)),
                max_size=8))
def test_the_reasoning_prefilter_never_changes_the_verdict(pieces: list[str]) -> None:
    low = "".join(pieces).lower()
    assert scoring._reasons(low) == (scoring._REASONING.search(low) is not None)


def test_every_reasoning_phrase_passes_the_prefilter() -> None:
    for phrase in REASONING_PHRASES:
        assert scoring._REASONING.search(phrase), phrase
        assert scoring._reasons(phrase), phrase
