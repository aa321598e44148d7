"""Workflow definitions shared by the loader's tests and the API's: the documented example,
the validation table (each case names the op at fault), the workflow-level problems, the
sandbox escapes and the refusals only a render can find."""

from __future__ import annotations

#: Three ops in a row on tiers 1, 2 and 1: the dashboard tests' workflow.
TIERED_CHAIN = """
name: chain
ops:
  draft: {prompt: "Draft: {{ input }}", tier: 1}
  review: {prompt: "Review: {{ ops.draft.output }}", tier: 2, input_ops: [draft]}
  polish: {prompt: "Polish: {{ ops.review.output }}", tier: 1, input_ops: [review]}
"""

#: Three ops in a row on three models (``ma``, ``mb``, ``mc``): the durable-run tests' workflow.
CHAIN = """\
name: chain
ops:
  a: {prompt: "Step a.", model: ma}
  b: {prompt: "Step b.", model: mb, input_ops: [a]}
  c: {prompt: "Step c.", model: mc, input_ops: [b]}
"""

#: a, then b and c (each on a's output), then d (on both): the scheduling tests' workflow.
DIAMOND = """\
ops:
  a: {prompt: "Step a.", tier: 1}
  b: {prompt: "Step b.", tier: 1, input_ops: [a]}
  c: {prompt: "Step c.", tier: 1, input_ops: [a]}
  d: {prompt: "Step d.", tier: 1, input_ops: [b, c]}
"""

SPEC_EXAMPLE = """\
start_ops: [reason]
end_ops: [refine]
ops:
  reason:
    prompt: "Think step by step."
    tier: 1
    max_tokens: 1024
    output_ops: [critique]
  critique:
    prompt: "Find errors in the reasoning."
    tier: 2
    max_tokens: 512
    input_ops: [reason]
    output_ops: [refine]
  refine:
    prompt: "Give a correct final answer."
    tier: 2
    max_tokens: 512
    input_ops: [critique]
"""


CASES = [
    # (name, yaml, op named, message fragment)
    ("cycle", "ops: {a: {prompt: A, input_ops: [b]}, b: {prompt: B, input_ops: [a]}}",
     "a", "cycle: a -> b -> a"),
    ("cycle behind a start", "start_ops: [s]\nops: {s: {prompt: S, output_ops: [a]}, "
     "a: {prompt: A, input_ops: [s, c]}, b: {prompt: B, input_ops: [a]}, "
     "c: {prompt: C, input_ops: [b]}}", "a", "cycle: a -> b -> c -> a"),
    ("self loop", "ops: {a: {prompt: A, input_ops: [a]}}", "a", "cycle: a -> a"),
    ("unknown input op", "ops: {a: {prompt: A, input_ops: [nope]}}", "a",
     "input_ops names unknown op 'nope'"),
    ("unknown output op", "ops: {a: {prompt: A, output_ops: [nope]}}", "a",
     "output_ops names unknown op 'nope'"),
    ("unknown start op", "start_ops: [nope]\nops: {a: {prompt: A}}", "nope",
     "start_ops names unknown op"),
    ("unknown end op", "end_ops: [nope]\nops: {a: {prompt: A}}", "nope",
     "end_ops names unknown op"),
    ("start not a source", "start_ops: [a, b]\nops: {a: {prompt: A}, "
     "b: {prompt: B, input_ops: [a]}}", "b", "start op 'b' is not a source"),
    ("end not a sink", "end_ops: [a, b]\nops: {a: {prompt: A}, "
     "b: {prompt: B, input_ops: [a]}}", "a", "end op 'a' is not a sink"),
    ("unreachable", "start_ops: [a]\nops: {a: {prompt: A}, b: {prompt: B}, "
     "c: {prompt: C, input_ops: [b]}}", "b", "not reachable from any start op"),
    ("template unknown op", "ops: {a: {prompt: '{{ ops.ghost.output }}'}}", "a",
     "unknown op 'ghost'"),
    ("template op not upstream", "ops: {a: {prompt: A}, b: {prompt: '{{ ops.c.output }}', "
     "input_ops: [a]}, c: {prompt: C, input_ops: [a]}}", "b", "'c' is not upstream of 'b'"),
    ("template item access", "ops: {a: {prompt: \"{{ ops['ghost'].output }}\"}}", "a",
     "unknown op 'ghost'"),
    ("undeclared variable", "ops: {a: {prompt: '{{ tone }}'}}", "a",
     "undeclared variable 'tone'"),
    ("undeclared vars.x", "variables: {mood: ok}\nops: {a: {prompt: '{{ vars.tone }}'}}", "a",
     "undeclared variable 'tone'"),
    ("undeclared in system", "ops: {a: {prompt: A, system: '{{ persona }}'}}", "a",
     "undeclared variable 'persona'"),
    ("undeclared param", "ops: {a: {prompt: '{{ params.part }}'}}", "a", "params.part"),
    ("unknown op key", "ops: {a: {prompt: A, temprature: 1}}", "a",
     "unknown key 'temprature'"),
    ("prompt and template", "ops: {a: {prompt: A, template: x.j2}}", "a", "exactly one of"),
    ("neither prompt nor template", "ops: {a: {tier: 1}}", "a", "exactly one of"),
    ("op not a mapping", "ops: {a: [1]}", "a", "must be a mapping"),
    ("tier too high", "ops: {a: {prompt: A, tier: 11}}", "a", "tier must be an integer"),
    ("tier boolean", "ops: {a: {prompt: A, tier: true}}", "a", "tier must be an integer"),
    ("max_tokens over the limit", "ops: {a: {prompt: A, max_tokens: 40000}}", "a",
     "max_tokens must be an integer from 1 to 32768"),
    ("temperature", "ops: {a: {prompt: A, temperature: 3}}", "a", "temperature"),
    ("timeout zero", "ops: {a: {prompt: A, timeout_sec: 0}}", "a", "timeout_sec"),
    ("retries", "ops: {a: {prompt: A, retries: -1}}", "a", "retries"),
    ("json not boolean", "ops: {a: {prompt: A, json: 'yes'}}", "a", "json must be"),
    ("model and tier", "ops: {a: {prompt: A, model: m, tier: 1}}", "a", "not both"),
    ("bad model name", "ops: {a: {prompt: A, model: 'a b'}}", "a", "model must be"),
    ("bad op name", "ops: {'a b': {prompt: A}}", "a b", "not allowed"),
    ("op named like a dict method", "ops: {items: {prompt: A}}", "items", "not allowed"),
    ("input_ops not a list", "ops: {a: {prompt: A}, b: {prompt: B, input_ops: a}}", "b",
     "must be a list"),
    ("input_ops twice", "ops: {a: {prompt: A}, b: {prompt: B, input_ops: [a, a]}}", "b",
     "twice"),
    ("params not scalar", "ops: {a: {prompt: A, params: {p: [1]}}}", "a", "params.p"),
    ("op template syntax", "ops: {a: {prompt: '{{ x y }}'}}", "a", "line 1"),
    ("unknown filter", "ops: {a: {prompt: '{{ input|nofilter }}'}}", "a", "nofilter"),
    ("dynamic ops access", "ops: {a: {prompt: A}, b: {prompt: '{{ ops|length }}', "
     "input_ops: [a]}}", "b", "ops.<name>"),
    ("assign to input", "ops: {a: {prompt: '{% set input = 1 %}'}}", "a",
     "'input' cannot be assigned"),
]


WORKFLOW_LEVEL = [
    ("not a mapping: list", "- a\n- b\n", "must be a mapping, got list"),
    ("not a mapping: scalar", "just text\n", "must be a mapping, got str"),
    ("not a mapping: empty", "", "must be a mapping, got nothing"),
    ("invalid yaml", "ops: {a: [\n", "not valid at line"),
    ("two documents", "ops: {}\n---\nops: {}\n", "not valid"),
    ("unknown top key", "opps: {}\nops: {a: {prompt: A}}", "unknown key 'opps'"),
    ("no ops", "name: x\n", "ops must be a mapping"),
    ("empty ops", "ops: {}\n", "ops must be a mapping"),
    ("empty start_ops", "start_ops: []\nops: {a: {prompt: A}}", "at least one"),
    ("bad on_error", "on_error: retry\nops: {a: {prompt: A}}", "on_error"),
    ("bad max_cost", "max_cost_usd: -1\nops: {a: {prompt: A}}", "max_cost_usd"),
    ("bad concurrency", "max_concurrency: 0\nops: {a: {prompt: A}}", "max_concurrency"),
    ("duplicate op", "ops:\n  a: {prompt: A}\n  a: {prompt: B}\n", "duplicate key 'a'"),
    ("boolean op name", "ops: {yes: {prompt: A}}", "reads yes/no/on/off as booleans"),
    ("number op name", "ops: {1: {prompt: A}}", "reads an unquoted number, date or ~ as one"),
    ("reserved variable", "variables: {input: x}\nops: {a: {prompt: A}}", "reserved"),
    ("variable not scalar", "variables: {v: [1]}\nops: {a: {prompt: A}}", "variables.v"),
    ("variable mapping without default", "variables: {v: {description: d}}\n"
     "ops: {a: {prompt: A}}", "'default'"),
    ("anchor and alias", "variables: {a: &x hi, b: *x}\nops: {a: {prompt: A}}",
     "anchors and aliases"),
    ("deep nesting", "ops: {a: {prompt: A, params: " + "[" * 40 + "]" * 40 + "}}",
     "nested more than"),
]


ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ self._TemplateReference__context }}",
    "{{ ''['__class__'] }}",
    "{{ ''|attr('__class__') }}",
    "{{ [1]|map(attribute='__class__')|list }}",
    "{{ x.mro() }}",
    "{% import 'x' as y %}",
    "{% from 'x' import y %}",
    "{% include '/etc/passwd' %}",
    "{% extends '/etc/passwd' %}",
    "{% macro m() %}{{ m() }}{% endmacro %}",
    "{% block b %}{% endblock %}",
    "{% set x %}{{ input }}{% endset %}",
    "{% filter upper %}x{% endfilter %}",
    "{% for x in [1] recursive %}{% endfor %}",
]


RUNTIME_REFUSALS = [
    ("{{ input[key] }}", "unsafe"),  # dynamic: passes validation, refused by the sandbox
    ("{{ input|attr(key) }}", "unsafe"),
    ("{{ input.center(100000000) }}", "unsafe"),
    ("{{ '{:>999999999}'.format(1) }}", "unsafe"),
    ("{{ '%999999999s' % 1 }}", "%-format"),
    ("{{ 'x'|center(1000000000) }}", "too much work"),
    ("{{ 'x' * 1000000000 }}", "too much work"),
    ("{{ 2 ** 100000000 }}", "integers above"),
    ("{{ input|join(input * 10000) }}", "too much work"),
    ("{% set ns = namespace(s=input) %}{% for i in range(64) %}"
     "{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "would build a value of"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "loops more than"),
    ("{{ range(10000000)|list }}", "range()"),
    ("{% set b = [input] * 8 %}{% set c = [b] * 8 %}{% set d = [c] * 8 %}{% set e = [d] * 8 %}"
     "{% set f = [e] * 8 %}{% set g = [f] * 8 %}{% set h = [g] * 8 %}{{ [h] * 8 }}",
     "would build a value of"),
    ("{{ {}.update(a=1) }}", "unsafe"),
    # Comparisons read what they compare: scans of a long string are charged.
    ("{% set a = 'ab' * 1000000 %}{% for i in range(1500) %}{% if 'abc' in a %}{% endif %}"
     "{% endfor %}", "too much work ('in')"),
    ("{% set a = 'ab' * 1000000 %}{% for i in range(1500) %}{% if 'abc' not in a %}"
     "{% endif %}{% endfor %}", "too much work ('not in')"),
    ("{% set a = 'ab' * 1000000 %}{% set b = 'ab' * 1000000 %}{% for i in range(1500) %}"
     "{% if a == b %}{% endif %}{% endfor %}", "too much work ('==')"),
    ("{% set a = 'ab' * 1000000 %}{% set b = 'ab' * 1000000 %}{% for i in range(1500) %}"
     "{% if '' < 'a' < a < b %}{% endif %}{% endfor %}", "too much work ('<')"),
    ("{% set a = 'ab' * 1000000 %}{{ range(1500)|map('string')|select('in', a)|list }}",
     "too much work (test in)"),
    ("{% set a = 'ab' * 1000000 %}{% for i in range(1500) %}{% if a is lower %}{% endif %}"
     "{% endfor %}", "too much work (test lower)"),
    # No value past 4 MiB beyond the input, whatever the budget would allow.
    ("{{ 'ab' * 4000000 }}", "'*' would build a value of 8,000,000 characters"),
    ("{{ (input * 400)|replace('a', 'bb') }}", "filter replace would build a value of"),
]
