"""``llm-router workflow validate|plan|run`` (api/cli/workflow.py), run as the real command
(the durable-run commands are in test_run_cli.py).

``validate`` and ``plan`` run offline in a scratch folder; ``run`` talks to a router served
by the test on a free loopback port, in front of the fake upstream, while the command runs
as a subprocess (``trio.run_process``), so the router keeps serving as the command waits.
"""

from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from support_routing import model_entry, prompt_scoring
from support_workflows import ROOT, open_workflow_router, received, three_tiers

import api.cli.workflow
from api.cli.progress import preview
from api.cli.workflow import CommandFailed, coerce_variables
from engine.core.config import load_config
from engine.core.workflow.plan import estimate_costs
from engine.core.workflow.spec import WorkflowLimits, load_workflow
from engine.testing.fake_upstream import Behaviour, FakeUpstream, refused_url

LLM_ROUTER = str(Path(sys.executable).parent / "llm-router")
READY = ["code_review", "debate", "extract_classify_answer", "map_reduce_summary",
         "reason_critique_refine"]

SPEC_EXAMPLE = """\
start_ops: [reason]
end_ops: [refine]
ops:
  reason: {prompt: "Think step by step.", tier: 1, max_tokens: 1024, output_ops: [critique]}
  critique:
    prompt: "Find errors in the reasoning."
    tier: 2
    max_tokens: 512
    input_ops: [reason]
    output_ops: [refine]
  refine: {prompt: "Give a correct final answer.", tier: 2, max_tokens: 512,
           input_ops: [critique]}
"""

# Prices only: nothing is sent upstream by validate and plan.
CONFIG = """\
models:
  - {name: small, provider: openai, model: m1, base_url: "http://127.0.0.1:9/v1", tier: 1,
     cost_per_1k_in: 0.0008, cost_per_1k_out: 0.004}
  - {name: mid, provider: anthropic, model: m2, base_url: "http://127.0.0.1:9", tier: 2,
     cost_per_1k_in: 0.003, cost_per_1k_out: 0.015}
  - {name: big, provider: anthropic, model: m3, base_url: "http://127.0.0.1:9", tier: 3,
     cost_per_1k_in: 0.015, cost_per_1k_out: 0.075}
cache: {enabled: false}
"""


async def cli(*args: str, cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            [LLM_ROUTER, *args], cwd=cwd, env=dict(os.environ), stdin=stdin, check=False,
            capture_stdout=True, capture_stderr=True,
        )


async def together(*calls: tuple[str, ...], cwd: Path) -> list[subprocess.CompletedProcess[bytes]]:
    """Run several commands at once (each costs a Python start-up and the engine's imports);
    their results in order."""
    results: list[Any] = [None] * len(calls)

    async def one(i: int, args: tuple[str, ...]) -> None:
        results[i] = await cli(*args, cwd=cwd)

    async with trio.open_nursery() as nursery:
        for i, args in enumerate(calls):
            nursery.start_soon(one, i, args)
    return results


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def lines_of(output: bytes) -> list[str]:
    return output.decode().splitlines()


def progress(stderr: bytes) -> list[tuple[str, str, str]]:
    """``run``'s progress lines as (what, op, detail), without their timestamps."""
    found = []
    for line in lines_of(stderr):
        if line.startswith("["):
            what, op, *detail = line.split("]", 1)[1].split(maxsplit=2)
            found.append((what, op, "".join(detail)))
    return found


# ---- validate ------------------------------------------------------------------------------


async def test_validate_the_ready_pipelines_by_name(tmp_path: Path) -> None:
    done = await cli("workflow", "validate", *READY, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    out = lines_of(done.stdout)
    for name, line in zip(READY, out, strict=True):
        assert line.startswith(str(ROOT / "workflows" / f"{name}.yaml") + ": ok (")
    assert "ok (3 ops in 2 levels: opponent, proponent -> judge)" in out[1]
    assert done.stderr == b""


async def test_validate_several_files_reports_each(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", SPEC_EXAMPLE)
    write(tmp_path, "bad.yaml", "ops: {a: {prompt: A, tier: 0}}")
    done = await cli("workflow", "validate", "good.yaml", "bad.yaml", "absent", cwd=tmp_path)
    assert done.returncode == 2
    assert lines_of(done.stdout) == [
        "good.yaml: ok (3 ops in 3 levels: reason -> critique -> refine)"]
    err = lines_of(done.stderr)
    assert err[:2] == ["bad.yaml: 1 problem",
                       "  op 'a': tier must be an integer from 1 to 10, got int 0"]
    assert err[2].startswith("llm-router: absent: no such file, and no ready pipeline")


async def test_validate_prints_every_problem_naming_its_op(tmp_path: Path) -> None:
    write(tmp_path, "bad.yaml", """\
        on_error: retry
        ops:
          a: {prompt: A, temprature: 1}
          b: {prompt: "{{ tone }}", input_ops: [a]}
          c: {prompt: "{{ ''.__class__ }}", input_ops: [b]}
          d: {prompt: D, input_ops: [c], tier: 0}
    """)
    done = await cli("workflow", "validate", "bad.yaml", cwd=tmp_path)

    assert done.returncode == 2
    assert done.stdout == b""
    err = lines_of(done.stderr)
    assert err[0] == "bad.yaml: 5 problems"
    problems = err[1:]
    assert len(problems) == 5 and all(line.startswith("  ") for line in problems)
    for op, fragment in [("a", "unknown key 'temprature'"), ("b", "undeclared variable 'tone'"),
                         ("c", "'__class__' is not allowed"), ("d", "tier must be an integer")]:
        assert any(f"op '{op}'" in line and fragment in line for line in problems), (op, err)
    assert any("on_error must be" in line for line in problems)
    assert "Traceback" not in done.stderr.decode()


async def test_validate_names_the_op_of_a_graph_problem(tmp_path: Path) -> None:
    write(tmp_path, "cycle.yaml", """\
        ops:
          s: {prompt: S}
          a: {prompt: A, input_ops: [s, c]}
          b: {prompt: B, input_ops: [a]}
          c: {prompt: C, input_ops: [b]}
    """)
    write(tmp_path, "start.yaml", """\
        start_ops: [a]
        ops: {a: {prompt: A}, lost: {prompt: L}}
    """)
    cycle, lost = await together(("workflow", "validate", "cycle.yaml"),
                                 ("workflow", "validate", "start.yaml"), cwd=tmp_path)
    assert cycle.returncode == 2 and lost.returncode == 2
    assert lines_of(cycle.stderr) == ["cycle.yaml: 1 problem",
                                      "  op 'a': cycle: a -> b -> c -> a"]
    assert "op 'lost' is not reachable" in lost.stderr.decode()


async def test_validate_reports_every_problem_in_one_run(tmp_path: Path) -> None:
    # A too-large max_tokens, an unknown input op, a cycle, a misspelt key, a misspelt
    # output attribute and an unknown pinned model: one run, every problem.
    write(tmp_path, "config.yaml", CONFIG)
    write(tmp_path, "bad.yaml", """\
        ops:
          a: {prompt: A, max_tokens: 99999, input_ops: [c], model: smal}
          b: {prompt: B, input_ops: [a, nope], temprature: 0.5}
          c: {prompt: "{{ ops.b.outptu }}", input_ops: [b]}
    """)
    done = await cli("workflow", "validate", "bad.yaml", cwd=tmp_path)

    assert done.returncode == 2
    err = lines_of(done.stderr)
    assert err[0] == "bad.yaml: 6 problems", err
    assert sorted(err[1:]) == sorted([
        "  op 'a': max_tokens must be an integer from 1 to 32768, got int 99999",
        "  op 'a': model 'smal' is not configured (did you mean 'small'?) "
        "(configured: small, mid, big)",
        "  op 'b': unknown key 'temprature' (did you mean 'temperature'?)",
        "  op 'c' prompt, line 1: ops.b.outptu: an op's output has no 'outptu', only "
        "'output' (the answer text) and 'value' (its parsed JSON) (did you mean 'output'?)",
        "  op 'b': input_ops names unknown op 'nope'",
        "  op 'a': cycle: a -> b -> c -> a",
    ]), err


async def test_validate_with_a_config_uses_its_templates_and_models(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", CONFIG + "workflows: {templates_dir: prompts}\n")
    write(tmp_path, "prompts/hello.j2", "Say hello to {{ input }}.")
    write(tmp_path, "good.yaml", "ops: {a: {template: hello.j2, model: small}}")
    write(tmp_path, "pinned.yaml", "ops: {a: {template: hello.j2, model: gpt-9}}")
    good, pinned = await together(("workflow", "validate", "good.yaml"),
                                  ("workflow", "validate", "pinned.yaml"), cwd=tmp_path)
    (tmp_path / "config.yaml").rename(tmp_path / "router.yaml")
    no_templates, explicit = await together(
        ("workflow", "validate", "good.yaml"),
        ("workflow", "validate", "good.yaml", "--config", "router.yaml"), cwd=tmp_path)

    assert good.returncode == 0, good.stderr.decode()
    assert good.stdout.decode() == "good.yaml: ok (1 op in 1 level: a)\n"
    assert pinned.returncode == 2
    assert "op 'a': model 'gpt-9' is not configured" in pinned.stderr.decode()
    assert no_templates.returncode == 2
    assert "op 'a': template files are not available here" in no_templates.stderr.decode()
    assert explicit.returncode == 0, explicit.stderr.decode()


async def test_an_unknown_file_or_name(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", CONFIG)
    for done in await together(("workflow", "validate", "nope"),
                               ("workflow", "plan", "dir/nope.yaml"), cwd=tmp_path):
        assert done.returncode == 2
        err = done.stderr.decode()
        assert "no such file, and no ready pipeline" in err and "debate" in err
        assert "Traceback" not in err


async def test_python_dash_m_runs_the_workflow_commands(tmp_path: Path) -> None:
    with trio.fail_after(30):
        done = await trio.run_process(
            [sys.executable, "-m", "api.cli", "workflow", "validate", "debate"],
            cwd=ROOT, check=False, capture_stdout=True, capture_stderr=True)
    assert done.returncode == 0, done.stderr.decode()
    assert ": ok (3 ops in 2 levels: opponent, proponent -> judge)" in done.stdout.decode()


# ---- plan ----------------------------------------------------------------------------------


async def test_plan_shows_levels_critical_path_and_the_config_prices(tmp_path: Path) -> None:
    config_path = write(tmp_path, "config.yaml", CONFIG)
    write(tmp_path, "spec.yaml", SPEC_EXAMPLE)
    question = "How many rs are in strawberry?"
    results: dict[str, Any] = {}

    async def plan(key: str, *args: str, stdin: bytes = b"") -> None:
        results[key] = await cli("workflow", "plan", "spec.yaml", *args, cwd=tmp_path,
                                 stdin=stdin)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(plan, "text", "--input", question)
        nursery.start_soon(partial(plan, "json", "--input", "-", "--json",
                                   stdin=question.encode()))
    done, as_json = results["text"], results["json"]

    assert done.returncode == 0, done.stderr.decode()
    out = lines_of(done.stdout)
    assert out[0] == "workflow: 3 ops in 3 levels (* = critical path)"
    assert [line for line in out if line.startswith("level")] == ["level 1", "level 2",
                                                                    "level 3"]
    assert any(line.startswith("  * critique  <- reason") and "mid (tier 2)" in line
               for line in out), out
    assert any(line.startswith("critical path: reason -> critique -> refine (~") for line in out)
    assert out[-1] == "generations: [reason] -> [critique] -> [refine]"

    config = load_config(config_path)
    workflow = load_workflow(SPEC_EXAMPLE, limits=WorkflowLimits(), templates_dir=None)
    expected = estimate_costs(workflow, config, input=question)
    assert as_json.returncode == 0, as_json.stderr.decode()
    assert json.loads(as_json.stdout) == expected
    assert any(line.startswith(f"estimated cost: ${expected['total_cost_usd']:.4f} ")
               for line in out), out


async def test_plan_a_ready_pipeline_with_variables(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", CONFIG)
    base, longer = await together(
        ("workflow", "plan", "debate", "--json"),
        ("workflow", "plan", "debate", "--json", "--var", "points=twelve", "--var",
         "max_words=900"), cwd=tmp_path)
    assert base.returncode == 0 and longer.returncode == 0, longer.stderr.decode()
    before, after = json.loads(base.stdout), json.loads(longer.stdout)
    assert after["ops"]["judge"]["model"] == "big"
    assert after["ops"]["proponent"]["input_tokens"] > before["ops"]["proponent"]["input_tokens"]


PLAN_REFUSALS = [
    (("--var", "max_words=lots"), "--var max_words: expected a number, got 'lots'"),
    (("--var", "mood=odd"), "unknown variable 'mood'"),
    (("--var", "novalue"), "expected NAME=VALUE"),
    (("--config", "absent.yaml"), "absent.yaml: cannot read"),
]


async def test_plan_refuses_bad_variables_and_configs(tmp_path: Path) -> None:
    write(tmp_path, "config.yaml", CONFIG)
    results = await together(*[("workflow", "plan", "debate", *args)
                               for args, _ in PLAN_REFUSALS], cwd=tmp_path)
    for (args, fragment), done in zip(PLAN_REFUSALS, results, strict=True):
        assert done.returncode == 2, args
        assert fragment in done.stderr.decode(), (args, done.stderr.decode())
        assert "Traceback" not in done.stderr.decode()


async def test_plan_needs_a_config_for_prices(tmp_path: Path) -> None:
    done = await cli("workflow", "plan", "debate", cwd=tmp_path)
    assert done.returncode == 2
    assert "config.yaml" in done.stderr.decode() and "Traceback" not in done.stderr.decode()


async def test_plan_routes_with_the_thresholds_calibration_saved(
    tmp_path: Path, fake_upstream: FakeUpstream,
) -> None:
    # A router calibrates tier1_max from 30 to 25; an offline plan with the same config (and
    # so the same feedback database) predicts the tier that router would use.
    learned = {"model": None, "min_samples": 5, "max_step": 5, "band": 10,
               "feedback_db": str(tmp_path / "feedback.db")}
    models = three_tiers(fake_upstream)
    write(tmp_path, "config.yaml", yaml.safe_dump({"models": models, "learned": learned}))
    write(tmp_path, "border.yaml", yaml.safe_dump(
        {"ops": {"border": {"prompt": prompt_scoring(28), "max_tokens": 16}}}, width=10_000))
    before = await cli("workflow", "plan", "border.yaml", "--json", cwd=tmp_path)
    async with open_workflow_router(models, learned=learned) as client:
        for _ in range(5):
            report = await client.http.post(client.router.v1 + "/feedback",
                                            json={"score": 0.28, "tier": 1, "quality": 0.2})
            assert report.json()["thresholds"]["tier1_max"] in (30, 25)
        planned = await client.run((tmp_path / "border.yaml").read_text(), "", dry_run=True)
    after = await cli("workflow", "plan", "border.yaml", "--json", cwd=tmp_path)

    assert before.returncode == 0 and after.returncode == 0, after.stderr.decode()
    assert json.loads(before.stdout)["ops"]["border"]["tier"] == 1
    assert json.loads(after.stdout)["ops"]["border"]["tier"] == 2
    assert planned.json()["ops"]["border"]["tier"] == 2


# ---- run -----------------------------------------------------------------------------------


async def test_run_shows_progress_then_prints_the_final_output(
    tmp_path: Path, fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    fake.set_default("t2", Behaviour(latency=0.05))
    write(tmp_path, "spec.yaml", SPEC_EXAMPLE)
    async with open_workflow_router(three_tiers(fake)) as client:
        done = await cli("workflow", "run", "spec.yaml", "--input", "How many rs?",
                         "--server", client.router.url, cwd=tmp_path)

    assert done.returncode == 0, done.stderr.decode()
    reason = "Think step by step.\n\nHow many rs?"
    critique = f"Find errors in the reasoning.\n\n[t1] {reason}"
    final = f"[t2] Give a correct final answer.\n\n[t2] {critique}"
    assert done.stdout.decode() == final + "\n"  # the final output alone on stdout
    steps = progress(done.stderr)
    run_id = steps[0][1]
    assert steps[0] == ("run", run_id, "started") and run_id.startswith("run_")
    assert [step[:2] for step in steps[1:]] == [
        ("started", "reason"), ("done", "reason"), ("started", "critique"),
        ("done", "critique"), ("started", "refine"), ("done", "refine")]
    assert steps[3][2] == "tier 2"
    detail = steps[2][2]
    assert detail.startswith("t1 (tier 1)  $0.000000  ") and " ms  | " in detail
    assert detail.endswith("| [t1] Think step by step. How many rs?")
    err = lines_of(done.stderr)
    assert len(err) == len(steps) + 1
    assert err[-1].startswith("completed: 3 of 3 ops in ")
    assert received(fake, "t1") == [reason]


async def test_run_a_ready_pipeline_by_name_with_variables_and_stdin(
    tmp_path: Path, fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    async with open_workflow_router(three_tiers(fake)) as client:
        done = await cli("workflow", "run", "debate", "--input", "-", "--var", "points=two",
                         "--var", "max_words=150", "--server", client.router.url + "/",
                         cwd=tmp_path, stdin=b"Tabs are better than spaces.\n")

    assert done.returncode == 0, done.stderr.decode()
    sides = received(fake, "t2")
    assert len(sides) == 2
    assert all("Make your two strongest arguments" in p and "At most\n150 words" in p
               and "Tabs are better than spaces." in p for p in sides)
    (judge,) = received(fake, "t3")
    assert done.stdout.decode() == f"[t3] {judge}\n"
    assert [what for what, _, _ in progress(done.stderr)].count("done") == 3


async def test_run_failures_exit_non_zero_and_say_which_op(
    tmp_path: Path, fake_upstream: FakeUpstream,
) -> None:
    fake = fake_upstream
    fake.set_default("bad", Behaviour(status=500))
    ops: dict[str, Any] = {
        "broken": {"prompt": "Broken.", "model": "bad"},
        "child": {"prompt": "Child.", "model": "fine", "input_ops": ["broken"]},
        "other": {"prompt": "Other.", "model": "fine"},
    }
    write(tmp_path, "stop.yaml", yaml.safe_dump({"ops": ops}))
    write(tmp_path, "carry_on.yaml", yaml.safe_dump({"on_error": "continue", "ops": ops}))
    write(tmp_path, "invalid.yaml", "ops: {a: {prompt: A, model: gpt-9}}")
    models = [model_entry(fake, "bad", tier=1), model_entry(fake, "fine", tier=1)]
    async with open_workflow_router(models) as client:
        stopped, partial, invalid, unknown = await together(
            *[("workflow", "run", name, "--input", "x", "--server", client.router.url)
              for name in ("stop.yaml", "carry_on.yaml", "invalid.yaml", "no_such")],
            cwd=tmp_path)

    assert stopped.returncode == 1 and stopped.stdout == b""
    err = stopped.stderr.decode()
    assert ("FAILED", "broken") in [step[:2] for step in progress(stopped.stderr)], err
    assert "llm-router: the workflow failed: op 'broken' failed: " in err

    assert partial.returncode == 1
    err = partial.stderr.decode()
    assert ("skipped", "child") in [step[:2] for step in progress(partial.stderr)], err
    assert "partial: 1 of 3 ops in " in err and "failed: broken; skipped: child" in err
    assert partial.stdout.decode() == "## other\n[fine] Other.\n\nx\n"

    assert invalid.returncode == 2
    assert "op 'a': model 'gpt-9' is not configured" in invalid.stderr.decode()
    assert unknown.returncode == 2 and "no ready workflow named 'no_such'" in (
        unknown.stderr.decode())
    for done in (stopped, partial, invalid, unknown):
        assert "Traceback" not in done.stderr.decode()


async def test_run_with_a_client_key(tmp_path: Path, fake_upstream: FakeUpstream) -> None:
    write(tmp_path, "spec.yaml", SPEC_EXAMPLE)
    async with open_workflow_router(three_tiers(fake_upstream),
                                    server={"api_keys": ["cli-key"]}) as client:
        url = client.router.url
        denied, allowed = await together(
            ("workflow", "run", "spec.yaml", "--input", "q", "--server", url),
            ("workflow", "run", "debate", "--input", "q", "--var", "max_words=99",
             "--server", url, "--api-key", "cli-key"), cwd=tmp_path)
    assert denied.returncode == 2 and "API key" in denied.stderr.decode()
    assert allowed.returncode == 0, allowed.stderr.decode()


async def test_run_without_a_router(tmp_path: Path) -> None:
    write(tmp_path, "spec.yaml", SPEC_EXAMPLE)
    url = refused_url()
    done = await cli("workflow", "run", "spec.yaml", "--input", "q", "--server", url,
                     cwd=tmp_path)
    assert done.returncode == 1
    assert f"cannot reach the router at {url}" in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


# ---- helpers, in process -------------------------------------------------------------------


def test_variables_take_the_kind_of_their_defaults() -> None:
    defaults = {"n": 2, "x": 0.5, "flag": False, "free": None, "text": "t"}
    assert coerce_variables(
        [("n", "7"), ("x", "1e-3"), ("flag", "Yes"), ("free", "12"), ("text", "42")], defaults
    ) == {"n": 7, "x": 0.001, "flag": True, "free": 12, "text": "42"}
    assert coerce_variables([("free", "null"), ("free2", "a b")], defaults | {"free2": None}
                            ) == {"free": None, "free2": "a b"}
    assert coerce_variables([("free", "[1]")], defaults) == {"free": "[1]"}
    assert coerce_variables([("undeclared", "3")], defaults) == {"undeclared": "3"}
    for name, raw in [("n", "many"), ("n", "nan"), ("x", "inf"), ("flag", "maybe")]:
        with pytest.raises(CommandFailed, match=f"--var {name}: expected"):
            coerce_variables([(name, raw)], defaults)


def test_preview_is_one_short_line() -> None:
    assert preview("a\n\n  b\tc") == "a b c"
    assert preview("x" * 100, 10) == "xxxxxxx..."
    assert preview(None) == ""


def test_docstring_examples() -> None:
    result = doctest.testmod(api.cli.workflow)
    assert result.attempted >= 1 and result.failed == 0
