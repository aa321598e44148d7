"""Running a workflow's ops: variables, prompt rendering and answer parsing. Sans-IO.

The message-composition rule (what an op's request holds) is documented in
``engine.core.workflow.spec``; this module applies it at run time, once an op's inputs are done.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from engine.errors import UpstreamError, WorkflowInvalid, echo
from engine.messages import ChatRequest, Message, TextPart

from .source import Scalar, describe_value
from .spec import Op, OpOutput, Workflow
from .template import render_prompt

__all__ = ["parse_output", "render_request", "resolve_variables"]

_FENCED = re.compile(r"\A\s*```[A-Za-z]*[ \t]*\n(.*?)\n?```\s*\Z", re.DOTALL)


def resolve_variables(workflow: Workflow, overrides: Mapping[str, Any] | None) -> dict[str, Scalar]:
    """The declared defaults with a request's ``overrides`` applied.

    An override must name a declared variable, be a scalar, and keep its default's kind (a
    string for a string, a number for a number, a boolean for a boolean; any scalar for a
    ``null`` default).

    Raises:
        WorkflowInvalid: an undeclared name or a value of the wrong kind.

    >>> from engine.core.workflow.spec import WorkflowLimits, load_workflow
    >>> wf = load_workflow("variables: {tone: dry}\\nops: {a: {prompt: '{{ tone }}'}}",
    ...                    limits=WorkflowLimits(), templates_dir=None)
    >>> resolve_variables(wf, {"tone": "warm"})
    {'tone': 'warm'}
    """
    resolved = dict(workflow.variables)
    for name, value in (overrides or {}).items():
        if name not in workflow.variables:
            declared = ", ".join(workflow.variables) or "none"
            raise WorkflowInvalid(f"unknown variable {echo(name)} (declared: {declared})")
        default = workflow.variables[name]
        if isinstance(default, bool) or default is None:
            ok = isinstance(value, bool) if default is not None else (
                value is None or isinstance(value, str | int | float | bool))
        elif isinstance(default, int | float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        if not ok:
            raise WorkflowInvalid(
                f"variable {name!r} must be like its default {echo(default)}, got "
                f"{describe_value(value)}"
            )
        resolved[name] = value
    return resolved


def render_request(workflow: Workflow, op: Op | str, *, input: str,
                   variables: Mapping[str, Scalar],
                   outputs: Mapping[str, OpOutput],
                   deadline: float | None = None) -> ChatRequest:
    """The chat request of ``op`` (composed as the module docstring says).

    Rendering is CPU work bounded by the template's limits
    (``engine.core.workflow.template``): a server runs this in a worker thread.

    Args:
        workflow: the loaded workflow.
        op: one of its ops, or its name.
        input: the workflow's input.
        variables: from :func:`resolve_variables`.
        outputs: finished ops' outputs; must hold at least ``op``'s inputs and every op its
            templates read (passing all finished ops is fine).
        deadline: a ``time.monotonic()`` instant rendering must end by, besides each
            render's own ``render_timeout_sec``.

    Raises:
        TemplateLimitExceeded: a template hit a render limit (work, size, steps, time).
        WorkflowInvalid: an output it needs is missing, or a template failed at render time
            (an undefined value, a sandbox refusal), naming the op.
    """
    if isinstance(op, str):
        op = workflow.ops[op]
    needed = op.refs_ops | (frozenset(op.inputs) if op.appends_inputs else frozenset())
    for name in sorted(needed):
        if name not in outputs:
            raise WorkflowInvalid(
                f"op {op.name!r} needs the output of {name!r}, which is not available",
                op=op.name,
            )
    context: dict[str, Any] = dict(variables)
    context.update(
        input=input,
        vars=dict(variables),
        params=dict(op.params),
        ops={n: {"output": outputs[n].text, "value": outputs[n].value} for n in op.refs_ops},
    )
    text = render_prompt(op.prompt, context, op=op.name, deadline=deadline)
    system = (render_prompt(op.system, context, op=op.name, deadline=deadline)
              if op.system else None)
    if op.appends_inputs:
        if not op.inputs:
            received = input
        elif len(op.inputs) == 1:
            received = outputs[op.inputs[0]].text
        else:
            received = "\n\n".join(f"## {n}\n\n{outputs[n].text}" for n in op.inputs)
        text = f"{text}\n\n{received}" if text.strip() and received.strip() else text + received
    if not text.strip():
        raise WorkflowInvalid(f"op {op.name!r}: the prompt rendered empty", op=op.name)
    return ChatRequest(
        messages=(Message("user", (TextPart(text),)),),
        model=op.model,
        system=system if system and system.strip() else None,
        json_mode=op.json,
        temperature=op.temperature,
        max_tokens=op.max_tokens,
    )


def parse_output(op: Op, text: str) -> OpOutput:
    """An op's answer as an :class:`OpOutput`: a ``json`` op's text parsed (a Markdown code
    fence around it is tolerated), any other op's text as is.

    Raises:
        UpstreamError: a ``json`` op's answer is not JSON (retryable: a model may do better
            on a second try).

    >>> from engine.core.workflow.spec import WorkflowLimits, load_workflow
    >>> wf = load_workflow("ops: {x: {prompt: Answer in JSON., json: true}}",
    ...                    limits=WorkflowLimits(), templates_dir=None)
    >>> parse_output(wf.ops["x"], '```json\\n{"a": 1}\\n```').value
    {'a': 1}
    """
    if not op.json:
        return OpOutput(text, text)
    fenced = _FENCED.match(text)
    body = fenced.group(1) if fenced else text
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        raise UpstreamError(
            f"op {op.name!r} asked for JSON, but the answer is not JSON ({exc.msg}, line "
            f"{exc.lineno})"
        ) from None
    except RecursionError:
        raise UpstreamError(f"op {op.name!r}: the JSON answer is nested too deeply") from None
    return OpOutput(text, value)
