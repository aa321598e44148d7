"""State kept across restarts, one interface per kind."""

from .feedback import FeedbackStore

__all__ = ["FeedbackStore"]
