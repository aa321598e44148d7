"""A submitted workflow is compiled once per text and template set: the same text again is
served from the compiled copy, and an edited template file is seen on the next submission."""

from __future__ import annotations

import os
from pathlib import Path

from support_routing import model_entry
from support_workflows import open_workflow_router, received

from engine.testing.fake_upstream import FakeUpstream

WORKFLOW = "ops: {a: {template: greet.j2, model: m}}"


async def test_an_edited_template_is_used_by_the_next_submission(
    fake_upstream: FakeUpstream, tmp_path: Path,
) -> None:
    fake = fake_upstream
    template = tmp_path / "greet.j2"
    template.write_text("Hello {{ input }}.")
    workflows = {"templates_dir": str(tmp_path)}
    async with open_workflow_router([model_entry(fake, "m", tier=1)],
                                    workflows=workflows) as client:
        for _ in range(2):
            assert (await client.run(WORKFLOW, "you")).status_code == 200
        template.write_text("Goodbye {{ input }}.")
        later = template.stat().st_mtime + 5  # a coarse clock must still see the change
        os.utime(template, (later, later))
        assert (await client.run(WORKFLOW, "you")).status_code == 200

    assert received(fake, "m") == ["Hello you.", "Hello you.", "Goodbye you."]
