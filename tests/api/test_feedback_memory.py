"""What the router remembers of answered requests for feedback, over HTTP: a report still
names a request answered well over a thousand requests earlier (past the first generation of
engine.core.remembered, so remembering has set one aside), and teaches from it."""

from __future__ import annotations

from support_routing import open_router_client
from test_online_learning import HARD, LEARNED, ask, models, report

from engine.testing.fake_upstream import FakeUpstream

# More requests than engine.core.remembered puts in one generation (1,024).
LATER = 1_100


async def test_feedback_names_a_request_answered_a_generation_ago(
    fake_upstream: FakeUpstream,
) -> None:
    async with open_router_client(models(fake_upstream), learned=LEARNED) as client:
        first, _, tier = await ask(client, HARD)
        for n in range(LATER):
            answer = await client.request("POST", "/v1/chat/completions", json={
                "model": "auto",
                "messages": [{"role": "user", "content": f"Question {n}: what is a proxy?"}]})
            assert answer.status_code == 200, answer.text
        body = await report(client, first, 0.0, other=1.0)
        assert body["learning"]["learned"] is True
        unknown = await client.request("POST", "/v1/feedback",
                                       json={"request_id": "req_" + "0" * 24, "quality": 1.0})
        assert unknown.status_code == 404
    assert tier == 1
