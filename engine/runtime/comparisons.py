"""Comparisons the router makes itself (``learned.compare``).

Online learning applies what feedback taught only once comparison reports (both tiers'
quality on one request) show that it ranks the strong model's gain better than the shipped
router does (``engine.core.routing.floor``). Most deployments have no second answer to grade,
so the router can make the comparisons itself: on a random ``share`` of routed answers, after
the answer was delivered, it runs a two-node plan in the background:

* ``other``: the same request on the other tier (tier 2 when tier 1 answered, else tier 1),
  routed and failed over like any call, with the cache neither read nor written;
* ``judge``: the configured ``judge`` model grades both answers (``engine.core.routing.judge``;
  which answer it reads first is drawn at random),

then reports both grades as feedback on the request (``other_quality``), exactly as a client
reporting a comparison would. Both calls are paid like any other (``/stats`` shows them under
their models) and bounded: at most ``max_running`` at once in a process, and
``max_usd_per_hour`` of spend (every process's together with shared state:
``engine.runtime.spend_window``), past which sampled answers are skipped. A comparison that
fails (an upstream error, a verdict that cannot be read, a request the router no longer
remembers) is counted and dropped: it never touches the client's request, which was answered
before it started. The counts are kept in the process's ``Stats`` (``comparisons``), so they
are summed across processes and shown by ``GET /metrics`` like every other total.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import trio

from engine.core.config import CompareConfig, Config
from engine.core.planner import Node, build_plan
from engine.core.routing.judge import JUDGE_MAX_TOKENS, comparable, judge_prompt, read_verdict
from engine.core.stats import Stats
from engine.errors import RouterError
from engine.messages import ChatRequest, Message, TextPart

from .executor import execute
from .node import NodeResult, NodeRunner, RunContext
from .policy import FeedbackReport
from .spend_window import SpendWindow

__all__ = ["OUTCOMES", "Comparisons"]

log = logging.getLogger("llm_router")

# Neither call reads or writes the cache: the second answer must be the other tier's own,
# and a grading prompt is no answer to cache.
_UNCACHED = RunContext(cache_read=False, cache_write=False)
#: What became of the answers sampled for a comparison (``Stats.comparisons``).
OUTCOMES = ("sampled", "reported", "failed", "unreadable", "skipped_busy", "skipped_budget")
# Routes that named their model or tier: nothing was decided that a comparison could judge.
_NOT_ROUTED = ("pinned", "workflow")


class Comparisons:
    """Samples routed answers and compares them in ``nursery`` (see the module docstring).

    ``report`` files a feedback report (the gateway's ``report_feedback``); ``tiers`` are the
    configured tiers; ``stats`` keeps the counts and the spend; ``spend`` is the hour's spend
    the budget bounds (the shared one with shared state); ``rng`` is there for tests.
    """

    def __init__(self, settings: CompareConfig, *, runner: NodeRunner, tiers: Sequence[int],
                 judge_tier: int, nursery: trio.Nursery, stats: Stats, spend: SpendWindow,
                 report: Callable[[FeedbackReport], Awaitable[Mapping[str, Any]]],
                 rng: random.Random | None = None) -> None:
        assert settings.judge is not None, "the config requires a judge with a share"
        self.settings = settings
        self._judge: str = settings.judge
        self._judge_tier = judge_tier
        self._runner = runner
        self._tiers = sorted(set(tiers))
        self._nursery = nursery
        self._report = report
        self._rng = rng or random.Random()
        self._stats = stats
        self._spend = spend
        #: Comparisons of this process under way (the ``max_running`` bound).
        self.running = 0

    @classmethod
    def configured(cls, config: Config, *, runner: NodeRunner, nursery: trio.Nursery,
                   stats: Stats, spend: SpendWindow,
                   report: Callable[[FeedbackReport], Awaitable[Mapping[str, Any]]],
                   feedback: bool) -> Comparisons | None:
        """The comparisons ``config`` asks for (``learned.compare.share`` above 0), or
        ``None``; also ``None``, with a warning, when there is no feedback (``feedback``
        false: no feedback database) to report them to."""
        settings = config.learned.compare
        if settings.share <= 0:
            return None
        if not feedback:
            log.warning("learned.compare is set but feedback is off (no feedback database): "
                        "no comparisons are made")
            return None
        judge = config.model_named(settings.judge or "")
        assert judge is not None, "the config requires a configured judge"
        return cls(settings, runner=runner, tiers=config.tiers, judge_tier=judge.tier,
                   nursery=nursery, stats=stats, spend=spend, report=report)

    def other_tier(self, tier: int) -> int | None:
        """The tier whose answer a request served on ``tier`` is compared with: the next one
        up from the cheapest tier, the cheapest from any other (online learning reads a
        comparison as "cheap tier against a stronger one")."""
        cheapest = self._tiers[0]
        if tier <= cheapest:
            return next((t for t in self._tiers if t > tier), None)
        return cheapest

    def offer(self, request_id: str, request: ChatRequest, done: NodeResult,
              ctx: RunContext) -> bool:
        """Maybe compare a routed answer just delivered; whether a comparison's task started
        (it checks the budget first). Cheap when not sampled: one random draw. A request's
        text goes to no model it could not have been routed to: never compared are a request
        that asked not to be stored (``Cache-Control: no-store``), and one whose client key's
        ``max_tier`` is below the other tier or the judge's tier."""
        served = done.served
        if (not ctx.cache_write or served.router.startswith(_NOT_ROUTED)
                or served.cache != "MISS" or served.dedup == "FOLLOWER"
                or self._rng.random() >= self.settings.share):
            return False
        if not comparable(request) or done.result.tool_calls:
            return False
        other = self.other_tier(served.tier)
        cap = ctx.key.settings.max_tier if ctx.key is not None else None
        if other is None or (cap is not None and max(other, self._judge_tier) > cap):
            return False
        if self.running >= self.settings.max_running:
            self._stats.record_comparison("skipped_busy")
            return False
        self.running += 1
        self._nursery.start_soon(self._compare, request_id, request, done, other)
        return True

    async def describe(self, totals: Mapping[str, float], scope: str) -> dict[str, Any]:
        """What ``GET /v1/routing`` shows under ``compare``, from ``totals`` (flat names, as
        ``GET /metrics`` reads them: every process's when ``scope`` is ``shared``)."""
        return {"share": self.settings.share, "judge": self._judge,
                "running": int(totals.get("gauge:compare_running", self.running)),
                **{outcome: int(totals.get(f"compare:{outcome}", 0)) for outcome in OUTCOMES},
                "spent_usd": round(totals.get("compare_spent_usd", 0.0), 6),
                "spent_usd_last_hour": round(await self._spend.total(), 6), "scope": scope}

    async def _pay(self, usd: float) -> None:
        self._stats.compare_spent_usd += usd
        await self._spend.add(usd)

    async def _compare(self, request_id: str, request: ChatRequest, done: NodeResult,
                       other_tier: int) -> None:
        served_first = self._rng.random() < 0.5
        answered = done.result.text
        try:
            if await self._spend.total() >= self.settings.max_usd_per_hour:
                self._stats.record_comparison("skipped_budget")
                return
            self._stats.record_comparison("sampled")
            outputs = await execute(
                build_plan([Node("other", dataclasses.replace(request, model=None, stream=False,
                                                              include_usage=False),
                                 tier=other_tier), Node("judge")], [("other", "judge")]),
                lambda node, inputs: self._run(node, inputs, request, answered, served_first))
            grades = read_verdict(outputs["judge"].result.text)
            if grades is None:
                self._stats.record_comparison("unreadable")
                log.info("comparison of %s dropped: the judge's verdict could not be read",
                         request_id)
                return
            mine, theirs = grades if served_first else grades[::-1]
            await self._report(FeedbackReport(mine, request_id=request_id,
                                              other_quality=theirs))
            self._stats.record_comparison("reported")
        except RouterError as exc:  # an upstream failure, or the request was forgotten
            self._stats.record_comparison("failed")
            log.info("comparison of %s dropped: %s", request_id, exc)
        except Exception:  # a defect here must not end the server, whose nursery this is
            self._stats.record_comparison("failed")
            log.exception("comparison of %s failed", request_id)
        finally:
            self.running -= 1

    async def _run(self, node: Node, inputs: Mapping[str, Any], request: ChatRequest,
                   answered: str, served_first: bool) -> NodeResult:
        if node.name == "other":
            result = await self._runner.run(node, ctx=_UNCACHED)
            if result.served.tier != node.tier:  # failed over: no longer the other tier's
                await self._pay(result.cost_usd)
                raise RouterError(f"tier {node.tier} could not answer (tier "
                                  f"{result.served.tier} did)")
        else:
            second = inputs["other"].result.text
            first, later = (answered, second) if served_first else (second, answered)
            prompt = judge_prompt(request, first, later)
            judge = ChatRequest(messages=(Message("user", (TextPart(prompt),)),),
                                model=self._judge, max_tokens=JUDGE_MAX_TOKENS, temperature=0.0)
            result = await self._runner.run(node, ctx=_UNCACHED, request=judge)
        await self._pay(result.cost_usd)
        return result
