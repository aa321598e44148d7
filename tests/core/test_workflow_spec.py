"""Workflow definitions (engine.core.workflow.spec*): the documented format, validation, templates,
planning.

All sans-IO: YAML text in, checked types, plans and estimates out. The executor and the HTTP
API are tested elsewhere.
"""

from __future__ import annotations

import dataclasses
import doctest
import itertools
import os
import textwrap
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from workflow_cases import CASES, ESCAPES, RUNTIME_REFUSALS, SPEC_EXAMPLE, WORKFLOW_LEVEL

import engine.core.workflow.plan
import engine.core.workflow.render
import engine.core.workflow.source
import engine.core.workflow.spec
import engine.core.workflow.template
import engine.errors
from engine.core.config import Config, ModelConfig
from engine.core.planner import Plan
from engine.core.workflow.plan import (
    DEFAULT_OUTPUT_TOKENS,
    check_models,
    critical_path,
    describe_plan,
    estimate_costs,
    plan_workflow,
)
from engine.core.workflow.render import parse_output, render_request, resolve_variables
from engine.core.workflow.spec import (
    OpOutput,
    Workflow,
    WorkflowLimits,
    load_workflow,
)
from engine.errors import TemplateLimitExceeded, UpstreamError, WorkflowInvalid

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
WORKFLOWS = ROOT / "workflows"



def load(text: str, *, limits: WorkflowLimits | None = None,
         templates_dir: Path | None = None) -> Workflow:
    return load_workflow(textwrap.dedent(text), limits=limits or WorkflowLimits(),
                         templates_dir=templates_dir)


def invalid(text: str, **kwargs: object) -> WorkflowInvalid:
    with pytest.raises(WorkflowInvalid) as info:
        load(text, **kwargs)  # type: ignore[arg-type]
    assert info.value.status == 400
    return info.value


def user_text(request: object) -> str:
    return request.messages[0].text  # type: ignore[attr-defined,no-any-return]


def render(wf: Workflow, op: str, *, input: str = "IN", outputs: dict[str, str] | None = None,
           variables: dict[str, object] | None = None) -> object:
    outs = {name: parse_output(wf.ops[name], text) for name, text in (outputs or {}).items()}
    return render_request(wf, op, input=input, variables=resolve_variables(wf, variables),
                          outputs=outs)


# ---- the documented format ---------------------------------------------------------------------


def test_spec_example_loads_unchanged() -> None:
    wf = load(SPEC_EXAMPLE)
    assert list(wf.ops) == ["reason", "critique", "refine"]
    assert wf.start_ops == ("reason",) and wf.end_ops == ("refine",)
    assert wf.edges == (("reason", "critique"), ("critique", "refine"))
    assert wf.ops["critique"].inputs == ("reason",)
    assert wf.ops["critique"].outputs == ("refine",)
    assert (wf.ops["reason"].tier, wf.ops["reason"].max_tokens) == (1, 1024)
    assert wf.on_error == "fail_fast" and wf.variables == {}


def test_spec_semantics_start_op_gets_input_others_get_their_inputs() -> None:
    wf = load(SPEC_EXAMPLE)
    first = render(wf, "reason", input="How many rs are in strawberry?")
    assert user_text(first) == "Think step by step.\n\nHow many rs are in strawberry?"
    assert first.max_tokens == 1024 and first.model is None  # type: ignore[attr-defined]
    second = render(wf, "critique", outputs={"reason": "There are 2."})
    assert user_text(second) == "Find errors in the reasoning.\n\nThere are 2."
    third = render(wf, "refine", outputs={"critique": "Wrong: 3."})
    assert user_text(third) == "Give a correct final answer.\n\nWrong: 3."


@pytest.mark.parametrize("side", ["input_ops", "output_ops", "both"])
def test_edges_may_be_given_on_either_side(side: str) -> None:
    up = "output_ops: [b]" if side in ("output_ops", "both") else ""
    down = "input_ops: [a]" if side in ("input_ops", "both") else ""
    wf = load(f"ops:\n  a: {{prompt: A, {up}}}\n  b: {{prompt: B, {down}}}\n".replace(", }", "}"))
    assert wf.edges == (("a", "b"),)
    assert wf.ops["b"].inputs == ("a",) and wf.ops["a"].outputs == ("b",)


def test_inputs_keep_declaration_order() -> None:
    wf = load("""
        ops:
          x: {prompt: X}
          y: {prompt: Y}
          z: {prompt: Z, input_ops: [y, x]}
          w: {prompt: W}
          v: {prompt: V, output_ops: []}
    """.replace("w: {prompt: W}", "w: {prompt: W, input_ops: [x]}"))
    assert wf.ops["z"].inputs == ("y", "x")
    assert wf.ops["x"].outputs == ("z", "w")  # undeclared: YAML order of the ops listing x


def test_disagreeing_sides_name_the_op_missing_the_edge() -> None:
    err = invalid("""
        ops:
          a: {prompt: A, output_ops: [b]}
          b: {prompt: B, input_ops: []}
    """)
    assert err.op == "b"
    assert "'a' lists it in output_ops" in err.message
    err = invalid("""
        ops:
          a: {prompt: A, output_ops: [c]}
          b: {prompt: B, input_ops: [a]}
          c: {prompt: C, input_ops: [a]}
    """)
    assert err.op == "a" and "'b' lists it in input_ops" in err.message


def test_start_and_end_ops_default_to_sources_and_sinks() -> None:
    wf = load("""
        ops:
          a: {prompt: A}
          b: {prompt: B}
          c: {prompt: C, input_ops: [a, b]}
    """)
    assert wf.start_ops == ("a", "b") and wf.end_ops == ("c",)


def test_optional_keys_are_carried() -> None:
    wf = load("""
        name: demo
        description: A demo.
        on_error: continue
        max_cost_usd: 0.5
        max_concurrency: 2
        variables:
          tone: dry
          n: {default: 3, description: How many.}
        ops:
          a:
            prompt: "{{ tone }} {{ n }} {{ input }}"
            system: "You are {{ tone }}."
            model: claude-haiku
            temperature: 0
            json: true
            timeout_sec: 30
            retries: 2
            description: first
    """)
    op = wf.ops["a"]
    assert (wf.name, wf.description, wf.on_error) == ("demo", "A demo.", "continue")
    assert (wf.max_cost_usd, wf.max_concurrency) == (0.5, 2)
    assert wf.variables == {"tone": "dry", "n": 3}
    assert wf.variable_descriptions == {"n": "How many."}
    assert (op.model, op.temperature, op.json, op.timeout_sec, op.retries) == (
        "claude-haiku", 0.0, True, 30.0, 2)
    assert op.refs_vars == {"tone", "n"} and op.uses_input and op.description == "first"
    request = render(wf, "a", input="q")
    assert user_text(request) == "dry 3 q"
    assert request.system == "You are dry."  # type: ignore[attr-defined]
    assert request.json_mode and request.model == "claude-haiku"  # type: ignore[attr-defined]
    assert request.temperature == 0.0  # type: ignore[attr-defined]


def test_model_auto_is_no_pin() -> None:
    assert load("ops: {a: {prompt: A, model: auto}}").ops["a"].model is None


# ---- validation: every failure names its op ----------------------------------------------------



@pytest.mark.parametrize(("text", "op", "fragment"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_invalid_workflow_names_the_op(text: str, op: str, fragment: str) -> None:
    err = invalid(text)
    assert err.op == op, err.message
    assert fragment in err.message
    assert err.param == op  # rendered as the error object's param by the API




@pytest.mark.parametrize(("text", "fragment"), [c[1:] for c in WORKFLOW_LEVEL],
                         ids=[c[0] for c in WORKFLOW_LEVEL])
def test_invalid_workflow_without_an_op(text: str, fragment: str) -> None:
    err = invalid(text)
    assert fragment in err.message


def test_alias_bomb_is_refused_before_it_expands() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    err = invalid("\n".join(lines) + "\n")
    assert "anchors and aliases" in err.message


# ---- every problem at once ---------------------------------------------------------------------

THREE_PROBLEMS = """\
ops:
  a: {prompt: A, max_tokens: 99999, input_ops: [c]}
  b: {prompt: B, input_ops: [a, nope]}
  c: {prompt: C, input_ops: [b]}
"""


def test_independent_problems_are_reported_together() -> None:
    # A too-large max_tokens, an unknown input op and a cycle: one load reports all three.
    err = invalid(THREE_PROBLEMS)
    messages = [p.message for p in err.problems]
    assert len(messages) == 3, messages
    assert "op 'a': max_tokens must be an integer from 1 to 32768" in messages[0]
    assert messages[1] == "op 'b': input_ops names unknown op 'nope'"
    assert messages[2] == "cycle: a -> b -> c -> a"
    assert err.op == "a" and err.param == "a"  # the first problem's op
    assert err.message.startswith("3 problems: op 'a': max_tokens")
    assert all(m in err.message for m in messages[1:])
    found = engine.core.workflow.spec.check_workflow(
        THREE_PROBLEMS, limits=WorkflowLimits(), templates_dir=None)
    assert [p.message for p in found] == messages


def test_problems_of_one_op_and_of_the_workflow_are_all_reported() -> None:
    err = invalid("""\
        on_error: retry
        max_cost_usd: -1
        variables: {v: [1], w: {description: d}}
        ops:
          a: {prompt: A, tier: 0, temperature: 3, json: maybe, retries: 11}
          b: {prompt: B, input_ops: [a], output_ops: [a]}
          'c d': {prompt: C, input_ops: [a]}
          e: {prompt: E, input_ops: ['c d']}
    """)
    text = "\n".join(p.describe() for p in err.problems)
    for fragment in ["op 'a': tier must be", "op 'a': temperature", "op 'a': json must be",
                     "op 'a': retries", "variables.v", "variables.w", "on_error must be",
                     "max_cost_usd", "op name 'c d' is not allowed", "cycle: a -> b -> a"]:
        assert fragment in text, (fragment, text)
    # A reference to the refused name is not reported a second time as an unknown op.
    assert "unknown op 'c d'" not in text


def test_no_problem_is_reported_twice_and_a_valid_workflow_has_none() -> None:
    assert engine.core.workflow.spec.check_workflow(
        SPEC_EXAMPLE, limits=WorkflowLimits(), templates_dir=None) == []
    err = invalid("start_ops: [a]\nops: {a: {prompt: A}, b: {prompt: B}, "
                  "c: {prompt: C, input_ops: [b]}}")
    assert [p.op for p in err.problems] == ["b", "c"]  # each unreachable op, once
    assert len({p.message for p in err.problems}) == 2


@pytest.mark.parametrize(("template", "attribute", "hint"), [
    ("{{ ops.a.outptu }}", "outptu", "did you mean 'output'?"),
    ("{{ ops['a'].valeu }}", "valeu", "did you mean 'value'?"),
    ("{{ ops.a['text'] }}", "text", "only 'output' (the answer text) and 'value'"),
    ("{% for k in ops.a.keys() %}{{ k }}{% endfor %}", "keys", "only 'output'"),
])
def test_reading_what_an_op_output_does_not_have_is_refused_at_load(
    template: str, attribute: str, hint: str,
) -> None:
    # Before, this passed validation and failed at run time, after op a was paid for.
    err = invalid(yaml.safe_dump({"ops": {"a": {"prompt": "A"},
                                          "b": {"prompt": template, "input_ops": ["a"]}}}))
    assert err.op == "b"
    assert f"ops.a.{attribute}: an op's output has no '{attribute}'" in err.message
    assert hint in err.message


def test_what_an_op_output_has_is_what_a_template_can_read() -> None:
    wf = load("""\
        ops:
          a: {prompt: A, json: true}
          b: {prompt: "{{ ops.a.output|upper }} {{ ops['a'].value.k }} {{ ops.a.value['k'] }}",
              input_ops: [a]}
    """)
    text = user_text(render(wf, "b", outputs={"a": '{"k": "v"}'}))
    assert text == '{"K": "V"} v v'
    # OpOutput's fields are what render() puts under ops.<name>: output (the text) and value.
    assert engine.core.workflow.template.OP_OUTPUT_FIELDS == ("output", "value")
    assert [f.name for f in dataclasses.fields(OpOutput)] == ["text", "value"]


@pytest.mark.parametrize(("text", "fragment"), [
    ("ops: {a: {promt: A}}", "op 'a': unknown key 'promt' (did you mean 'prompt'?)"),
    ("ops: {a: {prompt: A, temprature: 1}}", "unknown key 'temprature' (did you mean "
     "'temperature'?)"),
    ("ops: {a: {prompt: A, max_token: 9}}", "(did you mean 'max_tokens'?)"),
    ("variabels: {}\nops: {a: {prompt: A}}", "unknown key 'variabels' (did you mean "
     "'variables'?)"),
    ("ops: {a: {prompt: A, colour: red}}", "unknown key 'colour' (allowed: "),
    ("input: {optinal: true}\nops: {a: {prompt: A}}", "(did you mean 'optional'?)"),
    ("on_error: fail-fast\nops: {a: {prompt: A}}", "(did you mean 'fail_fast'?)"),
    ("ops: {draft: {prompt: A}, b: {prompt: B, input_ops: [darft]}}",
     "unknown op 'darft' (did you mean 'draft'?)"),
    ("ops: {draft: {prompt: A}, b: {prompt: '{{ ops.darft.output }}', input_ops: [draft]}}",
     "unknown op 'darft' (did you mean 'draft'?)"),
    ("variables: {tone: dry}\nops: {a: {prompt: '{{ tnoe }}'}}", "(did you mean 'tone'?)"),
])
def test_misspelt_names_get_the_closest_known_one(text: str, fragment: str) -> None:
    err = invalid(text)
    assert fragment in err.message, err.message
    assert len(err.problems) == 1, err.message  # a misspelt prompt is not also "missing"


def test_the_input_may_be_declared_optional() -> None:
    assert load("ops: {a: {prompt: A}}").input_optional is False
    wf = load("input: {optional: true, description: Ignored.}\nops: {a: {prompt: A}}")
    assert wf.input_optional is True and wf.input_description == "Ignored."
    assert load("input: {}\nops: {a: {prompt: A}}").input_optional is False
    for bad, fragment in [("input: true", "input must be a mapping"),
                          ("input: {optional: 'yes'}", "input.optional must be true or false"),
                          ("input: {description: 3}", "input.description must be a string")]:
        assert fragment in invalid(bad + "\nops: {a: {prompt: A}}").message


# ---- limits ------------------------------------------------------------------------------------


def test_yaml_size_is_checked_before_parsing() -> None:
    limits = WorkflowLimits(max_yaml_bytes=1024)
    err = invalid("ops: {" + "x" * 2000, limits=limits)  # not YAML, but too big first
    assert "larger than 1024 bytes" in err.message and err.op is None
    err = invalid("ops: {a: {prompt: '" + "é" * 600 + "'}}", limits=limits)  # bytes, not chars
    assert "larger than 1024 bytes" in err.message


def test_op_count_limit() -> None:
    text = "ops:\n" + "".join(f"  o{i}: {{prompt: P}}\n" for i in range(6))
    assert "at most 5 ops" in invalid(text, limits=WorkflowLimits(max_ops=5)).message
    assert len(load(text, limits=WorkflowLimits(max_ops=6)).ops) == 6


def test_depth_limit_names_the_first_op_too_deep() -> None:
    text = "ops:\n  o0: {prompt: P}\n" + "".join(
        f"  o{i}: {{prompt: P, input_ops: [o{i - 1}]}}\n" for i in range(1, 5)
    )
    err = invalid(text, limits=WorkflowLimits(max_depth=3))
    assert err.op == "o3" and "at most 3 deep" in err.message
    assert len(load(text, limits=WorkflowLimits(max_depth=5)).ops) == 5


def test_max_tokens_limit_comes_from_limits() -> None:
    limits = WorkflowLimits(max_tokens_per_op=100)
    assert invalid("ops: {a: {prompt: A, max_tokens: 101}}", limits=limits).op == "a"
    assert load("ops: {a: {prompt: A, max_tokens: 100}}", limits=limits).ops["a"].max_tokens


# ---- template files ----------------------------------------------------------------------------


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    root = tmp_path / "templates"
    (root / "sub").mkdir(parents=True)
    (root / "hello.j2").write_text("Hello {{ input }}")
    (root / "sub" / "nested.j2").write_text("Nested")
    (tmp_path / "secret.txt").write_text("secret")
    (root / "escape.j2").symlink_to(tmp_path / "secret.txt")
    (root / "big.j2").write_text("x" * 2000)
    (root / "binary.j2").write_bytes(b"\xff\xfe")
    return root


@pytest.mark.parametrize(("name", "fragment"), [
    ("../../etc/passwd", "must name a file in templates/"),
    ("/etc/passwd", "must name a file in templates/"),
    ("sub/../hello.j2", "must name a file in templates/"),
    (".hidden.j2", "must name a file in templates/"),
    ("escape.j2", "outside templates/"),
    ("missing.j2", "no template named 'missing.j2'"),
    ("sub", "no template named 'sub'"),
    ("big.j2", "larger than 1024 bytes"),
    ("binary.j2", "not UTF-8"),
])
def test_template_file_refused(templates: Path, name: str, fragment: str) -> None:
    err = invalid(f"ops: {{a: {{template: '{name}'}}}}", templates_dir=templates,
                  limits=WorkflowLimits(max_template_bytes=1024))
    assert err.op == "a" and fragment in err.message


def test_a_template_that_is_not_a_name_is_refused(templates: Path) -> None:
    err = invalid("ops: {a: {template: {x: 1}}}", templates_dir=templates)  # unhashable
    assert err.op == "a" and "must name a file in templates/" in err.message


def test_template_files_load_from_templates_dir_only(templates: Path) -> None:
    wf = load("ops: {a: {template: hello.j2}, b: {template: sub/nested.j2, input_ops: [a]}}",
              templates_dir=templates)
    assert wf.ops["a"].template_file == "hello.j2"
    assert user_text(render(wf, "a", input="you")) == "Hello you"
    assert invalid("ops: {a: {template: hello.j2}}").message.endswith("use an inline prompt")


# ---- rendering ---------------------------------------------------------------------------------


def test_template_context_input_vars_ops_and_json_values() -> None:
    prompt = ("{{ input }}|{{ tone }}|{{ vars.n }}|{{ ops.facts.output }}|"
              "{{ ops.facts.value.items_[1] }}|{{ ops['facts'].value.who }}")
    wf = load(yaml.safe_dump({"variables": {"tone": "dry", "n": 2}, "ops": {
        "facts": {"prompt": "Facts as JSON: {{ input }}", "json": True},
        "plan": {"prompt": prompt, "input_ops": ["facts"]},
    }}))
    request = render(wf, "plan", input="Q", variables={"tone": "warm"},
                     outputs={"facts": '{"who": "Ada", "items_": [1, 2]}'})
    assert user_text(request) == 'Q|warm|2|{"who": "Ada", "items_": [1, 2]}|2|Ada'


def test_json_keys_with_underscores_are_readable_as_items() -> None:
    wf = load("""
        ops:
          a: {prompt: JSON please, json: true}
          b: {prompt: "{{ ops.a.value['_id'] }}", input_ops: [a]}
    """)
    assert user_text(render(wf, "b", outputs={"a": '{"_id": 7}'})) == "7"
    assert "'_id'" in invalid("ops: {a: {prompt: '{{ input._id }}'}}").message


def test_json_value_of_a_fenced_answer_and_bad_json() -> None:
    wf = load("ops: {a: {prompt: JSON please, json: true}}")
    assert parse_output(wf.ops["a"], '```json\n{"k": [1]}\n```') == OpOutput(
        '```json\n{"k": [1]}\n```', {"k": [1]})
    with pytest.raises(UpstreamError, match="not JSON"):
        parse_output(wf.ops["a"], "Sure! Here it is: {")
    plain = load("ops: {a: {prompt: P}}").ops["a"]
    assert parse_output(plain, "{}") == OpOutput("{}", "{}")


def test_several_inputs_are_appended_under_headings() -> None:
    wf = load("ops: {a: {prompt: A}, b: {prompt: B}, c: {prompt: Merge., input_ops: [b, a]}}")
    request = render(wf, "c", outputs={"a": "from a", "b": "from b"})
    assert user_text(request) == "Merge.\n\n## b\n\nfrom b\n\n## a\n\nfrom a"


def test_a_template_placing_its_inputs_gets_no_appendix() -> None:
    wf = load("""
        ops:
          a: {prompt: "Q: {{ input }}"}
          b: {prompt: "Check: {{ ops.a.output }}", input_ops: [a]}
          c: {prompt: "Original: {{ input }}. Improve it.", input_ops: [b]}
    """)
    assert user_text(render(wf, "a", input="q")) == "Q: q"
    assert user_text(render(wf, "b", outputs={"a": "A!"})) == "Check: A!"
    # Reading the workflow input does not place the op's inputs: they are still appended.
    assert user_text(render(wf, "c", input="q", outputs={"b": "B!"})) == (
        "Original: q. Improve it.\n\nB!")


def test_ancestor_outputs_are_readable_not_only_direct_inputs() -> None:
    wf = load("""
        ops:
          a: {prompt: A}
          b: {prompt: B, input_ops: [a]}
          c: {prompt: "{{ ops.a.output }} + {{ ops.b.output }}", input_ops: [b]}
    """)
    assert user_text(render(wf, "c", outputs={"a": "1", "b": "2"})) == "1 + 2"
    assert wf.ops["c"].refs_ops == {"a", "b"}


def test_render_errors_name_the_op() -> None:
    wf = load("""
        ops:
          a: {prompt: A, json: true}
          b: {prompt: "{{ ops.a.value.missing }}", input_ops: [a]}
          c: {prompt: "{{ 1 / 0 }}"}
    """)
    with pytest.raises(WorkflowInvalid, match="needs the output of 'a'") as info:
        render(wf, "b")
    assert info.value.op == "b"
    with pytest.raises(WorkflowInvalid, match="missing") as info:
        render(wf, "b", outputs={"a": "{}"})
    assert info.value.op == "b"
    with pytest.raises(WorkflowInvalid, match="ZeroDivisionError") as info:
        render(wf, "c")
    assert info.value.op == "c"


def test_an_empty_prompt_is_an_error() -> None:
    wf = load("ops: {a: {prompt: '{{ input }}'}}")
    with pytest.raises(WorkflowInvalid, match="rendered empty"):
        render(wf, "a", input="  ")


def test_resolve_variables() -> None:
    wf = load("variables: {tone: dry, n: 2, strict: false, anything: null}\n"
              "ops: {a: {prompt: '{{ tone }}{{ n }}{{ strict }}{{ anything }}'}}")
    assert resolve_variables(wf, None) == {"tone": "dry", "n": 2, "strict": False,
                                           "anything": None}
    assert resolve_variables(wf, {"n": 2.5, "anything": "x"})["n"] == 2.5
    with pytest.raises(WorkflowInvalid, match="unknown variable 'mood'"):
        resolve_variables(wf, {"mood": "x"})
    for name, value in [("tone", 3), ("n", "3"), ("n", True), ("strict", 1), ("anything", [1])]:
        with pytest.raises(WorkflowInvalid, match=f"variable '{name}'"):
            resolve_variables(wf, {name: value})


# ---- the sandbox -------------------------------------------------------------------------------



@pytest.mark.parametrize("template", ESCAPES)
def test_sandbox_escapes_are_refused_at_validation(template: str) -> None:
    err = invalid(yaml.safe_dump({"ops": {"a": {"prompt": template}}}))
    assert err.op == "a"
    assert "not allowed" in err.message




@pytest.mark.parametrize(("template", "fragment"), RUNTIME_REFUSALS)
def test_sandbox_refuses_at_render_time_naming_the_op(template: str, fragment: str) -> None:
    text = yaml.safe_dump({"variables": {"key": "__class__"}, "ops": {"a": {"prompt": template}}})
    wf = load(text)
    with pytest.raises(WorkflowInvalid) as info:
        render(wf, "a", input="abcdefghij" * 1000)
    assert info.value.op == "a"
    assert fragment in info.value.message


COMPARISONS = [
    "1 < 2 < 3", "3 < 2 < 1", "1 < 3 > 2", "2 == 2.0", "'a' != 'b'", "'b' in 'abc'",
    "'x' not in ['a']", "2 in {2: 'two'}", "3 in range(5)", "[1, 2] < [1, 3]",
    "not 1 >= 2", "(1 < 2) == (2 < 3)", "1 <= 1 <= 2 != 3",
]


@pytest.mark.parametrize("expression", COMPARISONS)
def test_comparisons_keep_their_meaning_under_the_guard(expression: str) -> None:
    wf = load(yaml.safe_dump({"ops": {"a": {"prompt": "{{ " + expression + " }}"}}}))
    assert user_text(render(wf, "a", input="")) == str(eval(expression))


def test_comparing_tests_and_chains_stop_where_python_would() -> None:
    template = ("{{ [1, 5, 2]|select('gt', 1)|list }} {{ 2 is eq 2 }} {{ 'ab' is in 'xaby' }} "
                "{{ 'abc' is lower }} {{ 2 < 1 < ops }}")
    # ``ops`` alone would be refused at load time: it shows the chain never reads it.
    wf = load(yaml.safe_dump({"ops": {"a": {"prompt": template.replace(" < ops", " < x")}},
                              "variables": {"x": "unused"}}))
    assert user_text(render(wf, "a", input="")) == "[5, 2] True True True False"


def test_a_render_stops_at_its_deadline() -> None:
    grinding = ("{% for i in range(100000) %}{% set x = [3, 1, 2, 5, 4, 7, 6, 9, 8, 0]|sort %}"
                "{% endfor %}x")
    wf = load(yaml.safe_dump({"ops": {"a": {"prompt": grinding}}}),
              limits=WorkflowLimits(render_timeout_sec=0.05))
    with pytest.raises(TemplateLimitExceeded) as info:
        render(wf, "a")
    assert info.value.op == "a" and info.value.status == 400
    assert "rendering takes longer than 0.05 s" in info.value.message


def test_a_dry_run_reports_a_render_limit_and_a_run_estimate_goes_around_it() -> None:
    wf = load(yaml.safe_dump({"ops": {"a": {"prompt": "{{ 'ab' * 4000000 }}"},
                                      "b": {"prompt": "Fine.", "input_ops": ["a"]}}}))
    with pytest.raises(TemplateLimitExceeded, match="would build a value"):
        estimate_costs(wf, CONFIG)
    estimate = estimate_costs(wf, CONFIG, strict=False)
    assert estimate["ops"]["a"]["input_tokens"] == 5  # from its source: 20 characters
    assert estimate["critical_path"] == ["a", "b"]


def test_what_prompts_need_still_works_in_the_sandbox() -> None:
    template = (
        "{% set lines = input.splitlines() %}{{ lines|length }} lines; "
        "{{ input.split()|map('upper')|join('-') }}; {{ input|truncate(6, leeway=0) }}; "
        "{{ input[:3] ~ '!' }}; {% for l in lines if l %}[{{ loop.index }}:{{ l|trim }}]"
        "{% endfor %}; {{ {'a': 1}|tojson }}; {{ '%.2f'|format(2/3) }}; {{ '%d%%' % 5 }}"
    )
    wf = load(yaml.safe_dump({"ops": {"a": {"prompt": template}}}))
    assert user_text(render(wf, "a", input="one two\nthree")) == (
        "2 lines; ONE-TWO-THREE; one...; one!; [1:one two][2:three]; "
        '{"a": 1}; 0.67; 5%'
    )


# ---- the ready pipelines -----------------------------------------------------------------------

PIPELINES = sorted(WORKFLOWS.glob("*.yaml"))
CONFIG = Config(models=(
    ModelConfig(name="cheap", provider="openai", model="c", tier=1,
                cost_per_1k_in=1.0, cost_per_1k_out=2.0),
    ModelConfig(name="bulk", provider="openai", model="p", tier=1,
                cost_per_1k_in=0.5, cost_per_1k_out=3.0),
    ModelConfig(name="big", provider="openai", model="b", tier=3,
                cost_per_1k_in=10.0, cost_per_1k_out=20.0),
))


def test_at_least_five_pipelines_cover_the_issue() -> None:
    names = {p.stem for p in PIPELINES}
    assert {"reason_critique_refine", "map_reduce_summary", "debate", "code_review",
            "extract_classify_answer"} <= names


@pytest.mark.parametrize("path", PIPELINES, ids=[p.stem for p in PIPELINES])
def test_pipeline_loads_plans_and_estimates(path: Path) -> None:
    wf = load_workflow(path.read_text(), limits=WorkflowLimits(), templates_dir=TEMPLATES)
    assert wf.name and wf.description
    assert wf.variables and set(wf.variable_descriptions) == set(wf.variables)
    assert all(op.template_file for op in wf.ops.values()), "pipelines use templates/"
    plan = plan_workflow(wf)
    assert len(plan) == len(wf.ops) >= 3
    estimate = estimate_costs(wf, CONFIG, input="Some input.\n" * 50)
    assert estimate["total_cost_usd"] > 0
    assert set(estimate["critical_path"]) <= set(wf.ops)
    assert describe_plan(wf, estimate=estimate).count("*") >= len(estimate["critical_path"])
    outputs = {n: ('{"category": "billing"}' if op.json else f"answer of {n}")
               for n, op in wf.ops.items()}
    for name in wf.ops:  # every op renders against plausible upstream answers
        request = render(wf, name, input="Some input.\n" * 50, outputs=outputs)
        assert user_text(request).strip()


def test_map_reduce_parts_tile_the_document() -> None:
    wf = load_workflow((WORKFLOWS / "map_reduce_summary.yaml").read_text(),
                       limits=WorkflowLimits(), templates_dir=TEMPLATES)
    parts = [n for n in wf.ops if n.startswith("part_")]
    documents = [
        "\n".join(f"Line {i}: " + "word " * (i % 13) for i in range(400)),
        "one enormous line " * 3000,
        "tiny",
        "\u00e9t\u00e9 \u00e0 Paris\n" * 999,
        "x" * 9000,
    ]
    for document in documents:
        pieces = []
        for name in parts:
            text = user_text(render(wf, name, input=document))
            if "is empty)" in text:
                continue
            head = f"--- part {wf.ops[name].params['part']} of 4 ---\n"
            pieces.append(text.split(head, 1)[1].rsplit("\n--- end of part", 1)[0])
        if document.startswith("x"):  # no whitespace at all: cut at the raw positions
            assert "".join(pieces) == document
        else:  # cut at whitespace, and each part is trimmed
            assert " ".join(pieces).split() == document.split()
        if len(document) < 2000:
            assert len(pieces) == 1
        else:
            sizes = [len(p) for p in pieces]
            assert len(sizes) == 4 and max(sizes) < 2 * min(sizes)


def test_extract_classify_answer_reads_json_values() -> None:
    wf = load_workflow((WORKFLOWS / "extract_classify_answer.yaml").read_text(),
                       limits=WorkflowLimits(), templates_dir=TEMPLATES)
    assert wf.ops["extract"].json and wf.ops["classify"].json
    outputs = {
        "extract": '{"customer_name": "Ada", "problem": "charged twice", '
                   '"question": "refund?", "steps_taken": ["emailed"]}',
        "classify": '{"category": "billing", "urgency": "high", "needs_human": true}',
    }
    text = user_text(render(wf, "answer", input="I was charged twice!", outputs=outputs))
    assert "charged twice" in text and "as Ada" in text and "emailed" in text
    assert "agent will follow up with priority" in text
    # A malformed JSON answer degrades to defaults rather than failing the op.
    text = user_text(render(wf, "answer", input="?", outputs={"extract": "[]",
                                                             "classify": '"x"'}))
    assert "problem: unclear" in text and "category: other" in text


# ---- planning ----------------------------------------------------------------------------------

DIAMOND = """
    name: diamond
    ops:
      a: {prompt: abcd, tier: 1, max_tokens: 100}
      b: {prompt: B, tier: 2, max_tokens: 10, input_ops: [a]}
      c: {prompt: C, tier: 1, max_tokens: 1000, input_ops: [a]}
      d: {prompt: D, input_ops: [b, c]}
"""


def test_plan_generations_and_nodes() -> None:
    wf = load(DIAMOND)
    plan = plan_workflow(wf)
    assert isinstance(plan, Plan)
    assert plan.generations == (("a",), ("b", "c"), ("d",))
    assert plan.node("b").tier == 2 and plan.node("b").op is wf.ops["b"]
    assert plan.node("d").tier is None and plan.node("d").request is None


def test_critical_path_follows_latency_not_op_count() -> None:
    wf = load(DIAMOND)
    assert critical_path(wf, {"a": 1, "b": 9, "c": 1, "d": 1}) == ["a", "b", "d"]
    assert critical_path(wf, {"a": 1, "b": 1, "c": 9, "d": 1}) == ["a", "c", "d"]
    wide = load("ops: {x: {prompt: X}, y: {prompt: Y}, z: {prompt: Z, input_ops: [x]}}")
    assert critical_path(wide, {"x": 1, "y": 5, "z": 1}) == ["y"]  # a lone op can be it
    assert critical_path(wide, lambda name: 1.0) == ["x", "z"]


def test_cost_estimate_by_hand() -> None:
    est = estimate_costs(load(DIAMOND), CONFIG)
    a, b, c, d = (est["ops"][n] for n in "abcd")
    # a: "abcd" = 1 token in (no input), 100 out; tier 1's cheaper model for this mix.
    assert (a["model"], a["input_tokens"], a["output_tokens"]) == ("cheap", 1, 100)
    assert a["cost_usd"] == pytest.approx((1 * 1.0 + 100 * 2.0) / 1000)
    # b: tier 2 has no models, so the next tier up serves it; its input is "B" and a's
    # answer (400 characters at its cap): 1 + 2 + 400 characters -> 101 tokens.
    assert (b["model"], b["tier"], b["input_tokens"]) == ("big", 3, 101)
    assert b["cost_usd"] == pytest.approx((101 * 10.0 + 10 * 20.0) / 1000)
    # c: 101 tokens in and 1000 out: "cheap" (1/2 per 1k) beats "bulk" (0.5/3).
    assert (c["model"], c["input_tokens"]) == ("cheap", 101)
    # d: no tier, no max_tokens: scored (short prompt -> tier 1) and the default output.
    assert d["tier"] == 1 and d["output_tokens"] == DEFAULT_OUTPUT_TOKENS
    assert d["input_tokens"] == -(-len("D\n\n## b\n\n" + "x" * 40 + "\n\n## c\n\n" + "x" * 4000)
                                  // 4)
    assert est["total_cost_usd"] == pytest.approx(sum(e["cost_usd"] for e in (a, b, c, d)))
    assert est["generations"] == [["a"], ["b", "c"], ["d"]]
    assert est["critical_path"] == ["a", "c", "d"]  # c decodes 1000 tokens
    assert est["critical_path_ms"] == pytest.approx(a["latency_ms"] + c["latency_ms"]
                                                    + d["latency_ms"], abs=0.2)
    assert a["latency_ms"] == pytest.approx(500 + 0.2 * 1 + 20 * 100, abs=0.1)


def test_cost_estimate_model_choice_tier_fallback_down_and_pins() -> None:
    wf = load("ops: {a: {prompt: A, tier: 7, max_tokens: 10}, b: {prompt: B, model: cheap}, "
              "c: {prompt: C, tier: 1, max_tokens: 1}}")
    est = estimate_costs(wf, CONFIG, input="y" * 3998)
    assert est["ops"]["a"]["model"] == "big"  # no tier 7 or above: the highest below
    assert est["ops"]["b"]["model"] == "cheap"
    assert est["ops"]["b"]["input_tokens"] == 1001  # "B", a blank line, the input
    # The cheapest backend is chosen for the op's own mix: input-heavy favours "bulk".
    assert est["ops"]["c"]["model"] == "bulk"
    assert est["ops"]["c"]["cost_usd"] == pytest.approx((1001 * 0.5 + 1 * 3.0) / 1000)
    with pytest.raises(WorkflowInvalid, match="not configured") as info:
        check_models(load("ops: {a: {prompt: A, model: ghost}}"), CONFIG)
    assert info.value.op == "a"


def test_describe_plan_marks_the_critical_path() -> None:
    wf = load(DIAMOND)
    picture = describe_plan(wf, estimate=estimate_costs(wf, CONFIG))
    lines = picture.splitlines()
    assert lines[0] == "diamond: 4 ops in 3 levels (* = critical path)"
    assert lines[1] == "level 1" and lines[2].startswith("  * a")
    assert any(line.startswith("    b") and "<- a" in line for line in lines)
    assert any(line.startswith("  * d") and "<- b, c" in line for line in lines)
    assert "critical path: a -> c -> d" in picture and "estimated cost: $" in picture


# ---- property: any DAG plans, inputs always in an earlier generation ---------------------------


@st.composite
def dags(draw: st.DrawFn) -> tuple[int, set[tuple[int, int]]]:
    n = draw(st.integers(min_value=1, max_value=14))
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)),
                          max_size=40))
    return n, {(min(a, b), max(a, b)) for a, b in pairs if a != b}


@settings(max_examples=150, deadline=None)
@given(dags(), st.booleans(), st.lists(st.booleans(), min_size=14, max_size=14))
def test_random_dags_plan_with_inputs_first(
    dag: tuple[int, set[tuple[int, int]]], explicit_ends: bool, declares_outputs: list[bool]
) -> None:
    n, edges = dag
    names = [f"n{i}" for i in range(n)]
    ops: dict[str, dict[str, object]] = {name: {"prompt": "P"} for name in names}
    # Each op may declare its complete output_ops; an op declares its complete input_ops
    # when some upstream op does not cover the edge (an edge needs at least one side).
    for i, name in enumerate(names):
        if declares_outputs[i]:
            ops[name]["output_ops"] = [names[b] for a, b in sorted(edges) if a == i]
        if any(b == i and not declares_outputs[a] for a, b in edges) or i % 3 == 0:
            ops[name]["input_ops"] = [names[a] for a, b in sorted(edges) if b == i]
    doc: dict[str, object] = {"ops": ops}
    if explicit_ends:
        doc["start_ops"] = [names[i] for i in range(n) if not any(b == i for _, b in edges)]
        doc["end_ops"] = [names[i] for i in range(n) if not any(a == i for a, _ in edges)]
    wf = load_workflow(yaml.safe_dump(doc), limits=WorkflowLimits(), templates_dir=None)
    plan = plan_workflow(wf)
    level = {name: depth for depth, level in enumerate(plan.generations) for name in level}
    assert sorted(level) == sorted(wf.ops)
    assert set(wf.edges) == {(names[a], names[b]) for a, b in edges}
    for name, op in wf.ops.items():
        assert all(level[i] < level[name] for i in op.inputs)
        assert all(level[o] > level[name] for o in op.outputs)
    path = critical_path(plan, lambda name: 1.0)
    assert len(path) == len(plan.generations)
    assert all((u, v) in set(wf.edges) for u, v in itertools.pairwise(path))


@settings(max_examples=300, deadline=None)
@given(dags(), st.permutations(range(14)), st.lists(st.booleans(), min_size=14, max_size=14),
       st.lists(st.booleans(), min_size=14, max_size=14))
def test_undeclared_sides_list_their_edges_in_the_ops_order(
    dag: tuple[int, set[tuple[int, int]]], order: list[int], declares_inputs: list[bool],
    declares_outputs: list[bool],
) -> None:
    # The ops are listed in a shuffled order; each side an op does not declare is every op
    # of its edges, in that order (the reference: the pair-by-pair search it replaced).
    n, edges = dag
    names = [f"n{i}" for i in range(n)]
    ops: dict[str, dict[str, object]] = {}
    for i in (i for i in order if i < n):
        spec: dict[str, object] = {"prompt": "P"}
        if declares_outputs[i]:
            spec["output_ops"] = [names[b] for a, b in sorted(edges, reverse=True) if a == i]
        if declares_inputs[i] or any(b == i and not declares_outputs[a] for a, b in edges):
            spec["input_ops"] = [names[a] for a, b in sorted(edges, reverse=True) if b == i]
        ops[names[i]] = spec
    wf = load_workflow(yaml.safe_dump(doc := {"ops": ops}, sort_keys=False),
                       limits=WorkflowLimits(), templates_dir=None)
    listed = list(doc["ops"])
    pairs = {(names[a], names[b]) for a, b in edges}
    for name, op in wf.ops.items():
        declared_in = ops[name].get("input_ops")
        declared_out = ops[name].get("output_ops")
        assert op.inputs == (tuple(declared_in) if declared_in else  # type: ignore[arg-type]
                             tuple(u for u in listed if (u, name) in pairs))
        assert op.outputs == (tuple(declared_out) if declared_out else  # type: ignore[arg-type]
                              tuple(d for d in listed if (name, d) in pairs))


@settings(max_examples=200, deadline=None)
@given(dags(), st.lists(st.integers(0, 13), min_size=14, max_size=14))
def test_a_template_may_read_exactly_the_ops_upstream_of_it(
    dag: tuple[int, set[tuple[int, int]]], reads: list[int],
) -> None:
    n, edges = dag
    names = [f"n{i}" for i in range(n)]
    ops = {name: {"prompt": f"{{{{ ops.{names[reads[i] % n]}.output }}}}",
                  "input_ops": [names[a] for a, b in sorted(edges) if b == i]}
           for i, name in enumerate(names)}
    upstream: dict[int, set[int]] = {}
    for i in range(n):  # the reference: ancestors by hand, in index order (a topological one)
        upstream[i] = {a for a, b in edges if b == i}
        upstream[i] |= set().union(*(upstream[a] for a in upstream[i]))
    refused = {names[i] for i in range(n) if reads[i] % n not in upstream[i]}
    text = yaml.safe_dump({"ops": ops})
    if not refused:
        load_workflow(text, limits=WorkflowLimits(), templates_dir=None)
        return
    with pytest.raises(WorkflowInvalid) as caught:
        load_workflow(text, limits=WorkflowLimits(), templates_dir=None)
    assert {name for name in names if f"op {name!r}: template reads ops." in
            caught.value.message} == refused


def _chain(n: int) -> str:
    return "ops:\n" + "".join(
        f"  o{i}: {{prompt: '{{{{ ops.o{i - 1}.output }}}}', input_ops: [o{i - 1}]}}\n"
        if i else "  o0: {prompt: '{{ input }}'}\n" for i in range(n))


def _peak_loading(n: int) -> int:
    """The traced peak of memory while a chain of ``n`` ops loads."""
    limits = WorkflowLimits(max_ops=n, max_depth=n)
    tracemalloc.start()
    try:
        load_workflow(_chain(n), limits=limits, templates_dir=None)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_long_chain_is_checked_in_memory_linear_in_its_ops() -> None:
    # Each op's ancestors were a set of names: a chain of n ops held n²/2 of them, so twice
    # the ops took 2.7 times the memory at 250 -> 500 ops (3.1 -> 8.4 MiB); as bit sets,
    # 1.8 times (1.8 -> 3.3 MiB). A small chain first: what loading imports and caches the
    # first time is not the chain's. Each size is the smaller of two loads: now and then
    # Python's compile() grows a table of the interpreter's own, one block of megabytes that
    # the unlucky load is charged for (4 MiB once in a long test process).
    load_workflow(_chain(20), limits=WorkflowLimits(max_ops=20, max_depth=20),
                  templates_dir=None)
    peaks: dict[int, list[int]] = {500: [], 250: []}
    for n in [500, 250, 500, 250]:
        peaks[n].append(_peak_loading(n))
    assert min(peaks[500]) < 2.25 * min(peaks[250]), peaks


# ---- the modules' own examples -----------------------------------------------------------------


@pytest.mark.parametrize("module", [engine.core.workflow.spec, engine.core.workflow.plan,
                                    engine.core.workflow.source, engine.core.workflow.template,
                                    engine.errors])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.failed == 0


def test_public_surface() -> None:
    assert set(engine.core.workflow.spec.__all__) == {
        "Op", "OpOutput", "Scalar", "Workflow", "WorkflowLimits", "check_workflow",
        "load_workflow"}
    assert set(engine.core.workflow.render.__all__) == {
        "parse_output", "render_request", "resolve_variables"}
    assert set(engine.core.workflow.plan.__all__) >= {
        "plan_workflow", "critical_path", "estimate_costs", "describe_plan", "check_models"}
    assert os.path.isdir(TEMPLATES)
