"""The familiarity gate over HTTP, through the official SDKs: on by default it leans the
trained router's belief about a request unlike its training rows on the conversation's
length (here a short chat request, which length calls easy), and leaves a familiar request's
score as it was; ``learned.gate: false`` turns it off.
"""

from __future__ import annotations

import anthropic
import openai
from support_routing import RouterClient, model_entry, open_router_client

from engine.testing.fake_upstream import FakeUpstream

CHAT = "Find the bug and prove the fix, step by step: def last(xs): return xs[len(xs)]"
QUIZ = ("Which of the following best describes the function of the mitochondria in a "
        "eukaryotic cell? A. protein synthesis B. energy production C. lipid storage "
        "D. cell division")


async def scores(client: RouterClient) -> tuple[int, int]:
    """X-LLM-Router-Score of CHAT (OpenAI SDK) and QUIZ (Anthropic SDK)."""
    async with openai.AsyncOpenAI(base_url=client.router.v1, api_key="t",
                                  max_retries=0) as sdk:
        chat = await sdk.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": CHAT}])
    async with anthropic.AsyncAnthropic(base_url=client.url, api_key="t",
                                        max_retries=0) as claude:
        quiz = await claude.messages.with_raw_response.create(
            model="auto", max_tokens=16, messages=[{"role": "user", "content": QUIZ}])
    return (int(chat.headers["x-llm-router-score"]), int(quiz.headers["x-llm-router-score"]))


async def test_the_gate_is_on_by_default_and_can_be_turned_off(
    fake_upstream: FakeUpstream,
) -> None:
    models = [model_entry(fake_upstream, "cheap", tier=1),
              model_entry(fake_upstream, "strong", tier=2)]
    settings = {"model": "builtin", "calibrate": False}
    async with open_router_client(models, learned=settings) as client:
        gated = await scores(client)
    async with open_router_client(models, learned=settings | {"gate": False}) as client:
        ungated = await scores(client)
    assert gated[0] < ungated[0]  # the short, unfamiliar request: leaned on its length
    assert gated[1] == ungated[1]  # the familiar one: the router's own belief
