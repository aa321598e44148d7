"""The workflow endpoints (api/http/workflows.py) over real sockets: validation as HTTP 400s that
name the op, dry runs, the ready pipelines, and SSE progress.

What runs is tested in ``test_workflow_run.py``; the rules themselves, exhaustively and
without I/O, in ``test_workflow_spec.py``, whose tables of invalid workflows are replayed
here through HTTP.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support_health import cpu_split
from support_hold_relay import open_hold_relay
from support_routing import model_entry, prompt_scoring
from support_workflows import (
    ROOT,
    WorkflowClient,
    open_raw_post,
    open_workflow_router,
    received,
    three_tiers,
)
from workflow_cases import CASES, DIAMOND, ESCAPES, RUNTIME_REFUSALS, SPEC_EXAMPLE, WORKFLOW_LEVEL

from engine.testing.fake_upstream import Behaviour, FakeUpstream, open_fake_upstream

READY = ["code_review", "debate", "extract_classify_answer", "map_reduce_summary",
         "reason_critique_refine"]


def error_of(response: Any) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json", response.text
    error: dict[str, Any] = response.json()["error"]
    return error


# ---- validation ----------------------------------------------------------------------------


async def test_every_validation_error_is_a_400_naming_the_op(fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    named = [(text, op, fragment) for _, text, op, fragment in CASES]
    named += [(yaml.safe_dump({"ops": {"a": {"prompt": t}}}), "a", "not allowed")
              for t in ESCAPES]
    named += [
        ("ops: {a: {template: ../../etc/passwd}}", "a", "must name a file in templates/"),
        ("ops: {a: {template: missing.j2}}", "a", "no template named 'missing.j2'"),
        ("ops: {a: {prompt: A}, b: {prompt: B, model: gpt-9, input_ops: [a]}}", "b",
         "model 'gpt-9' is not configured"),
    ]
    async with open_workflow_router(three_tiers(fake)) as client:
        for text, op, fragment in named:
            for flags in ({}, {"stream": True}, {"dry_run": True}):
                response = await client.run(text, "x", **flags)
                assert response.status_code == 400, (text, response.text)
                error = error_of(response)
                assert error["code"] == "workflow_invalid"
                assert error["param"] == op, (text, error)
                assert fragment in error["message"], (text, error)
                assert op in error["message"], (text, error)
        for _, text, fragment in WORKFLOW_LEVEL:
            response = await client.run(text, "x")
            assert response.status_code == 400, (text, response.text)
            error = error_of(response)
            assert error["code"] == "workflow_invalid" and fragment in error["message"]
    assert received(fake, "t1", "t2", "t3") == []


async def test_every_problem_of_a_workflow_is_in_its_400(fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    text = """\
ops:
  a: {prompt: A, max_tokens: 99999, input_ops: [c]}
  b: {prompt: B, input_ops: [a, nope], promt: x}
  c: {prompt: "{{ ops.b.outptu }}", input_ops: [b], model: gpt-9}
"""
    async with open_workflow_router(three_tiers(fake)) as client:
        responses = [await client.run(text, "x", **flags)
                     for flags in ({}, {"stream": True}, {"dry_run": True})]
    for response in responses:
        assert response.status_code == 400, response.text
        error = error_of(response)
        assert error["code"] == "workflow_invalid" and error["param"] == "a"
        message = error["message"]
        assert message.startswith("6 problems: "), message
        for fragment in ["op 'a': max_tokens must be an integer from 1 to",
                         "op 'b': input_ops names unknown op 'nope'",
                         "unknown key 'promt' (did you mean 'prompt'?)",
                         "ops.b.outptu: an op's output has no 'outptu'",
                         "model 'gpt-9' is not configured",
                         "cycle: a -> b -> c -> a"]:
            assert fragment in message, (fragment, message)
    assert received(fake, "t1", "t2", "t3") == []


async def test_a_misspelt_output_attribute_is_a_400_before_anything_is_paid(
    fake_upstream: FakeUpstream,
) -> None:
    # It used to pass validation: op a ran (and was paid for), then b failed to render.
    fake = fake_upstream
    text = "ops: {a: {prompt: A, tier: 1}, b: {prompt: '{{ ops.a.outptu }}', input_ops: [a]}}"
    async with open_workflow_router(three_tiers(fake)) as client:
        response = await client.run(text, "x")
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["param"] == "b" and "did you mean 'output'?" in error["message"]
    assert received(fake, "t1", "t2", "t3") == []


async def test_a_run_without_input_is_a_400_unless_its_input_is_optional(
    fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    required = "ops: {a: {prompt: Summarise., tier: 1}}"
    optional = "input: {optional: true}\nops: {a: {prompt: 'Tell a joke.', tier: 1}}"
    async with open_workflow_router(three_tiers(fake)) as client:
        url = client.router.v1 + "/workflows"
        refused = [await client.http.post(url, json={"workflow": required, **flags})
                   for flags in ({}, {"stream": True}, {"input": None})]
        refused.append(await client.http.post(url + "/debate", json={}))
        assert received(fake, "t1", "t2", "t3") == []
        planned = await client.http.post(url, json={"workflow": required, "dry_run": True})
        ran = await client.http.post(url, json={"workflow": optional})
        empty = await client.http.post(url, json={"workflow": required, "input": ""})
        listed = (await client.http.get(url)).json()["workflows"]
    for response in refused:
        assert response.status_code == 400, response.text
        error = error_of(response)
        assert error["param"] == "input" and "input is required" in error["message"]
        assert "input: {optional: true}" in error["message"]
    assert planned.status_code == 200 and planned.json()["dry_run"] is True
    assert ran.status_code == 200, ran.text
    assert ran.json()["final_output"] == "[t1] Tell a joke."
    assert empty.status_code == 200, empty.text  # an input sent empty is the caller's choice
    assert received(fake, "t1") == ["Tell a joke.", "Summarise."]
    assert all(w["input"] == {"optional": False, "description": None} for w in listed)


async def test_a_ready_pipeline_is_run_by_a_post_with_no_body(
    fake_upstream: FakeUpstream, tmp_path: Path,
) -> None:
    """The body of ``POST /v1/workflows/{name}`` is optional: without one, a pipeline whose
    input is optional runs, and one that needs an input is told so (not "invalid JSON")."""
    fake = fake_upstream
    (tmp_path / "joke.yaml").write_text(
        "input: {optional: true}\nops: {a: {prompt: 'Tell a joke.', tier: 1}}\n")
    (tmp_path / "summary.yaml").write_text("ops: {a: {prompt: Summarise., tier: 1}}\n")
    async with open_workflow_router(three_tiers(fake), workflows={"dir": str(tmp_path)}) as client:
        url = client.router.v1 + "/workflows"
        ran = await client.http.post(url + "/joke")
        refused = await client.http.post(url + "/summary")
        submitted = await client.http.post(url)
    assert ran.status_code == 200, ran.text
    assert ran.json()["final_output"] == "[t1] Tell a joke."
    assert refused.status_code == 400 and error_of(refused)["param"] == "input"
    assert submitted.status_code == 400 and error_of(submitted)["param"] == "workflow"
    assert received(fake, "t1") == ["Tell a joke."]


@pytest.mark.parametrize(("path", "body", "fragment"), [
    ("", {"workflow": "ops: {a: {prompt: A}}", "input": "x", "variabels": {"tone": "dry"}},
     "unknown field 'variabels' (did you mean 'variables'?)"),
    ("", {"workflow": "ops: {a: {prompt: A}}", "input": "x", "dryrun": True, "model": "m"},
     "unknown fields 'dryrun' (did you mean 'dry_run'?), 'model'; a workflow request takes "
     "input, variables, dry_run, stream, async, router_cache, workflow"),
    ("/debate", {"input": "x", "workflow": "ops: {a: {prompt: A}}"},
     "unknown field 'workflow' (a ready pipeline is run by its name"),
    ("/debate", {"inputs": "x"}, "unknown field 'inputs' (did you mean 'input'?)"),
])
async def test_unknown_body_fields_are_400s_naming_them(
    fake_upstream: FakeUpstream, path: str, body: dict[str, Any], fragment: str,
) -> None:
    async with open_workflow_router(three_tiers(fake_upstream)) as client:
        response = await client.http.post(client.router.v1 + "/workflows" + path, json=body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert fragment in error["message"], error
    assert error["param"] == next(k for k in body if k not in (
        "input", "variables", "dry_run", "stream") + (("workflow",) if not path else ()))
    assert received(fake_upstream, "t1", "t2", "t3") == []


async def test_every_documented_body_field_is_accepted(fake_upstream: FakeUpstream) -> None:
    body = {"workflow": "variables: {tone: dry}\nops: {a: {prompt: '{{ tone }}', tier: 1}}",
            "input": "x", "variables": {"tone": "warm"}, "dry_run": False, "stream": False,
            "router_cache": "no-store"}
    async with open_workflow_router(three_tiers(fake_upstream)) as client:
        response = await client.http.post(client.router.v1 + "/workflows", json=body)
    assert response.status_code == 200, response.text
    assert received(fake_upstream, "t1") == ["warm\n\nx"]


async def test_render_time_sandbox_refusals_fail_the_op_before_any_request(
    fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    async with open_workflow_router(three_tiers(fake)) as client:
        for template, fragment in RUNTIME_REFUSALS:
            text = yaml.safe_dump({"variables": {"key": "__class__"},
                                   "ops": {"a": {"prompt": template, "tier": 1}}})
            response = await client.run(text, "abcdefghij" * 1000)
            assert response.status_code == 400, (template, response.text)
            error = error_of(response)
            assert error["param"] == "a" and error["code"] == "workflow_invalid"
            assert error["message"].startswith("op 'a' failed: ")
            assert fragment in error["message"], (template, error)
    assert received(fake, "t1", "t2", "t3") == []


@pytest.mark.parametrize(("body", "param"), [
    ({"input": "x"}, "workflow"),
    ({"input": "x", "workflow": {"ops": {}}}, "workflow"),
    ({"input": 3, "workflow": "ops: {a: {prompt: A}}"}, "input"),
    ({"workflow": "ops: {a: {prompt: A}}", "variables": ["tone"]}, "variables"),
    ({"workflow": "ops: {a: {prompt: A}}", "dry_run": "yes"}, "dry_run"),
    ({"workflow": "ops: {a: {prompt: A}}", "stream": 1}, "stream"),
])
async def test_malformed_request_bodies(fake_upstream: FakeUpstream, body: dict[str, Any],
                                        param: str) -> None:
    async with open_workflow_router(three_tiers(fake_upstream)) as client:
        response = await client.http.post(client.router.v1 + "/workflows", json=body)
        not_json = await client.http.post(client.router.v1 + "/workflows", content=b"{")
    assert response.status_code == 400
    assert error_of(response)["param"] == param
    assert not_json.status_code == 400 and "not valid JSON" in error_of(not_json)["message"]


async def test_an_undeclared_variable_override_is_a_400(fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    text = "variables: {tone: dry}\nops: {a: {prompt: '{{ tone }} {{ input }}'}}"
    async with open_workflow_router(three_tiers(fake)) as client:
        responses = [
            await client.run(text, "x", variables={"mood": "odd"}, **flags)
            for flags in ({}, {"stream": True}, {"dry_run": True})
        ]
        responses.append(await client.run_named("debate", "x", variables={"mood": "odd"}))
        wrong_kind = await client.run(text, "x", variables={"tone": 3})
    for response in responses:
        assert response.status_code == 400, response.text
        error = error_of(response)
        assert error["code"] == "workflow_invalid"
        assert "unknown variable 'mood'" in error["message"]
    assert wrong_kind.status_code == 400
    assert "variable 'tone' must be like its default" in error_of(wrong_kind)["message"]
    assert received(fake, "t1", "t2", "t3") == []


async def test_client_keys_guard_the_workflow_endpoints(fake_upstream: FakeUpstream) -> None:
    async with open_workflow_router(three_tiers(fake_upstream),
                                    server={"api_keys": ["wf-key"]}) as client:
        denied = await client.run(SPEC_EXAMPLE, "x", dry_run=True)
        listing = await client.http.get(client.router.v1 + "/workflows")
        allowed = await client.http.post(
            client.router.v1 + "/workflows/debate", json={"input": "x", "dry_run": True},
            headers={"authorization": "Bearer wf-key"})
    assert denied.status_code == 401 and listing.status_code == 401
    assert allowed.status_code == 200


# ---- dry run and the ready pipelines -------------------------------------------------------


async def test_dry_run_answers_with_the_plan_and_sends_nothing(fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    models = three_tiers(fake, cost_per_1k_in=1.0, cost_per_1k_out=2.0)
    async with open_workflow_router(models) as client:
        response = await client.run(SPEC_EXAMPLE, "How many rs are in strawberry?",
                                    dry_run=True)

    assert response.status_code == 200, response.text
    plan = response.json()
    assert set(plan) == {"dry_run", "ops", "generations", "critical_path", "critical_path_ms",
                         "input_tokens", "output_tokens", "total_cost_usd", "picture"}
    assert plan["dry_run"] is True
    assert plan["generations"] == [["reason"], ["critique"], ["refine"]]
    assert plan["critical_path"] == ["reason", "critique", "refine"]
    assert set(plan["ops"]) == {"reason", "critique", "refine"}
    for name, op in plan["ops"].items():
        assert set(op) == {"model", "tier", "input_tokens", "output_tokens", "cost_usd",
                           "latency_ms"}, name
        assert op["cost_usd"] == pytest.approx(
            (op["input_tokens"] * 1.0 + op["output_tokens"] * 2.0) / 1000, abs=1e-6)
    assert [plan["ops"][n]["model"] for n in ("reason", "critique", "refine")] == [
        "t1", "t2", "t2"]
    assert plan["ops"]["reason"]["output_tokens"] == 1024
    assert plan["total_cost_usd"] == pytest.approx(
        sum(op["cost_usd"] for op in plan["ops"].values()), abs=1e-5)
    assert plan["critical_path_ms"] == pytest.approx(
        sum(op["latency_ms"] for op in plan["ops"].values()), abs=0.5)
    picture = plan["picture"]
    assert "3 ops in 3 levels" in picture
    assert "critical path: reason -> critique -> refine" in picture
    assert "estimated cost: $" in picture
    assert received(fake, "t1", "t2", "t3") == []


def routing_workflow() -> str:
    """Start ops only (a dry run renders them exactly as the run does), scored 5, 28 and 75
    by the heuristic, and one op of a fixed tier."""
    border = prompt_scoring(28)
    hard = ("Analyze, step by step, the trade-offs of this design and answer in JSON.\n"
            "```\ndef f(x):\n    return x\n```\n" + "word " * 2500)
    return yaml.safe_dump({"ops": {
        "easy": {"prompt": "What is 2+2?", "max_tokens": 16},
        "border": {"prompt": border, "max_tokens": 16},
        "hard": {"prompt": hard, "json": True, "max_tokens": 16, "system": "Be exact. " * 250},
        "fixed": {"prompt": "Say hi.", "tier": 3, "max_tokens": 16},
    }}, width=10_000)


@pytest.mark.parametrize("trained", [False, True], ids=["heuristic", "trained router"])
async def test_a_dry_run_predicts_the_tier_the_run_uses_after_calibration(
    fake_upstream: FakeUpstream, trained: bool,
) -> None:
    fake = fake_upstream
    learned = {"min_samples": 5, "max_step": 5, "band": 10, "target_quality": 0.8}
    if trained:
        learned |= {"model": "builtin", "model_weight": 0.7}
    text = routing_workflow()
    for backend in ("t2", "t3"):  # the JSON op's answer
        fake.set_default(backend, Behaviour(text='{"ok": true}'))
    async with open_workflow_router(three_tiers(fake), learned=learned) as client:
        for _ in range(5):  # poor answers from tier 1 near 28: tier1_max moves 30 -> 25
            report = await client.http.post(client.router.v1 + "/feedback",
                                            json={"score": 0.28, "tier": 1, "quality": 0.2})
            assert report.status_code == 200, report.text
        routing = (await client.http.get(client.router.v1 + "/routing")).json()
        assert routing["thresholds"] == {"tier1_max": 25, "tier2_max": 70}
        planned = await client.run(text, "", dry_run=True)
        ran = await client.run(text, "")
    assert planned.status_code == 200 and ran.status_code == 200, (planned.text, ran.text)
    predicted = {name: op["tier"] for name, op in planned.json()["ops"].items()}
    used = {name: op["tier"] for name, op in ran.json()["ops"].items()}
    assert predicted == used
    assert used["fixed"] == 3 and used["easy"] == 1
    if not trained:
        # The configured thresholds would have put border (28) on tier 1.
        assert used["border"] == 2 and used["hard"] == 3


async def test_the_ready_pipelines_are_listed_with_their_variables(
    fake_upstream: FakeUpstream,
) -> None:
    async with open_workflow_router(three_tiers(fake_upstream)) as client:
        response = await client.http.get(client.router.v1 + "/workflows")

    assert response.status_code == 200
    listed = {w["name"]: w for w in response.json()["workflows"]}
    assert sorted(listed) == READY
    for name, entry in listed.items():
        on_disk = yaml.safe_load((ROOT / "workflows" / f"{name}.yaml").read_text())
        assert entry["title"] == on_disk["name"] and entry["description"]
        assert entry["ops"] == list(on_disk["ops"])
        assert entry["start_ops"] == on_disk["start_ops"]
        assert entry["end_ops"] == on_disk["end_ops"]
        assert set(entry["variables"]) == set(on_disk["variables"]), name
        for var, spec in on_disk["variables"].items():
            assert entry["variables"][var] == {"default": spec["default"],
                                               "description": spec["description"]}


@pytest.mark.parametrize("name", ["no_such_pipeline", "debate.yaml", "..", "%2e%2e%2fconfig"])
async def test_an_unknown_ready_pipeline_is_a_404(fake_upstream: FakeUpstream, name: str) -> None:
    async with open_workflow_router(three_tiers(fake_upstream)) as client:
        response = await client.run_named(name, "x")
    assert response.status_code == 404
    assert error_of(response)["code"] in ("workflow_not_found", "invalid_request")


async def test_huge_names_are_not_echoed_back_whole(fake_upstream: FakeUpstream) -> None:
    name = "w" * 20_000
    async with open_workflow_router(three_tiers(fake_upstream)) as client:
        named = await client.run_named(name, "x")
        submitted = await client.run(f"ops: {{a: {{prompt: A}}}}\nstart_ops: [{name}]", "x")
    assert named.status_code == 404
    assert submitted.status_code == 400
    for response in (named, submitted):
        error = error_of(response)
        assert len(response.content) < 1000, response.content[:300]
        assert "'wwww" in error["message"] and "… (20000 characters)" in error["message"]
        assert error["param"] is None or len(error["param"]) < 200


FACTS = ('{"customer_name": "Ada", "problem": "the parcel is late", "question": "where is '
         'it?", "steps_taken": ["waited a week"], "category": "shipping", "urgency": "high", '
         '"needs_human": true}')
DOCUMENT = "\n".join(f"Line {i}: " + "word " * 12 for i in range(200))
INPUTS = {
    "code_review": "def add(a, b):\n    return a - b\n",
    "debate": "Tabs are better than spaces.",
    "extract_classify_answer": "Hi, I'm Ada. My parcel is a week late. Where is it?",
    "map_reduce_summary": DOCUMENT,
    "reason_critique_refine": "How many rs are in strawberry?",
}


@pytest.mark.parametrize("name", READY)
async def test_each_ready_pipeline_runs(fake_upstream: FakeUpstream, name: str) -> None:
    fake = fake_upstream
    if name == "extract_classify_answer":
        fake.set_default("t1", Behaviour(text=FACTS))  # its tier-1 steps answer in JSON
    spec = yaml.safe_load((ROOT / "workflows" / f"{name}.yaml").read_text())
    async with open_workflow_router(three_tiers(fake)) as client:
        response = await client.run_named(name, INPUTS[name])

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "completed"
    assert set(result["outputs"]) == set(spec["ops"])
    (end,) = spec["end_ops"]
    assert result["final_output"] == result["outputs"][end]
    assert result["final_output"].startswith(f"[{result['routing'][end]}] ")
    prompts = received(fake, "t1", "t2", "t3")
    assert len(prompts) == len(spec["ops"])
    for op, model in result["routing"].items():
        assert model == f"t{spec['ops'][op]['tier']}"
    if name == "extract_classify_answer":
        (answer,) = received(fake, "t2")
        assert "problem: the parcel is late" in answer
        assert "category: shipping, urgency: high" in answer
        assert "as Ada" in answer and "with priority" in answer
        assert result["values"]["classify"]["urgency"] == "high"
    if name == "map_reduce_summary":
        parts = received(fake, "t1")
        for part in range(1, 5):
            assert sum(f"--- part {part} of 4 ---" in p for p in parts) == 1
    if name == "reason_critique_refine":
        (refine,) = [p for p in received(fake, "t2") if "A reviewer's critique" in p]
        assert result["outputs"]["reason"] in refine and result["outputs"]["critique"] in refine


async def test_a_ready_pipeline_takes_variable_overrides(fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    async with open_workflow_router(three_tiers(fake)) as client:
        response = await client.run_named(
            "debate", "Tabs are better.", variables={"points": "two", "max_words": 150})
        dry = await client.run_named("debate", "Tabs are better.", dry_run=True)

    assert response.status_code == 200, response.text
    sides = received(fake, "t2")
    assert len(sides) == 2
    assert all("Make your two strongest arguments" in p and "At most\n150 words" in p
               for p in sides), sides
    assert dry.status_code == 200 and dry.json()["generations"] == [
        ["opponent", "proponent"], ["judge"]]


# ---- SSE progress --------------------------------------------------------------------------


async def stream_ok(client: WorkflowClient, text: str, input: str = "x",
                    **fields: Any) -> list[tuple[str, Any]]:
    """The progress events of a streamed run, after its opening ``run_started``."""
    response, events = await client.stream(text, input, **fields)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["x-llm-router-request-id"]
    name, opening = events[0]
    run_id = response.headers["x-llm-router-run-id"]
    assert name == "run_started" and opening == {"run_id": run_id, "starts": 1,
                                                 "completed_ops": []}
    assert events[-1][1]["run_id"] == run_id
    return events[1:]


async def test_sse_progress_events_of_a_chain(fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    async with open_workflow_router(three_tiers(fake)) as client:
        events = await stream_ok(client, SPEC_EXAMPLE, "How many rs are in strawberry?")
        plain = (await client.run(SPEC_EXAMPLE, "How many rs are in strawberry?")).json()

    assert [(name, data.get("op")) for name, data in events] == [
        ("op_started", "reason"), ("op_finished", "reason"),
        ("op_started", "critique"), ("op_finished", "critique"),
        ("op_started", "refine"), ("op_finished", "refine"),
        ("result", None),
    ]
    started = events[2][1]
    assert started == {"op": "critique", "tier": 2, "model": None}
    finished = {data["op"]: data for name, data in events if name == "op_finished"}
    reason = finished["reason"]
    assert reason["status"] == "done" and reason["model"] == "t1" and reason["tier"] == 1
    assert reason["output"] == "[t1] Think step by step.\n\nHow many rs are in strawberry?"
    assert reason["cache"] == "MISS" and reason["attempts"] == 1
    assert reason["ms"] >= 0 and reason["cost_usd"] == 0
    assert reason["tokens"]["input"] > 0 and reason["tokens"]["output"] > 0
    result = events[-1][1]
    # A chain's ops run one after another within the run (``ms`` is rounded to 0.1, the
    # total to 1): their times add up to no more than the run's.
    assert sum(op["ms"] for op in finished.values()) <= result["total_ms"] + 1, finished
    assert result["final_output"] == finished["refine"]["output"]
    for key in ("outputs", "routing", "final_output", "status", "skipped", "not_run"):
        assert result[key] == plain[key], key
    assert result["ops"]["critique"] == {k: v for k, v in finished["critique"].items()
                                         if k not in ("op", "output")}


async def test_sse_progress_events_of_a_diamond(fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    fake.set_default("t1", Behaviour(latency=0.02))
    async with open_workflow_router(three_tiers(fake)) as client:
        events = await stream_ok(client, DIAMOND)

    at = {(name, data.get("op")): i for i, (name, data) in enumerate(events)}
    assert len(events) == 9 and events[-1][0] == "result"
    for middle in ("b", "c"):
        assert at[("op_finished", "a")] < at[("op_started", middle)]
        assert at[("op_finished", middle)] < at[("op_started", "d")]
    assert at[("op_finished", "d")] == 7


async def test_sse_failure_events(fake_upstream: FakeUpstream) -> None:
    fake = fake_upstream
    models = [model_entry(fake, "bad", tier=1), model_entry(fake, "fine", tier=1)]
    fake.set_default("bad", Behaviour(status=500))
    ops = {
        "broken": {"prompt": "Broken.", "model": "bad"},
        "child": {"prompt": "Child.", "model": "fine", "input_ops": ["broken"]},
    }
    fail_fast = yaml.safe_dump({"ops": ops})
    carry_on = yaml.safe_dump({"on_error": "continue", "ops": ops})
    async with open_workflow_router(models) as client:
        stopped = await stream_ok(client, fail_fast)
        partial = await stream_ok(client, carry_on)

    assert [name for name, _ in stopped] == ["op_started", "op_failed", "error"]
    assert stopped[1][1]["op"] == "broken"
    assert stopped[1][1]["error"].startswith("op 'broken' failed: ")
    error = stopped[2][1]["error"]
    assert error["param"] == "broken" and error["code"] == "upstream_error"
    assert error["message"] == stopped[1][1]["error"]

    assert [(name, data.get("op")) for name, data in partial] == [
        ("op_started", "broken"), ("op_failed", "broken"), ("op_skipped", "child"),
        ("result", None)]
    assert partial[2][1] == {"op": "child", "reason": "skipped"}
    assert partial[3][1]["status"] == "partial" and partial[3][1]["final_output"] is None
    assert fake.requests("fine") == []


async def test_sse_events_reach_the_client_as_ops_finish(fake_upstream: FakeUpstream) -> None:
    """Progress is live: the first op's events arrive while the second is still running. t1's
    answers are held at a relay; a's is let through, b's only once the client has read a's
    op_finished (had the events waited for the result, they would never come)."""
    fake = fake_upstream
    text = "ops: {a: {prompt: A., tier: 1}, b: {prompt: B., tier: 1, input_ops: [a]}}"
    async with open_hold_relay(fake) as relay:
        models = three_tiers(fake)
        models[0]["base_url"] = relay.base_url("t1", "openai")
        relay.hold()
        async with open_workflow_router(models) as client:
            body = {"input": "x", "workflow": text, "stream": True}
            async with open_raw_post(client.router.url, "/v1/workflows", body) as sock:
                raw = b""
                with trio.fail_after(60):
                    await relay.wait_held(1)
                    relay.release(1)  # a's answer; b's will be held
                    while b"event: op_finished" not in raw:
                        raw += await sock.receive_some()
                    assert b"event: result" not in raw
                    relay.release()
                    while b"event: result" not in raw:
                        raw += await sock.receive_some()
    assert raw.count(b"event: op_finished") == 2
    assert received(fake, "t1") == ["A.\n\nx", "B.\n\n[t1] A.\n\nx"]


# ---- render limits: a template cannot hold up the router -----------------------------------

# 8 MB built at once, then 1,500 scans of it: seconds of CPU, all on the event loop.
SEIZING = ("{% set a='ab'*4000000 %}{% for i in range(1500) %}"
           "{% if 'abababababababababababc' in a %}{% endif %}{% endfor %}x")
# The same scans of a string under the size cap: the comparisons' work is what stops it.
SCANNING = ("{% set a='ab'*1000000 %}{% for i in range(1500) %}"
            "{% if 'abababababababababababc' in a %}{% endif %}{% endfor %}x")
# Cheap steps within every budget, just many: only the deadline stops it (~5 s of CPU).
GRINDING = "{% for i in range(100000) %}{% set x = [3, 1, 2, 5, 4, 7, 6, 9, 8, 0]|sort %}" \
           "{% endfor %}x"


@pytest.mark.parametrize(("template", "fragment"), [
    (SEIZING, "'*' would build a value of 8,000,000 characters; a template may build at most"),
    (SCANNING, "template does too much work ('in')"),
])
async def test_an_expensive_template_is_a_prompt_400(
    fake_upstream: FakeUpstream, template: str, fragment: str,
) -> None:
    """Refused by the render's limits, which the message names, before the work is done
    (these took 14 s and 29 s of CPU before the limits; where a render runs is the next
    test's business)."""
    fake = fake_upstream
    text = yaml.safe_dump({"ops": {"a": {"prompt": template, "tier": 1}}})
    async with open_workflow_router(three_tiers(fake)) as client:
        dry = await client.run(text, "x", dry_run=True)
        run = await client.run(text, "x")

    for response in (dry, run):
        assert response.status_code == 400, response.text
        error = error_of(response)
        assert error["code"] == "workflow_invalid" and error["param"] == "a"
        assert "op 'a': template refused: " + fragment in error["message"], error
    assert error_of(run)["message"].startswith("op 'a' failed: ")
    assert received(fake, "t1", "t2", "t3") == []


async def test_a_slow_render_is_stopped_at_its_deadline_off_the_event_loop(
    fake_upstream: FakeUpstream,
) -> None:
    """The render grinds until its deadline in a worker thread: of the CPU each request took,
    the event loop's thread spent a small part (on the loop, the render's would be all of it,
    and every other request would wait for it)."""
    fake = fake_upstream
    text = yaml.safe_dump({"ops": {"a": {"prompt": GRINDING, "tier": 1}}})
    outcomes = []
    async with open_workflow_router(three_tiers(fake),
                                    workflows={"render_timeout_sec": 0.5}) as client:
        for flags in ({"dry_run": True}, {}):
            with cpu_split() as split:
                response = await client.run(text, "x", **flags)
            outcomes.append((response, split))

    for response, split in outcomes:
        assert response.status_code == 400, response.text
        error = error_of(response)
        assert error["code"] == "workflow_invalid" and error["param"] == "a"
        assert "rendering takes longer than 0.5 s" in error["message"], error
        assert "workflows.render_timeout_sec" in error["message"], error
        assert split.loop <= split.process / 2, split
    assert received(fake, "t1", "t2", "t3") == []


# ---- bad bodies: always a 4xx, never a 500 -------------------------------------------------


@pytest.mark.parametrize(("workflow", "param", "fragment"), [
    ("a\u0001", None, "U+0001 is not allowed in YAML"),
    ("ops: {a: {prompt: \"x\u0001\"}}", None, "U+0001 is not allowed in YAML"),
    ("ops:\n  a:\n    prompt: x\u0085\u001f", None, "U+001F is not allowed in YAML"),
    ("ops: {a: {template: " + "x" * 300 + "}}", "a", "must name a file in templates/"),
    ("ops: {a: {template: " + "x/" * 120 + "x.j2}}", "a", "must name a file in templates/"),
    ("ops: {a: {template: " + "x" * 100 + "/" + "y" * 96 + ".j2}}", "a",
     "no template named"),
])
async def test_control_characters_and_unusable_template_names_are_400s(
    fake_upstream: FakeUpstream, workflow: str, param: str | None, fragment: str,
) -> None:
    async with open_workflow_router(three_tiers(fake_upstream)) as client:
        responses = [await client.run(workflow, "x", **flags)
                     for flags in ({}, {"dry_run": True}, {"stream": True})]
    for response in responses:
        assert response.status_code == 400, response.text
        error = error_of(response)
        assert error["code"] == "workflow_invalid" and error["param"] == param, error
        assert fragment in error["message"], error


_TEXT = st.text(max_size=30)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**70) | _TEXT
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)
_OP_NAMES = st.sampled_from(["a", "b", "c"]) | _TEXT
_PROMPTS = st.sampled_from([
    "Hi.", "{{ input }}", "{{ ops.a.output }}", "{{ nope }}", "{% for i in range(3) %}{{ i }}",
    "{{ 'ab' * 4000000 }}", "{{ input.__class__ }}", "{% if 'x' in input %}x{% endif %}y",
]) | _TEXT | _JSON
_OPS = st.fixed_dictionaries({}, optional={
    "prompt": _PROMPTS,
    "template": st.sampled_from(["rcr_reason.j2", "../config.yaml", "x" * 300, "a/" * 150])
    | st.text("ab./_-", max_size=300) | _JSON,
    "tier": st.integers(0, 11) | _JSON,
    "model": st.sampled_from(["t1", "auto", "gpt-9"]) | _JSON,
    "input_ops": st.lists(_OP_NAMES, max_size=3) | _JSON,
    "output_ops": st.lists(_OP_NAMES, max_size=3),
    "max_tokens": st.integers(-1, 10**6) | _JSON,
    "json": st.booleans() | _JSON,
    "params": st.dictionaries(_TEXT, _JSON, max_size=2),
    "retries": st.integers(-1, 11),
    "unknown": _JSON,
})
_DOCUMENTS = st.fixed_dictionaries(
    {"ops": st.dictionaries(_OP_NAMES, _OPS, max_size=3) | _JSON},
    optional={"variables": st.dictionaries(_TEXT, _JSON, max_size=2) | _JSON,
              "on_error": st.sampled_from(["continue", "fail_fast"]) | _JSON,
              "max_cost_usd": _JSON, "max_concurrency": _JSON, "start_ops": _JSON},
)


def _corrupt(text: str, char: str, at: int) -> str:
    at %= len(text) + 1
    return text[:at] + char + text[at:]


_YAML = st.builds(yaml.safe_dump, _DOCUMENTS)
_CONTROL = st.characters(max_codepoint=0x1F) | st.characters(min_codepoint=0x7F,
                                                              max_codepoint=0x9F)
_WORKFLOWS = (_YAML | st.builds(_corrupt, _YAML, _CONTROL | st.characters(), st.integers(0, 10**4))
              | st.builds(_corrupt, st.text(max_size=200), _CONTROL, st.integers(0, 200))
              | _JSON)
_BODIES = st.fixed_dictionaries({}, optional={
    "workflow": _WORKFLOWS,
    "input": _TEXT | _JSON,
    "variables": st.dictionaries(_TEXT, _JSON, max_size=2) | _JSON,
    "dry_run": st.booleans() | _JSON,
    "stream": st.booleans() | _JSON,
})


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_BODIES, min_size=1, max_size=8))
async def test_fuzzed_workflow_bodies_never_get_a_5xx(bodies: list[dict[str, Any]]) -> None:
    errors = _Errors()
    logger = logging.getLogger("llm_router")
    logger.addHandler(errors)
    try:
        async with open_fake_upstream() as fake, open_workflow_router(three_tiers(fake)) as client:
            for body in bodies:
                response = await client.http.post(client.router.v1 + "/workflows", json=body)
                assert response.status_code < 500, (body, response.text)
                if response.status_code >= 400:
                    assert error_of(response)["message"], (body, response.text)
                assert b"internal_error" not in response.content, (body, response.text)
    finally:
        logger.removeHandler(errors)
    assert [r.getMessage() for r in errors.records] == []
