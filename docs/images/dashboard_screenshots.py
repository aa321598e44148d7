"""Make the dashboard screenshots in this folder (docs/dashboard.md, README.md).

A router over the fake upstream (engine.testing) with the demo's three tiers and prices gets
a minute's worth of mixed chat traffic (repeats for the cache, identical bursts for dedup),
quality reports that move the routing thresholds, a finished code review and a six-op workflow
caught mid-run; headless chromium (tests/support/support_browser.py) then photographs the page
in both themes.

    PYTHONPATH=. .venv/bin/python docs/images/dashboard_screenshots.py
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import httpx
import openai
import trio

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "support"))

from router_harness import make_config, open_router  # noqa: E402
from support_browser import CSS, connect, open_browser  # noqa: E402

from engine.testing.fake_upstream import Behaviour, open_fake_upstream  # noqa: E402

ADMIN = "admin-key-for-the-screenshots"
CLIENT = "client-key-for-the-screenshots"
OUT = Path(__file__).resolve().parent

LAUNCH = """
name: launch-brief
description: Research a product and its audience, outline, then write copy and an FAQ.
ops:
  research: {prompt: "List the facts about {{ input }}.", tier: 1}
  audience: {prompt: "Who buys {{ input }}?", tier: 1}
  outline:
    prompt: "Outline a launch brief from {{ ops.research.output }} {{ ops.audience.output }}"
    tier: 2
    input_ops: [research, audience]
  write: {prompt: "Write the copy for {{ ops.outline.output }}", model: large,
          input_ops: [outline]}
  faq: {prompt: "Write an FAQ for {{ ops.outline.output }}", tier: 1, input_ops: [outline]}
  review:
    prompt: "Review {{ ops.write.output }} and {{ ops.faq.output }}"
    tier: 2
    input_ops: [write, faq]
"""

SIMPLE = ["What is the capital of Portugal?", "Translate 'good morning' to French.",
          "Give me a synonym for quick.", "What is 17 times 23?", "Name three primes.",
          "Spell 'necessary' backwards.", "What day comes after Tuesday?"]
HARDER = [
    "Refactor this Python function to be iterative and explain the complexity trade-offs:\n"
    "```python\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n```",
    "Prove that the square root of 2 is irrational, step by step, and then generalise the "
    "argument to the square root of any non-square integer.",
    "Design a rate limiter for a multi-region API: compare token bucket, sliding window and "
    "GCRA, and analyse consistency under network partitions.",
]


def _models(fake: object) -> list[dict[str, object]]:
    base = fake.base_url  # type: ignore[attr-defined]
    return [
        {"name": "small", "provider": "openai", "model": "gpt-4o-mini", "tier": 1,
         "base_url": base("small", "openai"), "api_key": "k-small",
         "cost_per_1k_in": 0.00015, "cost_per_1k_out": 0.0006},
        {"name": "medium", "provider": "anthropic", "model": "claude-sonnet-4-5", "tier": 2,
         "base_url": base("medium", "anthropic"), "api_key": "k-medium",
         "cost_per_1k_in": 0.003, "cost_per_1k_out": 0.015},
        {"name": "large", "provider": "openai", "model": "o1", "tier": 3,
         "base_url": base("large", "openai"), "api_key": "k-large",
         "cost_per_1k_in": 0.015, "cost_per_1k_out": 0.06},
    ]


async def _traffic(sdk: openai.AsyncOpenAI, seconds: int) -> None:
    rng = random.Random(7)

    async def ask(prompt: str, model: str = "auto") -> None:
        await sdk.chat.completions.create(model=model,
                                          messages=[{"role": "user", "content": prompt}])

    for second in range(seconds):
        async with trio.open_nursery() as nursery:
            for _ in range(2 + (second * 7) % 6):
                draw = rng.random()
                if draw < 0.1:  # a client that pins the top model
                    nursery.start_soon(ask, rng.choice(HARDER) + f" ({second})", "large")
                elif draw < 0.3:
                    nursery.start_soon(ask, rng.choice(HARDER))
                elif draw < 0.55:  # asked before: the cache answers
                    nursery.start_soon(ask, rng.choice(SIMPLE))
                else:
                    nursery.start_soon(ask, f"{rng.choice(SIMPLE)} (case {rng.randrange(10**6)})")
            if second % 5 == 2:  # an identical burst: one call, the rest join it
                for _ in range(3):
                    nursery.start_soon(ask, f"Summarise ticket #{second} in one line.")
            nursery.start_soon(trio.sleep, 1)


async def main() -> None:
    async with open_fake_upstream() as fake:
        for name, latency in (("small", 0.08), ("medium", 0.35), ("large", 0.9)):
            fake.set_default(name, Behaviour(latency=latency))
        config = make_config({
            "models": _models(fake),
            "cache": {"enabled": True, "deterministic_only": False},
            "dedup": {"enabled": True},
            "server": {"admin_key": ADMIN, "api_keys": [CLIENT]},
            "workflows": {"dir": str(ROOT / "workflows"),
                          "templates_dir": str(ROOT / "templates")},
        })
        auth = {"authorization": f"Bearer {CLIENT}"}
        async with open_router(config) as router, open_browser(height=1450) as browser, \
                httpx.AsyncClient(timeout=60) as http, \
                openai.AsyncOpenAI(base_url=router.v1, api_key=CLIENT, max_retries=0) as sdk:
            await connect(browser, router.url, ADMIN)
            review = await http.post(router.v1 + "/workflows/code_review", headers=auth,
                                     json={"input": "def add(a, b): return a - b"})
            review.raise_for_status()
            await _traffic(sdk, 25)
            rng = random.Random(11)
            for _ in range(30):  # quality reports: tier 1 does well, so its threshold rises
                tier = rng.choice((1, 1, 2))
                score = rng.uniform(0.05, 0.3) if tier == 1 else rng.uniform(0.3, 0.7)
                quality = rng.uniform(0.8, 1.0) if tier == 1 else rng.uniform(0.6, 1.0)
                answer = await http.post(router.v1 + "/feedback", headers=auth, json={
                    "score": round(score, 3), "tier": tier, "quality": round(quality, 2)})
                answer.raise_for_status()
            fake.script("large", Behaviour(latency=60))  # `write` is still running when shot
            started = await http.post(router.v1 + "/workflows", headers=auth | {
                "prefer": "respond-async"}, json={"workflow": LAUNCH, "input": "a desk lamp"})
            started.raise_for_status()
            run_id = started.json()["run_id"]
            await browser.wait_for(
                lambda d: d.find_elements(
                    CSS, '#dag g.op[data-op="faq"][data-status="succeeded"]')
                and d.find_elements(
                    CSS, '#dag g.op[data-op="write"][data-status="running"]'),
                "the launch brief mid-run")
            await trio.sleep(2.5)  # let the op's clock and the sparklines move on a little
            for theme in ("dark", "light"):
                await browser.script(
                    "localStorage.setItem('llm-router-theme', arguments[0]);"
                    "document.documentElement.dataset.theme = arguments[0];", theme)
                await trio.sleep(0.3)
                await browser.screenshot(OUT / f"dashboard-{theme}.png")
                print("wrote", OUT / f"dashboard-{theme}.png")
            await http.post(f"{router.v1}/workflows/runs/{run_id}/cancel", headers=auth)


if __name__ == "__main__":
    trio.run(main)
