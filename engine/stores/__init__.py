"""State kept across restarts, one interface per kind: quality feedback, and workflow runs
(the :class:`RunStore` interface and its embedded SQLite implementation)."""

from .feedback import FeedbackStore
from .runs import Memo, RunStore
from .sqlite_runs import SqliteRunStore

__all__ = ["FeedbackStore", "Memo", "RunStore", "SqliteRunStore"]
