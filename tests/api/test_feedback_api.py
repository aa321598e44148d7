"""POST /v1/feedback and GET /v1/routing over real sockets: accepted shapes, invalid reports,
durability across a restart and threshold calibration seen through routing headers.

Layout: ``a1`` is tier 1, ``b1`` tier 2, ``c1`` tier 3, with the documented thresholds (30 / 70) and
a small calibration (``min_samples`` 5, ``max_step`` 5, ``band`` 10, target 0.8) so a test
needs only a handful of reports. Prompts of an exact heuristic score come from
:func:`prompt_scoring` (engine.core.routing.scoring is the sans-IO scorer the router itself runs).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from support_routing import RouterClient, model_entry, open_router_client, prompt_scoring

from engine.testing.fake_upstream import FakeUpstream

MIN_SAMPLES = 5
MAX_STEP = 5
LEARNED = {"min_samples": MIN_SAMPLES, "max_step": MAX_STEP, "band": 10,
           "target_quality": 0.8}


def layout(fake: FakeUpstream) -> list[dict[str, Any]]:
    return [model_entry(fake, "a1", tier=1), model_entry(fake, "b1", tier=2),
            model_entry(fake, "c1", tier=3)]


def open_client(fake: FakeUpstream, **learned: Any) -> Any:
    return open_router_client(layout(fake), learned=LEARNED | learned)


@pytest.fixture
async def client(fake_upstream: FakeUpstream) -> AsyncIterator[RouterClient]:
    async with open_client(fake_upstream) as running:
        yield running


async def feedback(client: RouterClient, body: Any) -> Any:
    response = await client.request("POST", "/v1/feedback", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def routing(client: RouterClient) -> dict[str, Any]:
    response = await client.request("GET", "/v1/routing")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def stored(client: RouterClient) -> list[tuple[Any, ...]]:
    """The feedback rows in the router's SQLite file (a second, read-only connection)."""
    path = Path(client.router.config.path(client.router.config.learned.feedback_db))
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(
            "SELECT request_id, score, tier, quality, model FROM feedback ORDER BY id"
        ).fetchall()
    finally:
        db.close()


# ---- accepted shapes ----------------------------------------------------------------------------


async def test_spec_shape_is_accepted(client: RouterClient) -> None:
    answer = await feedback(client, {"score": 0.2, "tier": 1, "quality": 0.9})

    assert answer["accepted"] is True
    assert answer["thresholds"] == {"tier1_max": 30, "tier2_max": 70}
    assert answer["changes"] == []
    summary = (await routing(client))["feedback"]
    assert summary == {"total": 1, "by_tier": {"1": {"reports": 1, "mean_quality": 0.9}}}
    assert stored(client) == [(None, 0.2, 1, 0.9, None)]


async def test_integer_values_are_accepted(client: RouterClient) -> None:
    await feedback(client, {"score": 1, "tier": 3, "quality": 0})
    assert stored(client) == [(None, 1.0, 3, 0.0, None)]


async def test_request_id_of_a_json_response(client: RouterClient) -> None:
    response = await client.chat(prompt_scoring(33))
    assert response.status_code == 200, response.text
    request_id = response.headers["x-llm-router-request-id"]
    assert response.headers["x-llm-router-score"] == "33"
    assert response.headers["x-llm-router-tier"] == "2"

    await feedback(client, {"request_id": request_id, "quality": 0.25})

    assert stored(client) == [(request_id, 0.33, 2, 0.25, "b1")]
    summary = (await routing(client))["feedback"]
    assert summary["by_tier"] == {"2": {"reports": 1, "mean_quality": 0.25}}


async def test_request_id_of_a_streamed_response(client: RouterClient) -> None:
    response, payloads = await client.stream_chat("and why?")
    assert response.status_code == 200
    assert payloads[-1] == "[DONE]"
    request_id = response.headers["x-llm-router-request-id"]
    score = int(response.headers["x-llm-router-score"])

    await feedback(client, {"request_id": request_id, "quality": 1})

    assert stored(client) == [(request_id, score / 100, 1, 1.0, "a1")]


async def test_request_id_wins_over_a_stated_score_and_tier(client: RouterClient) -> None:
    # The router knows what it did: a report naming a request is filed under that request.
    response = await client.chat("hello")
    request_id = response.headers["x-llm-router-request-id"]
    await feedback(client, {"request_id": request_id, "quality": 0.5, "score": 0.9, "tier": 3})
    assert stored(client) == [(request_id, 0.05, 1, 0.5, "a1")]


# ---- invalid feedback ---------------------------------------------------------------------------


async def assert_rejected(client: RouterClient, response: Any, param: str | None, *,
                          status: int = 400, code: str = "invalid_request") -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code
    assert error["param"] == param
    assert error["message"]
    assert response.headers["x-llm-router-request-id"]
    assert (await routing(client))["feedback"]["total"] == 0


async def test_unknown_request_id_is_404(client: RouterClient) -> None:
    response = await client.request(
        "POST", "/v1/feedback", json={"request_id": "0123456789abcdef01234567", "quality": 0.9}
    )
    await assert_rejected(client, response, "request_id", status=404, code="not_found")
    assert "0123456789abcdef01234567" in response.json()["error"]["message"]


async def test_a_huge_request_id_is_not_echoed_whole(client: RouterClient) -> None:
    huge = "r" * 500_000
    response = await client.request("POST", "/v1/feedback",
                                    json={"request_id": huge, "quality": 0.9})
    await assert_rejected(client, response, "request_id", status=404, code="not_found")
    message = response.json()["error"]["message"]
    assert len(message) < 400, len(message)
    assert "'rrrr" in message and "… (500000 characters)" in message


async def test_x_request_id_is_the_id_feedback_takes(client: RouterClient) -> None:
    response = await client.chat("hello")
    assert response.headers["x-request-id"] == response.headers["x-llm-router-request-id"]
    await feedback(client, {"request_id": response.headers["x-request-id"], "quality": 0.5})
    streamed, _ = await client.stream_chat("and why?")
    assert streamed.headers["x-request-id"] == streamed.headers["x-llm-router-request-id"]
    failed = await client.chat("hi", model="no-such-model")
    assert failed.headers["x-request-id"] == failed.headers["x-llm-router-request-id"]


async def test_a_percent_score_is_told_the_scale(client: RouterClient) -> None:
    response = await client.request("POST", "/v1/feedback",
                                    json={"score": 33, "tier": 2, "quality": 0.9})
    await assert_rejected(client, response, "score")
    message = response.json()["error"]["message"]
    assert "0 to 1" in message and "X-LLM-Router-Score / 100" in message
    assert "request_id" in message


async def test_a_report_naming_nothing_shows_both_forms(client: RouterClient) -> None:
    response = await client.request("POST", "/v1/feedback", json={"quality": 0.9})
    await assert_rejected(client, response, "request_id")
    assert '"request_id"' in response.json()["error"]["message"]


async def test_request_id_of_a_failed_request_is_unknown(client: RouterClient) -> None:
    response = await client.chat("hi", model="no-such-model")
    assert response.status_code == 404
    request_id = response.headers["x-llm-router-request-id"]
    response = await client.request("POST", "/v1/feedback",
                                    json={"request_id": request_id, "quality": 0.9})
    await assert_rejected(client, response, "request_id", status=404, code="not_found")


GOOD = {"score": 0.2, "tier": 1, "quality": 0.9}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param(GOOD | {"quality": 1.5}, "quality", id="quality-above-1"),
        pytest.param(GOOD | {"quality": -0.1}, "quality", id="quality-below-0"),
        pytest.param({"score": 0.2, "tier": 1}, "quality", id="quality-missing"),
        pytest.param(GOOD | {"quality": "0.9"}, "quality", id="quality-string"),
        pytest.param(GOOD | {"quality": True}, "quality", id="quality-bool"),
        pytest.param(GOOD | {"quality": None}, "quality", id="quality-null"),
        pytest.param(GOOD | {"quality": [0.9]}, "quality", id="quality-list"),
        pytest.param(GOOD | {"score": 20}, "score", id="score-percent"),
        pytest.param(GOOD | {"score": -0.01}, "score", id="score-negative"),
        pytest.param({"tier": 1, "quality": 0.9}, "score", id="score-missing"),
        pytest.param(GOOD | {"score": "low"}, "score", id="score-string"),
        pytest.param({"score": 0.2, "quality": 0.9}, "tier", id="tier-missing"),
        pytest.param(GOOD | {"tier": 0}, "tier", id="tier-zero"),
        pytest.param(GOOD | {"tier": 11}, "tier", id="tier-too-high"),
        pytest.param(GOOD | {"tier": 1.5}, "tier", id="tier-fraction"),
        pytest.param(GOOD | {"tier": "1"}, "tier", id="tier-string"),
        pytest.param(GOOD | {"tier": True}, "tier", id="tier-bool"),
        pytest.param({"request_id": 12345, "quality": 0.9}, "request_id", id="request-id-int"),
        pytest.param({"request_id": "x", "quality": 2}, "quality", id="request-id-bad-quality"),
        pytest.param([GOOD], None, id="list"),
        pytest.param("good", None, id="string"),
        pytest.param(0.9, None, id="number"),
        pytest.param(None, None, id="null"),
    ],
)
async def test_invalid_feedback_is_400(client: RouterClient, body: Any, param: str | None) -> None:
    response = await client.request("POST", "/v1/feedback", content=orjson.dumps(body),
                                    headers={"content-type": "application/json"})
    await assert_rejected(client, response, param)


@pytest.mark.parametrize("raw", [b"", b"{", b"score=0.2&tier=1", b"\xff\xfe", b'{"quality": NaN}'])
async def test_unparsable_body_is_400(client: RouterClient, raw: bytes) -> None:
    response = await client.request("POST", "/v1/feedback", content=raw,
                                    headers={"content-type": "application/json"})
    await assert_rejected(client, response, None)


async def test_wrong_method_is_rejected(client: RouterClient) -> None:
    response = await client.request("GET", "/v1/feedback")
    assert response.status_code == 405
    assert "error" in response.json()


# ---- calibration --------------------------------------------------------------------------------


async def tier_of(client: RouterClient, text: str) -> str:
    response = await client.chat(text)
    assert response.status_code == 200, response.text
    tier: str = response.headers["x-llm-router-tier"]
    return tier


async def test_good_reports_near_the_boundary_raise_tier1(client: RouterClient) -> None:
    # Requests scored 28 go to tier 1 and their answers were good: tier 1 can take more.
    hard_for_tier1 = prompt_scoring(33)
    assert await tier_of(client, hard_for_tier1) == "2"
    ids = []
    for _ in range(MIN_SAMPLES):
        response = await client.chat(prompt_scoring(28))
        assert response.headers["x-llm-router-tier"] == "1"
        ids.append(response.headers["x-llm-router-request-id"])

    answers = [await feedback(client, {"request_id": i, "quality": 0.95}) for i in ids]

    assert all(a["changes"] == [] for a in answers[:-1])
    assert answers[-1]["changes"] == [
        {"name": "tier1_max", "old": 30, "new": 30 + MAX_STEP, "samples": MIN_SAMPLES,
         "reason": answers[-1]["changes"][0]["reason"]}
    ]
    assert answers[-1]["thresholds"] == {"tier1_max": 30 + MAX_STEP, "tier2_max": 70}
    state = await routing(client)
    assert state["thresholds"] == {"tier1_max": 35, "tier2_max": 70}
    assert state["configured"] == {"tier1_max": 30, "tier2_max": 70}
    [change] = state["changes"]
    assert (change["name"], change["old"], change["new"]) == ("tier1_max", 30, 35)
    assert change["samples"] == MIN_SAMPLES and change["quality"] == 0.95
    # The request scored 33 now fits tier 1.
    response = await client.chat(hard_for_tier1 + " ")
    assert response.headers["x-llm-router-score"] == "33"
    assert response.headers["x-llm-router-tier"] == "1"


async def test_poor_reports_near_the_boundary_lower_tier1(client: RouterClient) -> None:
    borderline = prompt_scoring(28)
    assert await tier_of(client, borderline) == "1"
    for _ in range(MIN_SAMPLES):
        await feedback(client, {"score": 0.28, "tier": 1, "quality": 0.3})

    assert (await routing(client))["thresholds"] == {"tier1_max": 25, "tier2_max": 70}
    assert await tier_of(client, borderline + " ") == "2"


async def test_too_few_reports_change_nothing(client: RouterClient) -> None:
    for _ in range(MIN_SAMPLES - 1):
        answer = await feedback(client, {"score": 0.28, "tier": 1, "quality": 1.0})
        assert answer["changes"] == []
    for _ in range(MIN_SAMPLES - 1):
        answer = await feedback(client, {"score": 0.68, "tier": 2, "quality": 0.0})
        assert answer["changes"] == []

    state = await routing(client)
    assert state["thresholds"] == {"tier1_max": 30, "tier2_max": 70}
    assert state["changes"] == []
    assert state["feedback"]["total"] == 2 * (MIN_SAMPLES - 1)
    assert await tier_of(client, prompt_scoring(33)) == "2"


async def test_a_burst_of_feedback_cannot_swing_routing(fake_upstream: FakeUpstream) -> None:
    # A wide band keeps the same good reports in the band of every candidate up to 70: if a
    # step did not spend its evidence, every report after the fifth would raise tier1_max
    # again. Each step needs min_samples fresh reports instead.
    n = 3 * MIN_SAMPLES - 1
    async with open_client(fake_upstream, band=50) as client:
        answers = [await feedback(client, {"score": 0.275, "tier": 1, "quality": 1.0})
                   for _ in range(n)]
        state = await routing(client)
    moved_at = [i + 1 for i, a in enumerate(answers) if a["changes"]]
    assert moved_at == [MIN_SAMPLES, 2 * MIN_SAMPLES]
    assert state["thresholds"]["tier1_max"] == 30 + 2 * MAX_STEP
    assert [c["new"] for c in state["changes"]] == [40, 35]  # newest first


async def test_a_concurrent_burst_spends_its_evidence_once(fake_upstream: FakeUpstream) -> None:
    async with open_client(fake_upstream, band=50) as client:
        async with trio.open_nursery() as nursery:
            for _ in range(MIN_SAMPLES + 3):
                nursery.start_soon(feedback, client,
                                   {"score": 0.275, "tier": 1, "quality": 1.0})
        state = await routing(client)
    assert state["thresholds"]["tier1_max"] == 30 + MAX_STEP
    assert len(state["changes"]) == 1


async def test_unrelated_reports_do_not_reuse_spent_evidence(client: RouterClient) -> None:
    for _ in range(MIN_SAMPLES):
        await feedback(client, {"score": 0.295, "tier": 1, "quality": 0.9})
    assert (await routing(client))["thresholds"]["tier1_max"] == 35
    # A report about another tier is no new evidence about tier 1.
    answer = await feedback(client, {"score": 0.9, "tier": 3, "quality": 0.5})
    assert answer["changes"] == []
    assert answer["thresholds"]["tier1_max"] == 35


async def test_calibration_can_be_switched_off(fake_upstream: FakeUpstream) -> None:
    async with open_client(fake_upstream, calibrate=False) as client:
        for _ in range(2 * MIN_SAMPLES):
            answer = await feedback(client, {"score": 0.28, "tier": 1, "quality": 1.0})
            assert answer["changes"] == []
        state = await routing(client)
    assert state["thresholds"] == {"tier1_max": 30, "tier2_max": 70}
    assert state["calibration"]["enabled"] is False
    assert state["feedback"]["total"] == 2 * MIN_SAMPLES


# ---- durability ---------------------------------------------------------------------------------


async def test_feedback_and_thresholds_survive_a_restart(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    db = str(tmp_path / "state" / "feedback.db")
    async with open_client(fake_upstream, feedback_db=db) as first:
        for _ in range(MIN_SAMPLES):
            await feedback(first, {"score": 0.275, "tier": 1, "quality": 0.9})
        await feedback(first, {"score": 0.9, "tier": 3, "quality": 0.5})
        before = await routing(first)
    assert before["thresholds"]["tier1_max"] == 35
    assert Path(db).is_file()

    async with open_client(fake_upstream, feedback_db=db) as second:
        after = await routing(second)
        assert after["thresholds"] == {"tier1_max": 35, "tier2_max": 70}
        assert after["feedback"] == {
            "total": MIN_SAMPLES + 1,
            "by_tier": {"1": {"reports": MIN_SAMPLES, "mean_quality": 0.9},
                        "3": {"reports": 1, "mean_quality": 0.5}},
        }
        assert after["changes"] == before["changes"]
        assert await tier_of(second, prompt_scoring(33)) == "1"
        # The new process adds to the same store, and the evidence the first one spent on its
        # step stays spent: one more good report is no reason for another step.
        answer = await feedback(second, {"score": 0.295, "tier": 1, "quality": 1.0})
        assert answer["changes"] == []
        assert answer["thresholds"]["tier1_max"] == 35
        assert (await routing(second))["feedback"]["total"] == MIN_SAMPLES + 2


async def test_new_configured_thresholds_set_old_calibration_aside(
    fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    # Calibration made from 30 / 70 does not apply once the operator configures 20 / 60.
    db = str(tmp_path / "feedback.db")
    async with open_client(fake_upstream, feedback_db=db) as first:
        for _ in range(MIN_SAMPLES):
            await feedback(first, {"score": 0.275, "tier": 1, "quality": 0.9})
        assert (await routing(first))["thresholds"]["tier1_max"] == 35

    async with open_router_client(layout(fake_upstream), learned=LEARNED | {"feedback_db": db},
                                  classifier={"tier1_max": 20, "tier2_max": 60}) as second:
        state = await routing(second)
    assert state["thresholds"] == {"tier1_max": 20, "tier2_max": 60}
    assert state["changes"] == []
    assert state["feedback"]["total"] == MIN_SAMPLES


# ---- GET /v1/routing ----------------------------------------------------------------------------


async def test_routing_shape(client: RouterClient) -> None:
    state = await routing(client)
    expected = {
        "thresholds": {"tier1_max": 30, "tier2_max": 70},
        "configured": {"tier1_max": 30, "tier2_max": 70},
        "router": "heuristic",
        "calibration": {"enabled": True, "target_quality": 0.8, "min_samples": MIN_SAMPLES,
                        "max_step": MAX_STEP, "band": 10},
        "feedback": {"total": 0, "by_tier": {}},
        "changes": [],
    }
    # Extensions may add keys; these stay.
    assert {key: state[key] for key in expected} == expected
    assert "sidecar" not in state  # none configured


async def test_routing_requires_a_client_key_when_keys_are_set(
    fake_upstream: FakeUpstream,
) -> None:
    async with open_router_client(layout(fake_upstream), learned=LEARNED,
                                  server={"api_keys": ["sk-client-1"]}) as client:
        assert (await client.request("GET", "/v1/routing")).status_code == 401
        response = await client.request("POST", "/v1/feedback", json=GOOD)
        assert response.status_code == 401
        ok = await client.request("GET", "/v1/routing",
                                  headers={"authorization": "Bearer sk-client-1"})
        assert ok.status_code == 200
        assert ok.json()["feedback"]["total"] == 0
