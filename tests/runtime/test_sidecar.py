"""The routing policy's outside opinions over real sockets: the sidecar classifier, the trained
router's blend, and routing on the whole conversation.

The sidecar here is a real HTTP server on loopback (a raw ASGI app served by hypercorn, like
``fake_upstream``) that records every call and answers as the test scripts it: a score, a
delay, an error status or a malformed body. Layout: ``a1`` tier 1, ``b1`` tier 2, ``c1`` tier
3 on the fake upstream, the documented thresholds (30 / 70) and ``learned.threshold`` 0.5, so a
sidecar score ``p`` lands on the 0-100 scale at ``60 p`` up to 0.5 and ``30 + 140 (p - 0.5)``
above it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from hypothesis import given
from hypothesis import strategies as st
from router_harness import make_config
from support_routing import RouterClient, model_entry, open_router_client, wait_for

from engine.core.config import LearnedConfig
from engine.core.routing.learned import DENSE_NAMES, FeatureConfig, LearnedRouter
from engine.core.routing.scoring import score_request
from engine.messages import ChatRequest, Message, TextPart
from engine.runtime.policy import RoutingPolicy
from engine.testing.fake_upstream import FakeUpstream, refused_url

ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]

# Calls that must succeed get a budget no GC pause or busy CI machine can break (a full
# collection in this test process takes tens of milliseconds); the budget test sets its own.
BUDGET_MS = 2000
SHORT_BUDGET_MS = 100
HARD = (
    "Analyze the trade-offs between optimistic and pessimistic locking in a sharded database, "
    "step by step: compare throughput under contention, explain the failure modes of each, "
    "and sketch the retry loop. Then derive the abort rate as a function of the write skew "
    "and say which one you would choose for a ledger with hot accounts, and why:\n"
    "```python\nwhile True:\n    try_commit()\n```"
)
FOLLOW_UP = "and why?"


# ---- a sidecar on loopback -----------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """How the sidecar answers one call."""

    body: Any = None  # JSON-encoded unless ``raw`` is given
    raw: bytes | None = None
    status: int = 200
    delay: float = 0.0


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeSidecar:
    """A RouteLLM-style classifier: ``POST /classify`` answers the next scripted
    :class:`Answer` (default ``{"score": 0.5}``) and records every call."""

    url: str = ""
    calls: list[Call] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    default: Answer = Answer({"score": 0.5})
    abandoned: int = 0  # slow answers the caller hung up on
    closing: trio.Event = field(default_factory=trio.Event)

    @property
    def classify_url(self) -> str:
        return self.url + "/classify"

    def answer(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    async def __call__(self, scope: ASGIMessage, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        self.calls.append(Call(
            method=scope["method"], path=scope["path"],
            headers={k.decode().lower(): v.decode() for k, v in scope["headers"]},
            body=orjson.loads(raw) if raw else None,
        ))
        answer = self.answers.pop(0) if self.answers else self.default
        if answer.delay and await _hold(receive, self.closing, answer.delay):
            self.abandoned += 1
            return
        payload = answer.raw if answer.raw is not None else orjson.dumps(answer.body)
        await send({"type": "http.response.start", "status": answer.status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


async def _hold(receive: Receive, closing: trio.Event, delay: float) -> bool:
    """Wait ``delay`` seconds; True if the caller hung up (or the server closed) first."""
    async with trio.open_nursery() as nursery:

        async def stop_after(wait: Callable[[], Awaitable[object]]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        nursery.start_soon(stop_after, disconnected)
        nursery.start_soon(stop_after, closing.wait)
        await trio.sleep(delay)
        nursery.cancel_scope.cancel()
        return False
    return True


@asynccontextmanager
async def open_sidecar() -> AsyncIterator[FakeSidecar]:
    sidecar = FakeSidecar()
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = logging.getLogger(__name__)
    config.graceful_timeout = 1.0
    async with trio.open_nursery() as nursery:
        app = cast(Any, sidecar)  # its messages are plain mappings, not hypercorn's TypedDicts
        binds = await nursery.start(
            partial(serve, app, config, shutdown_trigger=sidecar.closing.wait)
        )
        sidecar.url = binds[0]
        try:
            yield sidecar
        finally:
            sidecar.closing.set()


# ---- routers -------------------------------------------------------------------------------------


def layout(fake: FakeUpstream) -> list[dict[str, Any]]:
    return [model_entry(fake, "a1", tier=1), model_entry(fake, "b1", tier=2),
            model_entry(fake, "c1", tier=3)]


@asynccontextmanager
async def open_client(fake: FakeUpstream, url: str | None, **learned: Any
                      ) -> AsyncIterator[RouterClient]:
    settings: dict[str, Any] = {"sidecar_timeout_ms": BUDGET_MS} | learned
    if url is not None:
        settings["sidecar_url"] = url
    async with open_router_client(layout(fake), learned=settings) as client:
        yield client


@pytest.fixture
async def sidecar() -> AsyncIterator[FakeSidecar]:
    async with open_sidecar() as running:
        yield running


@pytest.fixture
async def client(fake_upstream: FakeUpstream, sidecar: FakeSidecar
                 ) -> AsyncIterator[RouterClient]:
    async with open_client(fake_upstream, sidecar.classify_url) as running:
        yield running


def heuristic(text: str) -> int:
    """The heuristic's own score of a one-message request."""
    return score_request(ChatRequest(messages=(Message("user", (TextPart(text),)),))).total


def on_scale(p: float) -> float:
    """A sidecar / trained-router probability on the 0-100 scale of this layout."""
    return 60 * p if p <= 0.5 else 30 + 140 * (p - 0.5)


def decided(response: Any) -> tuple[int, int, str]:
    """(score, tier, router) from a response's routing headers."""
    assert response.status_code == 200, response.text
    h = response.headers
    return int(h["x-llm-router-score"]), int(h["x-llm-router-tier"]), h["x-llm-router-router"]


async def sidecar_entry(client: RouterClient) -> dict[str, Any]:
    return (await client.backends())["sidecar"]


# ---- the sidecar decides with the heuristic ------------------------------------------------------


async def test_sidecar_score_moves_the_decision(client: RouterClient, sidecar: FakeSidecar
                                                ) -> None:
    # "hello" scores 5 on its own (tier 1). The sidecar says 0.9: 30 + 140 * 0.4 = 86 on the
    # 0-100 scale, blended 0.7 * 86 + 0.3 * 5 = 61.7.
    sidecar.answer(Answer({"score": 0.9}))
    assert decided(await client.chat("hello")) == (62, 2, "heuristic+sidecar")
    # A RouteLLM-style adapter may answer p_strong instead; 1.0 -> 0.7 * 100 + 1.5.
    sidecar.answer(Answer({"p_strong": 1.0}))
    assert decided(await client.chat("hello")) == (72, 3, "heuristic+sidecar")
    # And a confident "the cheap model will do" pulls a hard prompt down to tier 1.
    assert heuristic(HARD) > 30
    sidecar.answer(Answer({"score": 0.0}))
    assert decided(await client.chat(HARD)) == (round(0.3 * heuristic(HARD)), 1,
                                                "heuristic+sidecar")
    entry = await sidecar_entry(client)
    assert (entry["status"], entry["failures"], entry["total_requests"]) == ("healthy", 0, 3)


async def test_payload_is_the_documented_wire_format(client: RouterClient,
                                                     sidecar: FakeSidecar) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is a monad?"},
        {"role": "assistant", "content": "A monoid in the category of endofunctors."},
        {"role": "user", "content": [{"type": "text", "text": "and"},
                                     {"type": "text", "text": "why?"}]},
    ]
    response = await client.request("POST", "/v1/chat/completions",
                                    json={"model": "auto", "messages": messages})
    assert response.status_code == 200, response.text

    [call] = sidecar.calls
    assert (call.method, call.path) == ("POST", "/classify")
    assert call.headers["content-type"] == "application/json"
    assert call.body == {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is a monad?"},
            {"role": "assistant", "content": "A monoid in the category of endofunctors."},
            {"role": "user", "content": "and\nwhy?"},
        ],
        "prompt": "and\nwhy?",
    }


async def test_anthropic_requests_reach_the_sidecar_too(client: RouterClient,
                                                        sidecar: FakeSidecar) -> None:
    sidecar.answer(Answer({"score": 0.9}))
    response = await client.messages("hello", system="Be brief.")
    assert decided(response) == (62, 2, "heuristic+sidecar")
    assert sidecar.calls[0].body == {
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "hello"}],
        "prompt": "hello",
    }


async def test_pinned_requests_do_not_ask_the_sidecar(client: RouterClient,
                                                      sidecar: FakeSidecar) -> None:
    assert decided(await client.chat("hello", model="c1"))[1:] == (3, "pinned")
    assert sidecar.calls == []


async def test_zero_weight_does_not_ask_the_sidecar(fake_upstream: FakeUpstream,
                                                    sidecar: FakeSidecar) -> None:
    async with open_client(fake_upstream, sidecar.classify_url, sidecar_weight=0) as client:
        assert decided(await client.chat("hello")) == (5, 1, "heuristic")
    assert sidecar.calls == []


async def test_routing_and_backends_describe_the_sidecar(client: RouterClient) -> None:
    state = (await client.request("GET", "/v1/routing")).json()
    assert state["router"] == "heuristic+sidecar"
    assert state["sidecar"]["name"] == "sidecar"
    entry = await sidecar_entry(client)
    expected = {"name": "sidecar", "status": "healthy", "in_flight": 0, "latency_ms": 0,
                "total_requests": 0, "kind": "sidecar", "failures": 0, "detail": None}
    assert {key: entry.get(key) for key in expected} == expected


# ---- failures: the heuristic decides alone -------------------------------------------------------


async def test_slow_sidecar_is_cut_at_its_budget(fake_upstream: FakeUpstream,
                                                 sidecar: FakeSidecar) -> None:
    """The sidecar would answer in an hour: every request is answered all the same, by the
    heuristic alone, and the sidecar was hung up on unanswered. A router that waited past
    its budget would never answer within the test (the client gives up after 10 s)."""
    sidecar.answer(Answer({"score": 1.0}, delay=3600), Answer({"score": 1.0}, delay=3600))
    async with open_client(fake_upstream, sidecar.classify_url,
                           sidecar_timeout_ms=SHORT_BUDGET_MS) as client:
        with trio.fail_after(60):
            response = await client.chat("hello")
            streamed_response, streamed = await client.stream_chat("hello")
        entry = await sidecar_entry(client)

        async def hung_up_on_both() -> bool:
            return sidecar.abandoned == 2

        await wait_for(hung_up_on_both)

    assert decided(response) == (5, 1, "heuristic")
    assert decided(streamed_response) == (5, 1, "heuristic")
    assert streamed[-1] == "[DONE]"
    assert len(sidecar.calls) == 2
    assert (entry["status"], entry["failures"], entry["total_requests"]) == ("degraded", 2, 2)
    assert "100 ms" in entry["detail"]
    assert entry["in_flight"] == 0


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(Answer({"error": "boom"}, status=500), id="status-500"),
        pytest.param(Answer({"score": 0.9}, status=404), id="status-404"),
        pytest.param(Answer(raw=b"{not json"), id="malformed-json"),
        pytest.param(Answer(raw=b""), id="empty-body"),
        pytest.param(Answer({"score": 1.5}), id="score-above-1"),
        pytest.param(Answer({"score": -0.2}), id="score-below-0"),
        pytest.param(Answer({"score": "0.9"}), id="score-string"),
        pytest.param(Answer({"score": True}), id="score-bool"),
        pytest.param(Answer({"score": None}), id="score-null"),
        pytest.param(Answer({"label": "strong"}), id="no-score"),
        pytest.param(Answer([0.9]), id="json-list"),
        pytest.param(Answer(0.9), id="bare-number"),
    ],
)
async def test_sidecar_errors_leave_the_heuristic_alone(
    client: RouterClient, sidecar: FakeSidecar, answer: Answer
) -> None:
    sidecar.answer(answer)
    assert decided(await client.chat("hello")) == (5, 1, "heuristic")
    entry = await sidecar_entry(client)
    assert (entry["status"], entry["failures"], entry["total_requests"]) == ("degraded", 1, 1)
    assert entry["detail"]


async def test_refused_connection_leaves_the_heuristic_alone(fake_upstream: FakeUpstream
                                                             ) -> None:
    async with open_client(fake_upstream, refused_url() + "/classify") as client:
        assert decided(await client.chat("hello")) == (5, 1, "heuristic")
        assert decided(await client.chat("hello again")) == (5, 1, "heuristic")
        entry = await sidecar_entry(client)
    assert (entry["status"], entry["failures"], entry["total_requests"]) == ("degraded", 2, 2)
    assert "unreachable" in entry["detail"]


async def test_a_password_in_the_sidecar_url_is_never_shown(
    fake_upstream: FakeUpstream, sidecar: FakeSidecar
) -> None:
    password = "Sidecar-Pass-9Kq2Zt7"
    url = sidecar.classify_url.replace("http://", f"http://svc:{password}@")
    async with open_client(fake_upstream, url) as client:
        for answer in (Answer(status=500), Answer({"label": "strong"})):
            sidecar.answer(answer)
            assert decided(await client.chat("hello")) == (5, 1, "heuristic")
            detail = (await sidecar_entry(client))["detail"]
            assert sidecar.classify_url in detail  # the address, without its user:password
        await client.request("GET", "/v1/routing")
    assert all(password.lower() not in seen.text.lower() for seen in client.seen)


async def test_sidecar_recovers_and_keeps_its_failure_count(client: RouterClient,
                                                            sidecar: FakeSidecar) -> None:
    sidecar.answer(Answer(status=503), Answer({"score": 0.9}))
    started = time.perf_counter()
    assert decided(await client.chat("hello"))[2] == "heuristic"
    assert decided(await client.chat("hello"))[2] == "heuristic+sidecar"
    elapsed_ms = (time.perf_counter() - started) * 1000
    entry = await sidecar_entry(client)
    assert (entry["status"], entry["failures"], entry["total_requests"]) == ("healthy", 1, 2)
    assert entry["detail"] is None
    assert 0 <= entry["latency_ms"] <= elapsed_ms  # a mean of real calls within the requests


async def test_streamed_requests_survive_a_failing_sidecar(client: RouterClient,
                                                           sidecar: FakeSidecar) -> None:
    sidecar.answer(Answer({"score": 0.9}, status=500))
    response, payloads = await client.stream_chat("hello")
    assert decided(response) == (5, 1, "heuristic")
    assert payloads[-1] == "[DONE]"


# ---- the score stays on the documented 0-100 scale -----------------------------------------------


def save_constant_router(path: Path, *, bias: float) -> Path:
    """A trained-router file whose p_strong is sigmoid(``bias``) for every conversation."""
    config = FeatureConfig(word_buckets=16, char_buckets=16)
    LearnedRouter(config=config, weights=np.zeros(config.size, np.float32), bias=bias,
                  dense_mean=np.zeros(len(DENSE_NAMES)),
                  dense_std=np.ones(len(DENSE_NAMES))).save(path)
    return path


@pytest.mark.parametrize("learned_bias", [None, -60.0, 60.0])
@pytest.mark.parametrize("weights", [(0.7, 0.5), (1.0, 1.0), (0.3, 0.0)])
async def test_score_header_stays_within_0_100(
    fake_upstream: FakeUpstream, sidecar: FakeSidecar, tmp_path: Path,
    learned_bias: float | None, weights: tuple[float, float],
) -> None:
    sidecar_weight, model_weight = weights
    extra: dict[str, Any] = {"sidecar_weight": sidecar_weight, "model_weight": model_weight}
    if learned_bias is not None:
        extra["model"] = str(save_constant_router(tmp_path / "router.json", bias=learned_bias))
    learned = model_weight > 0 and learned_bias is not None
    label = {(False, False): "heuristic", (True, False): "heuristic+learned",
             (True, True): "learned"}[(learned, learned and model_weight == 1)] + "+sidecar"
    async with open_client(fake_upstream, sidecar.classify_url, **extra) as client:
        for p in (0.0, 0.5, 1.0):
            for text in ("hi", HARD * 40):
                sidecar.answer(Answer({"score": p}))
                score, tier, router = decided(await client.chat(text))
                expected = float(heuristic(text))
                if learned:
                    assert learned_bias is not None
                    strong = 1.0 if learned_bias > 0 else 0.0
                    expected = (1 - model_weight) * expected + model_weight * on_scale(strong)
                expected = (1 - sidecar_weight) * expected + sidecar_weight * on_scale(p)
                assert 0 <= score <= 100
                assert score == round(expected)
                assert tier == (1 if score <= 30 else 2 if score <= 70 else 3)
                assert router == label


@given(
    p=st.floats(0, 1),
    threshold=st.floats(0.01, 0.99),
    tier1_max=st.integers(0, 100),
)
def test_probabilities_map_onto_0_100(p: float, threshold: float, tier1_max: int) -> None:
    config = make_config({"models": [{"name": "m", "provider": "openai", "model": "m"}],
                          "learned": {"threshold": threshold, "feedback_db": ":memory:"}})
    policy = RoutingPolicy(config)
    policy.tier1_max = tier1_max
    score = policy.to_score(p)
    assert 0 <= score <= 100
    if p <= threshold:
        assert score <= tier1_max + 1e-9
    else:
        assert score >= tier1_max - 1e-9
    assert policy.to_score(min(1.0, p + 0.01)) >= score - 1e-9
    assert policy.to_score(0.0) == 0
    assert policy.to_score(1.0) == pytest.approx(100)
    assert policy.to_score(threshold) == pytest.approx(tier1_max)


def test_default_time_budget_is_50_ms() -> None:
    assert LearnedConfig().sidecar_timeout_ms == 50


# ---- the whole conversation ----------------------------------------------------------------------


async def test_a_follow_up_to_a_hard_question_is_not_cheap(fake_upstream: FakeUpstream) -> None:
    conversation = [
        {"role": "user", "content": HARD},
        {"role": "assistant", "content": "Optimistic locking wins when conflicts are rare."},
        {"role": "user", "content": FOLLOW_UP},
    ]
    async with open_client(fake_upstream, None) as client:
        alone = await client.chat(FOLLOW_UP)
        followed = await client.request("POST", "/v1/chat/completions",
                                        json={"model": "auto", "messages": conversation})
        anthropic = await client.request(
            "POST", "/v1/messages",
            json={"model": "auto", "max_tokens": 64, "messages": conversation},
        )
    assert decided(alone) == (5, 1, "heuristic")
    score, tier, router = decided(followed)
    assert tier >= 2 and score > 30 and router == "heuristic"
    assert decided(anthropic) == (score, tier, router)
    assert followed.headers["x-llm-router-model"] != "a1"
