"""``python -m api.cli``: the ``llm-router`` command."""

from .main import main

raise SystemExit(main())
